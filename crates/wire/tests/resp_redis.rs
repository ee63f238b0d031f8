//! The RESP codec against a real redis-server: real replies (RESP2 and RESP3 after `HELLO 3`,
//! pipelines, pushes after `SUBSCRIBE`) decode, re-encode and frame as the server meant them,
//! and the command table built from the server's `COMMAND` finds the same keys (with the same
//! flags) as the server's own `COMMAND GETKEYSANDFLAGS`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sumun_testkit::{Redis, RedisOptions};
use sumun_wire::resp::table::{CommandTable, KeyFlags, Lookup};
use sumun_wire::resp::{encode_command, Decoder, FrameKind, Limits, ReplyFramer, Splitter, Value};

/// A blocking client made of the codec under test.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Conn {
    fn connect(redis: &Redis) -> Conn {
        let stream = TcpStream::connect(redis.addr()).expect("connect");
        // A reply that never comes fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(Limits::default()),
        }
    }

    fn send(&mut self, args: &[&str]) {
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
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, args: &[&str]) -> Value {
        self.send(args);
        self.read()
    }
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Decoding and encoding again gives the same value (and, but for doubles, whose text has
/// more than one spelling, the same bytes).
fn assert_round_trip(v: &Value) {
    let bytes = v.to_bytes();
    let (again, used) = sumun_wire::resp::decode(&bytes, &Limits::default())
        .expect("valid")
        .expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(&again, v);
}

#[test]
fn resp2_replies_and_a_pipeline() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    assert_eq!(c.call(&["SET", "k", "v"]), Value::Simple(b"OK".to_vec()));
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));
    assert_eq!(c.call(&["GET", "missing"]), Value::NullBulk);
    assert_eq!(c.call(&["INCR", "n"]), Value::Integer(1));
    assert_eq!(c.call(&["RPUSH", "l", "a", "b"]), Value::Integer(2));
    assert_eq!(
        c.call(&["LRANGE", "l", "0", "-1"]),
        Value::Array(vec![bulk("a"), bulk("b")])
    );
    let err = c.call(&["NOSUCHCOMMAND"]);
    assert!(err.is_error(), "{err:?}");
    assert_eq!(c.call(&["BLPOP", "empty", "0.01"]), Value::NullArray);
    let info = c.call(&["INFO", "server"]);
    assert!(info.as_str().expect("bulk").contains("redis_version"));
    assert_round_trip(&info);

    // 1000 commands in one write; the splitter sees exactly those commands, the framer
    // finds exactly 1000 replies in whatever pieces the server's bytes arrive.
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        let value = "x".repeat(i % 50);
        encode_command(&mut pipeline, &["SET", &format!("key:{i}"), &value]);
    }
    let mut splitter = Splitter::new(Limits::default());
    let (mut at, mut count) = (0, 0);
    while let Some(cmd) = splitter.split(&pipeline[at..]).expect("valid") {
        assert_eq!(cmd.name(), Some(&b"SET"[..]));
        let key = cmd.arg_ranges().expect("multibulk")[1].clone();
        assert_eq!(&pipeline[at..][key], format!("key:{count}").as_bytes());
        at += cmd.len();
        count += 1;
    }
    assert_eq!((at, count), (pipeline.len(), 1000));
    c.stream.write_all(&pipeline).expect("write");
    let mut framer = ReplyFramer::new(Limits::default());
    let mut pending = Vec::new();
    let mut replies = 0;
    let mut raw = Vec::new();
    while replies < 1000 {
        let mut chunk = [0u8; 1000];
        let n = c.stream.read(&mut chunk).expect("read");
        assert!(n > 0);
        pending.extend_from_slice(&chunk[..n]);
        loop {
            let adv = framer.advance(&pending).expect("valid");
            raw.extend(pending.drain(..adv.consumed));
            match adv.complete {
                Some(FrameKind::Reply) => replies += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
    }
    assert_eq!(raw, b"+OK\r\n".repeat(1000));
    assert!(pending.is_empty() && !framer.in_frame());
}

#[test]
fn resp3_types_and_pushes_after_subscribe() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    let hello = c.call(&["HELLO", "3"]);
    let Value::Map(pairs) = &hello else {
        panic!("HELLO 3 is a map: {hello:?}")
    };
    assert!(pairs
        .iter()
        .any(|(k, v)| k == &bulk("proto") && v == &Value::Integer(3)));
    assert_round_trip(&hello);

    c.call(&["HSET", "h", "f", "v"]);
    assert_eq!(
        c.call(&["HGETALL", "h"]),
        Value::Map(vec![(bulk("f"), bulk("v"))])
    );
    c.call(&["SADD", "s", "m"]);
    assert_eq!(c.call(&["SMEMBERS", "s"]), Value::Set(vec![bulk("m")]));
    c.call(&["ZADD", "z", "1.5", "a"]);
    assert_eq!(c.call(&["ZSCORE", "z", "a"]), Value::Double(1.5));
    assert_eq!(c.call(&["GET", "missing"]), Value::Null);
    assert_eq!(c.call(&["EXISTS", "h"]), Value::Integer(1));
    let txt = c.call(&["LOLWUT"]);
    assert!(
        matches!(txt, Value::Verbatim { format, .. } if &format == b"txt"),
        "{txt:?}"
    );
    let script = |body: &str| format!("redis.setresp(3); return {body}");
    let double = c.call(&["EVAL", &script("{double=1e300}"), "0"]);
    assert_eq!(double, Value::Double(1e300));
    assert_round_trip(&double);
    let big = c.call(&[
        "EVAL",
        &script("{big_number='123456789012345678901234567890'}"),
        "0",
    ]);
    assert_eq!(
        big,
        Value::BigNumber(b"123456789012345678901234567890".to_vec())
    );
    assert_round_trip(&big);
    let boolean = c.call(&["EVAL", &script("true"), "0"]);
    assert_eq!(boolean, Value::Boolean(true));
    let info = c.call(&["COMMAND", "INFO", "get"]);
    assert_round_trip(&info);

    // In RESP3 the confirmation of SUBSCRIBE is itself a push; messages are pushes; a
    // command's reply in between is a reply.
    let mut raw = TcpStream::connect(redis.addr()).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut out = Vec::new();
    encode_command(&mut out, &["HELLO", "3"]);
    encode_command(&mut out, &["SUBSCRIBE", "chan"]);
    encode_command(&mut out, &["PING"]);
    raw.write_all(&out).expect("write");
    let mut framer = ReplyFramer::default();
    let mut decoder = Decoder::default();
    let mut pending = Vec::new();
    let mut frames: Vec<(FrameKind, Value)> = Vec::new();
    let mut published = false;
    while frames.len() < 4 {
        if frames.len() == 3 && !published {
            // Publish only once the subscription is confirmed, so the message must come.
            assert_eq!(c.call(&["PUBLISH", "chan", "hello"]), Value::Integer(1));
            published = true;
        }
        let mut chunk = [0u8; 4096];
        let n = raw.read(&mut chunk).expect("read");
        assert!(n > 0);
        pending.extend_from_slice(&chunk[..n]);
        loop {
            let adv = framer.advance(&pending).expect("valid");
            let Some(kind) = adv.complete else { break };
            let (value, used) = decoder
                .decode(&pending[..adv.consumed])
                .expect("valid")
                .expect("the framer found it complete");
            assert_eq!(used, adv.consumed);
            pending.drain(..used);
            frames.push((kind, value));
        }
    }
    let kinds: Vec<FrameKind> = frames.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            FrameKind::Reply,
            FrameKind::Push,
            FrameKind::Reply,
            FrameKind::Push
        ]
    );
    assert_eq!(
        frames[1].1,
        Value::Push(vec![bulk("subscribe"), bulk("chan"), Value::Integer(1)])
    );
    assert_eq!(frames[2].1, Value::Simple(b"PONG".to_vec()));
    assert_eq!(
        frames[3].1,
        Value::Push(vec![bulk("message"), bulk("chan"), bulk("hello")])
    );
}

