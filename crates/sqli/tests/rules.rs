//! Each rule on hand-written statements: what must be found (with the rule names a user sees
//! in the finding) and what must not.

use sumun_sqli::{
    inspect, inspect_param, inspect_with, Dialect, Options, Place, Rule, Severity, Syntax,
};

fn rules(sql: &str, dialect: Dialect) -> Vec<&'static str> {
    match inspect(sql, dialect).finding {
        Some(f) => f.rules.iter().map(Rule::name).collect(),
        None => Vec::new(),
    }
}

#[track_caller]
fn found(sql: &str, dialect: Dialect, place: Place, want: &[&str]) {
    let v = inspect(sql, dialect);
    let f = v
        .finding
        .unwrap_or_else(|| panic!("no finding for {sql:?}"));
    assert_eq!(f.place, place, "{sql:?}: {f:?}");
    let got: Vec<&str> = f.rules.iter().map(Rule::name).collect();
    for w in want {
        assert!(got.contains(w), "{sql:?}: want {w}, got {got:?}");
    }
    assert!(f.score >= sumun_sqli::THRESHOLD);
    assert_eq!(f.technique(), "T1190");
    let sev = if place == Place::Statement {
        Severity::High
    } else {
        Severity::Medium
    };
    assert_eq!(f.severity, sev, "{sql:?}");
}

#[track_caller]
fn clean(sql: &str, dialect: Dialect) {
    let v = inspect(sql, dialect);
    assert!(v.finding.is_none(), "{sql:?}: {:?}", v.finding);
}

use Dialect::{Mysql, Postgres};

#[test]
fn tautologies_that_became_sql() {
    found(
        "SELECT * FROM users WHERE name = '' OR '1'='1'",
        Postgres,
        Place::Statement,
        &["tautology"],
    );
    found(
        "SELECT * FROM users WHERE id = 1 OR 1=1",
        Postgres,
        Place::Statement,
        &["tautology"],
    );
    found(
        "SELECT * FROM users WHERE id = '-4021' OR NOT 8113=8114-- fHjk'",
        Mysql,
        Place::Statement,
        &["tautology", "comment_truncation"],
    );
    found(
        "SELECT * FROM t WHERE a = 'x' OR 1 -- '",
        Mysql,
        Place::Statement,
        &["tautology"],
    );
    found(
        "SELECT * FROM t WHERE a = 'x' OR 'a' LIKE 'a'",
        Postgres,
        Place::Statement,
        &["tautology"],
    );
}

#[test]
fn constant_conditions_and_probes() {
    found(
        "SELECT name FROM users WHERE id = '1' AND 5847=5847 AND 'tWxy'='tWxy'",
        Postgres,
        Place::Statement,
        &["constant_condition"],
    );
    found(
        "SELECT name FROM users WHERE id = 1 AND ELT(3712=3712,4127)",
        Mysql,
        Place::Statement,
        &["constant_condition"],
    );
    found(
        "SELECT name FROM users WHERE id = 1 AND 3712=(SELECT COUNT(*) FROM GENERATE_SERIES(1,5000000))-- x'",
        Postgres,
        Place::Statement,
        &["subquery_probe", "comment_truncation"],
    );
}

