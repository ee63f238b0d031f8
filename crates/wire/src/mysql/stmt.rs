//! The statement id that the prepared-statement commands carry right after the command byte
//! (`COM_STMT_EXECUTE`, `COM_STMT_CLOSE`, `COM_STMT_RESET`, `COM_STMT_SEND_LONG_DATA`,
//! `COM_STMT_FETCH`, MariaDB's `COM_STMT_BULK_EXECUTE`): read it, and rewrite it in place when
//! the gateway maps a client's ids onto the ids of whichever server it landed on.
//!
//! Both take the payload with its command byte (the first physical packet is enough: the id
//! is in bytes 1..5).
//!
//! [`parse_execute`] reads the head of a `COM_STMT_EXECUTE` (cursor flag, where the parameter
//! types are) and [`with_types`] puts a client's earlier types back into one that sent none.

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

/// `COM_STMT_EXECUTE` flags: a cursor is asked for (read only, for update, scrollable).
const CURSOR_TYPES: u8 = 0x07;
/// MySQL's `PARAMETER_COUNT_AVAILABLE` (query attributes): not negotiated, not understood.
const PARAMETER_COUNT_AVAILABLE: u8 = 0x08;

/// Where a `COM_STMT_EXECUTE` payload (command byte first) keeps its parameter types.
#[derive(Debug, PartialEq, Eq)]
pub struct Execute {
    /// A cursor is asked for.
    pub cursor: bool,
    /// The offset of the "new params bound" byte (none without parameters).
    pub bound_at: Option<usize>,
    /// The types sent with it, when the flag is set.
    pub types: Option<std::ops::Range<usize>>,
}

/// Bytes of an execute payload needed to read [`Execute`]: known from the parameter count.
pub fn execute_head(params: u16) -> usize {
    let bitmap = usize::from(params).div_ceil(8);
    if params == 0 {
        10
    } else {
        10 + bitmap + 1
    }
}

/// Read the head of a `COM_STMT_EXECUTE` payload (at least [`execute_head`] bytes, or the
/// whole payload) for a statement of `params` parameters.
pub fn parse_execute(payload: &[u8], params: u16) -> Result<Execute, &'static str> {
    if payload.len() < 10 {
        return Err("short COM_STMT_EXECUTE");
    }
    let flags = payload[5];
    if flags & PARAMETER_COUNT_AVAILABLE != 0 || flags & !(CURSOR_TYPES | 0x08) != 0 {
        return Err("COM_STMT_EXECUTE flags not understood");
    }
    let cursor = flags & CURSOR_TYPES != 0;
    if params == 0 {
        return Ok(Execute {
            cursor,
            bound_at: None,
            types: None,
        });
    }
    let at = execute_head(params) - 1;
    let bound = *payload.get(at).ok_or("short COM_STMT_EXECUTE")?;
    let types = match bound {
        0 => None,
        1 => {
            let end = at + 1 + 2 * usize::from(params);
            if payload.len() < end {
                return Err("COM_STMT_EXECUTE without its parameter types");
            }
            Some(at + 1..end)
        }
        _ => return Err("COM_STMT_EXECUTE's new-params-bound flag not understood"),
    };
    Ok(Execute {
        cursor,
        bound_at: Some(at),
        types,
    })
}

/// The payload with the flag set and `types` put after it; `bound_at` is an offset
/// [`parse_execute`] gave for this payload (panics past the payload's end).
pub fn with_types(payload: &[u8], bound_at: usize, types: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(&payload[..bound_at]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[bound_at + 1..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_heads_are_read_and_types_put_back() {
        // id 7, no cursor, iteration 1, two params: bitmap 1 byte, flag 1, types, values.
        let mut p = vec![
            0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b10, 1, 3, 0, 253, 0, 42, 0, 0, 0,
        ];
        let e = parse_execute(&p, 2).unwrap();
        assert_eq!(e.bound_at, Some(11));
        assert_eq!(e.types, Some(12..16));
        assert!(!e.cursor);
        let types = p[12..16].to_vec();
        // The same without types: flag 0.
        let mut bare = p[..11].to_vec();
        bare.push(0);
        bare.extend_from_slice(&p[16..]);
        let e = parse_execute(&bare, 2).unwrap();
        assert_eq!(e.types, None);
        assert_eq!(with_types(&bare, 11, &types), p);
        p[5] = 1;
        assert!(parse_execute(&p, 2).unwrap().cursor);
        p[5] = 8;
        assert!(parse_execute(&p, 2).is_err());
        p[5] = 0;
        p[11] = 2;
        assert!(parse_execute(&p, 2).is_err());
        assert!(parse_execute(&p[..12], 2).is_err() || parse_execute(&p[..11], 2).is_err());
        assert!(parse_execute(&[0x17, 1, 0], 0).is_err());
    }
}
