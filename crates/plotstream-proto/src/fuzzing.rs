//! Property bodies shared by cargo-fuzz targets (one line each, in `fuzz/`) and proptest, so
//! stable `cargo test` exercises the same properties (STYLE.md convention 8, rustls's shape).
//!
//! Each `check_*` takes arbitrary bytes, never panics on them, and panics (failing the fuzzer
//! or the test) only when a property is broken.

use bytes::{Bytes, BytesMut};

use crate::chunked::{self, Chunk, ChunkedDecoder};
use crate::head::{HeadError, HeadParser, IngestHead, RequestHead};
use crate::ingest::{run_to_end, Event, IngestConfig};
use crate::limits::Limits;
use crate::lines::{Line, LineFramer};
use crate::update::parse_update;

/// F5: the head parser gives the same verdict whole, byte by byte, line by line and in two
/// halves, never buffers past L4, and a complete head lies within the input. Checked under the
/// default limits and under small ones taken from the first two bytes, so that L3–L5 are
/// crossed within inputs a fuzzer makes (they stay under 4 KiB; L3 and L4 are 8 and 16 KiB).
pub fn check_head(data: &[u8]) {
    check_head_with(data, &Limits::default());
    let [a, b] = [0, 1].map(|i| data.get(i).copied().unwrap_or(0));
    let small = Limits {
        request_line: usize::from(a % 128),
        head_bytes: usize::from(b) * 2,
        head_fields: usize::from(a / 128 * 4 + b % 4),
        ..Limits::default()
    };
    check_head_with(data, &small);
}

/// F1: the chunked decoder gives the same data and verdict for any read schedule, and its
/// output equals the reference (the whole-input run).
pub fn check_chunked(data: &[u8]) {
    let (schedule, input) = split_schedule(data);
    let whole = decode_chunked(&[input]);
    let pieces = cut(input, &schedule);
    assert_eq!(decode_chunked(&pieces), whole, "schedule {schedule:?}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_chunked(&bytes), whole, "bytewise");
}

/// F3: lines equal a split of the concatenation on LF; L18 fires at the same byte for every
/// schedule; an unclean tail is never emitted, a clean one exactly once.
pub fn check_lines(data: &[u8]) {
    let (schedule, input) = split_schedule(data);
    let max = 64 + usize::from(schedule.first().copied().unwrap_or(0) % 64);
    for clean in [true, false] {
        let whole = frame(&[input], clean, max);
        assert_eq!(frame(&cut(input, &schedule), clean, max), whole);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frame(&bytes, clean, max), whole);
        if whole.1.is_none() {
            assert_eq!(whole.0, reference_lines(input, clean));
        }
    }
}

/// F4: one line is accepted or rejected, never panics, and an accepted line re-parses the same.
pub fn check_update(data: &[u8]) {
    let line = Bytes::copy_from_slice(data);
    let limits = Limits::default();
    if let Ok(update) = parse_update(&line, &limits) {
        assert_eq!(parse_update(&line, &limits), Ok(update));
        assert!(crate::json::parse(&line, &limits).is_ok());
    }
}

/// F6: the whole ingest pipeline gives identical events and response bytes for any read
/// schedule, at most one final response, always with `Connection: close`. The first byte's
/// high bits choose the configuration: `0x80` small limits (every limit crossed within a few
/// hundred bytes), `0x20` `--lenient-lines`; its low three bits count the split points.
pub fn check_ingest(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let config = || IngestConfig {
        limits: if flags & 0x80 != 0 {
            small_limits()
        } else {
            Limits::default()
        },
        lenient_lines: flags & 0x20 != 0,
    };
    let (schedule, input) = split_schedule(data);
    let whole = run_to_end(config(), &[input], true);
    assert_eq!(run_to_end(config(), &cut(input, &schedule), true), whole);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_to_end(config(), &bytes, true), whole);
    let n_end = whole
        .0
        .iter()
        .filter(|e| matches!(e, Event::End(_)))
        .count();
    let handed_off = whole.0.iter().any(|e| matches!(e, Event::Request(_)));
    assert!(n_end == 1 || (n_end == 0 && handed_off), "{n_end} ends");
    let response = String::from_utf8_lossy(&whole.1);
    assert!(response.is_empty() || response.matches("Connection: close\r\n").count() == 1);
}

