//! Golden bytes, round trips, every truncation of valid headers, malformed inputs with their
//! exact errors, and random and mutated bytes that must never panic.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
    match decode(buf) {
        Ok(Decoded::Complete { header, consumed }) => (header, consumed),
        other => panic!("expected a complete header, got {other:?}"),
    }
}

fn err(buf: &[u8]) -> ProxyError {
    match decode(buf) {
        Err(e) => e,
        other => panic!("expected an error for {buf:?}, got {other:?}"),
    }
}

fn v2_tcp4_golden() -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    b.extend_from_slice(&[192, 0, 2, 10]); // source
    b.extend_from_slice(&[198, 51, 100, 7]); // destination
    b.extend_from_slice(&[0xdc, 0x04]); // 56324
    b.extend_from_slice(&[0x01, 0xbb]); // 443
    b
}

fn v2_tcp6_golden() -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    b.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
    b.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
    ]);
    b.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ]);
    b.extend_from_slice(&[0x30, 0x39]); // 12345
    b.extend_from_slice(&[0x15, 0x38]); // 5432
    b
}

const V2_LOCAL_GOLDEN: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

#[test]
fn v2_tcp4_golden_bytes_decode_and_encode() {
    let golden = v2_tcp4_golden();
    let (h, consumed) = complete(&golden);
    assert_eq!(consumed, 28);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Stream);
    assert_eq!(h.source, Some(addr("192.0.2.10:56324")));
    assert_eq!(h.destination, Some(addr("198.51.100.7:443")));
    assert!(h.tlvs.is_empty());

    let mut out = Vec::new();
    encode_v2(addr("192.0.2.10:56324"), addr("198.51.100.7:443"), &mut out);
    assert_eq!(out, golden);
}

#[test]
fn v2_tcp6_golden_bytes_decode_and_encode() {
    let golden = v2_tcp6_golden();
    let (h, consumed) = complete(&golden);
    assert_eq!(consumed, 52);
    assert_eq!(h.source, Some(addr("[2001:db8::1]:12345")));
    assert_eq!(h.destination, Some(addr("[2001:db8::2]:5432")));

    let mut out = Vec::new();
    encode_v2(
        addr("[2001:db8::1]:12345"),
        addr("[2001:db8::2]:5432"),
        &mut out,
    );
    assert_eq!(out, golden);
}

#[test]
fn v2_local_golden_bytes_decode_and_encode() {
    let (h, consumed) = complete(V2_LOCAL_GOLDEN);
    assert_eq!(consumed, 16);
    assert_eq!(h.command, Command::Local);
    assert_eq!((h.source, h.destination), (None, None));

    let mut out = Vec::new();
    encode_v2_local(&mut out);
    assert_eq!(out, V2_LOCAL_GOLDEN);
}

#[test]
fn v2_local_ignores_the_block_and_its_family() {
    // A LOCAL header from a proxy that still fills in addresses (and even an unknown family)
    // must be accepted and its block skipped, per the specification.
    let mut b = V2_SIGNATURE.to_vec();
    b.extend_from_slice(&[0x20, 0xff, 0x00, 0x03, 1, 2, 3]);
    b.extend_from_slice(b"app data");
    let (h, consumed) = complete(&b);
    assert_eq!(consumed, 19);
    assert_eq!(h.command, Command::Local);
    assert_eq!(h.source, None);
}

#[test]
fn v2_proxy_unspec_and_unix_fall_back_to_the_peer_address() {
    let mut unspec = V2_SIGNATURE.to_vec();
    unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x02, 9, 9]);
    let (h, consumed) = complete(&unspec);
    assert_eq!(
        (h.command, h.transport, h.source, consumed),
        (Command::Proxy, Transport::Unspec, None, 18)
    );

    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0x00, 0xdc]); // 216 + a 4-byte TLV
    unix.extend_from_slice(&[b'/'; 216]);
    unix.extend_from_slice(&[tlv::NOOP, 0, 1, 0]);
    let (h, consumed) = complete(&unix);
    assert_eq!((h.source, h.destination, consumed), (None, None, 236));
    assert_eq!(h.tlvs.get(tlv::NOOP), Some(&[0u8][..]));
}

