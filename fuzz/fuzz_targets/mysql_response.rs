//! Feeds arbitrary server packets to the MySQL response tracker, for a command and
//! capabilities taken from the input. Beyond "never panics": once it says the answer is
//! done, it refuses more packets, and it never ends an answer twice.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::mysql::flags::Capabilities;
use sumun_wire::mysql::response::{ResponseTracker, Step, TrackError};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let command = data[0];
    let mut c = [0u8; 8];
    c.copy_from_slice(&data[1..9]);
    let caps = Capabilities(u64::from_le_bytes(c));
    let Ok(mut t) = ResponseTracker::new(command, caps) else {
        return;
    };
    // The rest: packets, each a length byte and that many bytes.
    let mut rest = &data[9..];
    let mut done = t.is_done();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (packet, tail) = tail.split_at(n);
        rest = tail;
        match t.feed(packet) {
            Ok(Step::Done(_)) => {
                assert!(!done);
                done = true;
                assert!(t.is_done());
            }
            Ok(_) => assert!(!done),
            Err(TrackError::AfterEnd) => assert!(done),
            Err(_) => return,
        }
    }
});
