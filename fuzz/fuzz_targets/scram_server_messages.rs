//! Feeds arbitrary text to the readers of the server's SCRAM messages (the gateway's login to
//! PostgreSQL). Beyond "never panics": what they return is borrowed from the message as one
//! attribute's value (no `,` in it, right after its `r=`/`s=`/`i=`/`v=`/`e=`), a count is
//! positive, and a server-first message read is read the same with its attributes reordered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::postgres::scram::{parse_server_final, parse_server_first, ServerFinal};

/// `value` is a slice of `message` that follows `prefix` and holds a whole attribute value.
fn is_attribute(message: &str, value: &str, prefix: &str) -> bool {
    let base = message.as_ptr() as usize;
    let start = value.as_ptr() as usize;
    if start < base || start + value.len() > base + message.len() {
        return false;
    }
    let at = start - base;
    let after = &message[at + value.len()..];
    !value.contains(',')
        && message[..at].ends_with(prefix)
        && message[..at - prefix.len()]
            .chars()
            .next_back()
            .is_none_or(|c| c == ',')
        && (after.is_empty() || after.starts_with(','))
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(first) = parse_server_first(message) {
        assert!(first.iterations > 0);
        assert!(is_attribute(message, first.nonce, "r="));
        assert!(is_attribute(message, first.salt, "s="));
        let mut parts: Vec<&str> = message.split(',').collect();
        parts.reverse();
        let reversed = parts.join(",");
        let again = parse_server_first(&reversed).expect("order does not matter");
        assert_eq!(
            (again.nonce, again.salt, again.iterations),
            (first.nonce, first.salt, first.iterations)
        );
    }
    match parse_server_final(message) {
        Ok(ServerFinal::Verifier(v)) => assert!(is_attribute(message, v, "v=")),
        Ok(ServerFinal::Error(e)) => {
            assert!(is_attribute(message, e, "e="));
            assert!(!message.split(',').any(|p| p.starts_with("v=")));
        }
        Err(_) => assert!(!message
            .split(',')
            .any(|p| p.starts_with("v=") || p.starts_with("e="))),
    }
});
