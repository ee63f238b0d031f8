//! The admin console: a virtual database named `sumun` on every postgres listener, where users
//! with `admin = true` run `SHOW POOLS`, `SHOW CLIENTS`, `SHOW SERVERS`, `SHOW STATS`
//! (PgBouncer's habit) with any PostgreSQL client. Nothing here reaches a backend.

use std::sync::Arc;

use sumun_wire::postgres::Writer;
use tokio::io::AsyncWriteExt;

use super::auth::Identity;
use super::stream::ClientStream;
use super::{fatal, ClientStartup};
use crate::conn::Admitted;
use crate::listener::ListenerRt;
use crate::Shared;

pub const DATABASE: &str = "sumun";

pub(crate) async fn run(
    mut client: ClientStream,
    startup: &ClientStartup,
    identity: &Identity,
    admitted: &Admitted,
    listener: &Arc<ListenerRt>,
    shared: &Arc<Shared>,
) {
    let _ = (startup, admitted, listener, shared);
    if !identity.user.admin {
        fatal(
            &mut client,
            "42501",
            "the sumun admin database is for users with admin = true",
        )
        .await;
        return;
    }
    let mut w = Writer::new();
    w.error("FATAL", "0A000", "the admin console is not built yet");
    let _ = client.write_all(&w.buf).await;
}
