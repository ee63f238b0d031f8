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

#[test]
fn masking_edge_cases() {
    let cases = [
        // Whitespace runs and comments become one space; none at the ends.
        ("  select\t\n 1  ", "select ?"),
        ("select/**/a/* x */from t", "select a from t"),
        ("select a--c\n,b", "select a ,b"),
        ("select a --c\r\nfrom t", "select a from t"),
        ("/* only */", ""),
        ("-- only", ""),
        // Unterminated quotes and comments hide the rest.
        ("select E'abc\\", "select ?"),
        ("select 'a' || 'b", "select ? || ?"),
        ("select $tag$ never closed $other$", "select ?"),
        ("select 1 /* never /* closed */", "select ?"),
        ("select \"unterminated ident", "select \"unterminated ident"),
        // E-strings: \' does not end the string; plain strings: \ is an ordinary character.
        ("select E'it\\'s', 'c:\\'", "select ?, ?"),
        ("select e'\\\\', 1", "select ?, ?"),
        // Prefixes only when glued to the quote; otherwise they are identifiers.
        (
            "select e 'x', b'1', X'0A', u&'\\0041'",
            "select e ?, ?, ?, ?",
        ),
        ("select U&\"d\\0061t\"", "select U&\"d\\0061t\""),
        ("select n'x', N'y'", "select ?, ?"),
        // Dollar quotes: tags, nesting of other tags, and `$` inside identifiers.
        ("select $a$ x $b$ y $b$ z $a$, 2", "select ?, ?"),
        ("select a$b, c$$d from t$1", "select a$b, c$$d from t$1"),
        ("select $1, $12::text, $", "select $1, $12::text, $"),
        ("select $x", "select $x"),
        // Numbers in all their forms; a sign stays an operator.
        (
            "select -1, +2.5, 3e10, 4.e-2, 1_000, 0o17, 0b101, .5",
            "select -?, +?, ?, ?, ?, ?, ?, ?",
        ),
        ("select t1.c2 from s3.t4", "select t1.c2 from s3.t4"),
        ("select a[1:2]", "select a[?:?]"),
        ("select 1::int, '1'::int", "select ?::int, ?::int"),
        // Operators glued to comment starts.
        ("select 1+-- x\n2", "select ?+ ?"),
        ("select 2*/* x */3", "select ?* ?"),
        // Unicode identifiers and text pass through intact; literals do not.
        (
            "SELECT \u{e9}t\u{e9}, \"\u{1F600}\" FROM caf\u{e9} WHERE x = '\u{1F600}'",
            "SELECT \u{e9}t\u{e9}, \"\u{1F600}\" FROM caf\u{e9} WHERE x = ?",
        ),
        ("select '\u{0}'", "select ?"),
        ("select 'a'\n'b'", "select ? ?"),
        (
            "select date '2024-01-01', interval '1 day'",
            "select date ?, interval ?",
        ),
        ("select true, null", "select true, null"),
        (
            "select * from t where j ? 'k'",
            "select * from t where j ? ?",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(mask_literals(input), want, "{input:?}");
    }
}

#[test]
fn masking_with_backslash_strings() {
    let off = Dialect {
        standard_conforming_strings: false,
    };
    // With standard_conforming_strings off, `\'` does not end a plain string either.
    assert_eq!(
        mask_literals_with("select 'a\\'; drop table t; --', 1", off),
        "select ?, ?"
    );
    assert_eq!(
        mask_literals("select 'a\\'; drop table t; --', 1"),
        "select ?; drop table t;"
    );
    assert_eq!(
        analyze_with("select 'a\\'; delete from t'", off).statements,
        1
    );
    assert!(analyze_with("select 'a\\'; delete from t'", off).read_only);
    assert_eq!(analyze("select 'a\\'; delete from t'").statements, 2);
    assert_eq!(Dialect::default(), Dialect::STANDARD);
}

#[test]
fn read_only_table() {
    // (sql, read_only)
    let cases = [
        ("SELECT 1", true),
        ("select\n*\nfrom t", true),
        ("((select 1))", true),
        ("(values (1))", true),
        ("show all", true),
        (
            "with recursive r(n) as (select 1 union all select n + 1 from r) select * from r",
            true,
        ),
        (
            "with a(x) as (select 1), b(y) as not materialized (select 2) select * from a, b",
            true,
        ),
        ("with a as materialized (select 1) select * from a", true),
        ("select * from generate_series(1, 3) g(i)", true),
        ("select * from (values (1, 2)) as v(a, b)", true),
        (
            "select * from unnest(array[1]) with ordinality as u(x, n)",
            true,
        ),
        (
            "select count(*) filter (where a > 1) over (partition by b) from t",
            true,
        ),
        (
            "select percentile_cont(0.5) within group (order by a) from t",
            true,
        ),
        (
            "select a from t where b = any($1) and c not in (select 1)",
            true,
        ),
        ("select a from t order by (a) limit (5) offset (1)", true),
        ("select pg_catalog.count(*), PG_CATALOG.NOW() from t", true),
        ("select \"count\"(*) from t", true),
        ("explain (analyze, buffers) select 1", true),
        ("explain analyse verbose select 1", true),
        ("EXPLAIN (FORMAT JSON) (SELECT 1)", true),
        ("select 'nextval(1)', $$ insert $$ from t -- delete", true),
        ("select \"update\", \"into\" from t", true),
        ("select a from t where x = $1 for /* not */ read_only", true),
        ("select 1;;", true),
        // Writes, locks, side effects and anything unknown.
        ("explain analyze delete from t", false),
        ("explain (analyze) update t set a = 1", false),
        ("explain (costs off) insert into t values (1)", false),
        (
            "with x as (update t set a = 1 returning *) select * from x",
            false,
        ),
        (
            "with x as (select 1) merge into t using x on true when matched then do nothing",
            false,
        ),
        ("select a into temp t2 from t", false),
        ("select * from t for key share", false),
        ("select * from t for no key update of t skip locked", false),
        ("select myschema.lower(a) from t", false),
        ("select public.count(*) from t", false),
        ("select \"COUNT\"(*) from t", false),
        ("select \"we\"\"ird\"(1)", false),
        ("select pg_catalog.nextval('s')", false),
        ("select lo_import('/etc/passwd')", false),
        ("select dblink_exec('x', 'delete from t')", false),
        ("select pg_terminate_backend(1)", false),
        ("select pg_current_xact_id()", false),
        ("select pg_sleep(1)", false),
        ("select a from t where b = f(1)", false),
        (
            "select a from t where (b) operator(pg_catalog.=) nextval('s')",
            false,
        ),
        ("select a, nextval('s') as id from t", false),
        ("with a(x) as (select 1), nextval('s') as y select 1", false),
        ("select 1; select nextval('s')", false),
        ("table t; begin", false),
        ("execute p(1)", false),
        ("fetch 10 from c", false),
        ("set x = 1", false),
        ("(", false),
        (")", false),
        ("explain", false),
        ("select", true),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).read_only, want, "{sql}: {:?}", analyze(sql));
    }
}

