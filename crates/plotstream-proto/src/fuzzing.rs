//! Property bodies shared by cargo-fuzz targets (one line each, in `fuzz/`) and proptest, so
//! stable `cargo test` exercises the same properties (STYLE.md convention 8, rustls's shape).
//!
//! Each `check_*` takes arbitrary bytes, never panics on them, and panics (failing the fuzzer
//! or the test) only when a property is broken.

use bytes::{Bytes, BytesMut};

use crate::chunked::{self, Chunk, ChunkedDecoder};
use crate::head::{HeadParser, IngestHead};
use crate::ingest::{run_to_end, Event, IngestConfig};
use crate::limits::Limits;
use crate::lines::{Line, LineFramer};
use crate::update::parse_update;

/// F5: the head parser gives the same verdict whole and byte by byte, never buffers past L4,
/// and a complete head lies within the input.
pub fn check_head(data: &[u8]) {
    let limits = Limits::default();
    let whole = HeadParser::new().parse(data, &limits);
    let mut p = HeadParser::new();
    let mut bytewise = Ok(None);
    for n in 1..=data.len() {
        bytewise = p.parse(&data[..n], &limits);
        if !matches!(bytewise, Ok(None)) {
            break;
        }
    }
    match (&whole, &bytewise) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a, b);
            assert!(a.len <= data.len() && a.len <= limits.head_bytes);
            let _ = IngestHead::from_head(a, &limits);
        }
        // The whole-input parse sees later bytes at once; an error may show earlier bytewise
        // only if it is the same error.
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(None), Ok(None)) => assert!(data.len() <= limits.head_bytes),
        (a, b) => panic!("whole {a:?} != bytewise {b:?}"),
    }
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
/// schedule, at most one final response, always with `Connection: close`.
pub fn check_ingest(data: &[u8]) {
    let (schedule, input) = split_schedule(data);
    let whole = run_to_end(IngestConfig::default(), &[input], true);
    assert_eq!(
        run_to_end(IngestConfig::default(), &cut(input, &schedule), true),
        whole
    );
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_to_end(IngestConfig::default(), &bytes, true), whole);
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

/// The first byte gives the number of split points, the next ones their positions.
fn split_schedule(data: &[u8]) -> (Vec<u8>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 8).min(rest.len());
    (rest[..n].to_vec(), &rest[n..])
}

fn cut<'a>(input: &'a [u8], schedule: &[u8]) -> Vec<&'a [u8]> {
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
        fn ingest(body in "([0-9a-f]{1,2}\r\n)?[{}\":,0-9xy\n\r]{0,60}(\r\n0\r\n\r\n)?") {
            let input = format!("\x04abcdPOST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            check_ingest(input.as_bytes())
        }

        #[test]
        fn chunk_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..400)) { check_chunk_roundtrip(&data) }
    }
}
