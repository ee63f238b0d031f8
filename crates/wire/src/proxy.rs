//! PROXY protocol headers, version 1 (a text line) and version 2 (binary), as defined by
//! HAProxy's specification. A proxy in front of Sumun prepends one header to a connection to
//! tell us the client's real address; Sumun prepends one to a target connection for the same
//! reason.
//!
//! This module only turns bytes into a [`ProxyHeader`] and back. It never reads a socket:
//! [`decode`] tells its caller how many more bytes it needs ([`Decoded::Incomplete`]) so the
//! caller can read exactly the header and not one byte of the application data behind it.
//! Decoding never panics, never trusts a length field before checking it against a limit, and
//! never allocates more than the bytes it was given. It does not decide whether a peer may send
//! a header at all (that is the listener's trusted-proxy policy) and it does not verify the
//! CRC32C TLV.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with. They were chosen so that no text protocol
/// (HTTP, SMTP, ...) can start with them by accident.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 line the specification allows, CRLF included.
pub const V1_MAX_LINE: usize = 107;

/// The largest version 2 payload (addresses plus TLVs) we accept. The length field allows
/// 65535 bytes; real headers are under 300 even with TLS TLVs, and this bound keeps a hostile
/// peer from making a caller buffer 64 KiB per half-open connection.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// Signature, version/command, family/transport and the 16-bit length.
const V2_FIXED_LEN: usize = 16;

const V1_PREFIX: &[u8] = b"PROXY ";

/// `PROXY UNKNOWN\r\n`, the shortest header of either version: asking for this many bytes
/// before anything is known never reads past the end of a valid header.
const V1_MIN_LINE: usize = 15;

const V2_VERSION: u8 = 2;
/// Version 2 in the high nibble, the command in the low one.
const V2_LOCAL: u8 = 0x20;
const V2_PROXY: u8 = 0x21;
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;
const TLV_HEADER_LEN: usize = 3;

/// Well-known TLV types (`PP2_TYPE_*`). Others, including vendor types, are kept as raw bytes.
pub mod tlv {
    /// Application-Layer Protocol Negotiation result, e.g. `h2`.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI or `Host`).
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32C of the whole header; not verified here.
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier chosen by the proxy.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details of the client connection, with its own sub-TLVs.
    pub const SSL: u8 = 0x20;
    /// The network namespace the connection was accepted in.
    pub const NETNS: u8 = 0x30;
    /// AWS PrivateLink: the VPC endpoint id (first byte is a subtype).
    pub const AWS: u8 = 0xEA;
}

/// The result of looking at the start of a connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header; the application's bytes start at `consumed`.
    Complete {
        header: ProxyHeader,
        consumed: usize,
    },
    /// The bytes so far are a valid beginning. Reading exactly `needed_at_least` more bytes
    /// (at least 1) never reads past the end of the header.
    Incomplete { needed_at_least: usize },
}

/// What the proxy told us about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// `Local` connections come from the proxy itself (health checks) and carry no client.
    pub command: Command,
    /// The transport the proxy saw, so a TCP-only listener can refuse datagram headers.
    pub transport: Transport,
    /// The client's address; `None` for `LOCAL`, `UNSPEC`, `UNKNOWN` and UNIX sockets, in
    /// which case the caller uses the connection's own peer address.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, `None` in the same cases as `source`.
    pub destination: Option<SocketAddr>,
    /// Version 2 extensions; always empty for version 1.
    pub tlvs: Tlvs,
}

/// The version 2 command (version 1 headers always decode as `Proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Local,
    Proxy,
}

/// The transport named by the header's family byte (`TCP4`/`TCP6` in version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unspec,
    Stream,
    Datagram,
}

/// The TLVs of a version 2 header, kept as the validated bytes they arrived in so that a header
/// full of empty TLVs costs no more memory than its own size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tlvs {
    raw: Vec<u8>,
}

/// One TLV, borrowed from [`Tlvs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The `PP2_TYPE_*` byte; see [`tlv`].
    pub kind: u8,
    pub value: &'a [u8],
}

impl Tlvs {
    pub fn iter(&self) -> TlvIter<'_> {
        TlvIter { rest: &self.raw }
    }

    /// The value of the first TLV of this kind.
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.iter().find(|t| t.kind == kind).map(|t| t.value)
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The TLVs exactly as they appeared on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

impl<'a> IntoIterator for &'a Tlvs {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;

    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

/// Iterates over [`Tlvs`]; the bytes were validated at decode time, so it simply stops if they
/// were not (it cannot be handed unvalidated bytes from outside this module).
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let (tlv, rest) = split_tlv(self.rest).ok()??;
        self.rest = rest;
        Some(tlv)
    }
}

