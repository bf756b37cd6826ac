//! Parsing chart_studio's request head (docs/protocol.md §2.9).
//!
//! - `ours`: `HeadParser::parse` into an owned `RequestHead`, then `IngestHead::from_head`
//!   (framing, encoding and token checks).
//! - `baseline`: `httparse::Request::parse` alone (borrowed, no checks).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plotstream_proto::head::{HeadParser, IngestHead};
use plotstream_proto::Limits;

const CHART_STUDIO_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: stream.example.org:9999\r\n\
    Accept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nHost: stream.example.org\r\n\
    plotly-streamtoken: abcdef1234\r\n\r\n";

fn head(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("head");
    group.throughput(Throughput::Elements(1));

    group.bench_function("ours", |b| {
        b.iter(|| {
            let mut parser = HeadParser::new();
            let head = parser
                .parse(black_box(CHART_STUDIO_HEAD), &limits)
                .expect("valid head")
                .expect("complete");
            black_box(IngestHead::from_head(&head, &limits).expect("ingest head"))
        });
    });

    group.bench_function("baseline", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(CHART_STUDIO_HEAD)).expect("valid head");
            black_box((status, req.headers.len()));
        });
    });
    group.finish();
}

criterion_group!(benches, head);
criterion_main!(benches);
