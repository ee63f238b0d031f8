//! The connection phase: the server's greeting ([`HandshakeV10`]), the client's answer
//! ([`ClientHello`]: a 32-byte [`SslRequest`] before TLS, or a [`HandshakeResponse`]), and the
//! authentication exchange after it ([`AuthSwitchRequest`], [`AuthMoreData`], the one-byte
//! signals of `caching_sha2_password`), plus `COM_CHANGE_USER` ([`ChangeUser`]), which
//! repeats that exchange inside a session.
//!
//! Only protocol 4.1 clients are accepted (every client of the last twenty years); a client
//! without `CLIENT_PROTOCOL_41` gets [`Malformed`]. Structs borrow from the payload. Auth
//! responses are shown by `Debug` as their length only: with `mysql_clear_password` they
//! are the password.

use std::fmt;

use super::codec::{put_lenenc_bytes, put_nul_bytes, put_u16, put_u32, Reader};
use super::flags::{
    Capabilities, CLIENT_CONNECT_ATTRS, CLIENT_CONNECT_WITH_DB, CLIENT_MYSQL, CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION,
    CLIENT_SSL, CLIENT_ZSTD_COMPRESSION_ALGORITHM,
};
use super::Malformed;

pub const PROTOCOL_VERSION: u8 = 10;
/// Length of the SSLRequest payload (and of the fixed part of a HandshakeResponse41).
pub const SSL_REQUEST_LEN: usize = 32;

pub const AUTH_SWITCH_HEADER: u8 = 0xFE;
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;
/// `caching_sha2_password`: the client asks for the server's RSA public key.
pub const CACHING_SHA2_REQUEST_PUBLIC_KEY: u8 = 0x02;
/// `caching_sha2_password` (in an AuthMoreData): the scramble matched the cache, an OK follows.
pub const CACHING_SHA2_FAST_AUTH_OK: u8 = 0x03;
/// `caching_sha2_password` (in an AuthMoreData): send the password (over TLS, or RSA-encrypted).
pub const CACHING_SHA2_PERFORM_FULL_AUTH: u8 = 0x04;

pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
pub const SHA256_PASSWORD: &str = "sha256_password";
pub const MYSQL_CLEAR_PASSWORD: &str = "mysql_clear_password";
pub const CLIENT_ED25519: &str = "client_ed25519";

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeV10<'a> {
    pub server_version: &'a [u8],
    pub connection_id: u32,
    /// The nonce for password scrambles, without the NUL that servers append (20 bytes from
    /// MySQL and MariaDB).
    pub scramble: Vec<u8>,
    /// All capabilities, MariaDB's extended ones in the high 32 bits when `CLIENT_MYSQL` is
    /// clear.
    pub capabilities: Capabilities,
    pub charset: u8,
    pub status: u16,
    /// The default plugin (`CLIENT_PLUGIN_AUTH`), e.g. `mysql_native_password`.
    pub auth_plugin: &'a [u8],
}

