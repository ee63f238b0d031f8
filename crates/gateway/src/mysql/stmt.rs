//! Prepared statements in transaction mode, without pinning (issue 18).
//!
//! A client's `COM_STMT_PREPARE` is answered with an id the gateway gives it; the gateway keeps
//! the statement's text and, on whichever pooled server the client's next command lands, has
//! the statement prepared there on first use (`COM_STMT_EXECUTE`, `SEND_LONG_DATA`, `RESET`,
//! `FETCH`), mapping the client's id onto that server's. Each server connection keeps the
//! statements prepared on it by (database and session settings, text), so a statement is
//! prepared once per server connection and reused by every client that lands there.
//!
//! What a server remembers of one execution is never handed to another client: the parameter
//! types a client sent with its first `COM_STMT_EXECUTE` (the server keeps the last ones sent
//! for the statement) are kept per client and put into the packet whenever the server's last
//! types for that statement are not this client's; long data in progress and an open cursor
//! keep the client on its server until the statement is executed, reset, closed or fetched to
//! its end.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Statements one client may have prepared at once.
pub(super) const MAX_PER_CLIENT: usize = 1024;
/// Their text, in bytes, per client.
pub(super) const MAX_CLIENT_BYTES: usize = 4 << 20;
/// Statements kept prepared on one server connection; the least recently used beyond it is
/// closed on the server.
pub(super) const MAX_PER_SERVER: usize = 256;

/// What happens to prepared statements, for `sumun_mysql_prepared_statements_total{event}`.
pub(super) const EVENTS: [&str; 8] = [
    // A COM_STMT_PREPARE the server answered (first on that server connection).
    "prepared",
    // A COM_STMT_PREPARE answered from the server connection's statements.
    "prepare_cached",
    // Prepared again on another server connection the client landed on.
    "reprepared",
    // Parameter types the client sent earlier, put into its COM_STMT_EXECUTE.
    "types_supplied",
    // Refused: the client's statement count or text bytes limit.
    "refused_limit",
    // The client was kept on its server for a cursor or long data.
    "held_cursor",
    "held_long_data",
    // Something not understood (a malformed packet, a statement that changed on the server).
    "refused_other",
];

pub(super) fn event(name: &str) -> usize {
    EVENTS
        .iter()
        .position(|e| *e == name)
        .unwrap_or(EVENTS.len() - 1)
}

/// A statement a client prepared.
pub(super) struct ClientStmt {
    pub sql: Arc<[u8]>,
    pub params: u16,
    pub columns: u16,
    /// The parameter types of its last COM_STMT_EXECUTE that sent them (2 bytes each).
    pub types: Option<Vec<u8>>,
    /// COM_STMT_SEND_LONG_DATA was sent and not yet used by an execute.
    pub long_data: bool,
    /// An execute opened a cursor that is not fetched to its end.
    pub cursor: bool,
}

/// The statements of one client, by the ids the gateway gave it.
#[derive(Default)]
pub(super) struct ClientStmts {
    map: HashMap<u32, ClientStmt>,
    next: u32,
    bytes: usize,
    /// The id of the statement prepared last (MariaDB's id `0xFFFFFFFF`).
    pub last: u32,
}

impl ClientStmts {
    /// Room for one more statement of `len` bytes.
    pub fn has_room(&self, len: usize) -> bool {
        self.map.len() < MAX_PER_CLIENT && self.bytes + len <= MAX_CLIENT_BYTES
    }

    pub fn add(&mut self, sql: Arc<[u8]>, params: u16, columns: u16) -> u32 {
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next != 0
                && self.next != sumun_wire::mysql::stmt::LAST_PREPARED
                && !self.map.contains_key(&self.next)
            {
                break;
            }
        }
        self.bytes += sql.len();
        self.map.insert(
            self.next,
            ClientStmt {
                sql,
                params,
                columns,
                types: None,
                long_data: false,
                cursor: false,
            },
        );
        self.last = self.next;
        self.next
    }

    /// The client's id, with MariaDB's "last prepared" resolved.
    pub fn resolve(&self, id: u32) -> u32 {
        if id == sumun_wire::mysql::stmt::LAST_PREPARED {
            self.last
        } else {
            id
        }
    }

    pub fn get(&self, id: u32) -> Option<&ClientStmt> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut ClientStmt> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<ClientStmt> {
        let s = self.map.remove(&id)?;
        self.bytes -= s.sql.len();
        Some(s)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A statement with long data in progress or an open cursor: server state of this client
    /// that keeps it on its server.
    pub fn busy(&self) -> bool {
        self.map.values().any(|s| s.long_data || s.cursor)
    }

    /// The texts of the statements with long data or a cursor.
    pub fn busy_texts(&self) -> Vec<Arc<[u8]>> {
        self.map
            .values()
            .filter(|s| s.long_data || s.cursor)
            .map(|s| s.sql.clone())
            .collect()
    }
}

