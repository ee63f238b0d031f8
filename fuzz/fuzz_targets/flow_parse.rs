//! Feeds arbitrary bytes to the flow log reader and line parser. Beyond "never panics", a line
//! that parses in the default format must print back to a line that parses to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_flows::{parse_line, Reader};

fuzz_target!(|data: &[u8]| {
    for result in Reader::new(data) {
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
    }
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(record) = parse_line(line) {
            let printed = record.to_string();
            assert_eq!(parse_line(&printed), Ok(record), "{printed}");
        }
    }
});