#[test]
fn transaction_table() {
    let cases = [
        ("  (begin)", TxEffect::Begin),
        ("begin work", TxEffect::Begin),
        ("begin transaction read only", TxEffect::BeginReadOnly),
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            TxEffect::BeginReadOnly,
        ),
        ("begin isolation level repeatable read", TxEffect::Begin),
        ("begin read only, read write", TxEffect::Begin),
        (
            "start transaction isolation level serializable",
            TxEffect::Begin,
        ),
        ("start", TxEffect::Other),
        ("commit work", TxEffect::Commit),
        ("commit and no chain", TxEffect::Commit),
        ("COMMIT AND CHAIN", TxEffect::Begin),
        ("rollback and chain", TxEffect::Begin),
        ("rollback transaction", TxEffect::Commit),
        ("rollback transaction to savepoint s", TxEffect::Other),
        ("commit prepared 'x'", TxEffect::Other),
        ("prepare transaction 'x'", TxEffect::Commit),
        ("savepoint s", TxEffect::Other),
        ("release savepoint s", TxEffect::Other),
        ("set transaction read only", TxEffect::Other),
        ("begin read only; select 1", TxEffect::BeginReadOnly),
        ("select 1; begin", TxEffect::Other),
        ("; ; commit", TxEffect::Commit),
        ("/* c */ -- d\n END", TxEffect::Commit),
        ("do $$ begin commit; end $$", TxEffect::Other),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).tx, want, "{sql}");
    }
}

