//! Feeds arbitrary bytes, in arbitrary pieces, to the reply framer (what a Redis server sends a
//! proxy). Beyond "never panics": it consumes only bytes it was given, the frames it finds and
//! the bytes in each do not depend on how the stream was cut, it keeps no more state than the
//! nesting limit allows, and every frame it completes decodes as exactly one value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::resp::{decode, FrameKind, Limits, ReplyFramer};

fn limits() -> Limits {
    Limits {
        max_bulk_len: 1 << 16,
        max_elements: 1 << 12,
        max_depth: 16,
        max_line: 64,
        unauthenticated: false,
    }
}

type Frames = (Vec<(FrameKind, Vec<u8>)>, bool);

/// Frames found feeding `bytes` `step` bytes at a time, keeping unconsumed bytes as a proxy
/// would; and whether the stream ended in an error.
fn frames(bytes: &[u8], step: usize) -> Frames {
    let mut framer = ReplyFramer::new(limits());
    let mut pending: Vec<u8> = Vec::new();
    let mut current = Vec::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        pending.extend_from_slice(chunk);
        loop {
            match framer.advance(&pending) {
                Ok(adv) => {
                    assert!(adv.consumed <= pending.len());
                    current.extend(pending.drain(..adv.consumed));
                    match adv.complete {
                        Some(kind) => out.push((kind, std::mem::take(&mut current))),
                        None => break,
                    }
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let (step, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let whole = frames(bytes, bytes.len().max(1));
    let pieces = frames(bytes, step);
    assert_eq!(whole, pieces);
    for (kind, frame) in &whole.0 {
        match decode(frame, &limits()) {
            Ok(Some((value, used))) => {
                assert_eq!(used, frame.len());
                if *kind == FrameKind::Push {
                    assert!(matches!(
                        value.without_attributes(),
                        sumun_wire::resp::Value::Push(_)
                    ));
                }
            }
            // Only verbatim strings are checked more closely by the decoder than the framer.
            Err(sumun_wire::resp::RespError::Malformed { .. }) => {}
            other => panic!("framer found {frame:?}, decoder said {other:?}"),
        }
    }
});