/// F2: payload → chunks of arbitrary sizes (with leading zeros, mixed-case hex, extensions and
/// up to 2 empty lines) → decoded at arbitrary splits gives the payload back.
pub fn check_chunk_roundtrip(data: &[u8]) {
    let (schedule, payload) = split_schedule(data);
    let mut wire = Vec::new();
    let mut rest = payload;
    let mut k = 0usize;
    while !rest.is_empty() {
        let pick = schedule
            .get(k % schedule.len().max(1))
            .copied()
            .unwrap_or(7);
        let n = (usize::from(pick) % 64 + 1).min(rest.len());
        match pick % 4 {
            0 => chunked::encode_chunk(&rest[..n], &mut wire),
            1 => {
                wire.extend_from_slice(format!("00{n:X};ext=\"v\"\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
            }
            2 => {
                wire.extend_from_slice(b"\r\n");
                chunked::encode_chunk(&rest[..n], &mut wire);
            }
            _ => {
                chunked::encode_size(n, true, &mut wire);
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
            }
        }
        rest = &rest[n..];
        k += 1;
    }
    chunked::encode_end(&mut wire);
    let pieces = cut(&wire, &schedule);
    let (out, verdict) = decode_chunked(&pieces);
    assert_eq!(verdict, Ok(true));
    assert_eq!(out, payload);
}

fn check_head_with(data: &[u8], limits: &Limits) {
    let whole = feed_head(data, [data.len()], limits);
    assert_eq!(feed_head(data, 1..=data.len(), limits), whole, "bytewise");
    let line_ends = data.iter().enumerate().filter(|(_, b)| **b == b'\n');
    let by_line = line_ends.map(|(i, _)| i + 1).chain([data.len()]);
    assert_eq!(feed_head(data, by_line, limits), whole, "line by line");
    let halves = [data.len() / 2, data.len()];
    assert_eq!(feed_head(data, halves, limits), whole, "halves");
    match whole {
        Ok(Some(head)) => {
            assert!(head.len <= data.len() && head.len <= limits.head_bytes);
            let _ = IngestHead::from_head(&head, limits);
        }
        Ok(None) => assert!(data.len() <= limits.head_bytes),
        Err(_) => {}
    }
}

/// Feeds `data` to a fresh head parser as it arrives up to each of `ends`, until a verdict.
fn feed_head(
    data: &[u8],
    ends: impl IntoIterator<Item = usize>,
    limits: &Limits,
) -> Result<Option<RequestHead>, HeadError> {
    let mut p = HeadParser::new();
    for end in ends {
        let verdict = p.parse(&data[..end], limits);
        if verdict != Ok(None) {
            return verdict;
        }
    }
    Ok(None)
}

/// Limits small enough that inputs of a few hundred bytes cross each of them.
fn small_limits() -> Limits {
    Limits {
        request_line: 48,
        head_bytes: 192,
        head_fields: 5,
        content_length: 64,
        size_digits: 4,
        chunk_ext: 8,
        overhead_budget: 128,
        trailer_bytes: 32,
        trailer_fields: 2,
        line_bytes: 48,
        json_depth: 3,
        json_string: 8,
        json_members: 4,
        json_array: 4,
        ..Limits::default()
    }
}

/// The first byte gives the number of split points, the next ones their positions.
fn split_schedule(data: &[u8]) -> (Vec<u8>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 8).min(rest.len());
    (rest[..n].to_vec(), &rest[n..])
}

/// `input` cut at the positions `schedule`'s bytes pick (also the writer's response tests').
pub(crate) fn cut<'a>(input: &'a [u8], schedule: &[u8]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = schedule
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if input.is_empty() {
                0
            } else {
                (usize::from(*b) * 31 + i * 977) % input.len()
            }
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&input[start..p]);
        start = p;
    }
    pieces.push(&input[start..]);
    pieces
}

