//! Feeds arbitrary bytes to `COM_STMT_EXECUTE`'s head reader for an arbitrary parameter count.
//! Beyond "never panics": the offsets it gives lie inside the payload, the types it finds are
//! two bytes a parameter right after the flag, the statement id still reads, and putting types
//! into a payload that sent none gives one that reads back with exactly those types.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::mysql::stmt::{execute_head, parse_execute, statement_id, with_types};

fuzz_target!(|data: &[u8]| {
    let Some((count, payload)) = data.split_first_chunk::<2>() else {
        return;
    };
    // Mostly small counts (a bitmap and types that fit in the input), sometimes any u16.
    let raw = u16::from_le_bytes(*count);
    let params = if raw & 0x8000 == 0 { raw % 64 } else { raw };
    let Ok(e) = parse_execute(payload, params) else {
        return;
    };
    assert!(payload.len() >= 10);
    assert_eq!(e.cursor, payload[5] & 0x07 != 0);
    if payload[0] == 0x17 {
        assert!(statement_id(payload).is_some());
    }
    let Some(at) = e.bound_at else {
        assert_eq!(params, 0);
        assert!(e.types.is_none());
        return;
    };
    assert!(params > 0);
    assert_eq!(at + 1, execute_head(params));
    assert!(at < payload.len());
    match &e.types {
        Some(r) => {
            assert_eq!(payload[at], 1);
            assert_eq!(r.start, at + 1);
            assert_eq!(r.len(), 2 * usize::from(params));
            assert!(r.end <= payload.len());
        }
        None => {
            assert_eq!(payload[at], 0);
            let types: Vec<u8> = (0..2 * usize::from(params)).map(|i| i as u8).collect();
            let with = with_types(payload, at, &types);
            assert_eq!(with.len(), payload.len() + types.len());
            let again = parse_execute(&with, params).expect("types put back read back");
            assert_eq!(again.bound_at, Some(at));
            assert_eq!(again.cursor, e.cursor);
            let r = again.types.expect("the flag is set");
            assert_eq!(&with[r.clone()], &types[..]);
            assert_eq!(&with[r.end..], &payload[at + 1..]);
        }
    }
});
