//! Feeds arbitrary bytes to the PostgreSQL v3 decoders the gateway runs on untrusted input: a
//! startup packet (from clients), then the message framing and the body parsers it applies to
//! clients' and servers' messages (Parse, Bind, SASLInitialResponse, ErrorResponse,
//! CommandComplete). Beyond "never panics": a decoded packet or message never claims bytes it
//! was not given, the framing agrees with itself on a prefix, and no decoder reads a length
//! past the limit it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::postgres as pg;

/// The gateway's largest message held whole in the tests' configuration.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, consumed))) = pg::decode_startup(data) {
        assert!(consumed <= data.len());
        assert!(matches!(pg::decode_startup(&data[..consumed]), Ok(Some((_, c))) if c == consumed));
    }
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let header = pg::header(rest, LIMIT);
        match pg::message(rest, LIMIT) {
            Ok(Some((m, used))) => {
                assert!(used <= rest.len() && used >= 5);
                assert!(matches!(header, Ok(Some(h)) if h.total == used && h.tag == m.tag));
                let _ = pg::cstr(m.body);
                let _ = pg::error_fields(m.body);
                let _ = pg::command_rows(m.body);
                let _ = pg::sasl_initial_response(m.body);
                let _ = pg::parse_message(m.body);
                let _ = pg::bind_message(m.body);
                at += used;
            }
            Ok(None) => {
                // Incomplete: the header, when there is one, asks for more than is here.
                if let Ok(Some(h)) = header {
                    assert!(h.total > rest.len());
                }
                break;
            }
            Err(_) => break,
        }
    }
});
