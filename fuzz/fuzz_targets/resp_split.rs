//! Feeds arbitrary bytes to the command splitter (what a client sends a Redis front end).
//! Beyond "never panics": commands never claim bytes they were not given, multibulk argument
//! ranges lie inside their command, splitting is the same whether the bytes come at once or in
//! pieces, and a command's arguments encoded again split back to the same arguments.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::resp::{encode_command, Limits, Splitter};

fn limits() -> Limits {
    Limits {
        max_bulk_len: 1 << 16,
        max_elements: 1 << 10,
        max_depth: 8,
        max_line: 128,
        unauthenticated: false,
    }
}

/// Every command of `bytes` (arguments and length), and the error that ended them, if any.
fn split_all(bytes: &[u8], step: usize) -> (Vec<(Vec<Vec<u8>>, usize)>, Option<String>) {
    let mut s = Splitter::new(limits());
    let mut out = Vec::new();
    let (mut start, mut end) = (0usize, step.min(bytes.len()));
    loop {
        match s.split(&bytes[start..end]) {
            Ok(Some(cmd)) => {
                assert!(cmd.len() > 0 && cmd.len() <= end - start);
                if let Some(ranges) = cmd.arg_ranges() {
                    for r in ranges {
                        assert!(r.start <= r.end && r.end <= cmd.len());
                    }
                }
                out.push((cmd.args().map(<[u8]>::to_vec).collect(), cmd.len()));
                start += cmd.len();
            }
            Ok(None) if end < bytes.len() => {
                if let Some(p) = s.progress() {
                    assert!(p.needed_at_least >= 1 && p.args.len() < p.argc);
                    for r in p.args {
                        assert!(r.start <= r.end && r.end <= end - start);
                    }
                }
                end = (end + step).min(bytes.len())
            }
            Ok(None) => return (out, None),
            Err(e) => {
                assert!(e.reply().starts_with("ERR Protocol error: "));
                return (out, Some(e.to_string()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (step, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let whole = split_all(bytes, bytes.len().max(1));
    let pieces = split_all(bytes, step);
    assert_eq!(whole, pieces);
    for (args, _) in &whole.0 {
        if args.is_empty() {
            continue;
        }
        let mut again = Vec::new();
        encode_command(&mut again, args);
        let mut s = Splitter::new(Limits::default());
        let cmd = s.split(&again).expect("valid").expect("complete");
        assert_eq!(cmd.len(), again.len());
        let back: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
        assert_eq!(&back, args);
    }
});
