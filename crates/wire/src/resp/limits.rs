//! The bounds every decoder in [`super`] checks a length field against before trusting it.

/// Bounds on what a peer may make us parse. The defaults are Redis's own for an authenticated
/// client (`proto-max-bulk-len`, `PROTO_INLINE_MAX_SIZE`, `INT_MAX` elements) plus a nesting
/// depth Redis has no need for (its requests are flat) but a parser of replies does.
///
/// None of these is an allocation size: decoders grow their output as bytes arrive, so a
/// claimed 4 GiB bulk or a billion-element array costs nothing until the bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (Redis's `proto-max-bulk-len`, 512 MiB by default).
    pub max_bulk_len: u64,
    /// The most elements one array, set, push or map (counted in pairs) may claim.
    pub max_elements: u64,
    /// How deeply aggregates may nest (a flat request is depth 1).
    pub max_depth: usize,
    /// The longest line without its CRLF: an inline command, a length header, or (in values
    /// the [`Decoder`](super::Decoder) holds) a simple string, error or number.
    pub max_line: usize,
    /// Word errors as Redis does before `AUTH` (`unauthenticated multibulk length`); set by
    /// [`Limits::unauthenticated`].
    pub unauthenticated: bool,
}

/// Redis's `proto-max-bulk-len` default.
pub const DEFAULT_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;
/// Redis's `PROTO_INLINE_MAX_SIZE`.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_elements: i32::MAX as u64,
            max_depth: 128,
            max_line: DEFAULT_MAX_LINE,
            unauthenticated: false,
        }
    }
}

impl Limits {
    /// What Redis allows a client that has not authenticated yet: 10 arguments of at most
    /// 16 KiB each (`AUTH user password` and `HELLO 3 AUTH user password SETNAME name` fit).
    pub fn unauthenticated() -> Limits {
        Limits {
            max_bulk_len: 16 * 1024,
            max_elements: 10,
            unauthenticated: true,
            ..Limits::default()
        }
    }

    /// The same limits with another `max_bulk_len` (a target's `proto-max-bulk-len`).
    pub fn with_max_bulk_len(self, max_bulk_len: u64) -> Limits {
        Limits {
            max_bulk_len,
            ..self
        }
    }
}
