use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// Every split of `bytes` into two reads gives the same result as one read.
fn decode_all(bytes: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut d = Decoder::new(limits());
    while at < bytes.len() {
        match d.decode(&bytes[at..]).expect("valid") {
            Some((v, used)) => {
                out.push(v);
                at += used;
            }
            None => panic!("incomplete at {at}"),
        }
    }
    out
}

#[test]
fn every_type_round_trips() {
    let cases: &[(&[u8], Value)] = &[
        (b"+OK\r\n", Value::Simple(b"OK".to_vec())),
        (b"-ERR bad\r\n", Value::Error(b"ERR bad".to_vec())),
        (b":-42\r\n", Value::Integer(-42)),
        (b"$3\r\nfoo\r\n", Value::Bulk(b"foo".to_vec())),
        (b"$0\r\n\r\n", Value::Bulk(vec![])),
        (b"$-1\r\n", Value::NullBulk),
        (b"*-1\r\n", Value::NullArray),
        (b"*0\r\n", Value::Array(vec![])),
        (b"_\r\n", Value::Null),
        (b"#t\r\n", Value::Boolean(true)),
        (b"#f\r\n", Value::Boolean(false)),
        (b",1.5\r\n", Value::Double(1.5)),
        (b",inf\r\n", Value::Double(f64::INFINITY)),
        (b",-inf\r\n", Value::Double(f64::NEG_INFINITY)),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            Value::BigNumber(b"3492890328409238509324850943850943825024385".to_vec()),
        ),
        (b"!3\r\nERR\r\n", Value::BlobError(b"ERR".to_vec())),
        (
            b"=8\r\ntxt:some\r\n",
            Value::Verbatim {
                format: *b"txt",
                text: b"some".to_vec(),
            },
        ),
        (
            b"%1\r\n+k\r\n:1\r\n",
            Value::Map(vec![(Value::Simple(b"k".to_vec()), Value::Integer(1))]),
        ),
        (
            b"~2\r\n:1\r\n:2\r\n",
            Value::Set(vec![Value::Integer(1), Value::Integer(2)]),
        ),
        (
            b">2\r\n+message\r\n$1\r\nx\r\n",
            Value::Push(vec![
                Value::Simple(b"message".to_vec()),
                Value::Bulk(b"x".to_vec()),
            ]),
        ),
        (
            b"|1\r\n+ttl\r\n:3\r\n*1\r\n:2\r\n",
            Value::Attribute {
                attributes: vec![(Value::Simple(b"ttl".to_vec()), Value::Integer(3))],
                value: Box::new(Value::Array(vec![Value::Integer(2)])),
            },
        ),
        (
            b"*2\r\n*1\r\n$1\r\na\r\n%0\r\n",
            Value::Array(vec![
                Value::Array(vec![Value::Bulk(b"a".to_vec())]),
                Value::Map(vec![]),
            ]),
        ),
    ];
    for (bytes, want) in cases {
        let got = decode(bytes, &limits()).expect("valid");
        assert_eq!(got, Some((want.clone(), bytes.len())), "{bytes:?}");
        assert_eq!(want.to_bytes(), *bytes, "re-encoding {want:?}");
        // Any prefix is incomplete, never an error.
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut], &limits()),
                Ok(None),
                "{bytes:?} cut {cut}"
            );
        }
    }
}

