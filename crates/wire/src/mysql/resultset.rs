//! Result sets as values: column definitions (`ColumnDefinition41`), text rows, and a writer
//! for whole text result sets — what a front end needs to read a health check's answer
//! (`SELECT @@read_only`) and to answer queries itself (an admin console, a refusal shaped as
//! a result). Binary rows are relayed, not decoded, so only their header is named here.

use super::codec::{put_lenenc_bytes, put_lenenc_int, put_u16, put_u32, Reader, LENENC_NULL};
use super::flags::{Capabilities, CLIENT_DEPRECATE_EOF};
use super::generic::{EofPacket, OkPacket, EOF_HEADER};
use super::packet::{begin_packet, finish_packet};
use super::Malformed;

/// `MYSQL_TYPE_*` values used by the gateway's own result sets.
pub const TYPE_LONGLONG: u8 = 0x08;
pub const TYPE_VAR_STRING: u8 = 0xFD;
/// utf8mb4_general_ci.
pub const CHARSET_UTF8MB4: u16 = 45;
/// The binary collation, for numbers.
pub const CHARSET_BINARY: u16 = 63;
/// Column flag: the column is `NOT NULL`.
pub const NOT_NULL_FLAG: u16 = 1;
/// Column flag: a number column is unsigned.
pub const UNSIGNED_FLAG: u16 = 32;

/// A column definition (protocol 4.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnDefinition<'a> {
    pub schema: &'a [u8],
    pub table: &'a [u8],
    pub org_table: &'a [u8],
    pub name: &'a [u8],
    pub org_name: &'a [u8],
    pub charset: u16,
    pub column_length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

impl<'a> ColumnDefinition<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("column definition", what);
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes().ok_or(m("catalog"))?;
        if catalog != b"def" {
            return Err(m("catalog is not 'def'"));
        }
        let schema = r.lenenc_bytes().ok_or(m("schema"))?;
        let table = r.lenenc_bytes().ok_or(m("table"))?;
        let org_table = r.lenenc_bytes().ok_or(m("original table"))?;
        let name = r.lenenc_bytes().ok_or(m("name"))?;
        let org_name = r.lenenc_bytes().ok_or(m("original name"))?;
        let fixed = r.lenenc_int().ok_or(m("fixed fields length"))?;
        if fixed < 0x0c {
            return Err(m("fixed fields too short"));
        }
        let charset = r.u16().ok_or(m("charset"))?;
        let column_length = r.u32().ok_or(m("column length"))?;
        let column_type = r.u8().ok_or(m("type"))?;
        let flags = r.u16().ok_or(m("flags"))?;
        let decimals = r.u8().ok_or(m("decimals"))?;
        Ok(ColumnDefinition {
            schema,
            table,
            org_table,
            name,
            org_name,
            charset,
            column_length,
            column_type,
            flags,
            decimals,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        put_lenenc_bytes(out, b"def");
        put_lenenc_bytes(out, self.schema);
        put_lenenc_bytes(out, self.table);
        put_lenenc_bytes(out, self.org_table);
        put_lenenc_bytes(out, self.name);
        put_lenenc_bytes(out, self.org_name);
        put_lenenc_int(out, 0x0c);
        put_u16(out, self.charset);
        put_u32(out, self.column_length);
        out.push(self.column_type);
        put_u16(out, self.flags);
        out.push(self.decimals);
        put_u16(out, 0);
    }

    /// A text column named `name` (utf8mb4, up to `max_len` characters).
    pub fn text(name: &'a str, max_len: u32) -> Self {
        ColumnDefinition {
            name: name.as_bytes(),
            org_name: name.as_bytes(),
            charset: CHARSET_UTF8MB4,
            column_length: max_len.saturating_mul(4),
            column_type: TYPE_VAR_STRING,
            ..ColumnDefinition::default()
        }
    }

    /// A BIGINT column named `name`.
    pub fn integer(name: &'a str) -> Self {
        ColumnDefinition {
            name: name.as_bytes(),
            org_name: name.as_bytes(),
            charset: CHARSET_BINARY,
            column_length: 20,
            column_type: TYPE_LONGLONG,
            flags: NOT_NULL_FLAG,
            ..ColumnDefinition::default()
        }
    }
}

/// The values of a text row: `Some(bytes)` or `None` for SQL NULL.
pub fn text_row(payload: &[u8]) -> TextRow<'_> {
    TextRow(Reader::new(payload))
}

/// Iterator over a text row's values; yields `Err` once and stops if the row is malformed.
#[derive(Debug, Clone)]
pub struct TextRow<'a>(Reader<'a>);

impl<'a> Iterator for TextRow<'a> {
    type Item = Result<Option<&'a [u8]>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        if self.0.peek() == Some(LENENC_NULL) {
            self.0.skip(1);
            return Some(Ok(None));
        }
        match self.0.lenenc_bytes() {
            Some(v) => Some(Ok(Some(v))),
            None => {
                self.0.rest();
                Some(Err(Malformed::new("text row", "value length")))
            }
        }
    }
}

/// Append a text row's payload.
pub fn write_text_row(out: &mut Vec<u8>, values: &[Option<&[u8]>]) {
    for v in values {
        match v {
            Some(b) => put_lenenc_bytes(out, b),
            None => out.push(LENENC_NULL),
        }
    }
}

/// Append a whole text result set as packets starting at sequence id `seq` (1 when it answers
/// a command): column count, definitions, the EOF unless `CLIENT_DEPRECATE_EOF`, rows, and the
/// end (EOF, or an OK with header `0xFE`) carrying `status`. Returns the next sequence id.
pub fn write_text_result_set(
    out: &mut Vec<u8>,
    mut seq: u8,
    caps: Capabilities,
    columns: &[ColumnDefinition<'_>],
    rows: &[Vec<Option<&[u8]>>],
    status: u16,
) -> u8 {
    let start = begin_packet(out);
    put_lenenc_int(out, columns.len() as u64);
    seq = finish_packet(out, start, seq);
    for c in columns {
        let start = begin_packet(out);
        c.write(out);
        seq = finish_packet(out, start, seq);
    }
    let deprecate_eof = caps.has(CLIENT_DEPRECATE_EOF);
    if !deprecate_eof {
        let start = begin_packet(out);
        EofPacket {
            warnings: 0,
            status,
        }
        .write(out, caps);
        seq = finish_packet(out, start, seq);
    }
    for row in rows {
        let start = begin_packet(out);
        write_text_row(out, row);
        seq = finish_packet(out, start, seq);
    }
    let start = begin_packet(out);
    if deprecate_eof {
        OkPacket {
            header: EOF_HEADER,
            status,
            ..OkPacket::default()
        }
        .write(out, caps);
    } else {
        EofPacket {
            warnings: 0,
            status,
        }
        .write(out, caps);
    }
    finish_packet(out, start, seq)
}
