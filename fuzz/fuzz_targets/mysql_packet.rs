//! Feeds arbitrary bytes to the MySQL packet framer. Beyond "never panics": a decoded payload
//! never claims bytes it was not given or more than the limit, it re-encodes to exactly the
//! bytes it came from, and physical packets walk the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::mysql::packet::{decode_payload, next_packet, write_packet, FrameError};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    // Small limits reach the limit checks; the multi-packet path needs 16 MiB inputs, which
    // the unit and real-server tests cover.
    let max = usize::from(limit) * 64;
    let expect = rest.first().copied().filter(|_| limit & 1 == 1);
    match decode_payload(rest, max, expect) {
        Ok(Some(p)) => {
            assert!(p.consumed <= rest.len());
            assert!(p.data.len() <= max);
            assert!(expect.is_none_or(|e| e == p.seq));
            let mut again = Vec::new();
            let next = write_packet(&mut again, p.seq, &p.data);
            assert_eq!(next, p.next_seq);
            assert_eq!(&again[..], &rest[..p.consumed]);
            let first = next_packet(rest).expect("a decoded payload has a first packet");
            assert!(first.wire_len() <= p.consumed);
        }
        Ok(None) => {}
        Err(FrameError::TooLarge { at_least, max: m }) => assert!(at_least > m),
        Err(FrameError::OutOfOrder { expected, got }) => assert_ne!(expected, got),
    }
});
