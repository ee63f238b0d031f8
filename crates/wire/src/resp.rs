//! Redis RESP2/RESP3 (filled in by issue 19).
