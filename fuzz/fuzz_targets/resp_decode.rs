//! Feeds arbitrary bytes to the RESP value decoder, whole and in pieces. Beyond "never panics":
//! the result does not depend on how the bytes are split across reads, a value never claims
//! bytes it was not given, the reply framer ends the frame exactly where the decoder did, and a
//! decoded value encodes to bytes that decode to the same value (compared as bytes: NaN).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::resp::{decode, Decoder, Limits, ReplyFramer, Value};

fn limits() -> Limits {
    // Small limits so the fuzzer reaches them.
    Limits {
        max_bulk_len: 1 << 16,
        max_elements: 1 << 12,
        max_depth: 16,
        max_line: 64,
        unauthenticated: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let (cut, bytes) = match data.split_first() {
        Some((c, rest)) => (*c as usize, rest),
        None => return,
    };
    let whole = decode(bytes, &limits());
    // The same bytes arriving in two reads.
    let cut = cut.min(bytes.len());
    let mut d = Decoder::new(limits());
    let pieces = match d.decode(&bytes[..cut]) {
        Ok(None) => d.decode(bytes),
        other => other,
    };
    match (&whole, &pieces) {
        (Ok(Some((a, n))), Ok(Some((b, m)))) => {
            assert_eq!(n, m);
            assert_eq!(a.to_bytes(), b.to_bytes());
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        // A value complete within the first read is found there: fine if it is the same.
        (w, p) => panic!("whole {w:?} vs pieces {p:?}"),
    }
    if let Ok(Some((value, used))) = &whole {
        assert!(*used <= bytes.len());
        let mut framer = ReplyFramer::new(limits());
        let adv = framer.advance(bytes).expect("the decoder accepted it");
        assert_eq!(adv.consumed, *used);
        assert!(adv.complete.is_some());
        let encoded = value.to_bytes();
        let (again, n) = decode(&encoded, &Limits::default())
            .expect("an encoded value decodes")
            .expect("complete");
        assert_eq!(n, encoded.len());
        assert_eq!(again.to_bytes(), encoded);
        if !matches!(value, Value::Double(_)) {
            assert_eq!(&again, value);
        }
    }
});