#[test]
fn v2_datagram_is_reported() {
    let mut b = v2_tcp4_golden();
    b[13] = 0x12;
    let (h, _) = complete(&b);
    assert_eq!(h.transport, Transport::Datagram);
    assert_eq!(h.source, Some(addr("192.0.2.10:56324")));
}

#[test]
fn v2_tlvs_round_trip_and_are_found_by_kind() {
    let tlvs = [
        Tlv {
            kind: tlv::ALPN,
            value: b"h2",
        },
        Tlv {
            kind: tlv::AUTHORITY,
            value: b"db.example.com",
        },
        Tlv {
            kind: tlv::NOOP,
            value: b"",
        },
        Tlv {
            kind: tlv::AWS,
            value: b"\x01vpce-0123456789abcdef0",
        },
    ];
    let mut out = Vec::new();
    encode_v2_with_tlvs(
        addr("10.1.2.3:40000"),
        addr("10.9.8.7:6379"),
        &tlvs,
        &mut out,
    )
    .expect("fits");
    let (h, consumed) = complete(&out);
    assert_eq!(consumed, out.len());
    assert_eq!(h.tlvs.iter().collect::<Vec<_>>(), tlvs);
    assert_eq!(h.tlvs.get(tlv::AUTHORITY), Some(&b"db.example.com"[..]));
    assert_eq!(h.tlvs.get(tlv::SSL), None);
    assert_eq!(h.source, Some(addr("10.1.2.3:40000")));
}

#[test]
fn v2_tlvs_that_do_not_fit_are_refused_and_nothing_is_written() {
    let big = vec![0u8; V2_MAX_PAYLOAD];
    let mut out = Vec::new();
    let e = encode_v2_with_tlvs(
        addr("10.1.2.3:1"),
        addr("10.9.8.7:2"),
        &[Tlv {
            kind: tlv::NOOP,
            value: &big,
        }],
        &mut out,
    );
    assert_eq!(
        e,
        Err(ProxyError::PayloadTooLong {
            len: 12 + 3 + 4096,
            max: V2_MAX_PAYLOAD
        })
    );
    assert!(out.is_empty());
}

#[test]
fn v2_mixed_families_are_sent_as_mapped_ipv6() {
    let mut out = Vec::new();
    encode_v2(addr("192.0.2.1:1000"), addr("[2001:db8::9]:5432"), &mut out);
    assert_eq!(out[13], 0x21);
    let (h, _) = complete(&out);
    assert_eq!(h.source, Some(addr("[::ffff:192.0.2.1]:1000")));
    assert_eq!(h.destination, Some(addr("[2001:db8::9]:5432")));
}

#[test]
fn v2_round_trips() {
    let pairs = [
        ("0.0.0.0:0", "255.255.255.255:65535"),
        ("10.0.0.1:5432", "10.0.0.2:6432"),
        ("[::1]:1", "[fe80::1]:2"),
        ("[2001:db8::1]:65535", "[2001:db8::2]:0"),
    ];
    for (src, dst) in pairs {
        let mut out = Vec::new();
        encode_v2(addr(src), addr(dst), &mut out);
        let data_behind = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";
        out.extend_from_slice(data_behind);
        let (h, consumed) = complete(&out);
        assert_eq!(
            (h.source, h.destination),
            (Some(addr(src)), Some(addr(dst)))
        );
        assert_eq!(&out[consumed..], data_behind, "consumed exactly the header");
    }
}

