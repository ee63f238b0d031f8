//! Capability flags, server status flags and command bytes.
//!
//! Capabilities are kept as one `u64`: the low 32 bits are MySQL's, the high 32 bits are
//! MariaDB's extended capabilities, which travel in otherwise reserved bytes of the handshake
//! packets and only when bit 0 (`CLIENT_MYSQL`, once `CLIENT_LONG_PASSWORD`) is clear on both
//! sides.

// ---- capabilities (low 32 bits: MySQL) ----
/// `CLIENT_LONG_PASSWORD`; MariaDB servers clear it (as `CLIENT_MYSQL`) to announce extended
/// capabilities.
pub const CLIENT_MYSQL: u64 = 1;
pub const CLIENT_FOUND_ROWS: u64 = 1 << 1;
pub const CLIENT_LONG_FLAG: u64 = 1 << 2;
pub const CLIENT_CONNECT_WITH_DB: u64 = 1 << 3;
pub const CLIENT_NO_SCHEMA: u64 = 1 << 4;
pub const CLIENT_COMPRESS: u64 = 1 << 5;
pub const CLIENT_ODBC: u64 = 1 << 6;
pub const CLIENT_LOCAL_FILES: u64 = 1 << 7;
pub const CLIENT_IGNORE_SPACE: u64 = 1 << 8;
pub const CLIENT_PROTOCOL_41: u64 = 1 << 9;
pub const CLIENT_INTERACTIVE: u64 = 1 << 10;
pub const CLIENT_SSL: u64 = 1 << 11;
pub const CLIENT_IGNORE_SIGPIPE: u64 = 1 << 12;
pub const CLIENT_TRANSACTIONS: u64 = 1 << 13;
pub const CLIENT_RESERVED: u64 = 1 << 14;
pub const CLIENT_SECURE_CONNECTION: u64 = 1 << 15;
pub const CLIENT_MULTI_STATEMENTS: u64 = 1 << 16;
pub const CLIENT_MULTI_RESULTS: u64 = 1 << 17;
pub const CLIENT_PS_MULTI_RESULTS: u64 = 1 << 18;
pub const CLIENT_PLUGIN_AUTH: u64 = 1 << 19;
pub const CLIENT_CONNECT_ATTRS: u64 = 1 << 20;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u64 = 1 << 21;
pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u64 = 1 << 22;
pub const CLIENT_SESSION_TRACK: u64 = 1 << 23;
pub const CLIENT_DEPRECATE_EOF: u64 = 1 << 24;
/// MySQL 8: a result set may come without column definitions.
pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u64 = 1 << 25;
pub const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u64 = 1 << 26;
pub const CLIENT_QUERY_ATTRIBUTES: u64 = 1 << 27;
pub const CLIENT_MULTI_FACTOR_AUTHENTICATION: u64 = 1 << 28;
pub const CLIENT_CAPABILITY_EXTENSION: u64 = 1 << 29;
pub const CLIENT_SSL_VERIFY_SERVER_CERT: u64 = 1 << 30;
pub const CLIENT_REMEMBER_OPTIONS: u64 = 1 << 31;

// ---- capabilities (high 32 bits: MariaDB) ----
/// Progress reports: ERR packets with code 0xFFFF during a long command.
pub const MARIADB_CLIENT_PROGRESS: u64 = 1 << 32;
pub const MARIADB_CLIENT_COM_MULTI: u64 = 1 << 33;
pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u64 = 1 << 34;
pub const MARIADB_CLIENT_EXTENDED_METADATA: u64 = 1 << 35;
/// `COM_STMT_EXECUTE` results may skip column definitions the client has cached.
pub const MARIADB_CLIENT_CACHE_METADATA: u64 = 1 << 36;
pub const MARIADB_CLIENT_BULK_UNIT_RESULTS: u64 = 1 << 37;

// ---- server status flags ----
pub const SERVER_STATUS_IN_TRANS: u16 = 1;
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 1 << 1;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 1 << 3;
pub const SERVER_QUERY_NO_GOOD_INDEX_USED: u16 = 1 << 4;
pub const SERVER_QUERY_NO_INDEX_USED: u16 = 1 << 5;
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 1 << 6;
pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 1 << 7;
pub const SERVER_STATUS_DB_DROPPED: u16 = 1 << 8;
/// `sql_mode` has `NO_BACKSLASH_ESCAPES`: the SQL lexer must not treat `\` as an escape.
pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 1 << 9;
pub const SERVER_STATUS_METADATA_CHANGED: u16 = 1 << 10;
pub const SERVER_QUERY_WAS_SLOW: u16 = 1 << 11;
pub const SERVER_PS_OUT_PARAMS: u16 = 1 << 12;
pub const SERVER_STATUS_IN_TRANS_READONLY: u16 = 1 << 13;
pub const SERVER_SESSION_STATE_CHANGED: u16 = 1 << 14;

