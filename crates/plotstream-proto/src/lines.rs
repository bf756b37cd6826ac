//! The NDJSON line framer (docs/reliability.md P4, L18): zero-copy lines out of decoded body data.

use bytes::{Buf, Bytes, BytesMut};

const BOM: &[u8] = b"\xef\xbb\xbf";

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line to parse, without its LF and without one CR before the LF.
    Data(Bytes),
    /// An empty or SP/HTAB-only line: resets the idle timer, changes nothing else.
    Heartbeat,
}

/// A framed line as [`LineFramer::next`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The line is `data[..len]` (without its LF and a CR before it), still in place; the caller
    /// advances `data` by `consumed` once done with it.
    InData {
        /// Content bytes.
        len: usize,
        /// Content, CR and LF.
        consumed: usize,
    },
    /// A line that straddled two slices, copied out (already consumed).
    Copied(Bytes),
    /// An empty or SP/HTAB-only line (already consumed).
    Heartbeat,
}

/// Why framing stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// A line reached L18 bytes without its LF (413).
    TooLong,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("line over the length limit")
    }
}

impl std::error::Error for LineError {}

/// Splits decoded body bytes at LF. Lines inside one data slice are handed out as zero-copy
/// slices of it; only a line that straddles two slices is copied, into `pending`.
#[derive(Debug)]
pub struct LineFramer {
    /// The start of a line whose LF has not arrived. Invariant: holds no LF and stays below
    /// `max_line` bytes; empty (no allocation) between lines.
    pending: BytesMut,
    /// True until the first 3 body bytes have been checked for a UTF-8 BOM.
    at_body_start: bool,
    /// L18: a line's bytes including its LF.
    max_line: usize,
    /// Lines that needed a copy because they straddled slices (for benches and metrics).
    n_copied: u64,
}

impl LineFramer {
    /// A framer at the start of a body, with L18 = `max_line`.
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            pending: BytesMut::new(),
            at_body_start: true,
            max_line,
            n_copied: 0,
        }
    }

    /// Lines that were copied because they straddled two data slices.
    pub fn n_copied(&self) -> u64 {
        self.n_copied
    }

    /// Bytes held for an incomplete line.
    pub fn n_pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next line from `data`, consuming it from the front. `Ok(None)`: `data` is used
    /// up (a partial line may be held back). The limit fires as soon as the L18-th byte of a
    /// line arrives without its LF, whatever the segmentation.
    pub fn decode(&mut self, data: &mut Bytes) -> Result<Option<Line>, LineError> {
        Ok(match self.next(data)? {
            None => None,
            Some(Frame::InData { len, consumed }) => {
                let mut line = data.split_to(consumed);
                line.truncate(len);
                Some(Line::Data(line))
            }
            Some(Frame::Copied(line)) => Some(Line::Data(line)),
            Some(Frame::Heartbeat) => Some(Line::Heartbeat),
        })
    }

    /// The allocation-free form of [`LineFramer::decode`] for the hot path: a line that lies
    /// inside `data` is reported as [`Frame::InData`] and left in place, so the caller can parse
    /// `&data[..len]` without touching a reference count, then `data.advance(consumed)`.
    pub fn next(&mut self, data: &mut Bytes) -> Result<Option<Frame>, LineError> {
        if self.at_body_start && !self.strip_bom(data) {
            return Ok(None);
        }
        if data.is_empty() {
            return Ok(None);
        }
        match memchr::memchr(b'\n', data) {
            Some(i) if self.pending.is_empty() => {
                if i >= self.max_line {
                    return Err(LineError::TooLong);
                }
                let len = if i > 0 && data[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                if is_blank(&data[..len]) {
                    data.advance(i + 1);
                    return Ok(Some(Frame::Heartbeat));
                }
                Ok(Some(Frame::InData {
                    len,
                    consumed: i + 1,
                }))
            }
            Some(i) => {
                if self.pending.len() + i >= self.max_line {
                    return Err(LineError::TooLong);
                }
                self.pending.extend_from_slice(&data[..i]);
                data.advance(i + 1);
                self.n_copied += 1;
                Ok(Some(match classify(self.pending.split().freeze()) {
                    Line::Heartbeat => Frame::Heartbeat,
                    Line::Data(line) => Frame::Copied(line),
                }))
            }
            None => {
                if self.pending.len() + data.len() >= self.max_line {
                    return Err(LineError::TooLong);
                }
                self.pending.extend_from_slice(data);
                data.clear();
                Ok(None)
            }
        }
    }

    /// The body ended cleanly: a non-blank tail without LF is a complete line (P4).
    pub fn finish(&mut self) -> Option<Line> {
        self.at_body_start = false;
        if self.pending.is_empty() {
            return None;
        }
        let tail = self.pending.split().freeze();
        if is_blank(&tail) {
            return None;
        }
        Some(Line::Data(tail))
    }

    /// The body ended uncleanly: the partial tail is dropped (I2).
    pub fn discard(&mut self) {
        self.pending = BytesMut::new();
    }

    /// Holds back the first bytes until a BOM can be told apart; returns false while undecided.
    fn strip_bom(&mut self, data: &mut Bytes) -> bool {
        let seen = self.pending.len() + data.len();
        let mut head = [0u8; 3];
        let n = seen.min(3);
        for (k, slot) in head.iter_mut().enumerate().take(n) {
            *slot = if k < self.pending.len() {
                self.pending[k]
            } else {
                data[k - self.pending.len()]
            };
        }
        if n < 3 && head[..n] == BOM[..n] {
            self.pending.extend_from_slice(data);
            data.clear();
            return false;
        }
        self.at_body_start = false;
        let skip = if head == *BOM { 3 } else { 0 };
        if self.pending.is_empty() {
            let _ = data.split_to(skip);
        } else {
            // At most 2 held bytes: rejoin them with the data (a small, one-time copy).
            let mut joined = BytesMut::with_capacity(seen);
            joined.extend_from_slice(&self.pending);
            joined.extend_from_slice(data);
            self.pending = BytesMut::new();
            let _ = joined.split_to(skip);
            *data = joined.freeze();
        }
        true
    }
}

