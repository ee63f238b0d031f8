//! Corpora for the detector's tests and benchmark, built at run time from installed tools:
//! sqlmap's payload and boundary files (GPL: read from the Debian `sqlmap` package, never
//! copied into this repository), pgbench's built-in scripts (`pgbench --show-script`),
//! sysbench's OLTP statement templates, and our own file of ORM-shaped statements.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sumun_sqli::Dialect;

/// Where sqlmap's XML lives (`SQLMAP_XML` overrides).
pub fn sqlmap_dir() -> PathBuf {
    let dir = std::env::var_os("SQLMAP_XML")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sqlmap/data/xml"));
    assert!(
        dir.join("boundaries.xml").is_file() && dir.join("payloads").is_dir(),
        "sqlmap's payload files are not at {} (boundaries.xml, payloads/*.xml): install the \
         Debian package with `apt-get install -y sqlmap` (scripts/test does), or point \
         SQLMAP_XML at a sqlmap data/xml directory",
        dir.display()
    );
    dir
}

/// Contents of every `<tag>..</tag>` (or `<tag/>`) in `xml`, comments removed, entities decoded.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close, empty) = (format!("<{tag}>"), format!("</{tag}>"), format!("<{tag}/>"));
    let mut out = Vec::new();
    let mut rest = xml;
    loop {
        let a = rest.find(&open);
        let e = rest.find(&empty);
        match (a, e) {
            (Some(a), e) if e.is_none_or(|e| a < e) => {
                let body = &rest[a + open.len()..];
                let Some(end) = body.find(&close) else { break };
                out.push(&body[..end]);
                rest = &body[end + close.len()..];
            }
            (_, Some(e)) => {
                out.push("");
                rest = &rest[e + empty.len()..];
            }
            _ => break,
        }
    }
    out
}

