//! The chunked transfer coding (RFC 9112 §7.1) with plotstream's one tolerance (docs/reliability.md
//! P3).
//!
//! ```text
//! chunked-body   = *( empty-line / chunk ) last-chunk trailer-section CRLF
//! empty-line     = CRLF                      ; skipped, at most L15 in a row (K2)
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG                  ; at most L12 digits, value <= 2^64 - 1
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//!                                            ; no BWS before the first ";" (P3)
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )     ; ignored, at most L17
//! ```
//!
//! The decoder is hand-written rather than `httparse::parse_chunk_size`, which reads an empty
//! size line as 0 and accepts LF and NUL inside extensions (docs/reliability.md M1).

use bytes::{Bytes, BytesMut};

use crate::limits::Limits;

/// Output of one decoding step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Chunk data: a zero-copy slice of the input buffer.
    Data(Bytes),
    /// The body ended cleanly: last-chunk, trailers and the final CRLF were read.
    End,
}

/// Why a chunked body is rejected. Every variant maps to 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A byte that the grammar does not allow in this state (whitespace, `0x`, a bare CR or LF…).
    Syntax,
    /// More than L12 size digits, or a value over 2^64 − 1.
    SizeOverflow,
    /// An extension over L14.
    ExtensionTooLong,
    /// More than L15 empty lines in a row.
    TooManyEmptyLines,
    /// The decaying overhead budget L16 ran out.
    OverheadBudget,
    /// A trailer section over L17.
    TrailersTooLarge,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkError::Syntax => "malformed chunked framing",
            ChunkError::SizeOverflow => "chunk size too long or too large",
            ChunkError::ExtensionTooLong => "chunk extension over the limit",
            ChunkError::TooManyEmptyLines => "too many empty lines between chunks",
            ChunkError::OverheadBudget => "chunk overhead budget exceeded",
            ChunkError::TrailersTooLarge => "trailer section over the limit",
        })
    }
}

impl std::error::Error for ChunkError {}

/// One state per position in the grammar above, in grammar order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a size line: a HEXDIG starts one; CR starts an empty line.
    SizeStart,
    /// CR of an empty line seen; LF must follow.
    EmptyLf,
    /// Reading HEXDIG.
    Size,
    /// After `;` (and BWS): an extension name must start.
    ExtNameStart,
    /// In an extension name.
    ExtName,
    /// BWS after a name: `=` must follow.
    ExtBwsBeforeEq,
    /// After `=` (and BWS): a value must start.
    ExtValueStart,
    /// In a token value.
    ExtToken,
    /// In a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedPair,
    /// After the closing quote: `;` or CR.
    ExtAfterQuoted,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// In chunk data.
    Data,
    /// Chunk data done; CR must follow.
    DataCr,
    /// CR after data seen; LF must follow.
    DataLf,
    /// Start of a trailer line, or CR of the final empty line.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// CR of a trailer line seen; LF must follow.
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    EndLf,
    /// The body ended.
    Done,
}

/// Incremental chunked decoder: consumes exactly the bytes it decoded and keeps its position
/// in the grammar, so input may be split anywhere and every byte is examined once.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being read, then data bytes left in the current chunk.
    size: u64,
    /// Digits of the current size line, leading zeros included (L12).
    n_digits: usize,
    /// Length of the current size line without its CRLF (budget L16 and extension L14).
    line_len: usize,
    /// Extension bytes of the current line, `;` included (L14).
    ext_len: usize,
    /// Empty lines skipped in a row (L15).
    n_empty: u32,
    /// Go's decaying overhead counter (L16). Invariant: never above the budget while decoding.
    excess: u64,
    /// Bytes of the trailer section so far (L17).
    trailer_len: usize,
    /// Trailer fields so far (L17).
    n_trailers: usize,
    limits: ChunkLimits,
}

