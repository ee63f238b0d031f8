//! Cancel keys. Each client gets a (process id, secret key) pair of the gateway's in
//! BackendKeyData — never a server's secret. In transaction mode the process id is the
//! gateway's too (the client has no fixed server); in session mode it is the client's server's
//! real one, so `pg_backend_pid()` and notifications agree with it. A CancelRequest with that pair, arriving on any connection to any postgres
//! listener, is forwarded to the server the client is using at that moment, with that
//! server's own key. A request with an unknown pair is dropped silently, as PostgreSQL does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sumun_wire::postgres::Writer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::conn::Admitted;
use crate::listener::ListenerRt;

use super::ClientInfo;

/// The registry of logged-in clients, by the cancel key each was given. It is also the list
/// `SHOW CLIENTS` and `/api/clients` read.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(u32, u32), Arc<ClientInfo>>>,
}

/// A client's place in the registry; dropping it (the session ends) removes the client.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub info: Arc<ClientInfo>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        let key = (self.info.process_id, self.info.secret_key);
        self.registry
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// Why a client could not be given a cancel key.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// Without unpredictable keys, one client could cancel another's queries by guessing:
    /// the login fails rather than falling back to a guessable generator.
    #[error("cannot draw a cancel key: the system random number generator failed")]
    Random,
}

impl CancelRegistry {
    /// Register a client under a fresh key from the system CSPRNG; `make` builds its row from
    /// the key. Fails (and registers nothing) when the CSPRNG does.
    pub(crate) fn register(
        self: &Arc<Self>,
        make: impl FnOnce(u32, u32) -> ClientInfo,
    ) -> Result<CancelKey, CancelError> {
        self.register_with(
            |buf| {
                let bytes = sumun_vault::crypto::random_bytes(buf.len()).map_err(|_| ())?;
                buf.copy_from_slice(&bytes);
                Ok(())
            },
            make,
        )
    }

    /// Register a client under its server's real process id (session mode: what
    /// `pg_backend_pid()` says) and a fresh secret of the gateway's own: the server's secret
    /// is never given out, and cancel requests still come through the registry.
    pub(crate) fn register_as(
        self: &Arc<Self>,
        process_id: u32,
        make: impl FnOnce(u32, u32) -> ClientInfo,
    ) -> Result<CancelKey, CancelError> {
        self.register_inner(
            Some(process_id),
            |buf| {
                let bytes = sumun_vault::crypto::random_bytes(buf.len()).map_err(|_| ())?;
                buf.copy_from_slice(&bytes);
                Ok(())
            },
            make,
        )
    }

    /// [`CancelRegistry::register`] with the random source given (tests make it fail).
    fn register_with(
        self: &Arc<Self>,
        fill: impl FnMut(&mut [u8; 8]) -> Result<(), ()>,
        make: impl FnOnce(u32, u32) -> ClientInfo,
    ) -> Result<CancelKey, CancelError> {
        self.register_inner(None, fill, make)
    }

    fn register_inner(
        self: &Arc<Self>,
        process_id: Option<u32>,
        mut fill: impl FnMut(&mut [u8; 8]) -> Result<(), ()>,
        make: impl FnOnce(u32, u32) -> ClientInfo,
    ) -> Result<CancelKey, CancelError> {
        loop {
            // Unpredictable, so a client cannot cancel another client's queries by guessing.
            let mut bytes = [0u8; 8];
            fill(&mut bytes).map_err(|()| CancelError::Random)?;
            let mut key = key_from(bytes);
            if let Some(pid) = process_id {
                key.0 = pid;
            }
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                let info = Arc::new(make(key.0, key.1));
                e.insert(info.clone());
                return Ok(CancelKey {
                    registry: self.clone(),
                    info,
                });
            }
        }
    }

    fn lookup(&self, process_id: u32, secret_key: u32) -> Option<Arc<ClientInfo>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(process_id, secret_key))
            .cloned()
    }

    /// Every logged-in client.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// A (process id, secret key) pair from 8 random bytes: the process id positive (as a signed
/// 32-bit integer, what clients expect of a PID) and never 0.
fn key_from(b: [u8; 8]) -> (u32, u32) {
    (
        u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]).max(1),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    )
}

pub(crate) async fn forward(
    fe: &super::PostgresFrontEnd,
    process_id: u32,
    secret_key: u32,
    admitted: &Admitted,
    listener: &ListenerRt,
) {
    let target = fe
        .cancels
        .lookup(process_id, secret_key)
        .and_then(|client| client.server());
    let Some((addr, pid, key)) = target else {
        tracing::info!(listener = %listener.name, client = %admitted.client, "cancel request with an unknown or idle key; ignored");
        return;
    };
    match send(addr, pid, key).await {
        Ok(Ok(())) => {
            fe.stats.cancels_forwarded.fetch_add(1, Ordering::Relaxed);
            tracing::info!(listener = %listener.name, client = %admitted.client, server = %addr, "cancel request forwarded");
        }
        Ok(Err(err)) => {
            tracing::warn!(listener = %listener.name, server = %addr, error = %err, "cannot forward cancel request")
        }
        Err(_) => {
            tracing::warn!(listener = %listener.name, server = %addr, "forwarding a cancel request timed out")
        }
    }
}

/// Send a CancelRequest for server process `pid` (its own key) to `addr`, within 5 s.
pub(crate) async fn send(
    addr: std::net::SocketAddr,
    pid: u32,
    key: u32,
) -> Result<std::io::Result<()>, crate::workers::Elapsed> {
    let mut w = Writer::new();
    w.cancel_request(pid, key);
    crate::workers::timeout(std::time::Duration::from_secs(5), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&w.buf).await?;
        s.shutdown().await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_random_source_fails_the_registration() {
        let registry = Arc::new(CancelRegistry::default());
        let got = registry.register_with(
            |_| Err(()),
            |_, _| unreachable!("no client row without a key"),
        );
        assert!(matches!(got, Err(CancelError::Random)));
        assert!(registry.clients().is_empty());
        let message = CancelError::Random.to_string();
        assert_eq!(
            message,
            "cannot draw a cancel key: the system random number generator failed"
        );
    }

    #[test]
    fn keys_have_a_positive_non_zero_process_id() {
        assert_eq!(key_from([0xff; 8]), (0x7fff_ffff, u32::MAX));
        assert_eq!(key_from([0x80, 0, 0, 0, 0, 0, 0, 7]), (1, 7));
        assert_eq!(
            key_from([0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4]),
            (0x1234_5678, 0x0102_0304)
        );
    }
}