/// Splits the first TLV off `bytes`: `Ok(None)` at the end, `Err(())` if it is cut short.
fn split_tlv(bytes: &[u8]) -> Result<Option<(Tlv<'_>, &[u8])>, ()> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return Err(());
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(());
    }
    let (value, rest) = rest.split_at(len);
    Ok(Some((Tlv { kind, value }, rest)))
}

/// Why bytes are not an acceptable PROXY header. The messages are safe to log but are not sent
/// to the peer: the protocol has no way to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("bad PROXY protocol v{version} signature")]
    BadSignature { version: u8 },
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported PROXY protocol v2 command {0:#x}")]
    UnsupportedCommand(u8),
    #[error("bad PROXY protocol v2 address family and transport {0:#04x}")]
    BadFamily(u8),
    #[error("PROXY protocol v2 payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLong { len: usize, max: usize },
    #[error(
        "truncated PROXY protocol v2 addresses: {family} needs {needed} bytes, payload has {len}"
    )]
    TruncatedAddresses {
        family: &'static str,
        needed: usize,
        len: usize,
    },
    #[error("truncated PROXY protocol v2 TLV at payload offset {offset}")]
    TruncatedTlv { offset: usize },
    #[error("PROXY protocol v1 line longer than {max} bytes")]
    V1LineTooLong { max: usize },
    #[error("malformed PROXY protocol v1 line: {0}")]
    V1Malformed(&'static str),
}

/// Decodes the header at the start of `buf`, or says how many more bytes it needs.
///
/// The version is told by the first byte, so an unrelated protocol is rejected as soon as one
/// byte is available, and every later field is checked as soon as it has arrived rather than
/// after the whole header.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    match buf.first() {
        None => Ok(Decoded::Incomplete {
            needed_at_least: V1_MIN_LINE,
        }),
        Some(&b) if b == V2_SIGNATURE[0] => {
            check_prefix(buf, &V2_SIGNATURE, 2)?;
            decode_v2(buf)
        }
        Some(&b) if b == V1_PREFIX[0] => {
            check_prefix(buf, V1_PREFIX, 1)?;
            decode_v1(buf)
        }
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Checks the part of `signature` that has arrived.
fn check_prefix(buf: &[u8], signature: &[u8], version: u8) -> Result<(), ProxyError> {
    let n = buf.len().min(signature.len());
    if buf.get(..n) == signature.get(..n) {
        Ok(())
    } else {
        Err(ProxyError::BadSignature { version })
    }
}

fn incomplete(needed_at_least: usize) -> Result<Decoded, ProxyError> {
    Ok(Decoded::Incomplete {
        needed_at_least: needed_at_least.max(1),
    })
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let Some((fixed, _)) = buf.split_first_chunk::<V2_FIXED_LEN>() else {
        return incomplete(V2_FIXED_LEN - buf.len());
    };
    let [.., version_command, family, len_hi, len_lo] = *fixed;

    let version = version_command >> 4;
    if version != V2_VERSION {
        return Err(ProxyError::UnsupportedVersion(version));
    }
    let command = match version_command & 0x0f {
        0x0 => Command::Local,
        0x1 => Command::Proxy,
        other => return Err(ProxyError::UnsupportedCommand(other)),
    };
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::PayloadTooLong {
            len,
            max: V2_MAX_PAYLOAD,
        });
    }
    // The specification has LOCAL receivers discard the whole block, family included, so a
    // family we do not know is only an error for PROXY.
    let layout = match command {
        Command::Local => None,
        Command::Proxy => Some(v2_layout(family)?),
    };
    if let Some((layout, _)) = layout {
        if len < layout.len() {
            return Err(ProxyError::TruncatedAddresses {
                family: layout.name(),
                needed: layout.len(),
                len,
            });
        }
    }

    let consumed = V2_FIXED_LEN + len;
    let Some(payload) = buf.get(V2_FIXED_LEN..consumed) else {
        return incomplete(consumed - buf.len());
    };

    let Some((layout, transport)) = layout else {
        return Ok(Decoded::Complete {
            header: ProxyHeader {
                command,
                transport: Transport::Unspec,
                source: None,
                destination: None,
                tlvs: Tlvs::default(),
            },
            consumed,
        });
    };
    let (addresses, tlv_bytes) = payload.split_at(layout.len());
    let (source, destination) = match layout {
        // An UNSPEC block has no defined layout, so TLVs cannot be found in it either.
        V2Layout::Unspec => (None, None),
        V2Layout::Inet => {
            let (src, dst, sport, dport) = fields::<4>(addresses);
            (
                Some(SocketAddr::new(Ipv4Addr::from(src).into(), sport)),
                Some(SocketAddr::new(Ipv4Addr::from(dst).into(), dport)),
            )
        }
        V2Layout::Inet6 => {
            let (src, dst, sport, dport) = fields::<16>(addresses);
            (
                Some(SocketAddr::new(Ipv6Addr::from(src).into(), sport)),
                Some(SocketAddr::new(Ipv6Addr::from(dst).into(), dport)),
            )
        }
        // Paths are not socket addresses; the caller falls back to the peer address.
        V2Layout::Unix => (None, None),
    };
    let tlvs = match layout {
        V2Layout::Unspec => Tlvs::default(),
        _ => validate_tlvs(tlv_bytes, layout.len())?,
    };
    Ok(Decoded::Complete {
        header: ProxyHeader {
            command,
            transport,
            source,
            destination,
            tlvs,
        },
        consumed,
    })
}