#[test]
fn decoder_is_incremental_byte_by_byte() {
    let stream = b"+OK\r\n$5\r\nhello\r\n|1\r\n+a\r\n+b\r\n>1\r\n:1\r\n*2\r\n$1\r\nx\r\n_\r\n";
    let mut d = Decoder::default();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for &b in stream.iter() {
        buf.push(b);
        while let Some((v, used)) = d.decode(&buf).expect("valid") {
            got.push(v);
            buf.drain(..used);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, decode_all(stream));
    assert_eq!(got.len(), 4);
}

#[test]
fn limits_are_clear_errors() {
    let l = Limits::default();
    assert_eq!(
        decode(b"$4294967296\r\n", &l),
        Err(RespError::BulkTooLong {
            len: 4294967296,
            max: DEFAULT_MAX_BULK_LEN,
            unauthenticated: false
        })
    );
    let small = Limits {
        max_elements: 3,
        max_depth: 2,
        max_line: 8,
        ..l
    };
    assert!(matches!(
        decode(b"*4\r\n", &small),
        Err(RespError::TooManyElements {
            count: 4,
            max: 3,
            ..
        })
    ));
    assert_eq!(
        decode(b"*1\r\n*1\r\n*1\r\n:1\r\n", &small),
        Err(RespError::TooDeep { max: 2 })
    );
    assert_eq!(
        decode(b"*1\r\n*1\r\n:1\r\n", &small).map(|o| o.is_some()),
        Ok(true)
    );
    assert_eq!(
        decode(b"$123456789", &small),
        Err(RespError::LineTooLong { max: 8, bulk: true })
    );
    // A simple string streams: no line limit applies to the framer.
    let mut f = ReplyFramer::new(small);
    let adv = f.advance(b"+aaaaaaaaaaaaaaaaaaaaaaaaa").expect("fine");
    assert_eq!(adv.consumed, 26);
    assert_eq!(adv.complete, None);
    assert_eq!(
        f.advance(b"\r\n").expect("fine").complete,
        Some(FrameKind::Reply)
    );
    for bad in [
        &b"$-2\r\n"[..],
        b"*-2\r\n",
        b"%-1\r\n",
        b"$01\r\n",
        b":1x\r\n",
        b"#x\r\n",
        b"_x\r\n",
        b",abc\r\n",
        b"(12a\r\n",
        b"=3\r\ntxt\r\n",
        b"$1\r\nab\r\n",
        b"$?\r\n",
        b"*?\r\n",
        b"@\r\n",
        b"+OK\rX",
        // Found by fuzzing: a line feed in a simple string would not survive re-encoding.
        b"+\n\xc2\r\n",
        b"-E\nR\r\n",
    ] {
        assert!(
            decode(bad, &l).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn deep_nesting_and_long_attribute_chains_are_bounded() {
    let mut deep = Vec::new();
    for _ in 0..100_000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    assert_eq!(
        decode(&deep, &Limits::default()),
        Err(RespError::TooDeep { max: 128 })
    );
    let huge = Limits {
        max_depth: usize::MAX,
        ..Limits::default()
    };
    assert_eq!(
        decode(&deep, &huge),
        Err(RespError::TooDeep { max: MAX_DEPTH_CAP })
    );
    // Many attributes in a row describe one value: merged, not nested.
    let mut chain = Vec::new();
    for _ in 0..100_000 {
        chain.extend_from_slice(b"|1\r\n:1\r\n:2\r\n");
    }
    chain.extend_from_slice(b"+x\r\n");
    let (v, used) = decode(&chain, &Limits::default())
        .expect("valid")
        .expect("complete");
    assert_eq!(used, chain.len());
    match v {
        Value::Attribute { attributes, value } => {
            assert_eq!(attributes.len(), 100_000);
            assert_eq!(*value, Value::Simple(b"x".to_vec()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn framer_counts_pushes_apart_and_streams_bodies() {
    let stream =
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n-ERR x\r\n|1\r\n+a\r\n+b\r\n>0\r\n$10\r\n0123456789\r\n";
    let mut f = ReplyFramer::default();
    let mut kinds = Vec::new();
    let mut at = 0;
    // Feed in 3-byte reads; bytes consumed are dropped, the rest kept.
    let mut pending: Vec<u8> = Vec::new();
    while at < stream.len() || !pending.is_empty() {
        let end = (at + 3).min(stream.len());
        pending.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            let adv = f.advance(&pending).expect("valid");
            pending.drain(..adv.consumed);
            match adv.complete {
                Some(k) => kinds.push(k),
                None => break,
            }
        }
        if at == stream.len() && !f.in_frame() && pending.is_empty() {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            FrameKind::Push,
            FrameKind::Error,
            FrameKind::Push,
            FrameKind::Reply
        ]
    );
    // A 512 MiB bulk announced: the framer holds nothing of it.
    let mut f = ReplyFramer::default();
    let adv = f.advance(b"$536870912\r\nabc").expect("valid");
    assert_eq!(adv.consumed, 15);
    assert!(f.in_frame());
}

#[test]
fn splitter_pipeline_ranges() {
    let buf =
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n*0\r\n\r\n";
    let mut s = Splitter::default();
    let mut at = 0;
    let mut seen = Vec::new();
    while let Some(c) = s.split(&buf[at..]).expect("valid") {
        let args: Vec<Vec<u8>> = c.args().map(<[u8]>::to_vec).collect();
        if let Some(ranges) = c.arg_ranges() {
            for (r, a) in ranges.iter().zip(&args) {
                assert_eq!(&buf[at..][r.clone()], &a[..]);
            }
        }
        seen.push((c.kind(), args));
        at += c.len();
    }
    assert_eq!(at, buf.len());
    let words = |w: &[&str]| w.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (CommandKind::Multibulk, words(&["GET", "k"])),
            (CommandKind::Multibulk, words(&["SET", "k", ""])),
            (CommandKind::Inline, words(&["PING"])),
            (CommandKind::Multibulk, words(&[])),
            (CommandKind::Inline, words(&[])),
        ]
    );
}

#[test]
fn splitter_resumes_byte_by_byte() {
    let cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nGET  \"a b\"  'c'\r\n";
    let mut s = Splitter::default();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for &b in cmd.iter() {
        buf.push(b);
        while let Some(c) = s.split(&buf).expect("valid") {
            let n = c.len();
            got.push(c.args().map(<[u8]>::to_vec).collect::<Vec<_>>());
            buf.drain(..n);
        }
    }
    assert_eq!(
        got,
        vec![
            vec![b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()],
            vec![b"GET".to_vec(), b"a b".to_vec(), b"c".to_vec()],
        ]
    );
}

#[test]
fn inline_quoting_as_redis() {
    type Case<'a> = (&'a [u8], Result<&'a [&'a [u8]], RespError>);
    let cases: &[Case] = &[
        (b"set a \"x\\ny\"", Ok(&[b"set", b"a", b"x\ny"])),
        (b"set a \"\\x41\\x4g\"", Ok(&[b"set", b"a", b"Ax4g"])),
        (b"set a 'it\\'s'", Ok(&[b"set", b"a", b"it's"])),
        (b"set a 'x\\ny'", Ok(&[b"set", b"a", b"x\\ny"])),
        (b"  a\tb  ", Ok(&[b"a", b"b"])),
        (b"foo\"bar baz\"", Ok(&[b"foobar baz"])),
        (b"a\x0bb", Ok(&[b"a\x0bb"])),
        (b"a \"\"", Ok(&[b"a", b""])),
        (b"a\0b c", Ok(&[b"a"])),
        (b"a \"b", Err(RespError::UnbalancedQuotes)),
        (b"a \"b\"c", Err(RespError::UnbalancedQuotes)),
        (b"a 'b", Err(RespError::UnbalancedQuotes)),
        (b"a 'b'c", Err(RespError::UnbalancedQuotes)),
    ];
    for (line, want) in cases {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        let got = command::split_args(line, &mut out, &mut ranges).map(|()| {
            ranges
                .iter()
                .map(|r| out[r.clone()].to_vec())
                .collect::<Vec<_>>()
        });
        let want = want
            .clone()
            .map(|w| w.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn splitter_errors_word_as_redis() {
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*3000000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$536870913\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$1\r\nab",
            "ERR Protocol error: bulk string is not followed by CRLF",
        ),
        (
            b"GET \"a\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (bytes, want) in cases {
        let err = Splitter::default().split(bytes).expect_err("bad input");
        assert_eq!(err.reply(), *want, "{bytes:?}");
    }
    let long_inline = vec![b'a'; 70_000];
    assert_eq!(
        Splitter::default()
            .split(&long_inline)
            .expect_err("too long")
            .reply(),
        "ERR Protocol error: too big inline request"
    );
    let long_count = [&b"*"[..], &[b'1'; 70_000]].concat();
    assert_eq!(
        Splitter::default()
            .split(&long_count)
            .expect_err("too long")
            .reply(),
        "ERR Protocol error: too big mbulk count string"
    );
    let mut s = Splitter::new(Limits::unauthenticated());
    assert_eq!(
        s.split(b"*11\r\n").expect_err("too many").reply(),
        "ERR Protocol error: unauthenticated multibulk length"
    );
    assert_eq!(
        s.split(b"*1\r\n$16385\r\n").expect_err("too long").reply(),
        "ERR Protocol error: unauthenticated bulk length"
    );
    assert_eq!(
        s.split(b"*1\r\n$4294967296\r\n")
            .expect_err("too long")
            .reply(),
        "ERR Protocol error: invalid bulk length"
    );
    assert_eq!(
        s.split(b"*3000000000\r\n").expect_err("too many").reply(),
        "ERR Protocol error: invalid multibulk length"
    );
    // A claimed 512 MiB argument allocates nothing while it is incomplete.
    let mut s = Splitter::default();
    assert!(s.split(b"*1\r\n$536870912\r\nxx").expect("fine").is_none());
}

#[test]
fn progress_of_an_unfinished_command() {
    let mut s = Splitter::default();
    let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$1000000\r\nxyz";
    assert!(s.split(buf).expect("valid").is_none());
    let p = s.progress().expect("a multibulk in progress");
    assert_eq!(p.argc, 3);
    let args: Vec<&[u8]> = p.args.iter().map(|r| &buf[r.clone()]).collect();
    assert_eq!(args, [&b"SET"[..], b"key"]);
    assert_eq!(p.needed_at_least, 1_000_000 - 3 + 2);
    // Before the length of the next argument is known, at least one more byte.
    let mut s = Splitter::default();
    assert!(s.split(b"*2\r\n$3\r\nGET\r\n$1").expect("valid").is_none());
    let p = s.progress().expect("in progress");
    assert_eq!((p.argc, p.args.len(), p.needed_at_least), (2, 1, 1));
    // Inline commands and finished ones have none.
    let mut s = Splitter::default();
    assert!(s.split(b"PING").expect("valid").is_none());
    assert!(s.progress().is_none());
    assert!(s.split(b"PING\r\n").expect("valid").is_some());
    assert!(s.progress().is_none());
}