#[test]
fn inline_commands_reach_redis_as_split() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    // What the splitter makes of an inline line is what Redis stores.
    let line = b"SET \"a b\\x41\" 'it\\'s'\r\n";
    let mut s = Splitter::default();
    let cmd = s.split(line).expect("valid").expect("complete");
    let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
    assert_eq!(args, [b"SET".to_vec(), b"a bA".to_vec(), b"it's".to_vec()]);
    c.stream.write_all(line).expect("write");
    assert_eq!(c.read(), Value::Simple(b"OK".to_vec()));
    assert_eq!(c.call(&["GET", "a bA"]), bulk("it's"));
    // Redis refuses what the splitter refuses, with the same words.
    let bad = b"SET \"a\"b c\r\n";
    let err = Splitter::default().split(bad).expect_err("bad quotes");
    c.stream.write_all(bad).expect("write");
    assert_eq!(c.read(), Value::Error(err.reply().into_bytes()));
}

fn key_flag_names(flags: KeyFlags) -> Vec<String> {
    let mut names: Vec<String> = [
        ("RW", KeyFlags::RW),
        ("RO", KeyFlags::RO),
        ("OW", KeyFlags::OW),
        ("RM", KeyFlags::RM),
        ("access", KeyFlags::ACCESS),
        ("update", KeyFlags::UPDATE),
        ("insert", KeyFlags::INSERT),
        ("delete", KeyFlags::DELETE),
        ("not_key", KeyFlags::NOT_KEY),
        ("incomplete", KeyFlags::INCOMPLETE),
        ("variable_flags", KeyFlags::VARIABLE_FLAGS),
    ]
    .iter()
    .filter(|(_, f)| flags.contains(*f))
    .map(|(n, _)| n.to_string())
    .collect();
    names.sort();
    names
}

