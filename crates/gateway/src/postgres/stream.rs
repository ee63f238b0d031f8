//! Client and server connections, plain or TLS, each as one type so the session code is
//! written once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection, or the same with TLS on top (`T` is rustls' server or client stream).
pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A client connection: TLS is terminated here.
pub type ClientStream = MaybeTls<ClientTls>;

/// A client's TLS stream, over a socket that can leave and rejoin the event loop (parking).
pub type ClientTls = tokio_rustls::server::TlsStream<ClientIo>;

/// The socket under a client's TLS: on its event loop, or out of it while the client is
/// parked (`crate::park`), with the TLS state kept as it is. rustls' stream cannot be taken
/// apart and put together again, so the socket is swapped out from under it instead.
pub enum ClientIo {
    Live(TcpStream),
    /// Never read or written: a parked session is not polled.
    Parked,
}

/// A connection to a server: TLS is started here.
pub type ServerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T: AsyncWrite + Unpin> MaybeTls<T> {
    /// Write all of `bytes` out to the socket. Every write to a peer goes through here: a TLS
    /// stream's write is done once rustls has taken the bytes, and when the socket is full
    /// some of them stay in rustls' buffer, where nothing sends them until the next write. A
    /// session that then waits for the peer would wait forever, and the peer for the rest of
    /// what it was sent (the end of a COPY TO STDOUT read by a slow client, for one).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // A socket's writes are in the kernel already. The socket usually takes all of it
            // at once, and trying that first costs no future, budget or waker.
            MaybeTls::Plain(s) => {
                let taken = match s.try_write(bytes) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                match bytes.get(taken..) {
                    Some(rest) if !rest.is_empty() => s.write_all(rest).await,
                    _ => Ok(()),
                }
            }
            MaybeTls::Tls(_) => {
                self.write_all(bytes).await?;
                self.flush().await
            }
        }
    }
}

impl<T> MaybeTls<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// Move a plain socket to this thread's event loop (see `crate::workers`). A TLS stream
    /// is returned as it is: rustls' stream cannot be taken apart and rebuilt.
    pub fn rehome(self) -> io::Result<Self> {
        match self {
            MaybeTls::Plain(s) => Ok(MaybeTls::Plain(TcpStream::from_std(s.into_std()?)?)),
            tls => Ok(tls),
        }
    }
}

impl ClientStream {
    /// Nothing is held in TLS buffers, so the socket alone says when the client is back: no
    /// decrypted bytes waiting to be read, nothing waiting to be sent.
    pub fn can_park(&self) -> bool {
        match self {
            MaybeTls::Plain(_) => true,
            MaybeTls::Tls(s) => {
                let conn = &s.get_ref().1;
                conn.wants_read() && !conn.wants_write()
            }
        }
    }

    /// The socket, and the TLS state to put it back under (`unpark`); the stream as it was
    /// when it has no socket to give (it is parked already).
    pub fn park(self) -> Result<(TcpStream, Option<Box<ClientTls>>), ClientStream> {
        match self {
            MaybeTls::Plain(s) => Ok((s, None)),
            MaybeTls::Tls(mut tls) => match std::mem::replace(tls.get_mut().0, ClientIo::Parked) {
                ClientIo::Live(socket) => Ok((socket, Some(tls))),
                ClientIo::Parked => Err(MaybeTls::Tls(tls)),
            },
        }
    }

    /// The stream again, around `socket` (back on an event loop).
    pub fn unpark(socket: TcpStream, tls: Option<Box<ClientTls>>) -> ClientStream {
        match tls {
            None => MaybeTls::Plain(socket),
            Some(mut tls) => {
                *tls.get_mut().0 = ClientIo::Live(socket);
                MaybeTls::Tls(tls)
            }
        }
    }

    /// The client certificate's DER bytes, when mTLS gave one.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            MaybeTls::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
            MaybeTls::Plain(_) => None,
        }
    }
}

impl ServerStream {
    /// A non-blocking read of the socket, to notice a connection the server closed while it
    /// sat idle. Only for plain connections (a TLS record cannot be peeked at without
    /// consuming it); TLS ones report "would block" and rely on the replay instead.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.try_read(buf),
            MaybeTls::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn parked() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the client is parked")
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Live(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Parked => Poll::Ready(Err(parked())),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Live(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Parked => Poll::Ready(Err(parked())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Live(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Parked => Poll::Ready(Err(parked())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Live(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Parked => Poll::Ready(Err(parked())),
        }
    }
}