#[test]
fn pin_table() {
    let cases = [
        ("set role app", Some(PinReason::Set)),
        ("set session authorization app", Some(PinReason::Set)),
        (
            "set session characteristics as transaction read only",
            Some(PinReason::Set),
        ),
        ("SET statement_timeout TO DEFAULT", Some(PinReason::Set)),
        ("reset search_path", Some(PinReason::Set)),
        (
            "select pg_catalog.set_config('a.b', 'c', true)",
            Some(PinReason::Set),
        ),
        (
            "select pg_catalog.pg_advisory_lock_shared(1)",
            Some(PinReason::AdvisoryLock),
        ),
        (
            "select PG_TRY_ADVISORY_LOCK(1)",
            Some(PinReason::AdvisoryLock),
        ),
        ("select pg_advisory_unlock(1)", None),
        ("select pg_try_advisory_xact_lock(1)", None),
        (
            "create global temporary table t (a int)",
            Some(PinReason::TempObject),
        ),
        (
            "create or replace temp view v as select 1",
            Some(PinReason::TempObject),
        ),
        ("create temp sequence s", Some(PinReason::TempObject)),
        (
            "create table pg_temp.t (a int)",
            Some(PinReason::TempObject),
        ),
        (
            "create function pg_temp.f() returns int as 'select 1' language sql",
            Some(PinReason::TempObject),
        ),
        ("create table t as select * from temp", None),
        (
            "select * into temporary t2 from t",
            Some(PinReason::TempObject),
        ),
        ("select * into t2 from t", None),
        ("insert into temp values (1)", None),
        (
            "explain analyze create temp table t as select 1",
            Some(PinReason::TempObject),
        ),
        (
            "declare c binary insensitive no scroll cursor with hold for select 1",
            Some(PinReason::HoldCursor),
        ),
        ("declare c cursor without hold for select 1", None),
        (
            "declare c cursor for with hold as (select 1) select * from hold",
            None,
        ),
        ("PREPARE p(int) AS SELECT $1", Some(PinReason::SqlPrepare)),
        ("deallocate all", None),
        ("load '$libdir/plugins/x'", Some(PinReason::Load)),
        ("discard temp", None),
        ("unlisten *", None),
        ("notify c", None),
        ("select 'set x = 1'", None),
        ("-- set x = 1\nselect 1", None),
        ("listen a; set x = 1", Some(PinReason::Listen)),
        (
            "select 1; select pg_advisory_lock(1); listen a",
            Some(PinReason::AdvisoryLock),
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).pin, want, "{sql}");
    }
    let labels: Vec<&str> = [
        PinReason::Set,
        PinReason::Listen,
        PinReason::AdvisoryLock,
        PinReason::TempObject,
        PinReason::HoldCursor,
        PinReason::SqlPrepare,
        PinReason::Load,
    ]
    .into_iter()
    .map(PinReason::as_str)
    .collect();
    assert_eq!(
        labels,
        [
            "set",
            "listen",
            "advisory_lock",
            "temp_object",
            "hold_cursor",
            "sql_prepare",
            "load"
        ]
    );
}

