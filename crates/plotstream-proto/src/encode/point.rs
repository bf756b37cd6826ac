//! The point hot path (docs/performance.md): one point as a line or a chunk, assembled in place
//! in constant-size moves, and [`ChunkBatch`], many points in one chunk.

use super::number::{Num, NumScratch};
use super::style::{Flavour, Style, ARDUINO, HEX_LOWER, HEX_UPPER, NODE, PYTHON, RAW};
use crate::update::Token;

/// Appends one JSON line (with its `\n`) for the point `{x, y}` in the flavour's style, with a
/// `"streamtoken"` member last when `token` is `Some`:
///
/// | flavour | line |
/// |---|---|
/// | Python | `{"x": 1, "y": 0.5}` |
/// | Node, Raw | `{"x":1,"y":0.5}` |
/// | Arduino | `{"x": 1500, "y": 512, "streamtoken": "abcdef1234"}` |
pub fn encode_point_line(
    flavour: Flavour,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    point_in::<false>(flavour, x, y, token, out);
}

/// Appends one point as one chunk in the flavour's framing: the size line (lowercase hex, or
/// UPPERCASE for Arduino, always with the correct size), the line and CRLF.
pub fn encode_point_chunk(
    flavour: Flavour,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    point_in::<true>(flavour, x, y, token, out);
}

/// Batches many points into one chunk (the Raw writer, `--points-per-chunk`).
///
/// [`ChunkBatch::begin`] reserves a size field of [`BATCH_SIZE_DIGITS`] hex digits,
/// [`ChunkBatch::push_point`] appends lines and [`ChunkBatch::finish`] fills the size in with
/// leading zeros (RFC 9112 allows them; the field only widens, by moving the lines once, for
/// chunks of 64 KiB and more) and appends the CRLF. Leading zeros measured faster than moving
/// the lines to an exact-width field, and they stay far below the 32-digit limit L12.
#[derive(Debug)]
pub struct ChunkBatch {
    /// Where the size field starts in the caller's buffer.
    /// Invariant: `out[start..start + BATCH_SIZE_DIGITS + 2]` is the reserved size line.
    start: usize,
    n_points: usize,
    upper_hex: bool,
}

impl ChunkBatch {
    /// Reserves the size line of a new chunk at the end of `out`.
    pub fn begin(out: &mut Vec<u8>) -> ChunkBatch {
        let start = out.len();
        out.extend_from_slice(&BATCH_SIZE_FIELD);
        ChunkBatch {
            start,
            n_points: 0,
            upper_hex: false,
        }
    }

    /// Appends one point line (see [`encode_point_line`]). `out` must be the buffer given to
    /// [`ChunkBatch::begin`]; whatever else is appended to it before [`ChunkBatch::finish`]
    /// (an [`encode_update_line`](crate::encode::encode_update_line), say) becomes part of the chunk too.
    pub fn push_point(
        &mut self,
        flavour: Flavour,
        x: Num,
        y: Num,
        token: Option<&Token>,
        out: &mut Vec<u8>,
    ) {
        self.upper_hex = flavour == Flavour::Arduino;
        encode_point_line(flavour, x, y, token, out);
        self.n_points += 1;
    }

    /// Points pushed so far.
    pub fn n_points(&self) -> usize {
        self.n_points
    }