/// A statement prepared on one server connection.
pub(super) struct ServerStmt {
    pub id: u32,
    pub params: u16,
    pub columns: u16,
    /// The server's answer to the prepare (payloads), replayed to the next client that
    /// prepares the same text here.
    pub answer: Arc<Vec<Vec<u8>>>,
    /// The parameter types the server last got for it (it executes with those when a packet
    /// sends none).
    pub types: Option<Vec<u8>>,
    used: u64,
}

/// The statements prepared on one server connection, by scope (database and session
/// settings when prepared) and text.
#[derive(Default)]
pub(super) struct ServerStmts {
    map: HashMap<(u64, Arc<[u8]>), ServerStmt>,
    tick: u64,
}

impl ServerStmts {
    pub fn get_mut(&mut self, scope: u64, sql: &Arc<[u8]>) -> Option<&mut ServerStmt> {
        self.tick += 1;
        let tick = self.tick;
        let s = self.map.get_mut(&(scope, sql.clone()))?;
        s.used = tick;
        Some(s)
    }

    /// Keep a statement the server prepared; returns the server id of one to close on the
    /// server when there are too many (never one of `keep`).
    #[allow(clippy::too_many_arguments)] // one statement's facts
    pub fn insert(
        &mut self,
        scope: u64,
        sql: Arc<[u8]>,
        id: u32,
        params: u16,
        columns: u16,
        answer: Vec<Vec<u8>>,
        keep: &[u32],
    ) -> Option<u32> {
        self.tick += 1;
        let mut evicted = None;
        if self.map.len() >= MAX_PER_SERVER {
            let oldest = self
                .map
                .iter()
                .filter(|(_, s)| !keep.contains(&s.id))
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                evicted = self.map.remove(&k).map(|s| s.id);
            }
        }
        self.map.insert(
            (scope, sql),
            ServerStmt {
                id,
                params,
                columns,
                answer: Arc::new(answer),
                types: None,
                used: self.tick,
            },
        );
        evicted
    }

    /// The server forgot its statements (`COM_RESET_CONNECTION`).
    pub fn forget(&mut self) {
        self.map.clear();
    }
}

/// The scope a statement is prepared in: the same text means the same statement only in the
/// same database with the same session settings (`sql_mode` changes how it parses).
pub(super) fn scope(database: &str, settings: &[(String, Vec<u8>)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    database.hash(&mut h);
    settings.hash(&mut h);
    h.finish()
}

// The head of a COM_STMT_EXECUTE (cursor flag, where the parameter types are) is read by
// sumun-wire, where it is fuzzed (`mysql_stmt_execute`).
pub(super) use sumun_wire::mysql::stmt::{execute_head, parse_execute, with_types};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_limits_and_ids() {
        let mut c = ClientStmts::default();
        let a = c.add(Arc::from(&b"select 1"[..]), 0, 1);
        let b = c.add(Arc::from(&b"select 2"[..]), 0, 1);
        assert_ne!(a, b);
        assert_eq!(c.resolve(u32::MAX), b);
        assert!(c.has_room(10));
        assert!(!c.has_room(MAX_CLIENT_BYTES));
        c.remove(a);
        assert!(c.get(a).is_none());
        c.get_mut(b).unwrap().cursor = true;
        assert!(c.busy());
        c.remove(b);
        assert!(!c.busy());
    }

    #[test]
    fn server_statements_are_bounded_least_recently_used_first() {
        let mut s = ServerStmts::default();
        let texts: Vec<Arc<[u8]>> = (0..=MAX_PER_SERVER)
            .map(|i| Arc::from(format!("select {i}").as_bytes()))
            .collect();
        for (i, t) in texts.iter().take(MAX_PER_SERVER).enumerate() {
            assert_eq!(s.insert(1, t.clone(), i as u32, 0, 1, vec![], &[]), None);
        }
        assert!(s.get_mut(1, &texts[0]).is_some());
        // 0 was used last; 1 is the oldest, but kept: 2 goes.
        let gone = s.insert(1, texts[MAX_PER_SERVER].clone(), 999, 0, 1, vec![], &[1]);
        assert_eq!(gone, Some(2));
        assert!(s.get_mut(2, &texts[0]).is_none(), "another scope");
    }
}
