//! Differential test of `redis_acl` against Redis itself: for a range of rule strings, a user
//! is created with `ACL SETUSER`, and for every command of the server (generated arguments)
//! plus lines whose keys or channels depend on their arguments, our verdict must be exactly
//! what `ACL DRYRUN` answers (allowed, or the same denial naming the same command, key or
//! channel). Rules Redis refuses we must refuse, with Redis's reason. Then a real connection
//! as a restricted user sees the same NOPERM lines our denials word.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sumun_policy::redis_acl::{AclError, AclRules, DenialKind, RedisAcl, Verdict, Wording};
use sumun_testkit::Redis;
use sumun_wire::resp::table::{CommandTable, Lookup};
use sumun_wire::resp::{encode_command, Decoder, Limits, Value};

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Conn {
    fn connect(redis: &Redis) -> Conn {
        let stream = TcpStream::connect(redis.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(Limits::default()),
        }
    }

    fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        self.stream.write_all(&out).expect("write");
    }

    fn read(&mut self) -> Value {
        loop {
            if let Some((v, used)) = self.decoder.decode(&self.buf).expect("valid RESP") {
                self.buf.drain(..used);
                return v;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        self.send(args);
        self.read()
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Error(b) | Value::Simple(b) | Value::Bulk(b) => String::from_utf8_lossy(b).into(),
        other => format!("{other:?}"),
    }
}

/// Rule sets, one word per rule as `ACL SETUSER` takes them.
const RULE_SETS: &[&str] = &[
    "+@all -@dangerous ~* &*",
    "+@all ~app:* &chan:*",
    "+@read ~*",
    "+@read %R~*",
    "+@all %R~ro:* %W~w:* ~app:*",
    "+@all %RW~app:* %R~app:*",
    "-@all +@string ~app:* +get",
    "-@all +select|0 +config|get ~*",
    "-@all +select|0 +select|2 -select",
    "+@all -config|set -@admin +config|get allkeys allchannels",
    "nocommands +@pubsub &chan:* &news.*",
    "+@all resetkeys ~a?p:[0-9]* ~w:\\* %R~[^x]*",
    "+@all ~app:* (+@read %R~ro:*) (+set ~w:* &chan:*)",
    "+@write ~w:* +@read %R~*",
    "+@all -@write ~*",
    "+@scripting +@keyspace ~app:*",
    "allcommands -flushall -debug -client|kill ~* resetchannels &chan:1",
    "+@all -@all +ping",
    "+@all ~* &* -@dangerous +keys -@pubsub +publish",
    "+@all ~app:* (~ro:* +@read) clearselectors",
    "+@all ~app:* &* reset +get ~ro:*",
    "+@all %W~w:* %R~ro:*",
    "+@all ~[abc-]x ~[a-]y ~\\[ ~app:\\?",
    "+@all %R~ro:* (%W~w:* +@write)",
    "on +@all ~* sanitize-payload",
    "+@all -@blocking -@slow +blpop ~*",
    "+@geo +@sortedset %R~ro:* %W~w:*",
    "+@stream ~app:* %R~ro:*",
    "+@all -@keyspace +del ~app:*",
    "+@hash +@list +@set ~*",
    "+@connection +@transaction",
];

/// Rule sets Redis refuses, and so must we.
const BAD_RULE_SETS: &[&str] = &[
    "+nosuchcommand",
    "+@nosuchcategory",
    "~* ~app:*",
    "&* &chan:*",
    "allkeys %R~x",
    "-select|0",
    "+config|get|x",
    "+config|nosuch",
    "+config|",
    "%X~a",
    "%RR~a",
    "foo",
    "-@",
    "(+get ~x foo)",
];

fn command_lines(table: &CommandTable) -> Vec<Vec<String>> {
    let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let mut lines: Vec<Vec<String>> = [
        "GET app:1",
        "GET ro:1",
        "GET w:1",
        "GET other",
        "GET ax",
        "GET ]y",
        "GET [",
        "GET app:?",
        "GET w:*",
        "GET w:x",
        "GET a1p:9z",
        "SET w:1 v",
        "SET app:1 v",
        "SET ro:1 v",
        "SET w:1 v GET",
        "SET app:1 v get",
        "MSET app:1 a ro:1 b",
        "MSET app:1 a w:1 b",
        "MGET app:1 ro:1 w:1",
        "MGET app:1 ro:1",
        "COPY app:1 w:1",
        "COPY ro:1 w:1",
        "SORT ro:1",
        "SORT ro:1 BY w:* GET app:* STORE w:2",
        "SORT ro:1 LIMIT 0 1 STORE w:2 STORE app:3",
        "SORT app:1 STORE ro:1",
        "SORT_RO ro:1 BY x",
        "MIGRATE 127.0.0.1 1 app:1 0 10",
        "MIGRATE 127.0.0.1 1 x 0 10 KEYS app:1 w:1",
        "EVAL s 2 app:1 ro:1 arg",
        "EVAL s 1 ro:1",
        "EVAL s 0",
        "EVAL s 3 app:1",
        "EVAL_RO s 1 ro:1",
        "FCALL f 2 app:1 w:1",
        "FCALL_RO f 1 ro:1",
        "ZUNIONSTORE w:1 2 app:1 ro:1",
        "ZUNIONSTORE app:1 2 ro:1 w:1",
        "ZINTER 2 app:1 ro:1 WITHSCORES",
        "LMPOP 2 app:1 ro:1 LEFT",
        "BLMPOP 0 2 app:1 w:1 LEFT",
        "XREAD STREAMS app:1 ro:1 0 0",
        "XREAD COUNT 1 BLOCK 0 STREAMS ro:1 0",
        "XREADGROUP GROUP g c STREAMS app:1 >",
        "GEORADIUS ro:1 0 0 1 km STORE w:1",
        "GEORADIUS ro:1 0 0 1 km STORE app:1",
        "BITFIELD app:1 GET u8 0",
        "BITFIELD ro:1 GET u8 0",
        "BITFIELD ro:1 SET u8 0 1",
        "BITFIELD w:1 INCRBY u8 0 1",
        "RENAME app:1 w:1",
        "RENAME ro:1 w:1",
        "DEL app:1 ro:1 w:1",
        "DEL w:1",
        "EXISTS app:1 ro:1 other",
        "EXISTS w:1",
        "WATCH ro:1 w:1",
        "OBJECT ENCODING w:1",
        "SUBSCRIBE chan:1 news.x",
        "SUBSCRIBE chan:1 chan:2",
        "SUBSCRIBE other",
        "PSUBSCRIBE chan:* news.*",
        "PSUBSCRIBE chan:1",
        "PUBLISH chan:1 m",
        "PUBLISH other m",
        "SPUBLISH chan:1 m",
        "SSUBSCRIBE chan:1 other",
        "UNSUBSCRIBE other",
        "PUNSUBSCRIBE other*",
        "CONFIG GET maxmemory",
        "CONFIG SET maxmemory 0",
        "config set maxmemory 0",
        "CLIENT KILL ID 1",
        "CLIENT LIST",
        "SELECT 0",
        "SELECT 1",
        "SELECT 2",
        "PING",
        "AUTH u p",
        "HELLO 3",
        "KEYS *",
        "FLUSHALL",
        "DEBUG SLEEP 0",
        "MONITOR",
        "MULTI",
        "EXEC",
        "BLPOP app:1 0",
        "BLPOP w:1 0",
        "NOSUCHCMD a",
        "CONFIG NOSUCH",
        "config|get maxmemory",
        "CONFIG get|x",
        "GET",
        "GET a b",
    ]
    .iter()
    .map(|l| words(l))
    .collect();
    let pool = ["app:1", "ro:1", "w:1", "other", "1", "0", "2", "chan:1"];
    for (n, info) in table.commands().iter().enumerate() {
        if !info.subcommands.is_empty() {
            continue;
        }
        let mut base: Vec<String> = info.name.split('|').map(str::to_string).collect();
        let fixed = base.len();
        let min = info.arity.unsigned_abs() as usize;
        let counts = if info.arity > 0 {
            vec![min]
        } else {
            vec![min, min + 2]
        };
        for count in counts {
            base.truncate(fixed);
            for i in base.len()..count.max(fixed) {
                base.push(pool[(n + i) % pool.len()].to_string());
            }
            lines.push(base.clone());
        }
    }
    lines
}

fn table(c: &mut Conn) -> CommandTable {
    CommandTable::from_reply(&c.call(&["COMMAND"])).expect("a command table")
}

#[test]
fn verdicts_match_acl_dryrun() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    let table = table(&mut c);
    let lines = command_lines(&table);
    assert!(lines.len() > 400, "{} lines", lines.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut denied = 0;
    for (i, rules) in RULE_SETS.iter().enumerate() {
        let user = format!("u{i}");
        let mut setuser = vec![
            "ACL".to_string(),
            "SETUSER".into(),
            user.clone(),
            "reset".into(),
        ];
        setuser.extend(rules.split(' ').map(str::to_string));
        let reply = c.call(&setuser);
        assert_eq!(
            reply,
            Value::Simple(b"OK".to_vec()),
            "{rules}: {}",
            text(&reply)
        );
        let acl = AclRules::parse(rules)
            .and_then(|r| RedisAcl::compile(&r, &table))
            .unwrap_or_else(|e| panic!("{rules}: {e}"));
        // Pipeline every DRYRUN of this user, then compare the answers in order.
        for line in &lines {
            let mut args = vec!["ACL".to_string(), "DRYRUN".into(), user.clone()];
            args.extend(line.iter().cloned());
            c.send(&args);
        }
        for line in &lines {
            let theirs = c.read();
            let ours = acl.check(&table, line);
            let expected = match &ours {
                Verdict::Allowed(_) => Value::Simple(b"OK".to_vec()),
                // SORT refuses BY/GET patterns when it runs, which DRYRUN does not do.
                Verdict::Denied(d) if d.kind == DenialKind::SortPattern => {
                    Value::Simple(b"OK".to_vec())
                }
                Verdict::Denied(d) => match d.kind {
                    DenialKind::Command | DenialKind::Key | DenialKind::Channel => {
                        denied += 1;
                        Value::Bulk(d.dryrun_message().into_bytes())
                    }
                    _ => Value::Error(format!("ERR {}", d.dryrun_message()).into_bytes()),
                },
            };
            compared += 1;
            if theirs != expected {
                failures.push(format!(
                    "rules {rules:?} line {line:?}: redis {:?}, ours {:?}",
                    text(&theirs),
                    text(&expected)
                ));
            }
        }
    }
    assert!(compared > 10_000, "only {compared} comparisons");
    assert!(
        denied > 1000,
        "only {denied} denials: the rules barely restrict"
    );
    assert!(
        failures.is_empty(),
        "{} differences, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

#[test]
fn rules_redis_refuses_are_refused_for_the_same_reason() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    let table = table(&mut c);
    for rules in BAD_RULE_SETS {
        let mut setuser = vec!["ACL", "SETUSER", "bad", "reset"];
        setuser.extend(rules.split(' '));
        let theirs = c.call(&setuser);
        assert!(theirs.is_error(), "redis accepted {rules:?}");
        let ours = AclRules::parse(rules).and_then(|r| RedisAcl::compile(&r, &table));
        match ours {
            Ok(_) => panic!("we accepted {rules:?}, redis said {}", text(&theirs)),
            Err(AclError::Rule { kind, .. }) => {
                let theirs = text(&theirs);
                assert!(
                    theirs.ends_with(&kind.to_string()),
                    "{rules:?}: redis {theirs:?}, ours {kind}"
                );
            }
            Err(other) => panic!("{rules:?}: {other}"),
        }
    }
}

#[test]
fn a_restricted_user_sees_the_lines_our_denials_word() {
    let redis = Redis::start().expect("redis");
    let mut admin = Conn::connect(&redis);
    let table = table(&mut admin);
    let rules = "+@all -config|set -@dangerous +sort +sort_ro ~app:* &chan:*";
    let mut setuser = vec!["ACL", "SETUSER", "app", "on", ">pw"];
    setuser.extend(rules.split(' '));
    assert_eq!(admin.call(&setuser), Value::Simple(b"OK".to_vec()));
    let acl = RedisAcl::compile(&AclRules::parse(rules).expect("parse"), &table).expect("compile");

    let mut c = Conn::connect(&redis);
    assert_eq!(
        c.call(&["AUTH", "app", "pw"]),
        Value::Simple(b"OK".to_vec())
    );
    let lines: &[&[&str]] = &[
        &["CONFIG", "SET", "maxmemory", "0"],
        &["FLUSHALL"],
        &["GET", "other"],
        &["PUBLISH", "news", "m"],
        &["NOSUCH", "a", "b"],
        &["CONFIG", "NOSUCH"],
        &["GET", "a", "b"],
        &["GET", "app:1"],
        // SORT's own check when it runs: BY with a pattern, GET, for a user without ~*.
        &["SORT", "app:1", "BY", "w_*"],
        &["SORT", "app:1", "ALPHA", "GET", "#"],
        &["SORT_RO", "app:1", "LIMIT", "0", "1", "GET", "#"],
        &["SORT", "app:1", "BY", "nosort"],
        &["SORT", "app:1", "LIMIT", "x", "1", "GET", "#"],
        &["SORT", "app:1", "STORE", "other"],
    ];
    let mut sort_denials = 0;
    for line in lines {
        let theirs = c.call(line);
        let verdict = acl.check(&table, *line);
        if matches!(&verdict, Verdict::Denied(d) if d.kind == DenialKind::SortPattern) {
            sort_denials += 1;
        }
        match verdict {
            Verdict::Allowed(info) => {
                // Allowed lines either run, or fail for their own reasons (a bad LIMIT),
                // never for permissions.
                if theirs.is_error() {
                    assert!(!text(&theirs).contains("NOPERM") && !text(&theirs).contains("ACL"));
                    assert_eq!(info.name, "sort", "{line:?}: {}", text(&theirs));
                }
            }
            Verdict::Denied(d) => {
                assert_eq!(
                    theirs,
                    Value::Error(d.reply("app", Wording::Redis70).into_bytes()),
                    "{line:?}"
                );
                // The 7.2 wording names the user, never a key.
                let v72 = d.reply("app", Wording::Redis72);
                assert!(!v72.contains("other"), "{v72}");
            }
        }
    }
    assert_eq!(sort_denials, 3);
    assert!(!acl.is_unrestricted());
    // The default rules refuse what Redis calls dangerous, nothing else.
    let default = RedisAcl::default_for(&table);
    assert!(matches!(
        default.check(&table, &["FLUSHALL"]),
        Verdict::Denied(d) if d.reply("u", Wording::Redis72)
            == "NOPERM User u has no permissions to run the 'flushall' command"
    ));
    assert!(matches!(
        default.check(&table, &["CONFIG", "SET", "a", "b"]),
        Verdict::Denied(d) if d.reply("u", Wording::Redis72)
            == "NOPERM User u has no permissions to run the 'config|set' command"
    ));
    assert!(matches!(
        default.check(&table, &["SET", "any", "v"]),
        Verdict::Allowed(_)
    ));
    // Scripts could still call what -@dangerous refuses: the gateway must know.
    assert!(!default.is_unrestricted());
    let all = RedisAcl::compile(&AclRules::parse("+@all ~* &*").expect("parse"), &table)
        .expect("compile");
    assert!(all.is_unrestricted());
    assert!(matches!(
        all.check(&table, &["SORT", "l", "BY", "w_*", "GET", "#"]),
        Verdict::Allowed(_)
    ));
    assert!(matches!(table.lookup(&["config", "get"]), Lookup::Found(_)));
}