#[test]
fn delays_errors_files() {
    found(
        "SELECT * FROM t WHERE id = '1';SELECT PG_SLEEP(5)-- abc'",
        Postgres,
        Place::Statement,
        &["time_delay", "stacked_statement", "comment_truncation"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 AND SLEEP(5)",
        Mysql,
        Place::Statement,
        &["time_delay"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 AND BENCHMARK(5000000,MD5(0x41))",
        Mysql,
        Place::Statement,
        &["time_delay"],
    );
    found(
        "SELECT 1; WAITFOR DELAY '0:0:5'",
        Mysql,
        Place::Statement,
        &["time_delay"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 AND 1=(SELECT DBMS_PIPE.RECEIVE_MESSAGE('a',5) FROM DUAL)",
        Postgres,
        Place::Statement,
        &["time_delay"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 AND EXTRACTVALUE(1,CONCAT(0x5c,(SELECT version())))",
        Mysql,
        Place::Statement,
        &["error_function"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 AND EXP(~(SELECT * FROM (SELECT USER())x))",
        Mysql,
        Place::Statement,
        &["error_function"],
    );
    found(
        "SELECT * FROM t WHERE id = 1 UNION SELECT LOAD_FILE('/etc/passwd')",
        Mysql,
        Place::Statement,
        &["file_access", "union_select"],
    );
    found(
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        Mysql,
        Place::Statement,
        &["file_access"],
    );
    found(
        "LOAD DATA INFILE '/etc/passwd' INTO TABLE t",
        Mysql,
        Place::Statement,
        &["file_access"],
    );
    // LOCAL reads the client's own file.
    clean(
        "LOAD DATA LOCAL INFILE '/tmp/import.csv' INTO TABLE staging",
        Mysql,
    );
    found(
        "COPY t FROM PROGRAM 'id'",
        Postgres,
        Place::Statement,
        &["file_access"],
    );
}

#[test]
fn unions_and_catalogs() {
    found(
        "SELECT name FROM users WHERE id = '1' UNION ALL SELECT NULL,NULL,NULL-- kQzx'",
        Postgres,
        Place::Statement,
        &["union_select", "comment_truncation"],
    );
    found(
        "SELECT name FROM users WHERE id = '1' UNION SELECT table_name FROM information_schema.tables-- '",
        Mysql,
        Place::Statement,
        &["union_select", "catalog_enumeration"],
    );
    found(
        "SELECT usename, passwd FROM pg_shadow",
        Postgres,
        Place::Statement,
        &["credential_catalog"],
    );
    found(
        "SELECT user, authentication_string FROM mysql.user",
        Mysql,
        Place::Statement,
        &["credential_catalog"],
    );
    // An administrator may.
    let admin = Options {
        app_user: false,
        ..Options::new(Postgres)
    };
    assert!(inspect_with("SELECT usename, passwd FROM pg_shadow", &admin).is_clean());
    // Catalog queries of ORMs and tools are not findings, even for application users.
    clean(
        "SELECT t.oid, t.typname FROM pg_type t WHERE t.typname IN ('int2', 'int4')",
        Postgres,
    );
    clean(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        Postgres,
    );
    clean(
        "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public')",
        Postgres,
    );
    // A catalog read alone inside a subquery of an application table is only a weak signal.
    clean(
        "SELECT * FROM users WHERE EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'users')",
        Postgres,
    );
}

#[test]
fn comment_truncation_that_cuts_the_statement() {
    found(
        "SELECT * FROM users WHERE name = 'admin'-- ' AND password = 'x'",
        Postgres,
        Place::Statement,
        &["comment_truncation"],
    );
    found(
        "SELECT * FROM users WHERE name = 'admin'#' AND password = 'x'",
        Mysql,
        Place::Statement,
        &["comment_truncation"],
    );
    // An ordinary trailing comment is not truncation.
    clean("SELECT * FROM users WHERE id = 1 -- don't cache", Postgres);
    clean("SELECT * FROM users WHERE id = 1 -- see 'docs'", Postgres);
}

#[test]
fn attempts_caught_in_literals() {
    found(
        "SELECT * FROM users WHERE name = '1'' OR ''1''=''1'",
        Postgres,
        Place::Literal,
        &["tautology"],
    );
    found(
        r"SELECT * FROM users WHERE name = '1\' AND SLEEP(5)#'",
        Mysql,
        Place::Literal,
        &["time_delay"],
    );
    found(
        "SELECT * FROM users WHERE name = '1 UNION ALL SELECT NULL,NULL-- x'",
        Postgres,
        Place::Literal,
        &["union_select"],
    );
    found(
        "SELECT * FROM users WHERE name = E'x\\'; DROP TABLE users; --'",
        Postgres,
        Place::Literal,
        &["stacked_statement", "comment_truncation"],
    );
    found(
        "SELECT * FROM users WHERE name = 'admin''-- '",
        Postgres,
        Place::Literal,
        &["comment_truncation"],
    );
    found(
        "SELECT * FROM t /* ' OR 1=1 -- */ WHERE id = 1",
        Postgres,
        Place::Comment,
        &["tautology"],
    );
    // Prose with quotes, dashes and SQL words is not an attempt.
    for s in [
        "INSERT INTO people (name) VALUES ('O''Brien')",
        "INSERT INTO notes (body) VALUES ('Tom and Jerry; select the best -- really')",
        "INSERT INTO notes (body) VALUES ('it''s 1 or 2 = 3 apples')",
        "INSERT INTO notes (body) VALUES ('He said ''or else'' and left')",
        "INSERT INTO notes (body) VALUES ('rock ''n'' roll (live) = great')",
        "INSERT INTO notes (body) VALUES ('{\"a\": \"b''s\", \"n\": [1, 2]}')",
        "INSERT INTO notes (body) VALUES ('the union select committee met')",
    ] {
        clean(s, Postgres);
    }
}

#[test]
fn text_quoting_a_whole_injection_is_an_attempt() {
    // A known limit: prose that quotes a complete injection (a security blog post) reads
    // exactly like the attempt itself, and is reported as one (medium, in a literal).
    found(
        "INSERT INTO articles (body) VALUES ('never paste input like '' OR ''1''=''1 into SQL')",
        Postgres,
        Place::Literal,
        &["constant_condition"],
    );
}

#[test]
fn bound_parameters() {
    let opts = Options::new(Postgres);
    let f = inspect_param("1' OR '1'='1", &opts)
        .finding
        .expect("finding");
    assert_eq!(f.place, Place::Parameter);
    assert_eq!(f.severity, Severity::Medium);
    assert!(f.rules.contains(Rule::Tautology));
    assert!(inspect_param("O'Brien", &opts).is_clean());
    assert!(inspect_param("1 AND SLEEP(5)", &Options::new(Mysql))
        .finding
        .is_some());
}

#[test]
fn query_builder_idioms_are_clean() {
    for s in [
        "SELECT * FROM t WHERE 1=1 AND a = $1",
        "SELECT * FROM t WHERE 1=0",
        "SELECT * FROM t WHERE a = 1 OR 1 != 1",
        "SELECT * FROM t WHERE (1 = 1) AND b IN ($1, $2)",
        "SELECT * FROM a JOIN b ON 1=1",
        "SELECT * FROM t WHERE 'admin' = ANY(roles)",
        "SELECT * FROM t WHERE x BETWEEN 1 AND 10",
        "BEGIN; UPDATE a SET x = 1 WHERE id = 2; UPDATE b SET y = 'z' WHERE id = 3; COMMIT;",
    ] {
        clean(s, Postgres);
    }
    clean("SELECT * FROM t WHERE id=? AND name=?", Mysql);
}

#[test]
fn evidence_masks_literals_and_user_words() {
    let f = inspect(
        "SELECT * FROM users WHERE name = 'hunter2' OR 'secret'='secret'",
        Postgres,
    )
    .finding
    .expect("finding");
    assert!(
        !f.evidence.contains("hunter2") && !f.evidence.contains("secret"),
        "{}",
        f.evidence
    );
    assert!(f.evidence.contains("OR ?=?"), "{}", f.evidence);
    let f = inspect(
        "SELECT * FROM users WHERE name = 'pw-s3cr3t'' OR ''x''=''x'",
        Postgres,
    )
    .finding
    .expect("finding");
    assert_eq!(f.place, Place::Literal);
    assert!(
        !f.evidence.contains("s3cr3t") && !f.evidence.contains("pw"),
        "{}",
        f.evidence
    );
    assert!(f.evidence.len() <= 130);
}

#[test]
fn long_statements_are_cut_and_say_so() {
    let mut sql = String::from("SELECT * FROM t WHERE a IN (");
    while sql.len() < 100_000 {
        sql.push_str("1, ");
    }
    sql.push_str("1) OR 1=1");
    let v = inspect(&sql, Postgres);
    assert!(v.truncated);
    assert_eq!(v.inspected, sumun_sqli::DEFAULT_MAX_BYTES);
    assert!(v.is_clean(), "the tautology lies past the inspected bytes");
    let opts = Options {
        max_bytes: 200_000,
        ..Options::new(Postgres)
    };
    let v = inspect_with(&sql, &opts);
    assert!(!v.truncated && v.finding.is_some());
    // A cut inside a multi-byte character backs off to the boundary.
    let v = inspect_with(
        "é",
        &Options {
            max_bytes: 1,
            ..Options::new(Postgres)
        },
    );
    assert_eq!((v.inspected, v.truncated), (0, true));
}

#[test]
fn server_settings_change_literal_boundaries() {
    // Without standard_conforming_strings, \' escapes, so this is one literal holding an
    // attempt, not a successful tautology.
    let old = Options {
        syntax: Syntax::Postgres(sumun_wire_dialect(false)),
        ..Options::new(Postgres)
    };
    let v = inspect_with("SELECT * FROM t WHERE a = 'x\\' OR 1=1 -- '", &old);
    assert_eq!(v.finding.expect("finding").place, Place::Literal);
    let v = inspect("SELECT * FROM t WHERE a = 'x\\' OR 1=1 -- '", Postgres);
    assert_eq!(v.finding.expect("finding").place, Place::Statement);
    assert_eq!(rules("SELECT 1", Postgres), Vec::<&str>::new());
}

fn sumun_wire_dialect(standard_conforming_strings: bool) -> sumun_wire::sql::Dialect {
    sumun_wire::sql::Dialect {
        standard_conforming_strings,
    }
}

#[test]
fn evidence_reads_as_documented() {
    let show = |sql: &str, d: Dialect| {
        let f = inspect(sql, d).finding.expect("finding");
        format!(
            "{} {} {} {:?}",
            f.severity.as_str(),
            f.place.as_str(),
            f.rules,
            f.evidence
        )
    };
    assert_eq!(
        show(
            "SELECT * FROM users WHERE id = '-4021' OR NOT 8113=8114-- fHjk'",
            Mysql
        ),
        "high statement tautology,comment_truncation \"… OR NOT ?=?--\""
    );
    assert_eq!(
        show(
            "SELECT * FROM users WHERE name = 'x'' UNION ALL SELECT NULL,NULL-- q'",
            Postgres
        ),
        "medium literal union_select,comment_truncation,union_after_value \"?' UNION ALL SELECT NULL,NULL--\""
    );
}