#[derive(Debug, Clone, Copy)]
struct ChunkLimits {
    size_digits: usize,
    chunk_ext: usize,
    empty_size_lines: u32,
    overhead_budget: u64,
    trailer_bytes: usize,
    trailer_fields: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            n_digits: 0,
            line_len: 0,
            ext_len: 0,
            n_empty: 0,
            excess: 0,
            trailer_len: 0,
            n_trailers: 0,
            limits: ChunkLimits {
                size_digits: limits.size_digits,
                chunk_ext: limits.chunk_ext,
                empty_size_lines: limits.empty_size_lines,
                overhead_budget: limits.overhead_budget,
                trailer_bytes: limits.trailer_bytes,
                trailer_fields: limits.trailer_fields,
            },
        }
    }

    /// True once the last-chunk, trailers and final CRLF were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The current overhead counter (L16), for tests and metrics.
    pub fn excess(&self) -> u64 {
        self.excess
    }

    /// True while inside chunk data (the line framer may then see more bytes soon).
    pub fn is_in_data(&self) -> bool {
        self.state == State::Data
    }

    /// Decodes from `buf`, consuming framing bytes and splitting data off as zero-copy `Bytes`.
    /// `Ok(None)`: `buf` is empty and more input is needed. After [`Chunk::End`] the decoder
    /// consumes nothing more: what remains in `buf` is not part of the body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        if self.state == State::Done {
            return Ok(Some(Chunk::End));
        }
        let mut i = 0;
        while i < buf.len() {
            if self.state == State::Data {
                let _ = buf.split_to(i);
                let available = buf.len() as u64;
                // Never allocate by declared size: take what is there, up to what is left.
                #[allow(clippy::cast_possible_truncation)] // min with buf.len()
                let n = self.size.min(available) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Some(Chunk::Data(buf.split_to(n).freeze())));
            }
            let b = buf[i];
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                let _ = buf.split_to(i);
                return Ok(Some(Chunk::End));
            }
        }
        let _ = buf.split_to(i);
        Ok(None)
    }

    /// One framing byte. Data bytes never come here.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        if matches!(
            self.state,
            Size | ExtNameStart
                | ExtName
                | ExtBwsBeforeEq
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtAfterQuoted
        ) {
            // Every byte of a size line after the first digit, its CR included (L16).
            self.line_len += 1;
        }
        match self.state {
            SizeStart => match b {
                b'\r' => self.state = EmptyLf,
                _ => {
                    let d = hex(b).ok_or(ChunkError::Syntax)?;
                    self.size = u64::from(d);
                    self.n_digits = 1;
                    self.line_len = 1;
                    self.ext_len = 0;
                    self.state = Size;
                }
            },
            EmptyLf => {
                if b != b'\n' {
                    return Err(ChunkError::Syntax);
                }
                self.n_empty += 1;
                if self.n_empty > self.limits.empty_size_lines {
                    return Err(ChunkError::TooManyEmptyLines);
                }
                self.charge(2, 0)?;
                self.state = SizeStart;
            }
            Size => match b {
                b'\r' => self.state = SizeLf,
                b';' => self.ext_byte(ExtNameStart)?,
                _ => {
                    let d = hex(b).ok_or(ChunkError::Syntax)?;
                    self.n_digits += 1;
                    if self.n_digits > self.limits.size_digits {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(ChunkError::SizeOverflow)?;
                }
            },
            ExtNameStart => match b {
                b' ' | b'\t' => self.ext_byte(ExtNameStart)?,
                _ if is_tchar(b) => self.ext_byte(ExtName)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtName => match b {
                b'\r' => self.state = SizeLf,
                b';' => self.ext_byte(ExtNameStart)?,
                b'=' => self.ext_byte(ExtValueStart)?,
                b' ' | b'\t' => self.ext_byte(ExtBwsBeforeEq)?,
                _ if is_tchar(b) => self.ext_byte(ExtName)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtBwsBeforeEq => match b {
                b' ' | b'\t' => self.ext_byte(ExtBwsBeforeEq)?,
                b'=' => self.ext_byte(ExtValueStart)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtValueStart => match b {
                b' ' | b'\t' => self.ext_byte(ExtValueStart)?,
                b'"' => self.ext_byte(ExtQuoted)?,
                _ if is_tchar(b) => self.ext_byte(ExtToken)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtToken => match b {
                b'\r' => self.state = SizeLf,
                b';' => self.ext_byte(ExtNameStart)?,
                _ if is_tchar(b) => self.ext_byte(ExtToken)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtQuoted => match b {
                b'"' => self.ext_byte(ExtAfterQuoted)?,
                b'\\' => self.ext_byte(ExtQuotedPair)?,
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.ext_byte(ExtQuoted)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtQuotedPair => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.ext_byte(ExtQuoted)?,
                _ => return Err(ChunkError::Syntax),
            },
            ExtAfterQuoted => match b {
                b'\r' => self.state = SizeLf,
                b';' => self.ext_byte(ExtNameStart)?,
                _ => return Err(ChunkError::Syntax),
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::Syntax);
                }
                // line_len counted the CR; the budget adds the CRLF itself.
                let line_len = (self.line_len - 1) as u64;
                self.charge(line_len + 2, self.size)?;
                self.n_empty = 0;
                self.state = if self.size == 0 { TrailerStart } else { Data };
            }
            Data => unreachable_data(),
            DataCr => {
                self.state = if b == b'\r' {
                    DataLf
                } else {
                    return Err(ChunkError::Syntax);
                }
            }
            DataLf => {
                self.state = if b == b'\n' {
                    SizeStart
                } else {
                    return Err(ChunkError::Syntax);
                }
            }
            TrailerStart => match b {
                b'\r' => self.state = EndLf,
                _ if is_tchar(b) => {
                    self.n_trailers += 1;
                    if self.n_trailers > self.limits.trailer_fields {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    self.trailer_byte(TrailerName)?;
                }
                _ => return Err(ChunkError::Syntax),
            },
            TrailerName => match b {
                b':' => self.trailer_byte(TrailerValue)?,
                _ if is_tchar(b) => self.trailer_byte(TrailerName)?,
                _ => return Err(ChunkError::Syntax),
            },
            TrailerValue => match b {
                b'\r' => self.trailer_byte(TrailerLf)?,
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => self.trailer_byte(TrailerValue)?,
                _ => return Err(ChunkError::Syntax),
            },
            TrailerLf => match b {
                b'\n' => self.trailer_byte(TrailerStart)?,
                _ => return Err(ChunkError::Syntax),
            },
            EndLf => {
                self.state = if b == b'\n' {
                    Done
                } else {
                    return Err(ChunkError::Syntax);
                }
            }
            Done => {}
        }
        Ok(())
    }

    /// An extension byte: checked against L14 as it arrives (B16), never at line end only.
    fn ext_byte(&mut self, next: State) -> Result<(), ChunkError> {
        self.ext_len += 1;
        if self.ext_len > self.limits.chunk_ext {
            return Err(ChunkError::ExtensionTooLong);
        }
        self.state = next;
        Ok(())
    }

    fn trailer_byte(&mut self, next: State) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > self.limits.trailer_bytes {
            return Err(ChunkError::TrailersTooLarge);
        }
        self.state = next;
        Ok(())
    }

    /// Go's rule (CVE-2023-39326): add the line's overhead, subtract 16 + 2·size, saturating.
    fn charge(&mut self, overhead: u64, size: u64) -> Result<(), ChunkError> {
        let credit = size.saturating_mul(2).saturating_add(16);
        self.excess = self.excess.saturating_add(overhead).saturating_sub(credit);
        if self.excess > self.limits.overhead_budget {
            return Err(ChunkError::OverheadBudget);
        }
        Ok(())
    }
}

#[inline]
fn unreachable_data() {
    // `decode` handles the Data state before calling `step`; nothing to do here.
}

/// Appends one chunk holding `data` to `out`: lowercase hex size, CRLF, data, CRLF.
/// Empty data is skipped, since an empty chunk would be the last-chunk.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    encode_size(data.len(), false, out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line for `n` bytes (`upper` for the Arduino's `print(n, HEX)`).
pub fn encode_size(n: usize, upper: bool, out: &mut Vec<u8>) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut buf = [0u8; 18];
    let mut i = 16;
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = digits[v & 0xf];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    out.extend_from_slice(&buf[i..]);
}

/// Appends the last-chunk and an empty trailer section: `0\r\n\r\n`.
pub fn encode_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ) || b.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests;