impl<'a> HandshakeV10<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        const P: &str = "handshake";
        let m = |what| Malformed::new(P, what);
        let mut r = Reader::new(payload);
        match r.u8() {
            Some(PROTOCOL_VERSION) => {}
            Some(0xFF) => return Err(m("the server sent an error instead")),
            _ => return Err(m("protocol version is not 10")),
        }
        let server_version = r.nul_bytes().ok_or(m("server version"))?;
        let connection_id = r.u32().ok_or(m("connection id"))?;
        let part1 = r.bytes(8).ok_or(m("scramble"))?;
        r.skip(1).ok_or(m("filler"))?;
        let low = r.u16().ok_or(m("capabilities"))?;
        let mut hs = HandshakeV10 {
            server_version,
            connection_id,
            scramble: part1.to_vec(),
            capabilities: Capabilities(u64::from(low)),
            charset: 0,
            status: 0,
            auth_plugin: b"",
        };
        if r.is_empty() {
            return Ok(hs);
        }
        hs.charset = r.u8().ok_or(m("charset"))?;
        hs.status = r.u16().ok_or(m("status flags"))?;
        let high = r.u16().ok_or(m("capabilities"))?;
        let data_len = r.u8().ok_or(m("auth data length"))?;
        r.skip(6).ok_or(m("reserved bytes"))?;
        let mariadb = r.u32().ok_or(m("reserved bytes"))?;
        let mut caps = u64::from(low) | u64::from(high) << 16;
        if caps & CLIENT_MYSQL == 0 {
            caps |= u64::from(mariadb) << 32;
        }
        hs.capabilities = Capabilities(caps);
        if hs.capabilities.has(CLIENT_SECURE_CONNECTION) {
            let n = usize::from(data_len).saturating_sub(8).max(13);
            let part2 = r.bytes(n.min(r.remaining())).ok_or(m("scramble"))?;
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            hs.scramble.extend_from_slice(part2);
        }
        if hs.capabilities.has(CLIENT_PLUGIN_AUTH) {
            hs.auth_plugin = r.nul_or_rest();
        }
        Ok(hs)
    }

    /// Append the payload. The scramble should be 20 bytes (its first 8 go in part 1);
    /// MariaDB's capabilities are written only when `CLIENT_MYSQL` is clear.
    pub fn write(&self, out: &mut Vec<u8>) {
        let caps = self.capabilities;
        let (part1, part2) = self.scramble.split_at(self.scramble.len().min(8));
        out.push(PROTOCOL_VERSION);
        put_nul_bytes(out, self.server_version);
        put_u32(out, self.connection_id);
        out.extend_from_slice(part1);
        out.extend(std::iter::repeat_n(0, 8 - part1.len()));
        out.push(0);
        put_u16(out, caps.0 as u16);
        out.push(self.charset);
        put_u16(out, self.status);
        put_u16(out, (caps.0 >> 16) as u16);
        out.push(if caps.has(CLIENT_PLUGIN_AUTH) {
            (self.scramble.len() + 1).min(255) as u8
        } else {
            0
        });
        out.extend_from_slice(&[0; 6]);
        put_u32(
            out,
            if caps.has(CLIENT_MYSQL) {
                0
            } else {
                caps.mariadb()
            },
        );
        if caps.has(CLIENT_SECURE_CONNECTION) {
            out.extend_from_slice(part2);
            // Part 2 is at least 13 bytes, NUL included.
            let n = part2.len() + 1;
            out.extend(std::iter::repeat_n(0, 13usize.saturating_sub(n) + 1));
        }
        if caps.has(CLIENT_PLUGIN_AUTH) {
            put_nul_bytes(out, self.auth_plugin);
        }
    }
}

/// The client's first packet: a request for TLS, or its login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello<'a> {
    Ssl(SslRequest),
    Response(HandshakeResponse<'a>),
}

impl<'a> ClientHello<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        let fixed = Fixed::parse(payload, "handshake response")?;
        if payload.len() == SSL_REQUEST_LEN && fixed.capabilities.has(CLIENT_SSL) {
            return Ok(ClientHello::Ssl(SslRequest {
                capabilities: fixed.capabilities,
                max_packet: fixed.max_packet,
                charset: fixed.charset,
            }));
        }
        HandshakeResponse::parse(payload).map(ClientHello::Response)
    }
}

/// The first 32 bytes of a HandshakeResponse41, which are all of an SSLRequest.
struct Fixed {
    capabilities: Capabilities,
    max_packet: u32,
    charset: u8,
}

impl Fixed {
    fn parse(payload: &[u8], packet: &'static str) -> Result<Fixed, Malformed> {
        let m = |what| Malformed::new(packet, what);
        let mut r = Reader::new(payload);
        // A pre-4.1 client sends 2-byte capabilities: look at them before reading 4.
        let low = u64::from(r.u16().ok_or(m("capabilities"))?);
        if low & CLIENT_PROTOCOL_41 == 0 {
            return Err(m("client does not speak protocol 4.1"));
        }
        let high = u64::from(r.u16().ok_or(m("capabilities"))?);
        let max_packet = r.u32().ok_or(m("max packet size"))?;
        let charset = r.u8().ok_or(m("charset"))?;
        r.skip(19).ok_or(m("reserved bytes"))?;
        let mariadb = r.u32().ok_or(m("reserved bytes"))?;
        let mut caps = low | high << 16;
        if caps & CLIENT_MYSQL == 0 {
            caps |= u64::from(mariadb) << 32;
        }
        Ok(Fixed {
            capabilities: Capabilities(caps),
            max_packet,
            charset,
        })
    }