/// How the address block of a PROXY command is laid out.
#[derive(Debug, Clone, Copy)]
enum V2Layout {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

impl V2Layout {
    fn len(self) -> usize {
        match self {
            V2Layout::Unspec => 0,
            V2Layout::Inet => V2_INET_LEN,
            V2Layout::Inet6 => V2_INET6_LEN,
            V2Layout::Unix => V2_UNIX_LEN,
        }
    }

    fn name(self) -> &'static str {
        match self {
            V2Layout::Unspec => "UNSPEC",
            V2Layout::Inet => "INET",
            V2Layout::Inet6 => "INET6",
            V2Layout::Unix => "UNIX",
        }
    }
}

/// The family byte: address family in the high nibble, transport in the low one. Only the
/// combinations the specification lists are accepted.
fn v2_layout(family: u8) -> Result<(V2Layout, Transport), ProxyError> {
    let layout = match family >> 4 {
        0x0 => V2Layout::Unspec,
        0x1 => V2Layout::Inet,
        0x2 => V2Layout::Inet6,
        0x3 => V2Layout::Unix,
        _ => return Err(ProxyError::BadFamily(family)),
    };
    let transport = match family & 0x0f {
        0x0 => Transport::Unspec,
        0x1 => Transport::Stream,
        0x2 => Transport::Datagram,
        _ => return Err(ProxyError::BadFamily(family)),
    };
    // UNSPEC goes only with UNSPEC: a real family needs a real transport and vice versa.
    if matches!(layout, V2Layout::Unspec) != (transport == Transport::Unspec) {
        return Err(ProxyError::BadFamily(family));
    }
    Ok((layout, transport))
}

/// Source address, destination address, source port, destination port. The caller has checked
/// that `block` is `2 * N + 4` bytes long; a shorter block yields zeros rather than a panic.
fn fields<const N: usize>(block: &[u8]) -> ([u8; N], [u8; N], u16, u16) {
    let mut src = [0u8; N];
    let mut dst = [0u8; N];
    let mut ports = [0u8; 4];
    for (i, &b) in block.iter().enumerate() {
        match i {
            i if i < N => src[i] = b,
            i if i < 2 * N => dst[i - N] = b,
            i if i < 2 * N + 4 => ports[i - 2 * N] = b,
            _ => break,
        }
    }
    let [s0, s1, d0, d1] = ports;
    (
        src,
        dst,
        u16::from_be_bytes([s0, s1]),
        u16::from_be_bytes([d0, d1]),
    )
}

/// Checks that `bytes` is a whole number of TLVs; `base` is where they start in the payload,
/// for the error message.
fn validate_tlvs(bytes: &[u8], base: usize) -> Result<Tlvs, ProxyError> {
    let mut rest = bytes;
    loop {
        match split_tlv(rest) {
            Ok(None) => break,
            Ok(Some((_, after))) => rest = after,
            Err(()) => {
                return Err(ProxyError::TruncatedTlv {
                    offset: base + (bytes.len() - rest.len()),
                })
            }
        }
    }
    Ok(Tlvs {
        raw: bytes.to_vec(),
    })
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let window = buf.get(..V1_MAX_LINE).unwrap_or(buf);
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LINE {
            return Err(ProxyError::V1LineTooLong { max: V1_MAX_LINE });
        }
        // The line still needs its "\n", and its "\r" too unless that just arrived; never ask
        // for more than the longest line could still hold.
        let for_crlf = if buf.last() == Some(&b'\r') { 1 } else { 2 };
        let needed = V1_MIN_LINE
            .saturating_sub(buf.len())
            .max(for_crlf)
            .min(V1_MAX_LINE - buf.len());
        return incomplete(needed);
    };
    let line = match newline.checked_sub(1).map(|cr| window.split_at(cr)) {
        Some((line, [b'\r', ..])) => line,
        _ => return Err(ProxyError::V1Malformed("line does not end with CRLF")),
    };
    let header = parse_v1_line(line)?;
    Ok(Decoded::Complete {
        header,
        consumed: newline + 1,
    })
}

