//! Answering a connection the door refused, in its protocol's own words where one can be said
//! before login: a PostgreSQL ErrorResponse (after declining TLS, so libpq shows it), a MySQL
//! ERR packet in place of the greeting, a Redis `-ERR` reply to the first command. Raw `tcp` and
//! `tls` listeners, and anything that does not arrive in time, get the connection closed.
//!
//! Bounded: at most [`LIMIT`] of waiting and a few kilobytes read, so a flood of refused
//! connections costs little.

use std::time::Duration;

use sumun_config::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::protection::Refusal;

/// Longest a refused client is kept.
const LIMIT: Duration = Duration::from_secs(2);

/// What the client is told (no more than why in general terms).
fn message(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Banned(_) => "too many failed attempts from this address; try again later",
        Refusal::RateLimited => "too many connections from this address; try again later",
        Refusal::Rule(_) => "connections from this address are not allowed",
    }
}

pub(crate) async fn answer(
    mut stream: TcpStream,
    protocol: Protocol,
    refusal: &Refusal,
    deadline: Instant,
) {
    let deadline = deadline.min(Instant::now() + LIMIT);
    let _ = crate::workers::timeout_at(deadline, speak(&mut stream, protocol, refusal)).await;
    let _ = stream.shutdown().await;
}

async fn speak(
    stream: &mut TcpStream,
    protocol: Protocol,
    refusal: &Refusal,
) -> std::io::Result<()> {
    let text = message(refusal);
    match protocol {
        Protocol::Postgres => {
            // Read the first packet: an SSLRequest/GSSENCRequest is declined so the client
            // reads the error in the clear; then the startup packet.
            let mut buf = Vec::with_capacity(256);
            for _ in 0..3 {
                let packet = read_pg_packet(stream, &mut buf).await?;
                if packet == Some(sumun_wire::postgres::SSL_REQUEST)
                    || packet == Some(sumun_wire::postgres::GSSENC_REQUEST)
                {
                    stream.write_all(b"N").await?;
                    continue;
                }
                break;
            }
            let code = match refusal {
                Refusal::RateLimited => "53300",
                _ => "28000",
            };
            let mut w = sumun_wire::postgres::Writer::new();
            w.error("FATAL", code, text);
            stream.write_all(&w.buf).await?;
        }
        Protocol::Mysql => {
            // In place of the greeting, as a server does for a blocked host.
            let code: u16 = match refusal {
                Refusal::Banned(_) => 1129,
                Refusal::RateLimited => 1040,
                Refusal::Rule(_) => 1130,
            };
            // Before the handshake there are no capabilities: no SQL state marker.
            let mut body = Vec::with_capacity(3 + text.len());
            sumun_wire::mysql::ErrPacket {
                code,
                sql_state: None,
                message: text.as_bytes(),
            }
            .write(&mut body, sumun_wire::mysql::Capabilities(0));
            let mut packet = Vec::with_capacity(4 + body.len());
            sumun_wire::mysql::write_packet(&mut packet, 0, &body);
            stream.write_all(&packet).await?;
        }
        Protocol::Redis => {
            // The reply to the client's first command.
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await?;
            stream
                .write_all(format!("-ERR {text}\r\n").as_bytes())
                .await?;
        }
        _ => return Ok(()),
    }
    stream.flush().await?;
    // Let the client read the answer before the close: drain what it still sends.
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        if stream.read(&mut sink).await? == 0 {
            break;
        }
    }
    Ok(())
}

/// Read one length-prefixed startup-phase packet (at most 10 000 bytes); its code (the 4 bytes
/// after the length), or `None` at end of stream.
async fn read_pg_packet(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<u32>> {
    buf.clear();
    let mut head = [0u8; 8];
    if stream.read_exact(&mut head).await.is_err() {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if !(8..=sumun_wire::postgres::MAX_STARTUP_LEN).contains(&len) {
        return Ok(None);
    }
    buf.resize(len - 8, 0);
    stream.read_exact(buf).await?;
    Ok(Some(code))
}
