//! The errors a front end sends in the server's own words: code, SQL state and message text
//! exactly as MariaDB/MySQL send them, so clients and drivers that match on any of the three
//! behave as they would against the server. Each text here is checked against a real MariaDB
//! in `tests/mysql_mariadb.rs`, except where a comment says otherwise.

use super::flags::{Capabilities, CLIENT_PROTOCOL_41};
use super::generic::ErrPacket;

/// An error to send: build its payload with [`ServerError::write`] or [`ServerError::payload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub sql_state: [u8; 5],
    pub message: String,
}

impl ServerError {
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<String>) -> Self {
        ServerError {
            code,
            sql_state: *sql_state,
            message: message.into(),
        }
    }

    /// Append the ERR payload (with the SQL state unless the client is pre-4.1; before
    /// capabilities are known pass `Capabilities(0)`, which keeps it, as servers do).
    pub fn write(&self, out: &mut Vec<u8>, caps: Capabilities) {
        ErrPacket {
            code: self.code,
            sql_state: Some(self.sql_state),
            message: self.message.as_bytes(),
        }
        .write(out, caps);
    }

    /// The ERR payload for a 4.1 client.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        self.write(&mut out, Capabilities(CLIENT_PROTOCOL_41));
        out
    }
}

pub const ER_CON_COUNT_ERROR: u16 = 1040;
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
pub const ER_SERVER_SHUTDOWN: u16 = 1053;
pub const ER_NO_SUCH_THREAD: u16 = 1094;
pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
pub const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
pub const ER_QUERY_INTERRUPTED: u16 = 1317;
/// MySQL 8's code for `require_secure_transport` refusing a plain connection (MariaDB answers
/// such a login with [`access_denied`] instead).
pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;

/// 1045 `28000`: `Access denied for user 'u'@'h' (using password: YES)`. Sent for a wrong
/// password and for an unknown user alike.
pub fn access_denied(user: &str, host: &str, using_password: bool) -> ServerError {
    ServerError::new(
        ER_ACCESS_DENIED_ERROR,
        b"28000",
        format!(
            "Access denied for user '{user}'@'{host}' (using password: {})",
            if using_password { "YES" } else { "NO" }
        ),
    )
}

/// 1044 `42000`: the user may not use this database.
pub fn database_access_denied(user: &str, host: &str, database: &str) -> ServerError {
    ServerError::new(
        ER_DBACCESS_DENIED_ERROR,
        b"42000",
        format!("Access denied for user '{user}'@'{host}' to database '{database}'"),
    )
}

/// 1043 `08S01`: a login packet that cannot be read.
pub fn bad_handshake() -> ServerError {
    ServerError::new(ER_HANDSHAKE_ERROR, b"08S01", "Bad handshake")
}

/// 1047 `08S01`: a command byte the gateway does not serve.
pub fn unknown_command() -> ServerError {
    ServerError::new(ER_UNKNOWN_COM_ERROR, b"08S01", "Unknown command")
}

/// 1153 `08S01`: a payload over the limit.
pub fn packet_too_large() -> ServerError {
    ServerError::new(
        ER_NET_PACKET_TOO_LARGE,
        b"08S01",
        "Got a packet bigger than 'max_allowed_packet' bytes",
    )
}

/// 1156 `08S01`: a sequence id out of order.
pub fn packets_out_of_order() -> ServerError {
    ServerError::new(
        ER_NET_PACKETS_OUT_OF_ORDER,
        b"08S01",
        "Got packets out of order",
    )
}

/// 1040 `08004` (not checked against a server here: MariaDB words it the same).
pub fn too_many_connections() -> ServerError {
    ServerError::new(ER_CON_COUNT_ERROR, b"08004", "Too many connections")
}

/// 1053 `08S01` (not checked against a server here).
pub fn server_shutdown() -> ServerError {
    ServerError::new(ER_SERVER_SHUTDOWN, b"08S01", "Server shutdown in progress")
}

/// 1317 `70100` (not checked against a server here).
pub fn query_interrupted() -> ServerError {
    ServerError::new(
        ER_QUERY_INTERRUPTED,
        b"70100",
        "Query execution was interrupted",
    )
}

/// 1243 `HY000`: a statement id the session does not know, for the command named as the
/// server names it (`mysqld_stmt_execute`, `mysqld_stmt_fetch`, ...).
pub fn unknown_statement(id: u32, command: &str) -> ServerError {
    ServerError::new(
        ER_UNKNOWN_STMT_HANDLER,
        b"HY000",
        format!("Unknown prepared statement handler ({id}) given to {command}"),
    )
}

/// MySQL 8's refusal of a login without TLS under `require_secure_transport` (3159 `HY000`;
/// not checked here, there is no MySQL server on this machine). MariaDB 10.11 sends
/// [`access_denied`] for the same login (checked): a front end that must look like MariaDB
/// sends that, after reading the login packet but without checking its password.
pub fn secure_transport_required() -> ServerError {
    ServerError::new(
        ER_SECURE_TRANSPORT_REQUIRED,
        b"HY000",
        "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
    )
}