/// Parses `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN ...`, without the CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let rest = line
        .strip_prefix(V1_PREFIX)
        .ok_or(ProxyError::BadSignature { version: 1 })?;
    let mut fields = rest.split(|&b| b == b' ');
    let protocol = fields.next().unwrap_or_default();
    let unknown = ProxyHeader {
        command: Command::Proxy,
        transport: Transport::Unspec,
        source: None,
        destination: None,
        tlvs: Tlvs::default(),
    };
    let v6 = match protocol {
        // Whatever follows UNKNOWN is to be ignored, per the specification.
        b"UNKNOWN" => return Ok(unknown),
        b"TCP4" => false,
        b"TCP6" => true,
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol must be TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::V1Malformed(
            "expected exactly four fields after the protocol, separated by single spaces",
        ));
    };
    let src = v1_ip(src, v6)?;
    let dst = v1_ip(dst, v6)?;
    let sport = v1_port(sport)?;
    let dport = v1_port(dport)?;
    Ok(ProxyHeader {
        transport: Transport::Stream,
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
        ..unknown
    })
}

fn v1_ip(field: &[u8], v6: bool) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Malformed("bad address"))?;
    if v6 {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::V1Malformed("bad IPv6 address for TCP6"))
    } else {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::V1Malformed("bad IPv4 address for TCP4"))
    }
}

/// A decimal port, 0 to 65535, without sign or leading zeros as the specification requires.
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    const BAD: ProxyError = ProxyError::V1Malformed("bad port");
    if field.is_empty() || field.len() > 5 || (field.len() > 1 && field.first() == Some(&b'0')) {
        return Err(BAD);
    }
    let mut port: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        // At most five digits, so this cannot overflow a u32.
        port = port * 10 + u32::from(b - b'0');
    }
    u16::try_from(port).map_err(|_| BAD)
}

/// Appends a version 2 PROXY header for a stream from `source` to `destination`. If the two
/// families differ, both are sent as IPv6 (IPv4 addresses mapped into `::ffff:0:0/96`), since
/// one header carries one family.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    encode_v2_proxy(source, destination, &[], out);
}

/// Like [`encode_v2`] with TLVs after the addresses. Fails, appending nothing, if the payload
/// would exceed [`V2_MAX_PAYLOAD`], since our own decoder (and likely the peer's) would refuse it.
pub fn encode_v2_with_tlvs(
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[Tlv<'_>],
    out: &mut Vec<u8>,
) -> Result<(), ProxyError> {
    let addresses = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => V2_INET_LEN,
        _ => V2_INET6_LEN,
    };
    let mut len = addresses;
    for t in tlvs {
        len = len.saturating_add(TLV_HEADER_LEN + t.value.len());
    }
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::PayloadTooLong {
            len,
            max: V2_MAX_PAYLOAD,
        });
    }
    encode_v2_proxy(source, destination, tlvs, out);
    Ok(())
}

/// Appends a version 2 LOCAL header: the connection is the proxy's own (a health check), so the
/// receiver must use the connection's real endpoints.
pub fn encode_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[V2_LOCAL, 0x00, 0, 0]);
}

/// Callers have checked that the TLVs fit (or pass none).
fn encode_v2_proxy(
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: &[Tlv<'_>],
    out: &mut Vec<u8>,
) {
    let tlv_len: usize = tlvs.iter().map(|t| TLV_HEADER_LEN + t.value.len()).sum();
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(0x11);
            push_len(out, V2_INET_LEN + tlv_len);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(0x21);
            push_len(out, V2_INET6_LEN + tlv_len);
            out.extend_from_slice(&as_v6(src).octets());
            out.extend_from_slice(&as_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    for t in tlvs {
        out.push(t.kind);
        push_len(out, t.value.len());
        out.extend_from_slice(t.value);
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Lengths are bounded by V2_MAX_PAYLOAD (or a u16-sized TLV value) before we get here;
    // saturating keeps a logic error from wrapping silently into a shorter, valid-looking header.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Appends a version 1 line, for targets that only understand the text form. Mixed families
/// are sent as `TCP6`, as in [`encode_v2`].
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let mut line = String::with_capacity(V1_MAX_LINE);
    // Writing into a String cannot fail.
    let _ = match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => write!(line, "PROXY TCP4 {src} {dst}"),
        (src, dst) => write!(line, "PROXY TCP6 {} {}", as_v6(src), as_v6(dst)),
    };
    let _ = write!(line, " {} {}\r\n", source.port(), destination.port());
    out.extend_from_slice(line.as_bytes());
}

/// Appends `PROXY UNKNOWN\r\n`, the version 1 equivalent of LOCAL.
pub fn encode_v1_unknown(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PROXY UNKNOWN\r\n");
}

#[cfg(test)]
mod tests;