fn classify(mut line: Bytes) -> Line {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    if is_blank(&line) {
        Line::Heartbeat
    } else {
        Line::Data(line)
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `pieces`, then ends cleanly or not; returns the lines and the error, if any.
    fn run(pieces: &[&[u8]], clean: bool, max: usize) -> (Vec<Line>, Option<LineError>) {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for piece in pieces {
            let mut data = Bytes::copy_from_slice(piece);
            loop {
                match f.decode(&mut data) {
                    Ok(Some(line)) => out.push(line),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        if clean {
            out.extend(f.finish());
        } else {
            f.discard();
        }
        (out, None)
    }

    #[track_caller]
    fn check(input: &[u8], clean: bool, expected: &[&[u8]], err: Option<LineError>) {
        let lines: Vec<Line> = expected
            .iter()
            .map(|l| {
                if l.is_empty() {
                    Line::Heartbeat
                } else {
                    Line::Data(Bytes::copy_from_slice(l))
                }
            })
            .collect();
        let max = 64 * 1024;
        assert_eq!(run(&[input], clean, max), (lines.clone(), err), "whole");
        for k in 1..input.len() {
            assert_eq!(
                run(&[&input[..k], &input[k..]], clean, max),
                (lines.clone(), err),
                "split {k}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, clean, max), (lines, err), "bytewise");
    }

    #[test]
    fn splits_at_lf_and_strips_one_cr() {
        check(
            b"{\"x\":1}\n{\"x\":2}\r\n\n \t\n",
            true,
            &[b"{\"x\":1}", b"{\"x\":2}", b"", b""],
            None,
        );
        check(b"\r\r\n", true, &[b"\r"], None);
    }

    #[test]
    fn clean_end_keeps_the_tail_unclean_drops_it() {
        check(
            b"{\"x\":1}\n{\"x\":2}",
            true,
            &[b"{\"x\":1}", b"{\"x\":2}"],
            None,
        );
        check(b"{\"x\":1}\n{\"x\":2}", false, &[b"{\"x\":1}"], None);
        check(b"{\"x\":1}\n  ", true, &[b"{\"x\":1}"], None);
    }

    #[test]
    fn bom_only_at_body_start() {
        check(b"\xef\xbb\xbf{\"x\":1}\n", true, &[b"{\"x\":1}"], None);
        check(
            b"{\"x\":1}\n\xef\xbb\xbf{\"x\":2}\n",
            true,
            &[b"{\"x\":1}", b"\xef\xbb\xbf{\"x\":2}"],
            None,
        );
        check(b"\xef\xbb{\"x\":1}\n", true, &[b"\xef\xbb{\"x\":1}"], None);
        check(b"\xef\xbb", true, &[b"\xef\xbb"], None);
        check(b"\n", true, &[b""], None);
    }

    #[test]
    fn line_limit_at_boundaries() {
        // L18 counts the LF: 65 535 content bytes + LF fit, 65 536 content bytes do not.
        let max = 64 * 1024;
        let line = |n: usize| [vec![b'a'; n], b"\n".to_vec()].concat();
        assert_eq!(run(&[&line(max - 2)], true, max).1, None);
        assert_eq!(run(&[&line(max - 1)], true, max).1, None);
        assert_eq!(run(&[&line(max)], true, max).1, Some(LineError::TooLong));
        // Fires on the 65 536th byte even without an LF, after earlier lines were handed out.
        let mut input = b"{}\n".to_vec();
        input.extend(vec![b'A'; max]);
        let (lines, err) = run(&[&input], true, max);
        assert_eq!((lines.len(), err), (1, Some(LineError::TooLong)));
        let (lines, err) = run(&[&input[..max + 2], &input[max + 2..]], true, max);
        assert_eq!((lines.len(), err), (1, Some(LineError::TooLong)));
        let (_, err) = run(&[&input[..max + 2]], true, max);
        assert_eq!(err, None);
    }

    #[test]
    fn straddling_lines_are_copied_once() {
        let mut f = LineFramer::new(1024);
        let mut a = Bytes::from_static(b"{\"x\":");
        assert_eq!(f.decode(&mut a), Ok(None));
        let mut b = Bytes::from_static(b"1}\n{\"y\":2}\n");
        assert_eq!(
            f.decode(&mut b),
            Ok(Some(Line::Data(Bytes::from_static(b"{\"x\":1}"))))
        );
        let before = b.as_ptr();
        let Ok(Some(Line::Data(l))) = f.decode(&mut b) else {
            panic!()
        };
        assert_eq!(
            l.as_ptr(),
            before,
            "zero-copy when the line lies in one slice"
        );
        assert_eq!(f.n_copied(), 1);
    }
}