type ChunkOutcome = (Vec<u8>, Result<bool, chunked::ChunkError>);

fn decode_chunked(pieces: &[&[u8]]) -> ChunkOutcome {
    let limits = Limits::default();
    let mut dec = ChunkedDecoder::new(&limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => out.extend_from_slice(&d),
                Ok(Some(Chunk::End)) => return (out, Ok(true)),
                Ok(None) => break,
                Err(e) => return (out, Err(e)),
            }
            // F1: framing state is never buffered; only undelivered input stays.
            assert!(buf.len() <= piece.len());
        }
    }
    (out, Ok(false))
}

type FrameOutcome = (Vec<Line>, Option<crate::lines::LineError>);

fn frame(pieces: &[&[u8]], clean: bool, max: usize) -> FrameOutcome {
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
            assert!(f.n_pending() < max);
        }
    }
    if clean {
        out.extend(f.finish());
    }
    (out, None)
}

fn reference_lines(input: &[u8], clean: bool) -> Vec<Line> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let mut parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut lines: Vec<Line> = parts
        .into_iter()
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l.iter().all(|b| matches!(b, b' ' | b'\t')) {
                Line::Heartbeat
            } else {
                Line::Data(Bytes::copy_from_slice(l))
            }
        })
        .collect();
    if clean && !tail.iter().all(|b| matches!(b, b' ' | b'\t')) {
        lines.push(Line::Data(Bytes::copy_from_slice(tail)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn head(data in proptest::collection::vec(any::<u8>(), 0..200)) { check_head(&data) }

        #[test]
        fn head_like(tail in "[ -~\r\n\t:]{0,120}") {
            check_head(format!("\x03POST / HTTP/1.1\r\n{tail}").as_bytes())
        }

        #[test]
        fn chunked(data in proptest::collection::vec(any::<u8>(), 0..200)) { check_chunked(&data) }

        #[test]
        fn chunked_like(body in "[0-9a-fA-F;=\"\r\n x]{0,120}") {
            check_chunked(format!("\x03ab{body}").as_bytes())
        }

        #[test]
        fn lines(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), any::<u8>()], 0..300)) {
            check_lines(&data)
        }

        #[test]
        fn update(line in "[{}\\[\\]\":,0-9a-z. \\-]{0,80}") { check_update(line.as_bytes()) }

        #[test]
        fn ingest_small_or_lenient(
            flags in prop_oneof![Just(0x80u8), Just(0x20), Just(0xa0)],
            n_splits in 0u8..8,
            body in "([0-9a-f]{1,2}\r\n)?[{}\":,0-9xy\n\r]{0,60}(\r\n0\r\n\r\n)?",
        ) {
            let mut input = vec![flags | n_splits];
            input.extend((0..n_splits).map(|i| i.wrapping_mul(37)));
            input.extend_from_slice(b"POST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n");
            input.extend_from_slice(body.as_bytes());
            check_ingest(&input)
        }

        #[test]
        fn ingest(body in "([0-9a-f]{1,2}\r\n)?[{}\":,0-9xy\n\r]{0,60}(\r\n0\r\n\r\n)?") {
            let input = format!("\x04abcdPOST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            check_ingest(input.as_bytes())
        }

        #[test]
        fn chunk_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..400)) { check_chunk_roundtrip(&data) }
    }

    /// Found by `cargo fuzz run head` (issue #16), minimized: a malformed request line, then
    /// the 33rd field; whole it was 431 TooManyFields, byte by byte 400 Syntax.
    #[test]
    fn fuzz_head_syntax_before_too_many_fields() {
        check_head(&b"a\n".repeat(34));
    }

    /// Found by `cargo fuzz run ingest` (issue #16), minimized: the same head through the whole
    /// pipeline (no split points), 400 `Head(Syntax)` byte by byte, 431 `Head(TooManyFields)`
    /// whole.
    #[test]
    fn fuzz_ingest_syntax_before_too_many_fields() {
        check_ingest(&[&b"\x00"[..], &b"a\n".repeat(34)].concat());
    }
}