    /// Fills in the size and appends the chunk's CRLF. A batch without points leaves nothing,
    /// since an empty chunk would be the last-chunk.
    pub fn finish(self, out: &mut Vec<u8>) {
        let field_end = self.start + BATCH_SIZE_DIGITS;
        let data_start = field_end + 2;
        if out.len() <= data_start {
            out.truncate(self.start);
            return;
        }
        let len = out.len() - data_start;
        let n_digits = hex_digits(len);
        let mut at = field_end;
        if n_digits > BATCH_SIZE_DIGITS {
            // Widen the field: move the lines right once (only for chunks over 64 KiB).
            let extra = n_digits - BATCH_SIZE_DIGITS;
            let old_len = out.len();
            out.resize(old_len + extra, 0);
            out.copy_within(field_end..old_len, field_end + extra);
            at += extra;
        }
        let digits = if self.upper_hex { HEX_UPPER } else { HEX_LOWER };
        let mut v = len;
        for slot in out[self.start..at].iter_mut().rev() {
            *slot = digits[v & 0xf];
            v >>= 4;
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Hex digits of the size field [`ChunkBatch`] reserves: chunks up to 64 KiB − 1 need no move.
pub const BATCH_SIZE_DIGITS: usize = 4;

/// [`point`] in `flavour`'s style, one monomorphic copy per flavour: the punctuation becomes
/// constant-size copies.
#[inline(always)]
fn point_in<const CHUNK: bool>(
    flavour: Flavour,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    match flavour {
        Flavour::Python => point::<CHUNK>(&PYTHON, x, y, token, out),
        Flavour::Node => point::<CHUNK>(&NODE, x, y, token, out),
        Flavour::Arduino => point::<CHUNK>(&ARDUINO, x, y, token, out),
        Flavour::Raw => point::<CHUNK>(&RAW, x, y, token, out),
    }
}

/// Formats both numbers, then assembles the line (and its chunk framing when `CHUNK`) in place.
#[inline(always)]
fn point<const CHUNK: bool>(
    style: &Style,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    let (mut sx, mut sy) = (NumScratch::new(), NumScratch::new());
    let xs = sx.format(style.num, x);
    let ys = sy.format(style.num, y);
    match token {
        None => assemble::<SHORT_POINT, CHUNK>(style, xs, ys, None, out),
        Some(t) => assemble::<LONG_POINT, CHUNK>(style, xs, ys, Some(t.as_str().as_bytes()), out),
    }
}

/// Writes the pieces straight into `out`: `N` zero bytes are appended (constant-size stores),
/// the pieces are copied over them and `out` is truncated to what was written. Measured against
/// a stack buffer appended afterwards, this saves the read-back of freshly written bytes.
///
/// Invariant: `N` holds the longest point chunk of this shape: numbers are at most 24 bytes
/// (`-1.2345678901234567e-308`, `-9223372036854775808`), tokens at most 64 (L7), so a chunk is
/// at most 4 + 6 + 24 + 7 + 24 + 19 + 64 + 1 + 2 + 2 = 153 bytes and its size fits 2 hex digits.
#[inline(always)]
fn assemble<const N: usize, const CHUNK: bool>(
    style: &Style,
    xs: &[u8],
    ys: &[u8],
    token: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; N]);
    let Ok(buf) = <&mut [u8; N]>::try_from(&mut out[start..]) else {
        return; // Unreachable: exactly N bytes were just appended.
    };
    let mut w = 0;
    if CHUNK {
        let len = style.x_prefix.len()
            + xs.len()
            + style.y_prefix.len()
            + ys.len()
            + token.map_or(0, |t| style.token_prefix.len() + t.len() + 1)
            + 2;
        let digits = if style.upper_hex {
            HEX_UPPER
        } else {
            HEX_LOWER
        };
        if len >= 0x10 {
            buf[0] = digits[(len >> 4) & 0xf];
            w = 1;
        }
        buf[w] = digits[len & 0xf];
        buf[w + 1] = b'\r';
        buf[w + 2] = b'\n';
        w += 3;
    }
    put(buf, &mut w, style.x_prefix);
    put_short(buf, &mut w, xs);
    put(buf, &mut w, style.y_prefix);
    put_short(buf, &mut w, ys);
    if let Some(t) = token {
        put(buf, &mut w, style.token_prefix);
        // Tokens are `[A-Za-z0-9_-]` (L7): nothing to escape.
        put_short(buf, &mut w, t);
        put(buf, &mut w, b"\"");
    }
    put(buf, &mut w, if CHUNK { b"}\n\r\n" } else { b"}\n" });
    out.truncate(start + w);
}

/// Copies a piece whose length is a compile-time constant after inlining.
#[inline(always)]
fn put<const N: usize>(buf: &mut [u8; N], w: &mut usize, piece: &[u8]) {
    buf[*w..*w + piece.len()].copy_from_slice(piece);
    *w += piece.len();
}

/// Copies a number or token: below 32 bytes with two overlapping fixed-size moves, as `memcpy`
/// does inside, but inlined.
#[inline(always)]
fn put_short<const N: usize>(buf: &mut [u8; N], w: &mut usize, piece: &[u8]) {
    let (at, n) = (*w, piece.len());
    match n {
        32.. => buf[at..at + n].copy_from_slice(piece),
        16.. => {
            buf[at..at + 16].copy_from_slice(&piece[..16]);
            buf[at + n - 16..at + n].copy_from_slice(&piece[n - 16..]);
        }
        8.. => {
            buf[at..at + 8].copy_from_slice(&piece[..8]);
            buf[at + n - 8..at + n].copy_from_slice(&piece[n - 8..]);
        }
        4.. => {
            buf[at..at + 4].copy_from_slice(&piece[..4]);
            buf[at + n - 4..at + n].copy_from_slice(&piece[n - 4..]);
        }
        _ => {
            for (k, &b) in piece.iter().enumerate() {
                buf[at + k] = b;
            }
        }
    }
    *w += n;
}

fn hex_digits(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits as usize).div_ceil(4).max(1)
}

/// Bytes reserved for a point chunk without a token (at most 4 + 6 + 24 + 7 + 24 + 4 = 69).
const SHORT_POINT: usize = 80;
/// Bytes reserved for a point chunk with a token (see [`assemble`]).
const LONG_POINT: usize = 160;
const BATCH_SIZE_FIELD: [u8; BATCH_SIZE_DIGITS + 2] = *b"0000\r\n";