    fn write(out: &mut Vec<u8>, caps: Capabilities, max_packet: u32, charset: u8) {
        put_u32(out, caps.lower());
        put_u32(out, max_packet);
        out.push(charset);
        out.extend_from_slice(&[0; 19]);
        put_u32(
            out,
            if caps.has(CLIENT_MYSQL) {
                0
            } else {
                caps.mariadb()
            },
        );
    }
}

/// A client's request to start TLS (the 32-byte prefix of a login, with `CLIENT_SSL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: Capabilities,
    pub max_packet: u32,
    pub charset: u8,
}

impl SslRequest {
    pub fn write(&self, out: &mut Vec<u8>) {
        Fixed::write(
            out,
            self.capabilities.with(CLIENT_SSL),
            self.max_packet,
            self.charset,
        );
    }
}

/// HandshakeResponse41: the client's login.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse<'a> {
    pub capabilities: Capabilities,
    pub max_packet: u32,
    pub charset: u8,
    pub user: &'a [u8],
    /// The plugin's first answer (a scramble, or with `mysql_clear_password` the password).
    pub auth_response: &'a [u8],
    /// `CLIENT_CONNECT_WITH_DB`.
    pub database: Option<&'a [u8]>,
    /// `CLIENT_PLUGIN_AUTH`: the plugin that made `auth_response`.
    pub auth_plugin: Option<&'a [u8]>,
    /// `CLIENT_CONNECT_ATTRS`: the raw key/value block (without its length); see
    /// [`HandshakeResponse::attributes`].
    pub attributes: &'a [u8],
    /// MySQL 8's zstd compression level (`CLIENT_ZSTD_COMPRESSION_ALGORITHM`).
    pub zstd_level: Option<u8>,
}

impl fmt::Debug for HandshakeResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeResponse")
            .field("capabilities", &self.capabilities)
            .field("max_packet", &self.max_packet)
            .field("charset", &self.charset)
            .field("user", &String::from_utf8_lossy(self.user))
            .field("auth_response_len", &self.auth_response.len())
            .field("database", &self.database.map(String::from_utf8_lossy))
            .field(
                "auth_plugin",
                &self.auth_plugin.map(String::from_utf8_lossy),
            )
            .field("attributes_len", &self.attributes.len())
            .finish()
    }
}

