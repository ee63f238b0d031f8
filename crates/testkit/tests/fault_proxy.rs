//! The fault proxy passes, delays, cuts and blackholes traffic to a real upstream, switching
//! while connections are open.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sumun_testkit::{Fault, FaultProxy, Redis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// An upstream that echoes every byte back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The connection is closed or reset: a read ends with 0 bytes or an error.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pass_delay_cut_and_blackhole() {
    let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut a, b"hello").await.expect("pass"), b"hello");

    proxy.set(Fault::Delay(Duration::from_millis(200)));
    let t = Instant::now();
    assert_eq!(round_trip(&mut a, b"slow").await.expect("delay"), b"slow");
    // Delayed on the way there and on the way back.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    proxy.set(Fault::Blackhole);
    a.write_all(b"lost").await.expect("write");
    let mut buf = [0u8; 4];
    assert!(
        timeout(Duration::from_millis(300), a.read(&mut buf))
            .await
            .is_err(),
        "an open connection gets no answer"
    );
    let mut b = TcpStream::connect(proxy.addr())
        .await
        .expect("accepted while blackholed");
    b.write_all(b"anyone?").await.expect("write");
    assert!(timeout(Duration::from_millis(300), b.read(&mut buf))
        .await
        .is_err());

    proxy.set(Fault::Pass);
    assert_eq!(
        round_trip(&mut a, b"back").await.expect("pass again"),
        b"back"
    );

    proxy.set(Fault::Cut);
    assert!(closed(&mut a).await, "open connection cut");
    assert!(closed(&mut b).await, "blackholed connection cut");
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(closed(&mut c).await, "new connection cut");

    proxy.set(Fault::Pass);
    let mut d = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut d, b"again").await.expect("pass"), b"again");
    assert_eq!(proxy.accepted(), 4);
    assert_eq!(proxy.fault(), Fault::Pass);

    drop(proxy);
    assert!(
        closed(&mut d).await,
        "dropping the proxy closes its connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_front_of_real_redis() {
    let redis = Redis::start().expect("redis");
    let proxy = FaultProxy::start(redis.addr()).await.expect("proxy");
    assert_eq!(proxy.upstream(), redis.addr());
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    s.write_all(b"PING\r\n").await.expect("write");
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply).await.expect("read");
    assert_eq!(&reply, b"+PONG\r\n");
    proxy.set(Fault::Cut);
    assert!(closed(&mut s).await);
    // The upstream being down shows as a closed connection through the proxy.
    proxy.set(Fault::Pass);
    drop(redis);
    // The reset may even beat the client's own view of its connect.
    if let Ok(mut s) = TcpStream::connect(proxy.addr()).await {
        assert!(closed(&mut s).await);
    }
    assert_eq!(proxy.accepted(), 2);
}
