use super::*;

#[test]
fn masking_replaces_every_literal() {
    let cases = [
        ("select 1", "select ?"),
        (
            "SELECT * FROM t WHERE a = 'x' AND b = 42",
            "SELECT * FROM t WHERE a = ? AND b = ?",
        ),
        (
            "select 'it''s', E'a\\'b', $$dollar ' quoted$$, $tag$x$y$tag$",
            "select ?, ?, ?, ?",
        ),
        ("select 1.5e-3, .5, 0x1F", "select ?, ?, ?"),
        ("select $1, $2::int", "select $1, $2::int"),
        (
            "select a$b, \"Quoted \"\"x\"\" 1\" from t1",
            "select a$b, \"Quoted \"\"x\"\" 1\" from t1",
        ),
        (
            "select  -- a comment 'x'\n  2 /* nested /* 3 */ 4 */ + 5",
            "select ? + ?",
        ),
        (
            "insert into t values (B'101', X'ff', N'n', U&'d\\0061t')",
            "insert into t values (?, ?, ?, ?)",
        ),
        ("select 'unterminated", "select ?"),
        ("select $$unterminated", "select ?"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(mask_literals(input), want, "{input}");
    }
}

#[test]
fn masking_keeps_no_secret_text() {
    let masked = mask_literals("ALTER ROLE app PASSWORD 'hunter2'; select E'\\x68unter2'");
    assert!(!masked.contains("hunter2"), "{masked}");
}

#[test]
fn read_only_statements() {
    for sql in [
        "select 1",
        "SELECT count(*), max(a) FROM t WHERE b > $1",
        "(select a from t) union all (select b from u)",
        "with x as (select 1) select * from x",
        "values (1), (2)",
        "table t",
        "show search_path",
        "select pg_is_in_recovery()",
        "explain select * from t",
        "explain analyze select * from t",
        "select now(), current_setting('TimeZone'), pg_catalog.lower('A')",
        "select a::numeric(10,2), cast(b as varchar(5)) from t where c in (1,2) and exists (select 1)",
        "select 1; select 2",
        "/* hint */ select 1 -- trailing",
        "select * from generate_series(1, 10) g",
        "select update_count from t", // a column named like a keyword is not the keyword
    ] {
        let a = analyze(sql);
        if sql == "select update_count from t" {
            assert!(a.read_only, "{sql}");
            continue;
        }
        assert!(a.read_only, "{sql}: {a:?}");
        assert_eq!(a.pin, None, "{sql}");
    }
}

#[test]
fn not_read_only_when_unsure_or_writing() {
    for sql in [
        "insert into t values (1)",
        "update t set a = 1",
        "delete from t",
        "with d as (delete from t returning *) select * from d",
        "select * into t2 from t",
        "select * from t for update",
        "select * from t for no key update",
        "select * from t for share",
        "select nextval('s')",
        "select setval('s', 1)",
        "select my_function(1)",
        "select \"MyFunc\"(1)",
        "select pg_advisory_lock(1)",
        "select txid_current()",
        "select pg_notify('c', 'x')",
        "explain analyze insert into t values (1)",
        "select 1; insert into t values (1)",
        "copy t to stdout",
        "call proc()",
        "do $$ begin perform 1; end $$",
        "lock table t",
        "create table t (a int)",
        "vacuum t",
        "analyze t",
        "refresh materialized view v",
        "begin",
        "",
        "   ;  ; ",
        "garbage ' unterminated",
    ] {
        assert!(!analyze(sql).read_only, "{sql}");
    }
}

#[test]
fn transaction_effects() {
    let cases = [
        ("BEGIN", TxEffect::Begin),
        ("begin read write", TxEffect::Begin),
        ("BEGIN READ ONLY", TxEffect::BeginReadOnly),
        (
            "begin isolation level serializable, read only, deferrable",
            TxEffect::BeginReadOnly,
        ),
        ("START TRANSACTION READ ONLY", TxEffect::BeginReadOnly),
        ("start transaction", TxEffect::Begin),
        ("COMMIT", TxEffect::Commit),
        ("end", TxEffect::Commit),
        ("abort", TxEffect::Commit),
        ("rollback", TxEffect::Commit),
        ("ROLLBACK TO SAVEPOINT s", TxEffect::Other),
        ("rollback work to s", TxEffect::Other),
        ("rollback prepared 'x'", TxEffect::Other),
        ("select 1", TxEffect::Other),
        ("begin; select 1; commit", TxEffect::Begin),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).tx, want, "{sql}");
    }
}

#[test]
fn session_state_pins() {
    let cases = [
        ("SET search_path = app", Some(PinReason::Set)),
        ("set session timezone to 'UTC'", Some(PinReason::Set)),
        ("SET LOCAL statement_timeout = 5", None),
        ("set transaction isolation level serializable", None),
        ("set constraints all deferred", None),
        ("RESET ALL", Some(PinReason::Set)),
        ("select set_config('a.b', 'c', false)", Some(PinReason::Set)),
        ("LISTEN chan", Some(PinReason::Listen)),
        ("unlisten chan", None),
        ("select pg_advisory_lock(42)", Some(PinReason::AdvisoryLock)),
        (
            "select pg_try_advisory_lock_shared(42)",
            Some(PinReason::AdvisoryLock),
        ),
        ("select pg_advisory_xact_lock(42)", None),
        ("create temp table t (a int)", Some(PinReason::TempObject)),
        (
            "CREATE TEMPORARY VIEW v AS SELECT 1",
            Some(PinReason::TempObject),
        ),
        ("create table t (a int)", None),
        (
            "declare c cursor with hold for select 1",
            Some(PinReason::HoldCursor),
        ),
        ("declare c cursor for select 1", None),
        ("prepare p as select 1", Some(PinReason::SqlPrepare)),
        ("prepare transaction 'x'", None),
        ("load 'auto_explain'", Some(PinReason::Load)),
        ("discard all", None),
        ("select 1; set x = 1", Some(PinReason::Set)),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).pin, want, "{sql}");
    }
    assert_eq!(PinReason::AdvisoryLock.as_str(), "advisory_lock");
}

#[test]
fn statement_counts() {
    assert_eq!(analyze("select 1; select 2;").statements, 2);
    assert_eq!(analyze("select ';'; select $$;$$").statements, 2);
    assert_eq!(analyze("-- only a comment").statements, 0);
    assert_eq!(analyze("").statements, 0);
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet = "'\"$;()-*/\\eEuU&xXbB0123456789 .\n\u{e9}\u{1F600}select";
    let chars: Vec<char> = alphabet.chars().collect();
    for _ in 0..20_000 {
        let n = rng.usize(0..40);
        let s: String = (0..n).map(|_| chars[rng.usize(0..chars.len())]).collect();
        let _ = analyze(&s);
        let m = mask_literals(&s);
        assert!(m.len() <= s.len() + 1, "{s:?} -> {m:?}");
    }
    let big = "select ".to_string() + &"'x', ".repeat(100_000) + "1";
    assert_eq!(analyze(&big).statements, 1);
    assert!(mask_literals(&big).starts_with("select ?, ?"));
    let nested = "/*".repeat(10_000);
    assert_eq!(analyze(&nested).statements, 0);
}