impl<'a> HandshakeResponse<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        const P: &str = "handshake response";
        let m = |what| Malformed::new(P, what);
        let fixed = Fixed::parse(payload, P)?;
        let caps = fixed.capabilities;
        let mut r = Reader::new(payload);
        r.skip(SSL_REQUEST_LEN).ok_or(m("too short"))?;
        let user = r.nul_bytes().ok_or(m("user name"))?;
        let auth_response = if caps.has(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            r.lenenc_bytes().ok_or(m("auth response"))?
        } else if caps.has(CLIENT_SECURE_CONNECTION) {
            let n = r.u8().ok_or(m("auth response"))?;
            r.bytes(usize::from(n)).ok_or(m("auth response"))?
        } else {
            r.nul_bytes().ok_or(m("auth response"))?
        };
        let mut resp = HandshakeResponse {
            capabilities: caps,
            max_packet: fixed.max_packet,
            charset: fixed.charset,
            user,
            auth_response,
            ..HandshakeResponse::default()
        };
        if caps.has(CLIENT_CONNECT_WITH_DB) {
            // Some clients set the flag with no database and end the packet there.
            resp.database = if r.is_empty() {
                None
            } else {
                Some(r.nul_or_rest())
            };
        }
        if caps.has(CLIENT_PLUGIN_AUTH) && !r.is_empty() {
            resp.auth_plugin = Some(r.nul_or_rest());
        }
        if caps.has(CLIENT_CONNECT_ATTRS) && !r.is_empty() {
            resp.attributes = r.lenenc_bytes().ok_or(m("connection attributes"))?;
            if !attributes_valid(resp.attributes) {
                return Err(m("connection attributes"));
            }
        }
        if caps.has(CLIENT_ZSTD_COMPRESSION_ALGORITHM) {
            resp.zstd_level = r.u8();
        }
        Ok(resp)
    }

    /// The connection attributes (`_client_name`, `program_name`...) in the order sent.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes(Reader::new(self.attributes))
    }

    /// Append the payload. The auth response goes in the form the capabilities say (one
    /// length byte under `CLIENT_SECURE_CONNECTION`, so at most 255 bytes there).
    pub fn write(&self, out: &mut Vec<u8>) {
        let caps = self.capabilities;
        Fixed::write(out, caps, self.max_packet, self.charset);
        put_nul_bytes(out, self.user);
        if caps.has(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            put_lenenc_bytes(out, self.auth_response);
        } else if caps.has(CLIENT_SECURE_CONNECTION) {
            let n = self.auth_response.len().min(255);
            out.push(n as u8);
            out.extend_from_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(out, self.auth_response);
        }
        if caps.has(CLIENT_CONNECT_WITH_DB) {
            put_nul_bytes(out, self.database.unwrap_or(b""));
        }
        if caps.has(CLIENT_PLUGIN_AUTH) {
            put_nul_bytes(out, self.auth_plugin.unwrap_or(b""));
        }
        if caps.has(CLIENT_CONNECT_ATTRS) {
            put_lenenc_bytes(out, self.attributes);
        }
        if caps.has(CLIENT_ZSTD_COMPRESSION_ALGORITHM) {
            out.push(self.zstd_level.unwrap_or(3));
        }
    }
}

/// Append one connection attribute to a block for [`HandshakeResponse::attributes`].
pub fn put_attribute(block: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_lenenc_bytes(block, key);
    put_lenenc_bytes(block, value);
}

fn attributes_valid(block: &[u8]) -> bool {
    let mut r = Reader::new(block);
    while !r.is_empty() {
        if r.lenenc_bytes().is_none() || r.lenenc_bytes().is_none() {
            return false;
        }
    }
    true
}

/// Iterator over connection attributes as `(key, value)`.
#[derive(Debug, Clone)]
pub struct Attributes<'a>(Reader<'a>);

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.0.lenenc_bytes()?;
        let v = self.0.lenenc_bytes()?;
        Some((k, v))
    }
}

/// The server asks the client to authenticate with another plugin (`0xFE`, plugin, data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest<'a> {
    pub plugin: &'a [u8],
    /// The plugin's data as sent: for `mysql_native_password` and `caching_sha2_password` a
    /// 20-byte scramble and a NUL, for `client_ed25519` a 32-byte nonce.
    pub data: &'a [u8],
}

impl<'a> AuthSwitchRequest<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("auth switch request", what);
        let mut r = Reader::new(payload);
        if r.u8() != Some(AUTH_SWITCH_HEADER) {
            return Err(m("header is not 0xFE"));
        }
        if r.is_empty() {
            return Err(m(
                "pre-4.1 auth switch (mysql_old_password) is not supported",
            ));
        }
        let plugin = r.nul_bytes().ok_or(m("plugin name"))?;
        Ok(AuthSwitchRequest {
            plugin,
            data: r.rest(),
        })
    }

    /// The 20-byte scramble of the password plugins (data of 20 bytes, or 21 ending in NUL).
    pub fn scramble20(&self) -> Option<[u8; 20]> {
        let d = match self.data.len() {
            20 => self.data,
            21 if self.data[20] == 0 => &self.data[..20],
            _ => return None,
        };
        let mut s = [0u8; 20];
        s.copy_from_slice(d);
        Some(s)
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(AUTH_SWITCH_HEADER);
        put_nul_bytes(out, self.plugin);
        out.extend_from_slice(self.data);
    }
}