#[test]
fn statement_splitting() {
    let cases = [
        ("select 1", 1),
        ("select 1;", 1),
        (";;;", 0),
        ("select 1;select 2;;select 3", 3),
        ("select ';' as \"a;b\" -- ;\n; /* ; */ select 2", 2),
        ("select (1; 2)", 1),
        ("select 1); select 2", 2),
        (
            "create function f() returns int language sql begin atomic select 1; select case when true then 2 end; end; select 3",
            2,
        ),
        ("create procedure p() begin atomic; end", 1),
        ("begin; select 1; end; commit", 4),
    ];
    for (sql, want) in cases {
        assert_eq!(analyze(sql).statements, want, "{sql}");
    }
    let atomic = analyze("create function f() returns int language sql begin atomic select 1; end");
    assert_eq!((atomic.tx, atomic.read_only), (TxEffect::Other, false));
}

#[test]
fn pure_list_is_sorted_lowercase_and_excludes_side_effects() {
    assert!(PURE.windows(2).all(|w| w[0] < w[1]));
    assert!(PURE
        .iter()
        .all(|f| !f.bytes().any(|b| b.is_ascii_uppercase())));
    for f in [
        "nextval",
        "setval",
        "set_config",
        "pg_notify",
        "pg_sleep",
        "txid_current",
        "pg_current_xact_id",
        "pg_reload_conf",
        "pg_switch_wal",
        "pg_cancel_backend",
        "pg_terminate_backend",
        "lo_unlink",
        "dblink",
    ] {
        assert!(PURE.binary_search(&f).is_err(), "{f}");
        assert!(!analyze(&format!("select {f}(1)")).read_only, "{f}");
    }
}

#[test]
fn adversarial_inputs_stay_bounded() {
    // Deep nesting and long runs: no recursion, linear time.
    let parens = "(".repeat(100_000) + "select 1" + &")".repeat(100_000);
    let a = analyze(&parens);
    assert_eq!((a.statements, a.read_only), (1, true));
    assert_eq!(mask_literals(&parens).len(), parens.len());
    let calls = "select ".to_string() + &"lower(".repeat(50_000) + "'x'" + &")".repeat(50_000);
    assert!(analyze(&calls).read_only);
    let commas = "select a".to_string() + &", f(a, b, c)".repeat(20_000);
    assert!(!analyze(&commas).read_only);
    let semis = ";".repeat(200_000);
    assert_eq!(analyze(&semis).statements, 0);
    let many = "select 1;".repeat(100_000);
    assert_eq!(analyze(&many).statements, 100_000);
    // 15,000 empty dollar-quoted strings, then one left open.
    let dollars = "$a$".repeat(30_001);
    assert_eq!(mask_literals(&dollars), "?".repeat(15_001));
    // A long tag never closed: near-misses cost their own length once, not a rescan each.
    let tag = "$".to_string() + &"t".repeat(50_000) + "$";
    let near_miss = "$".to_string() + &"t".repeat(49_999) + "x";
    let slow = tag + &"$".repeat(50_000) + &near_miss.repeat(2);
    assert!(mask_literals(&slow) == "?");
    let long_name = "select ".to_string() + &"x".repeat(10_000) + "(1)";
    assert!(!analyze(&long_name).read_only);
    // Every prefix of a tricky query (cut inside every kind of token) is handled.
    let tricky = "select E'a\\'b', U&'x', $q$;$q$, \"i\"\"d\", 1.5e-3, $1 /* c /* n */ */ -- z\n; set x = 'y'";
    for end in 0..=tricky.len() {
        if let Some(prefix) = tricky.get(..end) {
            let _ = analyze(prefix);
            assert!(mask_literals(prefix).len() <= prefix.len());
        }
    }
    // Random bytes (valid UTF-8 after lossy conversion, as the gateway passes them).
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5_000 {
        let bytes: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
        let s = String::from_utf8_lossy(&bytes);
        let _ = analyze(&s);
        assert!(mask_literals(&s).len() <= s.len());
    }
}