fn child(xml: &str, tag: &str) -> String {
    elements(xml, tag)
        .first()
        .map(|s| unescape(s.trim()))
        .unwrap_or_default()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn strip_comments(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(a) = rest.find("<!--") {
        out.push_str(&rest[..a]);
        match rest[a..].find("-->") {
            Some(e) => rest = &rest[a + e + 3..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn nums(s: &str) -> Vec<u8> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

struct Test {
    title: String,
    stype: u8,
    clause: Vec<u8>,
    wheres: Vec<u8>,
    payload: String,
    comment: String,
    dbms: String,
}

struct Boundary {
    clause: Vec<u8>,
    wheres: Vec<u8>,
    ptype: u8,
    prefix: String,
    suffix: String,
}

/// One injected input, as sqlmap would send it for one test and one boundary.
#[derive(Debug, Clone)]
pub struct Case {
    pub title: String,
    /// sqlmap's technique: 1 boolean, 2 error, 3 inline, 4 stacked, 5 time, 6 union.
    pub stype: u8,
    /// sqlmap's parameter type: 1 unquoted number, 2 `'..'`, 3 `LIKE '..'`, 4 `".."`.
    pub ptype: u8,
    pub dialect: Dialect,
    /// Closing parentheses the boundary's prefix expects around the condition.
    pub parens: usize,
    pub input: String,
}

/// A small deterministic generator for sqlmap's random placeholders.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn num(&mut self) -> u64 {
        1000 + self.next() % 9000
    }
    pub fn word(&mut self, n: usize) -> String {
        (0..n)
            .map(|i| {
                let r = self.next();
                let base = if i % 2 == 0 { b'A' } else { b'a' };
                char::from(base + (r % 26) as u8)
            })
            .collect()
    }
}

fn fill(s: &str, rng: &mut Rng) -> String {
    let mut s = s.to_string();
    let delim = |rng: &mut Rng| format!("q{}q", rng.word(3).to_lowercase());
    let start = delim(rng);
    let stop = delim(rng);
    for (k, v) in [
        ("[GENERIC_SQL_COMMENT]", format!("-- {}", rng.word(4))),
        ("[DELIMITER_START]", start),
        ("[DELIMITER_STOP]", stop),
        ("[SLEEPTIME]", "5".to_string()),
        ("[ORIGVALUE]", "1".to_string()),
        ("[ORIGINAL]", "id".to_string()),
    ] {
        s = s.replace(k, &v);
    }
    for k in [
        "[RANDNUM]",
        "[RANDNUM1]",
        "[RANDNUM2]",
        "[RANDNUM3]",
        "[RANDNUM4]",
        "[RANDNUM5]",
    ] {
        let n = rng.num().to_string();
        s = s.replace(k, &n);
    }
    for k in ["[RANDSTR]", "[RANDSTR1]", "[RANDSTR2]"] {
        let w = rng.word(4);
        s = s.replace(k, &w);
    }
    s
}

/// sqlmap's escaping of string constants once it knows the server: MySQL hex, PostgreSQL
/// `CHR()` chains.
fn escape_strings(payload: &str, dialect: Dialect) -> String {
    let mut out = String::new();
    let mut rest = payload;
    while let Some(a) = rest.find('\'') {
        let Some(len) = rest[a + 1..].find('\'') else {
            break;
        };
        out.push_str(&rest[..a]);
        let body = &rest[a + 1..a + 1 + len];
        if body.is_empty() {
            out.push_str("''");
        } else if dialect == Dialect::Mysql {
            out.push_str("0x");
            for b in body.bytes() {
                out.push_str(&format!("{b:02x}"));
            }
        } else {
            let chrs: Vec<String> = body.bytes().map(|b| format!("CHR({b})")).collect();
            out.push_str(&format!("({})", chrs.join("||")));
        }
        rest = &rest[a + 2 + len..];
    }
    out.push_str(rest);
    out
}

fn union_payloads(dialect: Dialect, rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    for cols in [1usize, 2, 3, 5, 8] {
        for fill_char in ["NULL".to_string(), rng.num().to_string()] {
            let mut items = vec![fill_char.clone(); cols];
            out.push(format!("UNION ALL SELECT {}", items.join(",")));
            // The exploitation step: one column carries delimited data.
            let probe = match dialect {
                Dialect::Mysql => {
                    format!("CONCAT('q{0}q','{1}','q{0}q')", rng.word(3), rng.word(8))
                }
                Dialect::Postgres => format!("'q{0}q'||'{1}'||'q{0}q'", rng.word(3), rng.word(8)),
            };
            items[cols / 2] = probe;
            out.push(format!("UNION ALL SELECT {}", items.join(",")));
        }
    }
    out
}

/// Every input sqlmap would try against a `WHERE` condition of a MySQL or PostgreSQL
/// application, from its installed payload and boundary files.
pub fn sqlmap_cases() -> Vec<Case> {
    let dir = sqlmap_dir();
    let read = |p: &Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let boundaries: Vec<Boundary> = elements(
        &strip_comments(&read(&dir.join("boundaries.xml"))),
        "boundary",
    )
    .into_iter()
    .map(|b| Boundary {
        clause: nums(&child(b, "clause")),
        wheres: nums(&child(b, "where")),
        ptype: child(b, "ptype").parse().unwrap_or(0),
        prefix: child(b, "prefix"),
        suffix: child(b, "suffix"),
    })
    .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("payloads"))
        .expect("sqlmap payloads directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let mut tests = Vec::new();
    for f in &files {
        for t in elements(&strip_comments(&read(f)), "test") {
            tests.push(Test {
                title: child(t, "title"),
                stype: child(t, "stype").parse().unwrap_or(0),
                clause: nums(&child(t, "clause")),
                wheres: nums(&child(t, "where")),
                payload: child(t, "payload"),
                comment: child(t, "comment"),
                dbms: child(t, "dbms"),
            });
        }
    }
    assert!(
        tests.len() > 100 && boundaries.len() > 20,
        "sqlmap files look empty"
    );
    let mut rng = Rng::new(0x5eed_5a1f);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in &tests {
        let dialects: &[Dialect] = match t.dbms.as_str() {
            "MySQL" => &[Dialect::Mysql],
            "PostgreSQL" => &[Dialect::Postgres],
            "" => &[Dialect::Mysql, Dialect::Postgres],
            _ => continue,
        };
        if t.comment.starts_with('%') || !(t.clause.contains(&0) || t.clause.contains(&1)) {
            continue;
        }
        for &dialect in dialects {
            let payloads: Vec<String> = if t.stype == 6 && t.payload.is_empty() {
                union_payloads(dialect, &mut rng)
            } else {
                let p = fill(&t.payload, &mut rng);
                let mut v = vec![p.clone()];
                if p.contains('\'') {
                    v.push(escape_strings(&p, dialect));
                }
                v
            };
            for b in &boundaries {
                let ptype_ok = match b.ptype {
                    1..=3 => true,
                    4 => dialect == Dialect::Mysql,
                    _ => false,
                };
                // Boundaries for a value in a `WHERE` condition only: not the pre-WHERE,
                // derived-table, identifier or full-text ones.
                let elsewhere = ["WHERE", "`", "BOOLEAN MODE"]
                    .iter()
                    .any(|k| b.prefix.contains(k));
                if !ptype_ok || elsewhere || !(b.clause.contains(&0) || b.clause.contains(&1)) {
                    continue;
                }
                // A few boundaries filed under one quote close another: use the prefix's.
                let ptype = match (b.ptype, b.prefix.chars().find(|c| *c == '\'' || *c == '"')) {
                    (2 | 3, Some('"')) if dialect == Dialect::Mysql => 4,
                    (2 | 3, Some('"')) => continue,
                    (4, Some('\'')) => 2,
                    (p, _) => p,
                };
                for &w in &t.wheres {
                    if !b.wheres.contains(&w) {
                        continue;
                    }
                    for payload in &payloads {
                        let input = build(t, b, w, payload, dialect, &mut rng);
                        if input.contains("[") && input.contains("]") && input.contains("[R") {
                            panic!("unfilled placeholder in {input:?} ({})", t.title);
                        }
                        if seen.insert((dialect == Dialect::Mysql, ptype, input.clone())) {
                            out.push(Case {
                                title: t.title.clone(),
                                stype: t.stype,
                                ptype,
                                dialect,
                                parens: b.prefix.matches(')').count(),
                                input,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// sqlmap's prefix/payload/comment/suffix assembly (lib/core/agent.py, read to understand).
fn build(t: &Test, b: &Boundary, w: u8, payload: &str, dialect: Dialect, rng: &mut Rng) -> String {
    let value = match w {
        1 => "1".to_string(),
        2 => format!("-{}", rng.num()),
        _ => String::new(),
    };
    let mut s = value;
    if w != 3 {
        let prefix = fill(&b.prefix, rng);
        s.push_str(&prefix);
        let stacked = t.stype == 4;
        let paren = |c: Option<char>| matches!(c, Some('(' | ')'));
        let parens = paren(prefix.chars().last()) && paren(payload.chars().next());
        if !stacked && !payload.starts_with(';') && !parens && !prefix.ends_with('(') {
            s.push(' ');
        }
    }
    s.push_str(payload);
    let comment = match t.comment.as_str() {
        "--" if dialect == Dialect::Mysql => "-- -".to_string(),
        c => fill(c, rng),
    };
    if !comment.is_empty() {
        s.push_str(&comment);
    } else if w != 3 && !b.suffix.is_empty() {
        let suffix = fill(&b.suffix, rng);
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if word(s.chars().last()) && word(suffix.chars().next()) {
            s.push(' ');
        }
        s.push_str(&suffix);
    }
    s
}

/// The statement an application that pastes input into SQL sends (the injection worked).
pub fn concatenated(c: &Case) -> String {
    let (open, close) = ("(".repeat(c.parens), ")".repeat(c.parens));
    match c.ptype {
        1 => format!(
            "SELECT id, name FROM users WHERE {open}id = {}{close}",
            c.input
        ),
        2 => format!(
            "SELECT id, name FROM users WHERE {open}id = '{}'{close}",
            c.input
        ),
        3 => format!(
            "SELECT id, name FROM users WHERE {open}name LIKE '%{}%'{close}",
            c.input
        ),
        _ => format!(
            "SELECT id, name FROM users WHERE {open}name = \"{}\"{close}",
            c.input
        ),
    }
}

/// The statement a driver that escapes its values sends (the attempt sits in a literal).
pub fn escaped(c: &Case) -> String {
    let lit = match c.dialect {
        Dialect::Postgres => format!("'{}'", c.input.replace('\'', "''")),
        Dialect::Mysql => format!(
            "'{}'",
            c.input
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('"', "\\\"")
        ),
    };
    format!("SELECT id, name FROM users WHERE name = {lit}")
}

/// One benign statement and its dialect.
pub struct Benign {
    pub origin: String,
    pub dialect: Dialect,
    pub sql: String,
}

/// Statements of `tests/data/benign-*.sql` (ours, and SQLAlchemy's output written by
/// `gen_sqlalchemy.py`), separated by lines holding only `;;`.
pub fn benign_files() -> Vec<Benign> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for (file, dialect) in [
        ("benign-postgres.sql", Dialect::Postgres),
        ("benign-mysql.sql", Dialect::Mysql),
        ("benign-sqlalchemy-postgres.sql", Dialect::Postgres),
        ("benign-sqlalchemy-mysql.sql", Dialect::Mysql),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("benign corpus file");
        for (i, chunk) in text.split("\n;;\n").enumerate() {
            let sql = chunk.trim();
            if !sql.is_empty() {
                out.push(Benign {
                    origin: format!("{file} #{}", i + 1),
                    dialect,
                    sql: sql.to_string(),
                });
            }
        }
    }
    out
}

/// pgbench's built-in scripts with their variables set, as pgbench sends them.
pub fn pgbench() -> Vec<Benign> {
    let mut rng = Rng::new(42);
    let mut out = Vec::new();
    for script in ["tpcb-like", "simple-update", "select-only"] {
        let o = Command::new("pgbench")
            .arg(format!("--show-script={script}"))
            .output()
            .expect("pgbench (Debian package postgresql-client) must be installed");
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        for _ in 0..50 {
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('\\') || line.starts_with("--") {
                    continue;
                }
                let mut sql = line.to_string();
                for var in ["aid", "bid", "tid"] {
                    sql = sql.replace(&format!(":{var}"), &(1 + rng.next() % 100_000).to_string());
                }
                let delta = (rng.next() % 10_001) as i64 - 5000;
                sql = sql.replace(":delta", &delta.to_string());
                out.push(Benign {
                    origin: format!("pgbench {script}"),
                    dialect: Dialect::Postgres,
                    sql,
                });
            }
        }
    }
    assert!(out.len() > 100, "pgbench printed no scripts");
    out
}

/// sysbench's OLTP statements, read from the installed `oltp_common.lua` (Debian package
/// `sysbench`; `SYSBENCH_LUA` overrides the path), both as prepared (`?`) and with values filled
/// in the way a client-side prepare sends them.
pub fn sysbench() -> Vec<Benign> {
    let path = std::env::var_os("SYSBENCH_LUA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sysbench/oltp_common.lua"));
    let lua = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "sysbench's statement templates are not at {} ({e}): install the Debian package \
             with `apt-get install -y sysbench` (scripts/test does), or set SYSBENCH_LUA",
            path.display()
        )
    });
    // Each template is a quoted string naming `sbtest%u`, followed by its parameter types
    // (`t.INT`, `{t.CHAR, 120}`) up to the entry's closing brace.
    let mut templates: Vec<(String, Vec<bool>)> = Vec::new();
    let mut rest = lua.as_str();
    while let Some(at) = rest.find("sbtest%u") {
        let Some(open) = rest[..at].rfind('"') else {
            break;
        };
        let Some(close) = rest[at..].find('"').map(|c| at + c) else {
            break;
        };
        let template = rest[open + 1..close].to_string();
        let after = &rest[close + 1..];
        let end = after
            .find("},\n")
            .or_else(|| after.find("}\n"))
            .unwrap_or(after.len());
        let types = &after[..end];
        let mut kinds = Vec::new();
        let mut k = types;
        while let Some(i) = k.find("t.") {
            let w = &k[i + 2..];
            if w.starts_with("INT") {
                kinds.push(false);
            } else if w.starts_with("CHAR") {
                kinds.push(true);
            }
            k = &k[i + 2..];
        }
        if template.starts_with(|c: char| c.is_ascii_uppercase()) && template.contains('?') {
            templates.push((template, kinds));
        }
        rest = &rest[close + 1..];
    }
    assert!(
        templates.len() >= 8,
        "found only {} sysbench templates in {}",
        templates.len(),
        path.display()
    );
    let mut rng = Rng::new(7);
    let mut out = Vec::new();
    for (t, kinds) in &templates {
        for table in 1..=4 {
            let base = t.replace("%u", &table.to_string());
            out.push(Benign {
                origin: "sysbench prepared".into(),
                dialect: Dialect::Mysql,
                sql: base.clone(),
            });
            for _ in 0..20 {
                let mut sql = String::new();
                let mut parts = base.split('?');
                sql.push_str(parts.next().unwrap_or(""));
                for (i, part) in parts.enumerate() {
                    if kinds.get(i).copied().unwrap_or(false) {
                        // sysbench's c/pad format: groups of digits joined by dashes.
                        let groups: Vec<String> = (0..10)
                            .map(|_| format!("{:011}", rng.next() % 100_000_000_000))
                            .collect();
                        sql.push_str(&format!("'{}'", groups.join("-")));
                    } else {
                        sql.push_str(&(1 + rng.next() % 1_000_000).to_string());
                    }
                    sql.push_str(part);
                }
                out.push(Benign {
                    origin: "sysbench".into(),
                    dialect: Dialect::Mysql,
                    sql,
                });
            }
        }
    }
    out
}
