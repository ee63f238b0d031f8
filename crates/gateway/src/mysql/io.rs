//! A MySQL connection (client or server side, plain or TLS) and the packet reads and writes of
//! the connection phase. After the login the session relays bytes, not packets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use sumun_wire::mysql::packet::{decode_payload, write_packet, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest packet read during a login (a HandshakeResponse with connection attributes is
/// a few hundred bytes; MySQL itself refuses more than 64 KiB of attributes).
pub(super) const LOGIN_PACKET_LIMIT: usize = 256 * 1024;

/// A TCP connection, or the same with TLS on top.
pub(super) enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
    /// Taken away (while TLS is started on its socket); never read or written.
    Gone,
}

pub(super) type ClientStream = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
pub(super) type ServerStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> Stream<T> {
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl ClientStream {
    /// The client's certificate (DER), when it sent one over TLS.
    pub(super) fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            Stream::Tls(t) => t
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
            Stream::Plain(_) | Stream::Gone => None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection taken for TLS")
}

/// Why a connection-phase exchange failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum PacketError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("a {0}-byte login packet is larger than the gateway reads")]
    TooLarge(usize),
}

fn eof(e: io::Error) -> PacketError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        PacketError::Closed
    } else {
        PacketError::Io(e)
    }
}

/// Packet reads and writes with the sequence ids of one exchange.
pub(super) struct Packets<S> {
    pub(super) stream: S,
    /// Bytes read and not yet consumed.
    pub(super) buf: Vec<u8>,
    /// The sequence id the next packet (either way) carries.
    pub(super) seq: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Packets<S> {
    pub(super) fn new(stream: S) -> Packets<S> {
        Packets {
            stream,
            buf: Vec::new(),
            seq: 0,
        }
    }

    /// Read one logical payload carrying the expected sequence id.
    pub(super) async fn read(&mut self) -> Result<Vec<u8>, PacketError> {
        loop {
            if let Some(p) = decode_payload(&self.buf, LOGIN_PACKET_LIMIT, Some(self.seq))? {
                let data = p.data.into_owned();
                self.seq = p.next_seq;
                self.buf.drain(..p.consumed);
                return Ok(data);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(PacketError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read exactly one packet (no byte more) with the expected sequence id: the client's
    /// first packet, which may be an SSL request that its TLS handshake follows at once.
    pub(super) async fn read_exact_one(&mut self) -> Result<Vec<u8>, PacketError> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await.map_err(eof)?;
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if header[3] != self.seq {
            return Err(PacketError::Frame(FrameError::OutOfOrder {
                expected: self.seq,
                got: header[3],
            }));
        }
        if len > LOGIN_PACKET_LIMIT {
            return Err(PacketError::TooLarge(len));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.map_err(eof)?;
        self.seq = self.seq.wrapping_add(1);
        Ok(payload)
    }

    /// Write one payload with the next sequence id, and flush it.
    pub(super) async fn write(&mut self, payload: &[u8]) -> Result<(), PacketError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        self.seq = write_packet(&mut out, self.seq, payload);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }
}