#[test]
fn masking_into_a_buffer_appends_what_mask_literals_returns() {
    for input in [
        "select 1",
        "  -- leading comment\n select 'x' ,  2",
        "/* only a comment */",
        "select \"a\tb\", 'it''s' from t",
        "",
    ] {
        let mut out = String::from("prefix:");
        mask_literals_into(input, Dialect::STANDARD, &mut out);
        assert_eq!(out, format!("prefix:{}", mask_literals(input)), "{input:?}");
    }
}

#[test]
fn may_pin_is_false_only_when_nothing_pins() {
    let pinning = [
        "set role app",
        "SET statement_timeout TO DEFAULT",
        "reset search_path",
        "select pg_catalog.set_config('a.b', 'c', false)",
        "select PG_TRY_ADVISORY_LOCK(1)",
        "listen chan",
        "load 'auto_explain'",
        "create temp table t (a int)",
        "create table pg_temp.t (a int)",
        "select * into temporary t2 from t",
        "declare c cursor with hold for select 1",
        "prepare p as select 1",
    ];
    for p in pinning {
        for prefix in [
            "",
            "select 1; ",
            "  \n\t",
            "begin;\n",
            "/* note */ ",
            "-- note\n",
        ] {
            let sql = format!("{prefix}{p}");
            assert!(analyze(&sql).pin.is_some(), "{sql}");
            assert!(may_pin(sql.as_bytes()), "{sql}");
        }
    }
    // The statements of ordinary workloads skip the analysis.
    let plain = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
        "UPDATE pgbench_accounts SET abalance = abalance + -31 WHERE aid = 7;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
        "select * from t order by id offset 5 limit 10",
        "BEGIN",
        "END",
    ];
    for p in plain {
        assert!(analyze(p).pin.is_none(), "{p}");
        assert!(!may_pin(p.as_bytes()), "{p}");
    }
    // Random token soup: whenever the analyzer pins, the scan must have said so.
    let words = [
        "select",
        "set",
        "SET",
        "reset",
        "update",
        "t",
        "x",
        "=",
        "1",
        ";",
        "--c\n",
        "/*c*/",
        "listen",
        "pg_temp",
        ".",
        "(",
        ")",
        "create",
        "temp",
        "TEMPORARY",
        "table",
        "declare",
        "c",
        "cursor",
        "with",
        "hold",
        "for",
        "prepare",
        "load",
        "'s'",
        "set_config",
        "pg_advisory_lock",
        "U&\"\\0073et\"",
        "into",
        "offset",
        "\"set\"",
        "$$;set$$",
        "local",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..50_000 {
        let mut sql = String::new();
        for _ in 0..rng.usize(1..10) {
            sql.push_str(words[rng.usize(..words.len())]);
            if rng.bool() {
                sql.push(' ');
            }
        }
        if analyze(&sql).pin.is_some() {
            assert!(may_pin(sql.as_bytes()), "{sql:?}");
        }
    }
}

/// The pair table only skips positions where the exact rule cannot match: on random text
/// dense in the patterns' letters, `may_pin` agrees with the rule tried at every position.
#[test]
fn may_pin_skips_only_positions_where_no_pattern_starts() {
    let alphabet = b"sSeEtTlLiIoOaAdDnNhHpPrRmMuUvVyY_&-/*;\"$ \n\t\r(),'\x06\x0d\x13";
    let mut rng = fastrand::Rng::with_seed(23);
    for _ in 0..100_000 {
        let len = rng.usize(0..24);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let exact = (0..text.len()).any(|i| super::pin_word_at(&text, i));
        assert_eq!(
            may_pin(&text),
            exact,
            "{:?}",
            String::from_utf8_lossy(&text)
        );
    }
}

// ---- MySQL/MariaDB ----

fn my_mask(sql: &str) -> String {
    mask_literals_with(sql, Dialect::MYSQL)
}

