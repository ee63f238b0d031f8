//! Which commands a multiplexed client may send over a shared server connection, which the
//! gateway answers itself, and which need a server connection of the client's own.
//!
//! The decision uses the server's own command table (`COMMAND`): the command's full name
//! (`client|tracking`), its flags (`blocking`) and its ACL categories (`@connection`,
//! `@pubsub`). Commands that change or depend on the state of the connection they run on are
//! never sent over a shared one; a command of those categories the gateway does not know
//! (a newer server's) gets a dedicated connection too: it fails closed.

use sumun_wire::resp::table::CommandInfo;
use sumun_wire::resp::Command;

/// What a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No connection state: fine on a shared connection.
    Plain,
    /// Answered by the gateway from the client's own state.
    Local(LocalCmd),
    /// Needs a server connection of the client's own, for this reason (see
    /// `pool::DEDICATED_REASONS`).
    Dedicate(&'static str),
    /// `MULTI`: shared when the whole block is in the client's batch, else dedicated.
    Multi,
    /// `EXEC` / `DISCARD`: end a transaction.
    EndMulti { exec: bool },
    /// `SELECT db`: another pool (the db is the pool's).
    Select,
    /// `HELLO [proto [SETNAME name]]` on an open connection: the protocol is the pool's.
    Hello,
    /// `RESET`: the client's state back to a new connection's.
    Reset,
    /// Server-wide and needed while the server is busy (`SCRIPT KILL`): sent on a connection
    /// opened for it alone, not queued behind other clients' commands.
    OneOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The `CLIENT` subcommands the gateway answers.
pub enum LocalCmd {
    Id,
    Getname,
    Setname,
    Info,
    List,
    Kill,
    Unblock,
}

/// What `cmd` (which the table knows as `info`) needs.
pub fn classify(info: &CommandInfo, cmd: &Command<'_>) -> Class {
    match info.name.as_str() {
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
        | "sunsubscribe" => Class::Dedicate("pubsub"),
        "multi" => Class::Multi,
        "exec" => Class::EndMulti { exec: true },
        "discard" => Class::EndMulti { exec: false },
        "watch" => Class::Dedicate("watch"),
        "monitor" => Class::Dedicate("monitor"),
        "wait" | "waitaof" => Class::Dedicate("wait"),
        // A replication stream (an RDB without a trailing CRLF, then commands unasked), and
        // DEBUG's protocol tricks (`DEBUG PROTOCOL push`): never on a shared connection.
        "sync" | "psync" | "replconf" | "debug" => Class::Dedicate("other"),
        // A running script holds up everything behind it on its connection, a kill included:
        // the kill goes on a connection of its own to reach the server while the script runs.
        "script|kill" | "function|kill" => Class::OneOff,
        "select" => Class::Select,
        "hello" => Class::Hello,
        "reset" => Class::Reset,
        "client|id" => Class::Local(LocalCmd::Id),
        "client|getname" => Class::Local(LocalCmd::Getname),
        "client|setname" => Class::Local(LocalCmd::Setname),
        "client|info" => Class::Local(LocalCmd::Info),
        "client|list" => Class::Local(LocalCmd::List),
        "client|kill" => Class::Local(LocalCmd::Kill),
        "client|unblock" => Class::Local(LocalCmd::Unblock),
        "client|tracking" | "client|caching" | "client|getredir" | "client|trackinginfo" => {
            Class::Dedicate("tracking")
        }
        "client|reply" => Class::Dedicate("client_reply"),
        // Server-wide, no connection state.
        "client|help" | "client|pause" | "client|unpause" => Class::Plain,
        // XREAD and XREADGROUP block only with BLOCK.
        "xread" | "xreadgroup" => {
            if cmd.args().skip(1).any(|a| a.eq_ignore_ascii_case(b"block")) {
                Class::Dedicate("blocking")
            } else {
                Class::Plain
            }
        }
        // No connection state (EXEC and DISCARD outside a transaction are errors; UNWATCH
        // without WATCH does nothing).
        "ping" | "echo" | "unwatch" | "publish" | "spublish" => Class::Plain,
        _ if info.has_flag("blocking") => Class::Dedicate("blocking"),
        // Any other CLIENT subcommand (NO-EVICT, NO-TOUCH, SETINFO, ...) may be connection
        // state: fail closed.
        name if name.starts_with("client|") => Class::Dedicate("client_state"),
        _ if info.in_category("connection")
            || info.in_category("transaction")
            || (info.in_category("pubsub") && !info.name.starts_with("pubsub")) =>
        {
            Class::Dedicate("other")
        }
        _ => Class::Plain,
    }
}

/// Whether a client name is one Redis accepts (`CLIENT SETNAME`): no spaces, newlines or
/// other characters outside `!`..`~`.
pub fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}
