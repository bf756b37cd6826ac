//! Decoding a 64 MiB chunked NDJSON body of points (docs/performance.md, Targets, second row).
//!
//! The request is a Raw head, then lines like `{"x":1700000000123,"y":0.12345678901234567}` in
//! 4 KiB chunks (lines straddle chunk boundaries as they naturally do), then the last-chunk. It
//! arrives in 64 KiB reads, each copied into a fresh buffer as a socket read would be.
//!
//! - `ours`: the `Ingest` state machine driven directly (`handle_input`, `poll_event`, `admit`),
//!   counting `Event::Update`s; every update is fully parsed (zero-copy, exact `f64`).
//! - `baseline`: `httparse::parse_chunk_size` to find each chunk, `split` at `\n` with a carry
//!   `Vec` for straddling lines, `serde_json::from_slice::<serde_json::Value>` per line.
//! - `framing`: `ChunkedDecoder` + `LineFramer` alone over the body, no JSON (bytes/s), driven as
//!   `Ingest` drives them: `LineFramer::next` hands out each line in place (no `Bytes` per line).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use plotstream_benches::unit_points;
use plotstream_proto::chunked::{encode_chunk, encode_end, Chunk, ChunkedDecoder};
use plotstream_proto::encode::{encode_head, encode_point_line, Flavour, Num};
use plotstream_proto::lines::{Frame, LineFramer};
use plotstream_proto::{Event, Ingest, IngestConfig, Limits, Status, Token};

const BODY_BYTES: usize = 64 * 1024 * 1024;
const CHUNK_BYTES: usize = 4 * 1024;
const READ_BYTES: usize = 64 * 1024;

struct Input {
    request: Vec<u8>,
    head_len: usize,
    n_points: u64,
}

fn input(body_bytes: usize) -> Input {
    let mut data = Vec::with_capacity(body_bytes + 64);
    let mut n_points = 0;
    let mut i = 0;
    let points = unit_points(1 << 16);
    while data.len() < body_bytes {
        let (x, y) = points[i % points.len()];
        encode_point_line(
            Flavour::Raw,
            Num::Int(x + i as i64),
            Num::Float(y),
            None,
            &mut data,
        );
        n_points += 1;
        i += 1;
    }
    let mut request = Vec::with_capacity(data.len() + data.len() / 100 + 256);
    let token = Token::parse(b"abcdef1234");
    encode_head(
        Flavour::Raw,
        "127.0.0.1:9999",
        token.as_ref(),
        None,
        &mut request,
    );
    let head_len = request.len();
    for chunk in data.chunks(CHUNK_BYTES) {
        encode_chunk(chunk, &mut request);
    }
    encode_end(&mut request);
    Input {
        request,
        head_len,
        n_points,
    }
}

/// Drives one `Ingest` over `request` in 64 KiB reads; returns the updates and the final status.
fn ours(request: &[u8]) -> (u64, Option<Status>) {
    let now = Duration::ZERO;
    let mut ingest = Ingest::new(IngestConfig::default(), now);
    let mut n_updates = 0;
    let mut status = None;
    for piece in request.chunks(READ_BYTES) {
        let mut buf = BytesMut::with_capacity(READ_BYTES);
        buf.extend_from_slice(piece);
        ingest.handle_input(now, &mut buf);
        while let Some(event) = ingest.poll_event(now) {
            match event {
                Event::Head(_) => ingest.admit(now, SystemTime::UNIX_EPOCH),
                // As the server does: the update is read in place.
                Event::Update { .. } => {
                    black_box(ingest.update());
                    n_updates += 1;
                }
                Event::End(end) => status = end.status,
                _ => {}
            }
        }
    }
    (n_updates, status)
}

