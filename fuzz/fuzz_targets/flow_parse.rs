//! Feeds arbitrary bytes to the flow log reader and line parser. Beyond "never panics", a line
//! that parses in the default format must print back to a line that parses to the same record,
//! and reading into one reused `Flow` (the fast path) gives what a fresh one per line gives.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_flows::{parse_line, Flow, Reader};

fuzz_target!(|data: &[u8]| {
    let fresh: Vec<Result<Flow, String>> = Reader::new(data)
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    for e in fresh.iter().filter_map(|r| r.as_ref().err()) {
        assert!(!e.is_empty());
    }
    let mut reader = Reader::new(data);
    let mut flow = Flow::default();
    let mut reused = Vec::new();
    while let Some(r) = reader.read_into(&mut flow) {
        reused.push(r.map(|()| flow.clone()).map_err(|e| e.to_string()));
    }
    assert_eq!(fresh, reused);
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(record) = parse_line(line) {
            let printed = record.to_string();
            assert_eq!(parse_line(&printed), Ok(record), "{printed}");
        }
    }
});