/// More data for the current plugin (`0x01`, data): a public key, or one of
/// `caching_sha2_password`'s signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMoreData<'a> {
    pub data: &'a [u8],
}

impl<'a> AuthMoreData<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        match payload.split_first() {
            Some((&AUTH_MORE_DATA_HEADER, data)) => Ok(AuthMoreData { data }),
            _ => Err(Malformed::new("auth more data", "header is not 0x01")),
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(AUTH_MORE_DATA_HEADER);
        out.extend_from_slice(self.data);
    }
}

/// What a server packet in the authentication exchange is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPacket {
    Ok,
    Err,
    Switch,
    MoreData,
    Other,
}

pub fn auth_packet_kind(payload: &[u8]) -> AuthPacket {
    match payload.first() {
        Some(0x00) => AuthPacket::Ok,
        Some(0xFF) => AuthPacket::Err,
        Some(0xFE) => AuthPacket::Switch,
        Some(0x01) => AuthPacket::MoreData,
        _ => AuthPacket::Other,
    }
}

/// `COM_CHANGE_USER`: a new login inside a session.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChangeUser<'a> {
    pub user: &'a [u8],
    pub auth_response: &'a [u8],
    pub database: &'a [u8],
    pub charset: Option<u16>,
    pub auth_plugin: Option<&'a [u8]>,
    pub attributes: &'a [u8],
}

impl fmt::Debug for ChangeUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeUser")
            .field("user", &String::from_utf8_lossy(self.user))
            .field("auth_response_len", &self.auth_response.len())
            .field("database", &String::from_utf8_lossy(self.database))
            .field("charset", &self.charset)
            .field(
                "auth_plugin",
                &self.auth_plugin.map(String::from_utf8_lossy),
            )
            .finish()
    }
}

impl<'a> ChangeUser<'a> {
    /// Parse the payload (command byte included) under the session's capabilities.
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("change user", what);
        let mut r = Reader::new(payload);
        if r.u8() != Some(super::flags::COM_CHANGE_USER) {
            return Err(m("not COM_CHANGE_USER"));
        }
        let user = r.nul_bytes().ok_or(m("user name"))?;
        let auth_response = if caps.has(CLIENT_SECURE_CONNECTION) {
            let n = r.u8().ok_or(m("auth response"))?;
            r.bytes(usize::from(n)).ok_or(m("auth response"))?
        } else {
            r.nul_bytes().ok_or(m("auth response"))?
        };
        let database = r.nul_or_rest();
        let mut cu = ChangeUser {
            user,
            auth_response,
            database,
            ..ChangeUser::default()
        };
        if r.remaining() >= 2 {
            cu.charset = r.u16();
            if caps.has(CLIENT_PLUGIN_AUTH) && !r.is_empty() {
                cu.auth_plugin = Some(r.nul_or_rest());
            }
            if caps.has(CLIENT_CONNECT_ATTRS) && !r.is_empty() {
                cu.attributes = r.lenenc_bytes().ok_or(m("connection attributes"))?;
            }
        }
        Ok(cu)
    }

    pub fn write(&self, out: &mut Vec<u8>, caps: Capabilities) {
        out.push(super::flags::COM_CHANGE_USER);
        put_nul_bytes(out, self.user);
        if caps.has(CLIENT_SECURE_CONNECTION) {
            let n = self.auth_response.len().min(255);
            out.push(n as u8);
            out.extend_from_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(out, self.auth_response);
        }
        put_nul_bytes(out, self.database);
        put_u16(out, self.charset.unwrap_or(0));
        if caps.has(CLIENT_PLUGIN_AUTH) {
            put_nul_bytes(out, self.auth_plugin.unwrap_or(b""));
        }
        if caps.has(CLIENT_CONNECT_ATTRS) {
            put_lenenc_bytes(out, self.attributes);
        }
    }
}