/// The straightforward decoder: pending input, `httparse::parse_chunk_size`, `split`, serde_json.
fn baseline(request: &[u8]) -> u64 {
    let mut pending: Vec<u8> = Vec::with_capacity(2 * READ_BYTES);
    let mut carry: Vec<u8> = Vec::new();
    let mut n_lines = 0;
    let mut in_body = false;
    let mut done = false;
    for piece in request.chunks(READ_BYTES) {
        pending.extend_from_slice(piece);
        let mut pos = 0;
        if !in_body {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&pending) {
                Ok(httparse::Status::Complete(n)) => {
                    pos = n;
                    in_body = true;
                }
                Ok(httparse::Status::Partial) => continue,
                Err(e) => panic!("head: {e}"),
            }
        }
        while !done {
            let (idx, size) = match httparse::parse_chunk_size(&pending[pos..]) {
                Ok(httparse::Status::Complete((idx, size))) => (idx, size as usize),
                Ok(httparse::Status::Partial) => break,
                Err(e) => panic!("chunk size: {e:?}"),
            };
            let end = pos + idx + size + 2;
            if end > pending.len() {
                break;
            }
            if size == 0 {
                done = true;
                break;
            }
            let data = &pending[pos + idx..pos + idx + size];
            let mut segments = data.split(|b| *b == b'\n').peekable();
            while let Some(segment) = segments.next() {
                if segments.peek().is_none() {
                    // No LF after it: the start of a line that continues in the next chunk.
                    carry.extend_from_slice(segment);
                    break;
                }
                let line = if carry.is_empty() {
                    segment
                } else {
                    carry.extend_from_slice(segment);
                    &carry[..]
                };
                if !line.is_empty() {
                    let value: serde_json::Value =
                        serde_json::from_slice(line).expect("valid line");
                    black_box(&value);
                    n_lines += 1;
                }
                carry.clear();
            }
            pos = end;
        }
        pending.drain(..pos);
    }
    n_lines
}

/// Chunked decoding and line framing alone; returns the number of lines.
fn framing(body: &[u8]) -> u64 {
    let limits = Limits::default();
    let mut decoder = ChunkedDecoder::new(&limits);
    let mut framer = LineFramer::new(limits.line_bytes);
    let mut buf = BytesMut::new();
    let mut n_lines = 0;
    for piece in body.chunks(READ_BYTES) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf).expect("valid framing") {
                // As `Ingest` frames: each line in place (`next`), then `advance`; a line that
                // straddles two chunks comes out copied.
                Some(Chunk::Data(mut data)) => loop {
                    match framer.next(&mut data).expect("short lines") {
                        Some(Frame::InData { len, consumed }) => {
                            black_box(&data[..len]);
                            data.advance(consumed);
                        }
                        Some(Frame::Copied(line)) => {
                            black_box(&line);
                        }
                        Some(Frame::Heartbeat) => {}
                        None => break,
                    }
                    n_lines += 1;
                },
                Some(Chunk::End) => return n_lines,
                None => break,
            }
        }
    }
    n_lines
}

fn decode(c: &mut Criterion) {
    let input = input(BODY_BYTES);
    let body = &input.request[input.head_len..];
    // Check the three paths agree before timing them.
    assert_eq!(ours(&input.request), (input.n_points, Some(Status::OK)));
    assert_eq!(baseline(&input.request), input.n_points);
    assert_eq!(framing(body), input.n_points);

    let mut group = c.benchmark_group("decode");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(input.n_points));
    group.bench_function("ours", |b| b.iter(|| ours(black_box(&input.request))));
    group.bench_function("baseline", |b| {
        b.iter(|| baseline(black_box(&input.request)))
    });
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("framing", |b| b.iter(|| framing(black_box(body))));
    group.finish();
}

criterion_group!(benches, decode);

/// `DECODE_ONCE=ours|baseline|framing|input` runs that path once over a 4 MiB body instead of timing
/// it, for instruction counts: `valgrind --tool=callgrind target/release/deps/decode-* --bench`.
fn main() {
    if let Ok(which) = std::env::var("DECODE_ONCE") {
        let input = input(4 * 1024 * 1024);
        let n = match which.as_str() {
            "ours" => ours(&input.request).0,
            "baseline" => baseline(&input.request),
            "framing" => framing(&input.request[input.head_len..]),
            // Building the input alone, to subtract from the others.
            "input" => input.n_points,
            other => panic!("DECODE_ONCE={other}: ours, baseline, framing or input"),
        };
        assert_eq!(n, input.n_points);
        println!("{which}: {n} lines");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