/// Command lines whose keys depend on their arguments, plus every command of the table with
/// generated arguments.
pub fn command_lines(table: &CommandTable) -> Vec<Vec<String>> {
    let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let mut lines: Vec<Vec<String>> = [
        "GET app:1",
        "SET w:1 v",
        "SET w:1 v GET",
        "SET w:1 v EX 10 get",
        "MSET app:1 a ro:1 b",
        "MGET app:1 ro:1 w:1",
        "COPY app:1 w:1",
        "SORT ro:1",
        "SORT ro:1 BY w:* GET app:* STORE w:2",
        "SORT ro:1 LIMIT 0 1 STORE w:2 STORE app:3",
        "SORT ro:1 STORE",
        "SORT_RO ro:1 BY x",
        "MIGRATE 127.0.0.1 1 app:1 0 10",
        "MIGRATE 127.0.0.1 1 \"\" 0 10 KEYS app:1 w:1",
        "MIGRATE 127.0.0.1 1 x 0 10 KEYS app:1 w:1",
        "MIGRATE 127.0.0.1 1 \"\" 0 10 AUTH pw KEYS app:1",
        "MIGRATE 127.0.0.1 1 \"\" 0 10 AUTH2 u pw KEYS app:1",
        "EVAL s 2 app:1 ro:1 arg",
        "EVAL s 0",
        "EVAL s 3 app:1",
        "EVAL s -1 app:1",
        "EVAL s x app:1",
        "EVALSHA s 1 w:1",
        "EVAL_RO s 1 ro:1",
        "FCALL f 2 app:1 w:1",
        "FCALL_RO f 1 ro:1",
        "ZUNIONSTORE w:1 2 app:1 ro:1",
        "ZUNIONSTORE w:1 3 app:1 ro:1",
        "ZINTER 2 app:1 ro:1 WITHSCORES",
        "ZDIFFSTORE w:1 1 ro:1",
        "ZINTERCARD 2 app:1 ro:1 LIMIT 1",
        "SINTERCARD 2 app:1 ro:1",
        "LMPOP 2 app:1 ro:1 LEFT",
        "BLMPOP 0 2 app:1 ro:1 LEFT",
        "ZMPOP 1 ro:1 MIN",
        "BZMPOP 0 1 w:1 MAX",
        "XREAD STREAMS app:1 ro:1 0 0",
        "XREAD COUNT 1 BLOCK 0 STREAMS app:1 0",
        "XREAD STREAMS app:1 ro:1 0",
        "XREADGROUP GROUP g c STREAMS app:1 >",
        "XREADGROUP GROUP g c COUNT 1 NOACK STREAMS app:1 w:1 > >",
        "GEORADIUS ro:1 0 0 1 km",
        "GEORADIUS ro:1 0 0 1 km STORE w:1",
        "GEORADIUS ro:1 0 0 1 km STOREDIST w:1 STORE app:1",
        "GEORADIUS ro:1 0 0 1 km STORE",
        "GEORADIUSBYMEMBER ro:1 m 1 km STORE w:1",
        "GEOSEARCHSTORE w:1 ro:1 FROMMEMBER m BYRADIUS 1 km",
        "BITFIELD app:1 GET u8 0",
        "BITFIELD app:1 GET u8 0 SET u8 0 1",
        "BITFIELD app:1 OVERFLOW SAT GET u8 0",
        "BITFIELD app:1 INCRBY u8 0 1",
        "BITFIELD app:1 GET u8",
        "BITFIELD_RO ro:1 GET u8 0",
        "LCS app:1 ro:1",
        "RENAME app:1 w:1",
        "SMOVE app:1 w:1 m",
        "BLMOVE app:1 w:1 LEFT RIGHT 0",
        "OBJECT ENCODING app:1",
        "MEMORY USAGE app:1",
        "XINFO STREAM app:1",
        "XGROUP CREATE app:1 g $",
        "DEL app:1 ro:1 w:1",
        "EXISTS app:1 ro:1",
        "TOUCH app:1",
        "PFCOUNT app:1 ro:1",
        "PFMERGE w:1 app:1 ro:1",
        "GETEX app:1 PERSIST",
        "GETDEL w:1",
        "SUBSCRIBE chan:1 news.x",
        "PSUBSCRIBE chan:* news.*",
        "PUBLISH chan:1 m",
        "SPUBLISH chan:1 m",
        "SSUBSCRIBE chan:1",
        "UNSUBSCRIBE other",
        "PUNSUBSCRIBE other*",
        "CONFIG GET maxmemory",
        "CONFIG SET maxmemory 0",
        "CLIENT KILL ID 1",
        "CLIENT LIST",
        "SELECT 0",
        "SELECT 1",
        "PING",
        "AUTH u p",
        "HELLO 3",
        "KEYS *",
        "FLUSHALL",
        "DEBUG SLEEP 0",
        "MONITOR",
        "WATCH app:1 ro:1",
        "MULTI",
        "EXEC",
        "NOSUCHCMD a",
        "CONFIG NOSUCH",
        "GET",
        "GET a b",
    ]
    .iter()
    .map(|l| words(&l.replace('"', "")))
    .collect();
    let pool = ["app:1", "ro:1", "w:1", "other", "1", "0", "2", "x"];
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
            vec![min, min + 1, min + 3]
        };
        for count in counts {
            base.truncate(fixed);
            for i in base.len()..count {
                base.push(pool[(n + i) % pool.len()].to_string());
            }
            lines.push(base.clone());
        }
    }
    lines
}

