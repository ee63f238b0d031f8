//! Feeds arbitrary text to the Redis ACL rule parser and compiler (a config file's
//! `redis_acl`), then checks arbitrary command lines against what compiled, and arbitrary globs
//! against arbitrary strings. Beyond "never panics": a password rule is always refused before
//! anything could echo it in an error, denials are single lines, and glob matching stays fast
//! (no exponential backtracking) on any pattern.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_policy::redis_acl::{
    glob_match, is_password_rule, AclError, AclRules, RedisAcl, Verdict,
};
use sumun_wire::resp::table::CommandTable;
use sumun_wire::resp::Value;

fn s(t: &str) -> Value {
    Value::Simple(t.as_bytes().to_vec())
}

fn b(t: &str) -> Value {
    Value::Bulk(t.as_bytes().to_vec())
}

fn spec(flags: &[&str], begin: Value, find: Value) -> Value {
    Value::Array(vec![
        b("flags"),
        Value::Array(flags.iter().map(|f| s(f)).collect()),
        b("begin_search"),
        begin,
        b("find_keys"),
        find,
    ])
}

fn index(i: i64) -> Value {
    Value::Array(vec![
        b("type"),
        b("index"),
        b("spec"),
        Value::Array(vec![b("index"), Value::Integer(i)]),
    ])
}

fn range(last: i64) -> Value {
    Value::Array(vec![
        b("type"),
        b("range"),
        b("spec"),
        Value::Array(vec![
            b("lastkey"),
            Value::Integer(last),
            b("keystep"),
            Value::Integer(1),
            b("limit"),
            Value::Integer(0),
        ]),
    ])
}

fn command(name: &str, arity: i64, cats: &[&str], specs: Vec<Value>, subs: Vec<Value>) -> Value {
    Value::Array(vec![
        b(name),
        Value::Integer(arity),
        Value::Array(vec![]),
        Value::Integer(1),
        Value::Integer(1),
        Value::Integer(1),
        Value::Array(cats.iter().map(|c| s(c)).collect()),
        Value::Array(vec![]),
        Value::Array(specs),
        Value::Array(subs),
    ])
}

/// A small table shaped like Redis's own.
fn table() -> CommandTable {
    let reply = Value::Array(vec![
        command(
            "get",
            2,
            &["@read", "@string", "@fast"],
            vec![spec(&["RO", "access"], index(1), range(0))],
            vec![],
        ),
        command(
            "set",
            -3,
            &["@write", "@string"],
            vec![spec(
                &["RW", "access", "update", "variable_flags"],
                index(1),
                range(0),
            )],
            vec![],
        ),
        command(
            "mset",
            -3,
            &["@write", "@string"],
            vec![spec(
                &["OW", "update"],
                index(1),
                Value::Array(vec![
                    b("type"),
                    b("range"),
                    b("spec"),
                    Value::Array(vec![
                        b("lastkey"),
                        Value::Integer(-1),
                        b("keystep"),
                        Value::Integer(2),
                        b("limit"),
                        Value::Integer(0),
                    ]),
                ]),
            )],
            vec![],
        ),
        command("select", 2, &["@fast", "@connection"], vec![], vec![]),
        command(
            "flushall",
            -1,
            &["@keyspace", "@write", "@dangerous"],
            vec![],
            vec![],
        ),
        command("publish", 3, &["@pubsub"], vec![], vec![]),
        command("subscribe", -2, &["@pubsub"], vec![], vec![]),
        command("psubscribe", -2, &["@pubsub"], vec![], vec![]),
        command("eval", -3, &["@scripting"], vec![], vec![]),
        command(
            "sort",
            -2,
            &["@write", "@list"],
            vec![
                spec(&["RO", "access"], index(1), range(0)),
                spec(
                    &["OW", "update", "incomplete"],
                    Value::Array(vec![
                        b("type"),
                        b("unknown"),
                        b("spec"),
                        Value::Array(vec![]),
                    ]),
                    Value::Array(vec![
                        b("type"),
                        b("unknown"),
                        b("spec"),
                        Value::Array(vec![]),
                    ]),
                ),
            ],
            vec![],
        ),
        command(
            "config",
            -2,
            &["@slow"],
            vec![],
            vec![
                command(
                    "config|get",
                    -3,
                    &["@admin", "@slow", "@dangerous"],
                    vec![],
                    vec![],
                ),
                command(
                    "config|set",
                    -4,
                    &["@admin", "@slow", "@dangerous"],
                    vec![],
                    vec![],
                ),
            ],
        ),
    ]);
    CommandTable::from_reply(&reply).expect("a valid table")
}

fuzz_target!(|data: &[u8]| {
    let (rules, rest) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(rules) else {
        return;
    };
    let table = table();
    let words = sumun_wire::resp::split_words(text.as_bytes());
    let has_password = words
        .as_ref()
        .is_ok_and(|w| w.iter().any(|w| is_password_rule(w)));
    match AclRules::parse(text) {
        Ok(parsed) => {
            assert!(!has_password, "a password rule was accepted: {text:?}");
            if let Ok(acl) = RedisAcl::compile(&parsed, &table) {
                let args: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
                if let Verdict::Denied(d) = acl.check(&table, &args) {
                    assert!(!d.reply("u", Default::default()).contains('\n'));
                }
            }
        }
        // A password rule is refused before anything could name it in an error.
        Err(e) if has_password => assert_eq!(e, AclError::Password),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // Globs: any pattern against the rest, in bounded time.
    if rest.len() <= 4096 {
        let (p, s) = rest.split_at(rest.len() / 2);
        let _ = glob_match(p, s);
    }
});
