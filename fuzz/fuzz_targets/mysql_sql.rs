//! Feeds arbitrary text to the SQL lexer under MySQL's rules (both sql_modes that change
//! lexing). Beyond "never panics": masking never grows the text, and a pin the analysis finds
//! is always one the cheap pre-filter said was possible.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::sql::{self, MysqlDialect, Syntax};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for dialect in [
        MysqlDialect::DEFAULT,
        MysqlDialect {
            backslash_escapes: false,
            ansi_quotes: true,
        },
    ] {
        let a = sql::analyze_with(&text, Syntax::Mysql(dialect));
        if a.pin.is_some() {
            assert!(sql::may_pin_mysql(text.as_bytes()));
        }
        assert!(sql::mask_literals_with(&text, dialect).len() <= text.len());
    }
});