#[test]
fn keys_match_getkeysandflags() {
    let redis = Redis::start().expect("redis");
    let mut c = Conn::connect(&redis);
    let reply = c.call(&["COMMAND"]);
    let table = CommandTable::from_reply(&reply).expect("a table");
    assert!(table.len() > 200, "{} commands", table.len());
    let get = table.get("GET").expect("get");
    assert_eq!((get.arity, get.first_key), (2, 1));
    assert!(get.in_category("read") && get.has_flag("readonly"));
    let config_set = table.get("config|set").expect("config|set");
    assert!(config_set.in_category("dangerous"));
    assert!(matches!(
        table.lookup(&["Config", "Set", "a", "b"]),
        Lookup::Found(i) if i.name == "config|set"
    ));
    assert!(matches!(
        table.lookup(&["config", "nosuch"]),
        Lookup::UnknownSubcommand(i) if i.name == "config"
    ));
    assert_eq!(table.lookup(&["nosuch"]), Lookup::UnknownCommand);
    // Full names are for rules, not for clients: Redis does not know a command `config|get`.
    assert_eq!(
        table.lookup(&["config|get", "maxmemory"]),
        Lookup::UnknownCommand
    );
    assert!(matches!(
        table.lookup(&["config", "get|x"]),
        Lookup::UnknownSubcommand(_)
    ));

    // The same table from RESP3.
    c.call(&["HELLO", "3"]);
    let reply3 = c.call(&["COMMAND"]);
    let table3 = CommandTable::from_reply(&reply3).expect("a table");
    assert_eq!(table3.commands(), table.commands());
    c.call(&["HELLO", "2"]);

    let lines = command_lines(&table);
    let mut compared = 0;
    let mut failures = Vec::new();
    for line in &lines {
        let Lookup::Found(info) = table.lookup(line) else {
            continue;
        };
        if !info.arity_ok(line.len()) {
            continue;
        }
        let mut ours = Vec::new();
        table.keys(info, line, &mut ours);
        let ours: Vec<(String, Vec<String>)> = ours
            .iter()
            .map(|k| (line[k.index].clone(), key_flag_names(k.flags)))
            .collect();
        let mut args = vec!["COMMAND", "GETKEYSANDFLAGS"];
        args.extend(line.iter().map(String::as_str));
        let theirs = match c.call(&args) {
            Value::Array(keys) => keys
                .iter()
                .map(|k| {
                    let pair = k.as_array().expect("pair");
                    let mut flags: Vec<String> = pair[1]
                        .as_array()
                        .expect("flags")
                        .iter()
                        .map(|f| f.as_str().expect("flag").to_string())
                        .collect();
                    flags.sort();
                    (pair[0].as_str().expect("key").to_string(), flags)
                })
                .collect(),
            // "Invalid arguments specified" / "The command has no key arguments".
            Value::Error(_) => Vec::new(),
            other => panic!("{line:?}: {other:?}"),
        };
        compared += 1;
        if ours != theirs {
            failures.push(format!("{line:?}: ours {ours:?}, redis {theirs:?}"));
        }
    }
    assert!(compared > 300, "only {compared} lines compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Bad input gets the same error line from the splitter as from Redis (before and after
/// authentication), so the gateway can answer it itself.
#[test]
fn protocol_errors_are_worded_as_redis_words_them() {
    let locked = Redis::start_with(RedisOptions {
        password: Some("pw".into()),
        ..RedisOptions::default()
    })
    .expect("redis");
    let open = Redis::start().expect("redis");
    let long_inline = vec![b'a'; 70_000];
    let long_count = [&b"*"[..], &[b'1'; 70_000]].concat();
    let cases: &[(&Redis, Limits, &[u8])] = &[
        (&locked, Limits::unauthenticated(), b"*11\r\n"),
        (&locked, Limits::unauthenticated(), b"*1\r\n$16385\r\n"),
        (&locked, Limits::unauthenticated(), b"*1\r\n$4294967296\r\n"),
        (&locked, Limits::unauthenticated(), b"*3000000000\r\n"),
        (&open, Limits::default(), b"*1\r\n:1\r\n"),
        (&open, Limits::default(), b"*x\r\n"),
        (&open, Limits::default(), b"*1\r\n$-1\r\n"),
        (&open, Limits::default(), b"*1\r\n$536870913\r\n"),
        (&open, Limits::default(), b"GET \"a\r\n"),
        (&open, Limits::default(), b"GET 'a'b\r\n"),
        (&open, Limits::default(), &long_inline),
        (&open, Limits::default(), &long_count),
    ];
    for (redis, limits, bytes) in cases {
        let ours = Splitter::new(*limits)
            .split(bytes)
            .expect_err("bad input")
            .reply();
        let mut c = Conn::connect(redis);
        c.stream.write_all(bytes).expect("write");
        assert_eq!(
            c.read(),
            Value::Error(ours.clone().into_bytes()),
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
    }
}
