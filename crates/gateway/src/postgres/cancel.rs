//! Cancel keys. Each client gets the gateway's own (process id, secret key) pair in
//! BackendKeyData — never a server's, because in transaction mode the client has no fixed
//! server. A CancelRequest with that pair, arriving on any connection to any postgres
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
use crate::Shared;

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

impl CancelRegistry {
    /// Register a client under a fresh key; `make` builds its row from the key.
    pub(crate) fn register(
        self: &Arc<Self>,
        make: impl FnOnce(u32, u32) -> ClientInfo,
    ) -> CancelKey {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Unpredictable, so a client cannot cancel another client's queries by guessing.
            let key = match sumun_vault::crypto::random_bytes(8) {
                Ok(b) => (
                    u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]).max(1),
                    u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                ),
                Err(_) => (fastrand::u32(1..i32::MAX as u32), fastrand::u32(..)),
            };
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                let info = Arc::new(make(key.0, key.1));
                e.insert(info.clone());
                return CancelKey {
                    registry: self.clone(),
                    info,
                };
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

pub(crate) async fn forward(
    shared: &Shared,
    process_id: u32,
    secret_key: u32,
    admitted: &Admitted,
    listener: &ListenerRt,
) {
    let target = shared
        .pg
        .cancels
        .lookup(process_id, secret_key)
        .and_then(|client| client.server());
    let Some((addr, pid, key)) = target else {
        tracing::info!(listener = %listener.name, client = %admitted.client, "cancel request with an unknown or idle key; ignored");
        return;
    };
    let mut w = Writer::new();
    w.cancel_request(pid, key);
    let sent = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&w.buf).await?;
        s.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {
            shared
                .pg
                .stats
                .cancels_forwarded
                .fetch_add(1, Ordering::Relaxed);
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