fn my(sql: &str) -> Analysis {
    analyze_with(sql, Syntax::MYSQL)
}

#[test]
fn mysql_masking() {
    let cases = [
        (
            "SELECT * FROM t WHERE a = 'it\\'s' AND b = \"pw\\\"x\" # note 'secret'",
            "SELECT * FROM t WHERE a = ? AND b = ?",
        ),
        (
            "SELECT 'a''b', \"c\"\"d\", X'0F', N'n', 0x1F, 1.5e3",
            "SELECT ?, ?, ?, ?, ?, ?",
        ),
        // `--` needs a space to start a comment: `1--1` is arithmetic.
        ("SELECT 1--1", "SELECT ?--?"),
        ("SELECT 1 -- 'secret'\n, 2", "SELECT ? , ?"),
        ("SELECT 1 --\t'secret'", "SELECT ?"),
        (
            "SELECT `a``b`, `select` FROM `t`",
            "SELECT `a``b`, `select` FROM `t`",
        ),
        ("SELECT '#x', 1", "SELECT ?, ?"),
        // Executable comments are SQL: their markers stay, their literals are masked.
        (
            "SELECT /*!40001 SQL_NO_CACHE */ * FROM t WHERE x = 'v'",
            "SELECT /*!40001 SQL_NO_CACHE */ * FROM t WHERE x = ?",
        ),
        ("/*M!100100 SET @x = 'pw' */", "/*M!100100 SET @x = ? */"),
        ("/*!SET @x='pw'*/", "/*!SET @x=?*/"),
        // Comments do not nest: the first `*/` ends this one.
        ("SELECT 1 /* /* */ , 'x'", "SELECT ? , ?"),
        (
            "SELECT $a, a$b, e'x', u&'y' FROM t",
            "SELECT $a, a$b, e?, u&? FROM t",
        ),
        (
            "SELECT @x := 'pw', @`v`, @@sql_mode",
            "SELECT @x := ?, @`v`, @@sql_mode",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(my_mask(input), want, "{input:?}");
    }
    // The same text read as PostgreSQL is another thing: `"..."` is a name, `--` always a
    // comment, `#` an operator.
    assert_eq!(mask_literals("SELECT \"c\", 1--1"), "SELECT \"c\", ?");
    // NO_BACKSLASH_ESCAPES: `\` is an ordinary character.
    let nbe = MysqlDialect {
        backslash_escapes: false,
        ansi_quotes: false,
    };
    assert_eq!(mask_literals_with("SELECT 'a\\', 'pw'", nbe), "SELECT ?, ?");
    assert_eq!(my_mask("SELECT 'a\\', 'pw'"), "SELECT ?pw?");
    // ANSI_QUOTES: `"..."` is an identifier.
    let ansi = MysqlDialect {
        backslash_escapes: true,
        ansi_quotes: true,
    };
    assert_eq!(mask_literals_with("SELECT \"c\"", ansi), "SELECT \"c\"");
    assert_eq!(Syntax::from(Dialect::MYSQL), Syntax::MYSQL);
    assert_eq!(Syntax::default(), Syntax::from(Dialect::STANDARD));
}

#[test]
fn mysql_read_only_and_statements() {
    let cases = [
        ("SELECT NOW(), CONCAT(a, 'x'), IFNULL(b, 0) FROM t", true),
        ("SELECT COUNT(*) FROM t WHERE MATCH(a) AGAINST('x')", true),
        ("SHOW TABLES", true),
        ("DESCRIBE t", true),
        ("DESC t", true),
        ("SELECT SLEEP(1)", false),
        ("SELECT db.f(1)", false),
        ("SELECT * FROM t LOCK IN SHARE MODE", false),
        ("SELECT * FROM t FOR UPDATE", false),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", false),
        ("SELECT @x := 1", false),
        ("SELECT 1 # ; DELETE FROM t", true),
        ("SELECT 1 -- ; DELETE FROM t", true),
        ("SELECT 1 /* ; */", true),
        // Non-nesting comments: the DELETE is a statement, not inside a comment.
        ("SELECT 1 /* /* */ ; DELETE FROM t /* */", false),
        ("/*!40101 DELETE FROM t */", false),
        ("SELECT 1 /*!; DELETE FROM t */", false),
        ("INSERT INTO t VALUES (1)", false),
        ("DO 1", false),
    ];
    for (sql, want) in cases {
        assert_eq!(my(sql).read_only, want, "{sql:?}");
    }
    assert_eq!(my("SELECT 1 # ; DELETE FROM t").statements, 1);
    assert_eq!(my("SELECT 1 /* /* */ ; DELETE FROM t /* */").statements, 2);
    // As PostgreSQL (nesting comments), the same text is one read-only statement.
    assert!(analyze("SELECT 1 /* /* */ ; DELETE FROM t /* */").read_only);
}

#[test]
fn mysql_transaction_effects() {
    let cases = [
        ("BEGIN", TxEffect::Begin),
        ("BEGIN WORK", TxEffect::Begin),
        ("START TRANSACTION", TxEffect::Begin),
        ("START TRANSACTION READ ONLY", TxEffect::BeginReadOnly),
        (
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            TxEffect::BeginReadOnly,
        ),
        ("BEGIN NOT ATOMIC SELECT 1; END", TxEffect::Other),
        ("COMMIT", TxEffect::Commit),
        ("COMMIT WORK AND NO CHAIN", TxEffect::Commit),
        ("COMMIT AND CHAIN", TxEffect::Begin),
        ("ROLLBACK", TxEffect::Commit),
        ("ROLLBACK WORK TO SAVEPOINT a", TxEffect::Other),
        ("ROLLBACK TO a", TxEffect::Other),
        ("XA START 'x'", TxEffect::Begin),
        ("XA END 'x'", TxEffect::Other),
        ("XA COMMIT 'x'", TxEffect::Commit),
        ("XA ROLLBACK 'x'", TxEffect::Commit),
        ("END", TxEffect::Other),
    ];
    for (sql, want) in cases {
        assert_eq!(my(sql).tx, want, "{sql:?}");
    }
}

#[test]
fn mysql_pins() {
    use PinReason::*;
    let cases = [
        ("SET @x = 1", Some(UserVariable)),
        ("set @`x` = 1", Some(UserVariable)),
        ("SET @@session.sql_mode = ''", Some(Set)),
        ("SET SESSION wait_timeout = 10", Some(Set)),
        ("SET LOCAL wait_timeout = 10", Some(Set)),
        ("SET NAMES utf8mb4", Some(Set)),
        ("SET autocommit = 0", Some(Set)),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Some(Set)),
        ("SET STATEMENT max_statement_time=1 FOR SELECT 1", None),
        ("SELECT @x := 1", Some(UserVariable)),
        ("SELECT a INTO @x FROM t", Some(UserVariable)),
        ("SELECT a FROM t INTO @x, @y", Some(UserVariable)),
        ("SELECT @x, @@version", None),
        ("SELECT * FROM t WHERE a=@x", None),
        ("LOCK TABLES t WRITE", Some(LockTables)),
        ("UNLOCK TABLES", None),
        ("HANDLER t OPEN", Some(Handler)),
        ("FLUSH TABLES WITH READ LOCK", Some(LockTables)),
        ("FLUSH TABLES", None),
        ("SELECT GET_LOCK('l', 0)", Some(AdvisoryLock)),
        ("SELECT RELEASE_LOCK('l')", None),
        ("CREATE TEMPORARY TABLE t (a int)", Some(TempObject)),
        (
            "CREATE OR REPLACE TEMPORARY TABLE t (a int)",
            Some(TempObject),
        ),
        ("CREATE TABLE t (a int)", None),
        ("PREPARE s FROM 'SELECT 1'", Some(SqlPrepare)),
        ("EXECUTE s USING @a", None),
        ("USE shop", Some(Set)),
        ("LOAD DATA LOCAL INFILE 'x' INTO TABLE t", None),
        ("UPDATE t SET a = 1", None),
        ("/*!50700 SET @x = 1 */", Some(UserVariable)),
        ("SELECT 1; SET NAMES latin1", Some(Set)),
        ("SELECT 1 # SET NAMES latin1", None),
    ];
    for (sql, want) in cases {
        assert_eq!(my(sql).pin, want, "{sql:?}");
        if want.is_some() {
            assert!(may_pin_mysql(sql.as_bytes()), "{sql:?}");
        }
    }
    assert_eq!(UserVariable.as_str(), "user_variable");
    assert_eq!(LockTables.as_str(), "lock_tables");
    assert_eq!(Handler.as_str(), "handler");
    for sql in [
        "SELECT a FROM t WHERE b = 1",
        "INSERT INTO t VALUES (1)",
        "COMMIT",
    ] {
        assert!(!may_pin_mysql(sql.as_bytes()), "{sql:?}");
    }
}

