//! The protocol's basic types: fixed-length little-endian integers, length-encoded integers
//! (`lenenc`: one byte below 0xFB, else 0xFC/0xFD/0xFE and 2/3/8 bytes), length-encoded and
//! NUL-terminated strings. [`Reader`] reads them from a payload with every bound checked; the
//! `put_*` functions append them to a `Vec<u8>`.

/// A lenenc prefix meaning SQL NULL in a text row (never a length).
pub const LENENC_NULL: u8 = 0xFB;

/// A cursor over a payload. Every read returns `None` (and leaves the cursor where it was)
/// when the payload is too short, so decoders turn a short packet into an error, never a panic.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Option<u32> {
        self.bytes(3)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    /// A length-encoded integer. `0xFB` (NULL) and `0xFF` (an ERR header) are not integers
    /// and give `None`.
    pub fn lenenc_int(&mut self) -> Option<u64> {
        let save = self.pos;
        let v = match self.u8()? {
            b @ 0..=0xFA => Some(u64::from(b)),
            0xFC => self.u16().map(u64::from),
            0xFD => self.u24().map(u64::from),
            0xFE => self.u64(),
            _ => None,
        };
        if v.is_none() {
            self.pos = save;
        }
        v
    }

    /// A length-encoded string (bytes). The length is checked against what is left, so a huge
    /// claimed length is `None`, not an allocation.
    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let save = self.pos;
        let n = self.lenenc_int()?;
        let s = usize::try_from(n).ok().and_then(|n| self.bytes(n));
        if s.is_none() {
            self.pos = save;
        }
        s
    }

    /// Bytes up to a NUL, which is consumed; `None` when there is no NUL.
    pub fn nul_bytes(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let n = rest.iter().position(|&b| b == 0)?;
        self.pos += n + 1;
        Some(&rest[..n])
    }

    /// Bytes up to a NUL or the end of the payload (some servers omit a final NUL).
    pub fn nul_or_rest(&mut self) -> &'a [u8] {
        self.nul_bytes().unwrap_or_else(|| self.rest())
    }
}

/// Bytes `n` takes as a lenenc integer.
pub fn lenenc_int_len(n: u64) -> usize {
    match n {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xFA => out.push(n as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            put_u16(out, n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            put_u24(out, n as u32);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn put_lenenc_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// `s` and a NUL. The caller makes sure `s` has no NUL of its own.
pub fn put_nul_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}
