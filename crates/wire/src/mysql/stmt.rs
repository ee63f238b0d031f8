//! The statement id that the prepared-statement commands carry right after the command byte
//! (`COM_STMT_EXECUTE`, `COM_STMT_CLOSE`, `COM_STMT_RESET`, `COM_STMT_SEND_LONG_DATA`,
//! `COM_STMT_FETCH`, MariaDB's `COM_STMT_BULK_EXECUTE`): read it, and rewrite it in place when
//! the gateway maps a client's ids onto the ids of whichever server it landed on.
//!
//! Both take the payload with its command byte (the first physical packet is enough: the id
//! is in bytes 1..5).

use super::flags::{
    COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
};

/// MariaDB: statement id `0xFFFFFFFF` in `COM_STMT_EXECUTE`/`COM_STMT_BULK_EXECUTE` means "the
/// statement prepared last" (pipelined prepare and execute).
pub const LAST_PREPARED: u32 = 0xFFFF_FFFF;

/// Whether `command` carries a statement id.
pub fn has_statement_id(command: u8) -> bool {
    matches!(
        command,
        COM_STMT_EXECUTE
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_FETCH
            | COM_STMT_BULK_EXECUTE
    )
}

/// The statement id of a `COM_STMT_*` payload; `None` for other commands or a short payload.
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    let (&command, rest) = payload.split_first()?;
    if !has_statement_id(command) {
        return None;
    }
    let id = rest.get(..4)?;
    Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

/// Replace the statement id of a `COM_STMT_*` payload; returns the old one, or `None` (and
/// changes nothing) for other commands or a short payload.
pub fn set_statement_id(payload: &mut [u8], id: u32) -> Option<u32> {
    let old = statement_id(payload)?;
    payload.get_mut(1..5)?.copy_from_slice(&id.to_le_bytes());
    Some(old)
}