#[test]
fn v1_golden_lines() {
    let (h, n) = complete(b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 443\r\nGET /");
    assert_eq!(n, 46);
    assert_eq!(
        (h.command, h.transport),
        (Command::Proxy, Transport::Stream)
    );
    assert_eq!(h.source, Some(addr("192.0.2.10:56324")));
    assert_eq!(h.destination, Some(addr("198.51.100.7:443")));

    let (h, n) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 12345 5432\r\n");
    assert_eq!(n, 47);
    assert_eq!(h.source, Some(addr("[2001:db8::1]:12345")));
    assert_eq!(h.destination, Some(addr("[2001:db8::2]:5432")));

    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        let (h, n) = complete(line);
        assert_eq!(n, line.len());
        assert_eq!(
            (h.command, h.transport, h.source, h.destination),
            (Command::Proxy, Transport::Unspec, None, None)
        );
    }

    // The longest possible line is accepted.
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), V1_MAX_LINE);
    assert_eq!(complete(longest).1, V1_MAX_LINE);
}

#[test]
fn v1_encode_golden_and_round_trip() {
    let mut out = Vec::new();
    encode_v1(addr("192.0.2.10:56324"), addr("198.51.100.7:443"), &mut out);
    assert_eq!(out, b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 443\r\n");

    out.clear();
    encode_v1(
        addr("[2001:db8::1]:12345"),
        addr("192.0.2.1:5432"),
        &mut out,
    );
    assert_eq!(
        out,
        b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 12345 5432\r\n"
    );
    let (h, _) = complete(&out);
    assert_eq!(h.destination, Some(addr("[::ffff:192.0.2.1]:5432")));

    out.clear();
    encode_v1_unknown(&mut out);
    assert_eq!(out, b"PROXY UNKNOWN\r\n");
}

/// Feeds `valid` the way a caller must: start empty, read exactly `needed_at_least` more bytes
/// each time. The caller must land exactly on the end of the header, never beyond it.
fn read_like_a_caller(stream: &[u8], header_len: usize) {
    let mut have = 0;
    loop {
        match decode(&stream[..have]) {
            Ok(Decoded::Complete { consumed, .. }) => {
                assert_eq!(consumed, header_len);
                assert_eq!(have, header_len, "caller read past the header");
                return;
            }
            Ok(Decoded::Incomplete { needed_at_least }) => {
                assert!(needed_at_least >= 1);
                have += needed_at_least;
                assert!(
                    have <= header_len,
                    "asked to read past the header: {have} > {header_len}"
                );
            }
            Err(e) => panic!("prefix of {have} bytes: {e}"),
        }
    }
}

fn valid_headers() -> Vec<Vec<u8>> {
    let mut with_tlvs = Vec::new();
    encode_v2_with_tlvs(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:2"),
        &[
            Tlv {
                kind: tlv::UNIQUE_ID,
                value: b"abc",
            },
            Tlv {
                kind: tlv::NOOP,
                value: b"",
            },
        ],
        &mut with_tlvs,
    )
    .expect("fits");
    vec![
        v2_tcp4_golden(),
        v2_tcp6_golden(),
        V2_LOCAL_GOLDEN.to_vec(),
        with_tlvs,
        b"PROXY TCP4 192.0.2.10 198.51.100.7 56324 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::1 2001:db8::2 12345 5432\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN junk\r\n".to_vec(),
        b"PROXY TCP4 1.1.1.1 1.1.1.1 0 0\r\n".to_vec(),
    ]
}

#[test]
fn every_truncation_is_incomplete_and_never_asks_past_the_header() {
    for header in valid_headers() {
        let mut stream = header.clone();
        stream.extend_from_slice(b"\x16\x03\x01 application bytes that must not be read");
        for cut in 0..header.len() {
            match decode(&header[..cut]) {
                Ok(Decoded::Incomplete { needed_at_least }) => {
                    assert!(needed_at_least >= 1);
                    assert!(
                        cut + needed_at_least <= header.len(),
                        "{:?} cut at {cut}: needs {needed_at_least}",
                        String::from_utf8_lossy(&header)
                    );
                }
                other => panic!("{header:?} cut at {cut}: {other:?}"),
            }
        }
        read_like_a_caller(&stream, header.len());
    }
}

#[test]
fn v2_needs_exactly_the_rest_once_the_length_is_known() {
    let golden = v2_tcp6_golden();
    for cut in 16..golden.len() {
        assert_eq!(
            decode(&golden[..cut]),
            Ok(Decoded::Incomplete {
                needed_at_least: golden.len() - cut
            })
        );
    }
    for cut in 0..16 {
        let expected = if cut == 0 { V1_MIN_LINE } else { 16 - cut };
        assert_eq!(
            decode(&golden[..cut]),
            Ok(Decoded::Incomplete {
                needed_at_least: expected
            })
        );
    }
}

#[test]
fn malformed_inputs_give_the_right_error() {
    let with = |i: usize, b: u8| {
        let mut v = v2_tcp4_golden();
        v[i] = b;
        v
    };
    let cases: Vec<(Vec<u8>, ProxyError)> = vec![
        (b"GET / HTTP/1.1\r\n".to_vec(), ProxyError::NotProxy),
        (b"\x16\x03\x01".to_vec(), ProxyError::NotProxy),
        (b"PROXI".to_vec(), ProxyError::BadSignature { version: 1 }),
        (
            b"PROXY\r\n".to_vec(),
            ProxyError::BadSignature { version: 1 },
        ),
        (
            b"\r\n\r\nX".to_vec(),
            ProxyError::BadSignature { version: 2 },
        ),
        (with(11, b'x'), ProxyError::BadSignature { version: 2 }),
        (with(12, 0x11), ProxyError::UnsupportedVersion(1)),
        (with(12, 0x31), ProxyError::UnsupportedVersion(3)),
        (with(12, 0x22), ProxyError::UnsupportedCommand(2)),
        (with(13, 0x41), ProxyError::BadFamily(0x41)),
        (with(13, 0x13), ProxyError::BadFamily(0x13)),
        (with(13, 0x10), ProxyError::BadFamily(0x10)),
        (with(13, 0x01), ProxyError::BadFamily(0x01)),
        (
            with(15, 0x0b),
            ProxyError::TruncatedAddresses {
                family: "INET",
                needed: 12,
                len: 11,
            },
        ),
        (
            with(13, 0x21),
            ProxyError::TruncatedAddresses {
                family: "INET6",
                needed: 36,
                len: 12,
            },
        ),
        (
            with(13, 0x31),
            ProxyError::TruncatedAddresses {
                family: "UNIX",
                needed: 216,
                len: 12,
            },
        ),
        (
            [&V2_SIGNATURE[..], &[0x21, 0x11, 0xff, 0xff]].concat(),
            ProxyError::PayloadTooLong {
                len: 65535,
                max: V2_MAX_PAYLOAD,
            },
        ),
        (
            [
                &v2_tcp4_golden()[..12],
                &[0x21, 0x11, 0x00, 0x0e],
                &v2_tcp4_golden()[16..],
                &[tlv::ALPN, 0],
            ]
            .concat(),
            ProxyError::TruncatedTlv { offset: 12 },
        ),
        (
            [
                &v2_tcp4_golden()[..12],
                &[0x21, 0x11, 0x00, 0x12],
                &v2_tcp4_golden()[16..],
                &[tlv::NOOP, 0, 0, tlv::ALPN, 0, 9],
            ]
            .concat(),
            ProxyError::TruncatedTlv { offset: 15 },
        ),
        (
            [b"PROXY ", &[b'A'; 101][..]].concat(),
            ProxyError::V1LineTooLong { max: 107 },
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\n".to_vec(),
            ProxyError::V1Malformed("line does not end with CRLF"),
        ),
        (
            b"PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("protocol must be TCP4, TCP6 or UNKNOWN"),
        ),
        (
            b"PROXY  TCP4 1.1.1.1 2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("protocol must be TCP4, TCP6 or UNKNOWN"),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n".to_vec(),
            ProxyError::V1Malformed(
                "expected exactly four fields after the protocol, separated by single spaces",
            ),
        ),
        (
            b"PROXY TCP4 1.1.1.1  2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed(
                "expected exactly four fields after the protocol, separated by single spaces",
            ),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2 \r\n".to_vec(),
            ProxyError::V1Malformed(
                "expected exactly four fields after the protocol, separated by single spaces",
            ),
        ),
        (
            b"PROXY TCP4 ::1 2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad IPv4 address for TCP4"),
        ),
        (
            b"PROXY TCP4 1.1.1.256 2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad IPv4 address for TCP4"),
        ),
        (
            b"PROXY TCP6 1.1.1.1 ::2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad IPv6 address for TCP6"),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 65536 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad port"),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 01 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad port"),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 +1 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad port"),
        ),
        (
            b"PROXY TCP4 1.1.1.1 2.2.2.2 1 \xff\r\n".to_vec(),
            ProxyError::V1Malformed("bad port"),
        ),
        (
            b"PROXY TCP4 1.1.1.\xff 2.2.2.2 1 2\r\n".to_vec(),
            ProxyError::V1Malformed("bad address"),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            err(&input),
            expected,
            "input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn error_messages_are_lowercase_and_name_the_subject() {
    assert_eq!(
        ProxyError::NotProxy.to_string(),
        "not a PROXY protocol header"
    );
    assert_eq!(
        ProxyError::BadFamily(0x41).to_string(),
        "bad PROXY protocol v2 address family and transport 0x41"
    );
    assert_eq!(
        ProxyError::TruncatedAddresses {
            family: "INET6",
            needed: 36,
            len: 12
        }
        .to_string(),
        "truncated PROXY protocol v2 addresses: INET6 needs 36 bytes, payload has 12"
    );
    assert_eq!(
        ProxyError::V1Malformed("bad port").to_string(),
        "malformed PROXY protocol v1 line: bad port"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5u64 << 40 | 0x0172);
    for _ in 0..20_000 {
        let len = rng.usize(0..300);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Random bytes almost never start with a signature; give most of them one so the
        // decoder gets past the first byte.
        let prefix: &[u8] = match rng.u8(0..3) {
            0 => &V2_SIGNATURE,
            1 => b"PROXY ",
            _ => b"",
        };
        buf.splice(0..0, prefix.iter().copied());
        check_invariants(&buf);
    }
}