// ---- commands (first payload byte of a client packet in the command phase) ----
pub const COM_SLEEP: u8 = 0x00;
pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_CREATE_DB: u8 = 0x05;
pub const COM_DROP_DB: u8 = 0x06;
pub const COM_REFRESH: u8 = 0x07;
pub const COM_SHUTDOWN: u8 = 0x08;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_INFO: u8 = 0x0A;
pub const COM_CONNECT: u8 = 0x0B;
pub const COM_PROCESS_KILL: u8 = 0x0C;
pub const COM_DEBUG: u8 = 0x0D;
pub const COM_PING: u8 = 0x0E;
pub const COM_TIME: u8 = 0x0F;
pub const COM_DELAYED_INSERT: u8 = 0x10;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_BINLOG_DUMP: u8 = 0x12;
pub const COM_TABLE_DUMP: u8 = 0x13;
pub const COM_CONNECT_OUT: u8 = 0x14;
pub const COM_REGISTER_SLAVE: u8 = 0x15;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1A;
pub const COM_SET_OPTION: u8 = 0x1B;
pub const COM_STMT_FETCH: u8 = 0x1C;
pub const COM_DAEMON: u8 = 0x1D;
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1E;
pub const COM_RESET_CONNECTION: u8 = 0x1F;
pub const COM_CLONE: u8 = 0x20;
/// MariaDB: execute a prepared statement for many parameter rows.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xFA;
/// MariaDB: several commands in one packet (not supported by the response tracker).
pub const COM_MULTI: u8 = 0xFE;

/// The command's name for logs and metrics (`"query"`, `"stmt_execute"`...; `"unknown"`).
pub fn command_name(command: u8) -> &'static str {
    match command {
        COM_SLEEP => "sleep",
        COM_QUIT => "quit",
        COM_INIT_DB => "init_db",
        COM_QUERY => "query",
        COM_FIELD_LIST => "field_list",
        COM_CREATE_DB => "create_db",
        COM_DROP_DB => "drop_db",
        COM_REFRESH => "refresh",
        COM_SHUTDOWN => "shutdown",
        COM_STATISTICS => "statistics",
        COM_PROCESS_INFO => "process_info",
        COM_CONNECT => "connect",
        COM_PROCESS_KILL => "process_kill",
        COM_DEBUG => "debug",
        COM_PING => "ping",
        COM_TIME => "time",
        COM_DELAYED_INSERT => "delayed_insert",
        COM_CHANGE_USER => "change_user",
        COM_BINLOG_DUMP => "binlog_dump",
        COM_TABLE_DUMP => "table_dump",
        COM_CONNECT_OUT => "connect_out",
        COM_REGISTER_SLAVE => "register_slave",
        COM_STMT_PREPARE => "stmt_prepare",
        COM_STMT_EXECUTE => "stmt_execute",
        COM_STMT_SEND_LONG_DATA => "stmt_send_long_data",
        COM_STMT_CLOSE => "stmt_close",
        COM_STMT_RESET => "stmt_reset",
        COM_SET_OPTION => "set_option",
        COM_STMT_FETCH => "stmt_fetch",
        COM_DAEMON => "daemon",
        COM_BINLOG_DUMP_GTID => "binlog_dump_gtid",
        COM_RESET_CONNECTION => "reset_connection",
        COM_CLONE => "clone",
        COM_STMT_BULK_EXECUTE => "stmt_bulk_execute",
        COM_MULTI => "multi",
        _ => "unknown",
    }
}

/// A set of capability flags (MySQL's low 32 bits, MariaDB's high 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    pub const fn has(self, flag: u64) -> bool {
        self.0 & flag == flag
    }

    pub const fn with(self, flag: u64) -> Self {
        Capabilities(self.0 | flag)
    }

    pub const fn without(self, flag: u64) -> Self {
        Capabilities(self.0 & !flag)
    }

    /// The flags both sides have: what a connection then speaks. MariaDB's extended
    /// capabilities only count when both sides cleared `CLIENT_MYSQL`.
    pub const fn intersect(self, other: Capabilities) -> Self {
        let both = self.0 & other.0;
        if (self.0 | other.0) & CLIENT_MYSQL != 0 {
            Capabilities(both & 0xFFFF_FFFF)
        } else {
            Capabilities(both)
        }
    }

    pub const fn lower(self) -> u32 {
        self.0 as u32
    }

    /// MariaDB's extended capabilities (sent only when `CLIENT_MYSQL` is clear).
    pub const fn mariadb(self) -> u32 {
        (self.0 >> 32) as u32
    }
}