#[test]
fn mysql_pure_list_is_sorted_lowercase() {
    assert!(MYSQL_PURE.windows(2).all(|w| w[0] < w[1]));
    assert!(MYSQL_PURE
        .iter()
        .all(|f| !f.bytes().any(|b| b.is_ascii_uppercase())));
    for f in [
        "sleep",
        "get_lock",
        "last_insert_id",
        "benchmark",
        "load_file",
    ] {
        assert!(!MYSQL_PURE.contains(&f), "{f}");
    }
}

#[test]
fn mysql_hostile_input_never_panics() {
    let mut rng = fastrand::Rng::with_seed(13);
    let alphabet = "'\"`#$;()-*/!M\\@:=eEuU&xX0123456789 .\n\t\u{e9}select";
    let chars: Vec<char> = alphabet.chars().collect();
    for _ in 0..20_000 {
        let n = rng.usize(0..40);
        let s: String = (0..n).map(|_| chars[rng.usize(0..chars.len())]).collect();
        for syntax in [
            Syntax::MYSQL,
            Syntax::Mysql(MysqlDialect {
                backslash_escapes: false,
                ansi_quotes: true,
            }),
        ] {
            let a = analyze_with(&s, syntax);
            if a.pin.is_some() {
                assert!(may_pin_mysql(s.as_bytes()), "{s:?}");
            }
            let m = mask_literals_with(&s, syntax);
            assert!(m.len() <= s.len(), "{s:?} -> {m:?}");
        }
    }
    let comments = "/* ".repeat(50_000);
    assert_eq!(my(&comments).statements, 0);
    let bangs = "/*!".repeat(50_000) + &"*/".repeat(50_000);
    assert!(my_mask(&bangs).len() <= bangs.len());
}

#[test]
fn public_tokens_cover_the_text_in_order() {
    let sql = "SELECT 'a''b', $1 /* c */ FROM t -- x\n;";
    let toks: Vec<SqlToken> = tokens(sql, Dialect::STANDARD).collect();
    let mut at = 0;
    for t in &toks {
        assert_eq!(t.start, at, "{toks:?}");
        assert!(t.end > t.start);
        at = t.end;
    }
    assert_eq!(at, sql.len());
    let kinds: Vec<SqlTokenKind> = toks
        .iter()
        .filter(|t| t.kind != SqlTokenKind::Space)
        .map(|t| t.kind)
        .collect();
    use SqlTokenKind::*;
    assert_eq!(
        kinds,
        [
            Word,
            String,
            Punct(b','),
            Param,
            Comment,
            Word,
            Word,
            Comment,
            Punct(b';')
        ]
    );
    let my: Vec<SqlTokenKind> = tokens("a # c\n`b`", Syntax::MYSQL)
        .map(|t| t.kind)
        .collect();
    assert_eq!(my, [Word, Space, Comment, Space, QuotedIdent]);
}