#[test]
fn mutated_valid_headers_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    let headers = valid_headers();
    for _ in 0..50_000 {
        let mut buf = headers[rng.usize(..headers.len())].clone();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(0..4) {
                0 if !buf.is_empty() => {
                    let i = rng.usize(..buf.len());
                    buf[i] = rng.u8(..);
                }
                1 if !buf.is_empty() => {
                    let i = rng.usize(..buf.len());
                    buf.truncate(i);
                }
                2 => {
                    let i = rng.usize(..=buf.len());
                    buf.insert(i, rng.u8(..));
                }
                _ => buf.extend((0..rng.usize(0..40)).map(|_| rng.u8(..))),
            }
        }
        check_invariants(&buf);
    }
}

fn check_invariants(buf: &[u8]) {
    match decode(buf) {
        Ok(Decoded::Complete { header, consumed }) => {
            assert!(consumed <= buf.len());
            assert!(
                header.tlvs.as_bytes().len() <= consumed,
                "allocated more than the input"
            );
            // Decoding the header alone gives the same result: nothing behind it was looked at.
            assert_eq!(
                decode(&buf[..consumed]),
                Ok(Decoded::Complete { header, consumed })
            );
        }
        Ok(Decoded::Incomplete { needed_at_least }) => {
            assert!(needed_at_least >= 1);
            assert!(buf.len() + needed_at_least <= V2_FIXED_LEN + V2_MAX_PAYLOAD);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
