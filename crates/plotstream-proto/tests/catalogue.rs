//! docs/reliability.md §5 groups A–C and Q, as far as the protocol layer decides them, run through
//! the `Ingest` state machine whole, split at every offset and one byte per write (§7).
//!
//! The driver here is permissive: every head is admitted and every line accepted, which is
//! what the default setup (open tokens, strict lines, takeover, no other writer) amounts to
//! for a single connection. Cases that need server state (registered tokens, takeover,
//! timers on real sockets) are the server's tests.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::SystemTime;

use plotstream_proto::ingest::run_to_end;
use plotstream_proto::{Event, IngestConfig, Limits, Value};

const H: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";
const HN: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
const P1: &str = "{\"x\":1,\"y\":1}\n";
const P2: &str = "{\"x\":2,\"y\":2}\n";
const END: &str = "0\r\n\r\n";

/// `c(s)`: one chunk holding `s`.
fn c(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

fn h_with(field: &str) -> String {
    H.replace("\r\n\r\n", &format!("\r\n{field}\r\n\r\n"))
}

fn hcl(n: usize) -> String {
    format!("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nContent-Length: {n}\r\n\r\n")
}

/// What a case observes: the status (None = silent), lines accepted per token, lenient rejects,
/// and the accepted updates' data in order.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    status: Option<u16>,
    acc: BTreeMap<String, usize>,
    rejected: u64,
    data: Vec<(String, Vec<(String, Value)>)>,
}

fn observe(config: &IngestConfig, pieces: &[&[u8]]) -> Outcome {
    let (events, response) = run_to_end(config.clone(), pieces, true);
    let mut out = Outcome {
        status: None,
        acc: BTreeMap::new(),
        rejected: 0,
        data: Vec::new(),
    };
    for ev in events {
        match ev {
            Event::Update { token, update } => {
                *out.acc.entry(token.as_str().to_owned()).or_default() += 1;
                let data = update
                    .data
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect();
                out.data.push((token.as_str().to_owned(), data));
            }
            Event::End(end) => {
                out.status = end.status.map(|s| s.code());
                out.rejected = end.n_rejected;
            }
            _ => {}
        }
    }
    if let Some(status) = out.status {
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "response {text:?}"
        );
        assert!(text.contains("Connection: close\r\n"));
    } else {
        assert!(response.is_empty());
    }
    out
}

/// Runs `input` in modes W, O and B (§7) and checks each against the expected status and
/// per-token acceptance counts.
#[track_caller]
fn check_with(
    config: &IngestConfig,
    input: &[u8],
    status: Option<u16>,
    acc: &[(&str, usize)],
) -> Outcome {
    let whole = observe(config, &[input]);
    let expected: BTreeMap<String, usize> = acc
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| ((*t).to_owned(), *n))
        .collect();
    assert_eq!(
        (whole.status, &whole.acc),
        (status, &expected),
        "whole input {:?}",
        String::from_utf8_lossy(&input[..input.len().min(300)])
    );
    for k in split_points(input) {
        let split = observe(config, &[&input[..k], &input[k..]]);
        assert_eq!(
            split,
            whole,
            "split at {k}: {:?}",
            String::from_utf8_lossy(&input[..input.len().min(300)])
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        observe(config, &bytes),
        whole,
        "bytewise: {:?}",
        String::from_utf8_lossy(&input[..input.len().min(300)])
    );
    whole
}

#[track_caller]
fn check(input: impl AsRef<[u8]>, status: Option<u16>, acc_tok1: usize) -> Outcome {
    check_with(
        &IngestConfig::default(),
        input.as_ref(),
        status,
        &[("tok1", acc_tok1)],
    )
}

/// Every offset for small inputs; for large ones the interesting positions of §7 (around CR,
/// LF, `;`, quotes and the ends) plus an even spread.
fn split_points(input: &[u8]) -> Vec<usize> {
    if input.len() <= 4096 {
        return (1..input.len()).collect();
    }
    let mut points: Vec<usize> = (1..input.len()).step_by(input.len() / 64).collect();
    for (i, b) in input.iter().enumerate() {
        if matches!(b, b'\r' | b'\n' | b';' | b'"') && (i < 512 || i + 512 > input.len()) {
            points.extend(i.saturating_sub(2)..(i + 3).min(input.len()));
        }
    }
    points.retain(|&k| k > 0 && k < input.len());
    points.sort_unstable();
    points.dedup();
    points
}

fn lenient() -> IngestConfig {
    IngestConfig {
        lenient_lines: true,
        ..IngestConfig::default()
    }
}

// ---- group A: request head ---------------------------------------------------------------

#[test]
fn a2_other_methods_on_root_are_405() {
    for m in ["PUT", "DELETE", "OPTIONS", "post"] {
        check(
            format!("{}{}{END}", H.replacen("POST", m, 1), c(P1)),
            Some(405),
            0,
        );
    }
}

#[test]
fn a3_no_token_anywhere_is_406_at_the_first_data_line() {
    check(format!("{HN}{}{END}", c(P1)), Some(406), 0);
    // Heartbeats alone do not trigger it.
    check(format!("{HN}{}{END}", c("\n")), Some(200), 0);
}

#[test]
fn a5_ambiguous_token_headers_are_400() {
    check(
        format!("{}{}{END}", h_with("plotly-streamtoken: tok2"), c(P1)),
        Some(400),
        0,
    );
    check(
        format!("{}{}{END}", h_with("plotly-streamtoken: tok1"), c(P1)),
        Some(400),
        0,
    );
    check(
        format!("{}{}{END}", H.replace("tok1", "tok1, tok2"), c(P1)),
        Some(400),
        0,
    );
}

#[test]
fn a6_malformed_tokens_are_400() {
    for bad in [
        "../../etc/passwd",
        "tok1\u{ff}",
        "tok 1",
        "",
        &"A".repeat(65),
    ] {
        check(
            format!("{}{}{END}", H.replace("tok1", bad), c(P1)),
            Some(400),
            0,
        );
    }
    let control = "A".repeat(64);
    check_with(
        &IngestConfig::default(),
        format!("{}{}{END}", H.replace("tok1", &control), c(P1)).as_bytes(),
        Some(200),
        &[(control.as_str(), 1)],
    );
}

#[test]
fn a8_te_with_content_length_is_400() {
    check(
        format!("{}{}{END}", h_with("Content-Length: 14"), c(P1)),
        Some(400),
        0,
    );
    let cl_first = H.replace(
        "Transfer-Encoding",
        "Content-Length: 14\r\nTransfer-Encoding",
    );
    check(format!("{cl_first}{}{END}", c(P1)), Some(400), 0);
}

#[test]
fn a9_a10_transfer_coding_table() {
    check(
        format!("{}{}{END}", h_with("Transfer-Encoding: chunked"), c(P1)),
        Some(400),
        0,
    );
    for (te, status) in [
        ("chunked, chunked", 400),
        ("gzip, chunked", 501),
        ("chunked, gzip", 400),
        ("identity", 501),
        ("xchunked", 501),
        ("chunkedchunked", 501),
        ("chunked;x=1", 400),
        ("", 400),
        (",", 400),
    ] {
        check(
            format!(
                "{}{}{END}",
                H.replace(": chunked", &format!(": {te}")),
                c(P1)
            ),
            Some(status),
            0,
        );
    }
}

#[test]
fn a11_te_obfuscations() {
    check(
        format!(
            "{}{}{END}",
            H.replace("Transfer-Encoding: chunked", "Transfer-Encoding :chunked"),
            c(P1)
        ),
        Some(400),
        0,
    );
    check(
        format!(
            "{}{}{END}",
            H.replace(
                "Transfer-Encoding: chunked",
                "Transfer-Encoding:\x0bchunked"
            ),
            c(P1)
        ),
        Some(400),
        0,
    );
    let nbsp = [
        H.split("Transfer-Encoding").next().unwrap().as_bytes(),
        b"Transfer-Encoding: \xa0chunked\r\n\r\n",
        c(P1).as_bytes(),
        END.as_bytes(),
    ]
    .concat();
    check(nbsp, Some(501), 0);
    check(
        format!(
            "{}{}{END}",
            H.replace(
                "Transfer-Encoding: chunked",
                "Transfer-Encoding:\r\n chunked"
            ),
            c(P1)
        ),
        Some(400),
        0,
    );
}

#[test]
fn a12_te_spellings_that_mean_chunked() {
    for te in [
        "Chunked",
        "CHUNKED",
        "chunked \t",
        ",chunked",
        "chunked,",
        " , chunked , ",
    ] {
        check(
            format!(
                "{}{}{END}",
                H.replace(": chunked", &format!(": {te}")),
                c(P1)
            ),
            Some(200),
            1,
        );
    }
    check(
        format!(
            "{}{}{END}",
            H.replace("Transfer-Encoding", "TRANSFER-ENCODING"),
            c(P1)
        ),
        Some(200),
        1,
    );
}

#[test]
fn a13_http10_with_te_is_400() {
    let h = "POST / HTTP/1.0\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";
    check(format!("{h}{}{END}", c(P1)), Some(400), 0);
}

#[test]
fn a14_any_host_or_none() {
    let variants = [
        H.replace("Host: 127.0.0.1\r\n", ""),
        H.replace(
            "Host: 127.0.0.1\r\n",
            "Host: 127.0.0.1:40541\r\nHost: 127.0.0.1\r\n",
        ),
        H.replace("Host: 127.0.0.1", "Host: a b"),
        H.replace("Host: 127.0.0.1", "Host: arduino.plot.ly"),
    ];
    for h in variants {
        check(format!("{h}{}{END}", c(P1)), Some(200), 1);
    }
}

#[test]
fn a15_malformed_fields_are_400() {
    for field in ["X-A : v", "X-A: a\rb", "X-A: a\x00b", ": v", "X-A: a\r\n b"] {
        check(format!("{}{}{END}", h_with(field), c(P1)), Some(400), 0);
    }
    check(format!("POST / HTTP/1.1\r\n\tX-A: v\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n{}{END}", c(P1)), Some(400), 0);
}

#[test]
fn a16_bare_lf_heads_and_leading_empty_lines() {
    let lf = "POST / HTTP/1.1\nHost: 127.0.0.1\nplotly-streamtoken: tok1\nTransfer-Encoding: chunked\n\n";
    let mixed = "POST / HTTP/1.1\r\nHost: 127.0.0.1\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\n\r\n";
    for h in [
        lf.to_owned(),
        format!("\r\n\r\n{H}"),
        format!("\n{H}"),
        mixed.to_owned(),
    ] {
        check(format!("{h}{}{END}", c(P1)), Some(200), 1);
    }
    // The head's leniency does not leak into the chunked coding (B9).
    check(format!("{lf}e\n{P1}\r\n{END}"), Some(400), 0);
}

#[test]
fn a17_head_limits_at_boundaries() {
    let long_line = |n: usize| {
        format!(
            "POST /{} HTTP/1.1\r\n",
            "a".repeat(n - "POST / HTTP/1.1".len())
        )
    };
    check(
        format!(
            "{}Transfer-Encoding: chunked\r\nplotly-streamtoken: tok1\r\n\r\n{}",
            long_line(8193),
            c(P1)
        ),
        Some(414),
        0,
    );
    // 8 192 is fine as a line, but only `/` ingests: a long path goes to the router.
    let (events, _) = run_to_end(
        IngestConfig::default(),
        &[format!("{}\r\n", long_line(8192)).as_bytes()],
        true,
    );
    assert!(matches!(events[0], Event::Request(_)));

    let head_of = |total: usize| {
        let base = H.len() + "X: \r\n".len();
        h_with(&format!("X: {}", "v".repeat(total - base)))
    };
    check(
        format!("{}{}{END}", head_of(16 * 1024), c(P1)),
        Some(200),
        1,
    );
    check(
        format!("{}{}{END}", head_of(16 * 1024 + 1), c(P1)),
        Some(431),
        0,
    );
    let fields = |n: usize| h_with("X: v\r\n".repeat(n - 3).trim_end());
    check(format!("{}{}{END}", fields(32), c(P1)), Some(200), 1);
    check(format!("{}{}{END}", fields(33), c(P1)), Some(431), 0);
}

#[test]
fn a18_bad_request_lines_are_400_without_waiting() {
    for line in [
        "POST / http/1.1",
        "POST / HTTP/1.10",
        "POST  / HTTP/1.1",
        "POST / HTTP/2.0",
    ] {
        check(
            format!("{}{}{END}", H.replacen("POST / HTTP/1.1", line, 1), c(P1)),
            Some(400),
            0,
        );
    }
    check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(400), 0);
    // A TLS hello is refused as soon as its first bytes arrive, without EOF.
    let (events, _) = run_to_end(
        IngestConfig::default(),
        &[b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
        false,
    );
    assert!(matches!(&events[..], [Event::End(e)] if e.status.map(|s| s.code()) == Some(400)));
}

#[test]
fn a19_expect() {
    let (events, out) = run_to_end(
        IngestConfig::default(),
        &[
            h_with("Expect: 100-continue").as_bytes(),
            format!("{}{END}", c(P1)).as_bytes(),
        ],
        true,
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Update { .. }))
            .count(),
        1
    );
    check(
        format!("{}{}{END}", h_with("Expect: foo"), c(P1)),
        Some(417),
        0,
    );
}

#[test]
fn a20_bad_content_lengths_are_400() {
    for v in [
        "+14",
        "-1",
        "0x0e",
        "1_4",
        "",
        "14, 15",
        "14, 14",
        "99999999999999999999999",
    ] {
        check(
            format!(
                "{}{P1}",
                hcl(0).replace("Content-Length: 0", &format!("Content-Length: {v}"))
            ),
            Some(400),
            0,
        );
    }
    for (a, b) in [(14, 15), (14, 14)] {
        let h = hcl(a).replace("\r\n\r\n", &format!("\r\nContent-Length: {b}\r\n\r\n"));
        check(format!("{h}{P1}"), Some(400), 0);
    }
}

#[test]
fn a21_content_encoding_is_415_upgrade_is_ignored() {
    check(
        format!("{}{}{END}", h_with("Content-Encoding: gzip"), c(P1)),
        Some(415),
        0,
    );
    check(
        format!(
            "{}{}{END}",
            h_with("Connection: Upgrade\r\nUpgrade: h2c"),
            c(P1)
        ),
        Some(200),
        1,
    );
    check(
        format!(
            "{}{}{END}",
            h_with("Connection: Upgrade\r\nUpgrade: websocket"),
            c(P1)
        ),
        Some(200),
        1,
    );
}

#[test]
fn a22_targets() {
    check(
        format!(
            "{}{}{END}",
            H.replacen("POST /", "POST http://127.0.0.1/", 1),
            c(P1)
        ),
        Some(200),
        1,
    );
    check(
        format!("{}{}{END}", H.replacen("POST /", "POST *", 1), c(P1)),
        Some(400),
        0,
    );
    let (events, _) = run_to_end(
        IngestConfig::default(),
        &[H.replacen("POST /", "POST /foo", 1).as_bytes()],
        true,
    );
    assert!(matches!(&events[..], [Event::Request(h)] if h.path() == "/foo"));
}

#[test]
fn a23_no_framing_is_411() {
    check(
        format!("POST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\n\r\n{P1}"),
        Some(411),
        0,
    );
}

#[test]
fn a24_content_length_bodies() {
    check(format!("{}{P1}{P2}", hcl(28)), Some(200), 2);
    check(format!("{}{P1}", hcl(8 * 1024 * 1024 + 1)), Some(413), 0);
    check(format!("{}{P1}", hcl(8 * 1024 * 1024)), Some(400), 1);
}

#[test]
fn a25_token_field_name_is_case_insensitive() {
    for name in ["PLOTLY-STREAMTOKEN", "Plotly-StreamToken"] {
        check(
            format!("{}{}{END}", H.replace("plotly-streamtoken", name), c(P1)),
            Some(200),
            1,
        );
    }
}

// ---- group B: chunk framing ----------------------------------------------------------------

#[test]
fn b1_b2_b3_sizes() {
    for size in [
        "1ffffffffffffffff",
        "f0000000000000003",
        "10000000000000000",
    ] {
        check(format!("{H}{size}\r\n"), Some(400), 0);
    }
    check(format!("{H}ffffffffffffffff\r\n{P1}"), Some(400), 1);
    check(format!("{H}0000000e\r\n{P1}\r\n{END}"), Some(200), 1);
    check(
        format!("{H}{}e\r\n{P1}\r\n{END}", "0".repeat(31)),
        Some(200),
        1,
    );
    check(
        format!("{H}{}e\r\n{P1}\r\n{END}", "0".repeat(32)),
        Some(400),
        0,
    );
    check(format!("{H}0000ffffffffffffffff\r\n{P1}"), Some(400), 1);
}

#[test]
fn b4_size_prefixes_and_whitespace() {
    for size in [
        "0xe", "+e", "-e", "e_0", " e", "\te", "e 0", "e ", "e\t", "e ;a", "e\x00",
    ] {
        check(format!("{H}{size}\r\n{P1}\r\n{END}"), Some(400), 0);
    }
}

#[test]
fn b5_to_b8_empty_lines() {
    check(format!("{H}\r\n{}\r\n{END}", c(P1)), Some(200), 1);
    check(format!("{H}{}\r\n\r\n\r\n{END}", c(P1)), Some(400), 1);
    check(format!("{H}{}\r\n\r\n", c(P1)), Some(400), 1);
    check(format!("{H}{}\r\nX\r\n", c(P1)), Some(400), 1);
    check(format!("{H}{}\r\n\r\nzz\r\n", c(P1)), Some(400), 1);
}

#[test]
fn b9_b10_bare_line_ends_in_the_coding() {
    check(format!("{H}e\n{P1}\r\n"), Some(400), 0);
    check(format!("{H}e\r\n{P1}\n0\r\n\r\n"), Some(400), 1);
    check(format!("{H}{}0\n\r\n", c(P1)), Some(400), 1);
    check(format!("{H}{}0\r\n\n", c(P1)), Some(400), 1);
    check(format!("{H}{}\n{END}", c(P1)), Some(400), 1);
    check(format!("{H}e\r{P1}\r\n"), Some(400), 0);
    check(
        format!("{H}5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n"),
        Some(400),
        0,
    );
    check(format!("{H}{}\r{END}", c(P1)), Some(400), 1);
    check(format!("{H}e\r\n{P1}\r\r\n"), Some(400), 1);
}

#[test]
fn b11_to_b13_desync() {
    check(format!("{H}5\r\n{{\"x\":XX\r\n"), Some(400), 0);
    check(format!("{H}10\r\n{P1}\r\n0\r\n\r\n"), Some(400), 1);
    check(format!("{H}e\r\n{P1}0\r\n\r\n"), Some(400), 1);
}

#[test]
fn b14_b15_extensions() {
    for ext in [
        "e;foo=bar",
        "e;foo=\"a \\\"q\\\" ;b\"",
        "e;a;b=c",
        "e;a = b",
        "e; a",
    ] {
        check(format!("{H}{ext}\r\n{P1}\r\n{END}"), Some(200), 1);
    }
    check(format!("{H}{}0;fin\r\n\r\n", c(P1)), Some(200), 1);
    check(format!("{H}{}000\r\n\r\n", c(P1)), Some(200), 1);
    for ext in [
        "e;",
        "e;foo=",
        "e;[",
        "e;foo=\"open",
        "e;=v",
        "e;\x00",
        "e;a\nb",
        "e;a\rb",
    ] {
        check(format!("{H}{ext}\r\n{P1}\r\n{END}"), Some(400), 0);
    }
}

#[test]
fn b16_extension_limit() {
    for (n, status) in [(4094, 200), (4095, 200), (4096, 400), (20_000, 400)] {
        check(
            format!("{H}1;{}\r\n\n\r\n{END}", "a".repeat(n)),
            Some(status),
            0,
        );
    }
}

#[test]
fn b17_b18_overhead_budget() {
    let mut events = 0;
    let body = format!("1;{}\r\n\n\r\n", "a".repeat(100)).repeat(1000);
    let (evs, out) = run_to_end(
        IngestConfig::default(),
        &[H.as_bytes(), body.as_bytes()],
        true,
    );
    for e in &evs {
        if matches!(e, Event::Heartbeat) {
            events += 1;
        }
    }
    assert_eq!(events, 190);
    assert!(out.starts_with(b"HTTP/1.1 400 "));
    let (evs, out) = run_to_end(
        IngestConfig::default(),
        &[H.as_bytes(), "1\r\n\n\r\n".repeat(200_000).as_bytes()],
        false,
    );
    assert_eq!(
        evs.iter().filter(|e| matches!(e, Event::Heartbeat)).count(),
        200_000
    );
    assert!(out.is_empty(), "still open");
}

#[test]
fn b19_to_b22_trailers_and_trailing_bytes() {
    check(format!("{H}{}0\r\nX-Foo: bar\r\n\r\n", c(P1)), Some(200), 1);
    for t in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "plotly-streamtoken: tok2",
    ] {
        check(format!("{H}{}0\r\n{t}\r\n\r\n", c(P1)), Some(200), 1);
    }
    check(
        format!("{H}{}0\r\nX: {}\r\n\r\n", c(P1), "a".repeat(4094)),
        Some(400),
        1,
    );
    check(
        format!("{H}{}0\r\n{}\r\n", c(P1), "X: a\r\n".repeat(33)),
        Some(400),
        1,
    );
    for t in ["bad\r\r\n", "X: a\n", "X: a\r\n b\r\n", "X : a\r\n"] {
        check(format!("{H}{}0\r\n{t}\r\n", c(P1)), Some(400), 1);
    }
    check(
        format!("{H}{}0\r\nX:POST / HTTP/1.1\r\n\r\n", c(P1)),
        Some(200),
        1,
    );
    check(
        format!("{H}{}{END}{{\"x\":9,\"y\":9}}\n", c(P1)),
        Some(200),
        1,
    );
    check(format!("{H}{}{END}{H}{}{END}", c(P1), c(P2)), Some(200), 1);
}

#[test]
fn b23_lines_across_chunks() {
    check(
        format!("{H}{}{}{END}", c("{\"x\":1,"), c("\"y\":1}\n")),
        Some(200),
        1,
    );
    check(format!("{H}1c\r\n{P1}{P2}\r\n{END}"), Some(200), 2);
}

#[test]
fn b25_uppercase_hex() {
    check(format!("{H}E\r\n{P1}\r\n{END}"), Some(200), 1);
    for pad in [0, 16, 30] {
        let line = format!("{{\"x\":1,\"y\":1,\"text\":\"{}\"}}\n", "a".repeat(pad));
        check(
            format!("{H}{:X}\r\n{line}\r\n{END}", line.len()),
            Some(200),
            1,
        );
    }
}

// ---- group C: payload ----------------------------------------------------------------------

fn body(decoded: &str) -> String {
    format!("{H}{}{END}", c(decoded))
}

#[test]
fn c1_c2_order_and_arrays() {
    let out = check(
        body("{\"x\":1,\"y\":2}\n{\"x\":2,\"y\":3}\n{\"x\":3,\"y\":4}\n"),
        Some(200),
        3,
    );
    let xs: Vec<&Value> = out.data.iter().map(|(_, d)| &d[0].1).collect();
    assert_eq!(
        xs,
        [
            &Value::Number(1.0),
            &Value::Number(2.0),
            &Value::Number(3.0)
        ]
    );
    let out = check(body("{\"x\":[1,2,3],\"y\":[4,5,6]}\n"), Some(200), 1);
    assert!(matches!(&out.data[0].1[0].1, Value::Array(v) if v.len() == 3));
}

#[test]
fn c3_c4_heartbeats_and_cr() {
    for hb in ["\n", "\r\n", " \t\n"] {
        check(body(hb), Some(200), 0);
    }
    check(body("{\"x\":1,\"y\":1}\r\n"), Some(200), 1);
    check(body("\r\r\n"), Some(422), 0);
    check(body("  {\"x\":1,\"y\":1}\t\n"), Some(200), 1);
}

#[test]
fn c5_bad_line_strict_and_lenient() {
    let input = body(&format!("{P1}{P1}{{\"x\":1,\"y\":}}\n{P1}"));
    check(&input, Some(422), 2);
    let out = check_with(&lenient(), input.as_bytes(), Some(200), &[("tok1", 3)]);
    assert_eq!(out.rejected, 1);
}

#[test]
fn c6_final_tail() {
    check(
        format!("{H}{}{}{END}", c(P1), c("{\"x\":2,\"y\":2}")),
        Some(200),
        2,
    );
    check(
        format!("{H}{}{}", c(P1), c("{\"x\":2,\"y\":2}")),
        Some(400),
        1,
    );
    check(
        format!("{H}{}{}{END}", c(P1), c("{\"x\":2,\"y\":")),
        Some(422),
        1,
    );
}

#[test]
fn c7_to_c10_not_one_object() {
    for line in [
        "[1,2]",
        "42",
        "\"s\"",
        "null",
        "true",
        "{\"x\":1,\"y\":1}{\"x\":2,\"y\":2}",
        "{\"x\":1,\"y\":1} x",
        "{\"x\":1,\"y\":1},",
    ] {
        check(body(&format!("{line}\n")), Some(422), 0);
    }
    for v in [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "01",
        "-01",
        ".5",
        "1.",
        "+1",
        "0x10",
    ] {
        check(body(&format!("{{\"x\":{v},\"y\":1}}\n")), Some(422), 0);
    }
    for line in [
        "{\"x\":1,\"x\":2,\"y\":3}",
        "{\"x\":1,\"\\u0078\":2,\"y\":3}",
        "{\"x\":1,\"y\":1,\"marker\":{\"color\":\"a\",\"color\":\"b\"}}",
    ] {
        check(body(&format!("{line}\n")), Some(422), 0);
    }
}

#[test]
fn c11_data_model_edges_are_atomic() {
    check(body("{\"x\":[1,2,3],\"y\":[1]}\n"), Some(200), 1);
    check(body("{\"x\":{\"a\":1},\"y\":1}\n"), Some(422), 0);
    check(body("{\"x\":1}\n"), Some(200), 1);
    check(body("{}\n"), Some(200), 1);
    check(body("{\"streamtoken\":\"tok1\"}\n"), Some(200), 1);
}

#[test]
fn c12_c13_unicode_and_bom() {
    for v in [
        &b"\"\xff\""[..],
        b"\"\xc0\xaf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\\ud800\"",
        b"\"\\udc00x\"",
    ] {
        let line = [&b"{\"x\":"[..], v, b",\"y\":1}\n"].concat();
        let input = [
            H.as_bytes(),
            format!("{:x}\r\n", line.len()).as_bytes(),
            &line,
            b"\r\n",
            END.as_bytes(),
        ]
        .concat();
        check(input, Some(422), 0);
    }
    check(body("{\"x\":\"\\ud83d\\ude00\",\"y\":1}\n"), Some(200), 1);
    let bom = "\u{feff}";
    check(body(&format!("{bom}{P1}")), Some(200), 1);
    // The BOM split across two chunks.
    let split_bom = [
        H.as_bytes(),
        b"2\r\n\xef\xbb\r\n",
        format!("{:x}\r\n", P1.len() + 1).as_bytes(),
        b"\xbf",
        P1.as_bytes(),
        b"\r\n",
        END.as_bytes(),
    ]
    .concat();
    check(split_bom, Some(200), 1);
    check(body(&format!("{P1}{bom}{P2}")), Some(422), 1);
    let partial = [
        H.as_bytes(),
        format!("{:x}\r\n", P1.len() + 2).as_bytes(),
        b"\xef\xbb",
        P1.as_bytes(),
        b"\r\n",
        END.as_bytes(),
    ]
    .concat();
    check(partial, Some(422), 0);
}

#[test]
fn c14_deep_nesting_without_stack_overflow() {
    let deep = format!(
        "{{\"x\":{}1{},\"y\":1}}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    check_with(
        &IngestConfig::default(),
        format!("{H}{}{END}", c(&deep)).as_bytes(),
        Some(422),
        &[],
    );
}

#[test]
fn c15_line_limit() {
    let exact = format!("{{\"x\":1,\"y\":1}}{}\n", " ".repeat(65_522));
    assert_eq!(exact.len(), 65_536);
    check(body(&exact), Some(200), 1);
    let over = format!("{{\"x\":1,\"y\":1}}{}\n", " ".repeat(65_523));
    check(body(&over), Some(413), 0);
    let huge = format!("{H}{}", c(&format!("{{\"x\":\"{}", "A".repeat(1 << 20))));
    check(&huge, Some(413), 0);
}

#[test]
fn c16_c17_array_string_member_limits() {
    let arr = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    check(
        body(&format!(
            "{{\"x\":[{}],\"y\":[{}]}}\n",
            arr(5000),
            arr(5000)
        )),
        Some(200),
        1,
    );
    check(
        body(&format!("{{\"x\":[{}]}}\n", vec!["0"; 10_000].join(","))),
        Some(200),
        1,
    );
    check(
        body(&format!("{{\"x\":[{}]}}\n", vec!["0"; 10_001].join(","))),
        Some(422),
        0,
    );
    check(
        body("{\"x\":1,\"y\":1,\"marker\":{\"color\":\"#000\"}}\n"),
        Some(200),
        1,
    );
    check(
        body(&format!("{{\"text\":\"{}\"}}\n", "A".repeat(1025))),
        Some(422),
        0,
    );
    let members: Vec<String> = (0..257).map(|i| format!("\"k{i}\":1")).collect();
    check(body(&format!("{{{}}}\n", members.join(","))), Some(422), 0);
}

#[test]
fn c18_c19_values_are_kept_verbatim() {
    let out = check(
        body("{\"x\":\"<script>alert(1)</script>\",\"y\":1}\n"),
        Some(200),
        1,
    );
    assert!(
        matches!(&out.data[0].1[0].1, Value::Str(s) if s.as_str() == "<script>alert(1)</script>")
    );
    let out = check(
        body("{\"x\":\"a\\u0000\\u2028\\nb\\r\",\"y\":1}\n"),
        Some(200),
        1,
    );
    assert!(matches!(&out.data[0].1[0].1, Value::Str(s) if s.as_str() == "a\0\u{2028}\nb\r"));
    let out = check(body("{\"x\":9007199254740993,\"y\":-0}\n"), Some(200), 1);
    assert_eq!(out.data[0].1[0].1, Value::Number(9_007_199_254_740_992.0));
    assert!(matches!(out.data[0].1[1].1, Value::Number(y) if y == 0.0 && y.is_sign_negative()));
}

#[test]
fn c20_c21_control_characters() {
    check(body("{\"x\":1,\r\"y\":2}\n"), Some(422), 0);
    check(body("{\"x\":\"a\u{1}\",\"y\":1}\n"), Some(422), 0);
    check(body("{\"x\":\"a\tb\",\"y\":1}\n"), Some(422), 0);
}

#[test]
fn c22_c23_line_tokens() {
    let out = check_with(
        &IngestConfig::default(),
        body(&format!(
            "{{\"x\":5,\"y\":5,\"streamtoken\":\"tok2\"}}\n{P1}"
        ))
        .as_bytes(),
        Some(200),
        &[("tok1", 1), ("tok2", 1)],
    );
    assert_eq!(out.data[0].1.len(), 2, "streamtoken is not data");
    for t in ["\"bad token\"", "5", "\"\""] {
        check(
            body(&format!("{{\"x\":1,\"y\":1,\"streamtoken\":{t}}}\n")),
            Some(400),
            0,
        );
    }
}

#[test]
fn c25_lenient_does_not_skip_413() {
    let input = format!(
        "{H}{}{END}",
        c(&format!("{P1}{{bad\n[1]\n{P2}{}", "A".repeat(70_000)))
    );
    let out = check_with(&lenient(), input.as_bytes(), Some(413), &[("tok1", 2)]);
    assert_eq!(out.rejected, 2);
}

// ---- group Q: real-client quirks -----------------------------------------------------------

const Q1_HEAD: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1:40541\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\n\r\n";
const ARDUINO_HEAD: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n";

#[test]
fn q1_q2_chart_studio() {
    let input = format!(
        "{Q1_HEAD}2e\r\n{{\"x\": \"2026-01-01 10:00:00.000000\", \"y\": 0.5}}\n\r\n1\r\n\n\r\n21\r\n{{\"x\": [1, 2, 3], \"y\": [4, 5, 6]}}\n\r\n\r\n0\r\n\r\n"
    );
    check(&input, Some(200), 2);
    let (_, out) = run_to_end(IngestConfig::default(), &[input.as_bytes()], false);
    assert!(
        out.ends_with(b"{\"status\":200,\"message\":\"healthy endpoint disconnect\",\"points\":2}")
    );
    check(format!("{Q1_HEAD}\r\n0\r\n\r\n"), Some(200), 0);
}

#[test]
fn q3_arduino_leading_crlf() {
    let input = format!("{ARDUINO_HEAD}\r\n\r\n3C\r\n{{\"x\": 4294967295, \"y\": 123.45, \"streamtoken\": \"abcdef1234\"}}\n\r\n{END}");
    check_with(
        &IngestConfig::default(),
        input.as_bytes(),
        Some(200),
        &[("abcdef1234", 1)],
    );
}

#[test]
fn q4_arduino_two_tokens_with_timezone() {
    let pair = "3C\r\n{\"x\": 4294967295, \"y\": 123.45, \"streamtoken\": \"abcdef1234\"}\n\r\n31\r\n{\"x\": 1000, \"y\": 2, \"streamtoken\": \"zyxwvu9876\"}\n\r\n";
    let input = format!(
        "{ARDUINO_HEAD}plotly-convertTimestamp: \"America/Montreal\"\r\n\r\n{}{END}",
        pair.repeat(5)
    );
    let out = check_with(
        &IngestConfig::default(),
        input.as_bytes(),
        Some(200),
        &[("abcdef1234", 5), ("zyxwvu9876", 5)],
    );
    // x was converted: T0 is the epoch in the test driver, so x = 1000 ms is 1970-01-01 00:00:01 UTC.
    assert_eq!(
        out.data[1].1[0].1,
        Value::Str("1969-12-31 19:00:01.000000".into())
    );
}

#[test]
fn q5_old_arduino_unquoted_zone() {
    let input = format!("{ARDUINO_HEAD}plotly-streamtoken: tok1\r\nplotly-convertTimestamp: America/Montreal\r\n\r\n13\r\n{{\"x\": 10, \"y\": 20}}\n\r\n{END}");
    let out = check(&input, Some(200), 1);
    assert_eq!(
        out.data[0].1[0].1,
        Value::Str("1969-12-31 19:00:00.010000".into())
    );
}

#[test]
fn q6_esp8266_content_length_without_lf() {
    let input = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Arduino\r\nContent-Type: application/x-www-form-urlencoded\r\nplotly-streamtoken: tok1\r\nplotly-convertTimestamp: America/Manaus\r\nContent-Length: 22\r\n\r\n{\"x\":\"12345\", \"y\":\"7\"}";
    let out = check(input, Some(200), 1);
    assert_eq!(
        out.data[0].1[0].1,
        Value::Str("1969-12-31 20:00:12.345000".into())
    );
    assert_eq!(out.data[0].1[1].1, Value::Str("7".into()));
}

#[test]
fn q8_node_lines_across_chunks() {
    let h = "POST / HTTP/1.1\r\nplotly-streamtoken: tok1\r\nHost: 127.0.0.1:42373\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let input = format!("{h}e\r\n{{\"x\":0,\"y\":0}}\n\r\n1c\r\n{{\"x\":1,\"y\":1}}\n{{\"x\":2,\"y\":2}}\n\r\n7\r\n{{\"x\":3,\r\n7\r\n\"y\":3}}\n\r\n{END}");
    check(&input, Some(200), 4);
}

#[test]
fn q9_misframed_short_token() {
    let input = format!("{ARDUINO_HEAD}\r\n3C\r\n{{\"x\": 4294967295, \"y\": 123.45, \"streamtoken\": \"abcde\"}}\n\r\n0\r\n\r\n");
    check_with(
        &IngestConfig::default(),
        input.as_bytes(),
        Some(422),
        &[("abcde", 1)],
    );
}

#[test]
fn q13_chart_studio_json_flavour() {
    for line in [
        "{\"x\": [1, 2, 3], \"y\": [4, 5, 6]}",
        "{\"x\": 1, \"y\": 2, \"layout\": {\"title\": \"t\"}}",
        "{\"marker\": {\"color\": \"red\"}, \"x\": [7], \"y\": [8]}",
        "{\"x\": \"2026-01-01T10:00:00.123456\", \"y\": null}",
    ] {
        check(body(&format!("{line}\n")), Some(200), 1);
    }
}

// ---- timers (exact, with time passed in) ---------------------------------------------------

mod timers {
    use std::time::Duration;

    use bytes::BytesMut;
    use plotstream_proto::{EndReason, Ingest};

    use super::*;

    fn feed(ingest: &mut Ingest, now: Duration, bytes: &str) -> Vec<Event> {
        let mut b = BytesMut::from(bytes.as_bytes());
        ingest.handle_input(now, &mut b);
        drain(ingest, now)
    }

    fn drain(ingest: &mut Ingest, now: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = ingest.poll_event(now) {
            if matches!(ev, Event::Head(_)) {
                ingest.admit(now, SystemTime::UNIX_EPOCH);
            }
            out.push(ev);
        }
        out
    }

    fn fire(ingest: &mut Ingest, now: Duration) -> Option<(Option<u16>, EndReason)> {
        ingest.handle_timeout(now);
        drain(ingest, now).into_iter().find_map(|e| match e {
            Event::End(end) => Some((end.status.map(|s| s.code()), end.reason)),
            _ => None,
        })
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn e1_pre_head_silent_close_at_60s() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        assert_eq!(i.poll_timeout(), Some(S(60)));
        assert_eq!(fire(&mut i, S(59)), None);
        assert_eq!(fire(&mut i, S(60)), Some((None, EndReason::PreHeadTimeout)));
    }

    #[test]
    fn e2_head_deadline_counts_from_the_first_byte() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(5), "P");
        for t in 6..15 {
            feed(&mut i, S(t), "O");
            assert_eq!(
                i.poll_timeout(),
                Some(S(15)),
                "later bytes do not extend it"
            );
        }
        assert_eq!(
            fire(&mut i, S(15)),
            Some((Some(408), EndReason::HeadTimeout))
        );
    }

    #[test]
    fn e3_e5_e6_idle_counts_completed_lines_only() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(1), H);
        assert_eq!(i.poll_timeout(), Some(S(61)));
        feed(&mut i, S(10), &c(P1));
        assert_eq!(i.poll_timeout(), Some(S(70)));
        // Partial lines, size digits, extensions and empty lines never reset it.
        feed(&mut i, S(20), "1\r\n{\r\n");
        feed(&mut i, S(30), "0");
        feed(&mut i, S(40), "1;a=b");
        assert_eq!(i.poll_timeout(), Some(S(70)));
        assert_eq!(fire(&mut i, S(69)), None);
        assert_eq!(
            fire(&mut i, S(70)),
            Some((Some(408), EndReason::IdleTimeout))
        );
    }

    #[test]
    fn e4_heartbeats_keep_a_stream_alive() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(0), H);
        for k in 1..=11 {
            let chunk = if k % 2 == 0 {
                c("\n")
            } else {
                "2\r\n\r\n\r\n".to_owned()
            };
            feed(&mut i, S(55 * k), &chunk);
            assert_eq!(fire(&mut i, S(55 * k + 1)), None);
        }
        assert!(!i.is_ended());
    }

    #[test]
    fn e13_unbound_connection_gets_406_despite_heartbeats() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(0), HN);
        feed(&mut i, S(20), &c("\n"));
        feed(&mut i, S(40), &c("\n"));
        assert_eq!(i.poll_timeout(), Some(S(60)));
        assert_eq!(fire(&mut i, S(60)), Some((Some(406), EndReason::Unbound)));
        // A data line with its own token binds the connection.
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(0), HN);
        feed(&mut i, S(30), &c("{\"x\":1,\"streamtoken\":\"tok2\"}\n"));
        assert_eq!(i.poll_timeout(), Some(S(90)));
    }

    #[test]
    fn e12_chart_studio_pauses_are_fine() {
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        feed(&mut i, S(0), Q1_HEAD);
        let evs = feed(&mut i, S(1), &c(P1));
        assert!(matches!(evs[0], Event::Update { .. }));
        let evs = feed(&mut i, S(2), "\r\n0\r\n\r\n");
        assert!(matches!(&evs[..], [Event::End(e)] if e.status.map(|s| s.code()) == Some(200)));
    }

    #[test]
    fn driver_decisions_take_effect_at_once() {
        // reject_line: the refused line does not count, nothing after it is decoded.
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        let mut b = BytesMut::from(format!("{H}{}{}", c(P1), c(P2)).as_bytes());
        i.handle_input(S(0), &mut b);
        assert!(matches!(i.poll_event(S(0)), Some(Event::Head(_))));
        i.admit(S(0), SystemTime::UNIX_EPOCH);
        assert!(matches!(i.poll_event(S(0)), Some(Event::Update { .. })));
        assert!(matches!(i.poll_event(S(0)), Some(Event::Update { .. })));
        i.reject_line(plotstream_proto::Status::NOT_FOUND);
        assert!(
            matches!(i.poll_event(S(0)), Some(Event::End(e)) if e.n_points == 1 && e.status.map(|s| s.code()) == Some(404))
        );
        assert_eq!(i.poll_event(S(0)), None);
        // close_with at the head: no 100 Continue is sent.
        let mut i = Ingest::new(IngestConfig::default(), S(0));
        let mut b = BytesMut::from(h_with("Expect: 100-continue").as_bytes());
        i.handle_input(S(0), &mut b);
        assert!(matches!(i.poll_event(S(0)), Some(Event::Head(_))));
        i.close_with(plotstream_proto::Status::NOT_FOUND);
        let mut out = Vec::new();
        assert!(matches!(i.poll_event(S(0)), Some(Event::End(_))));
        i.poll_transmit(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn limits_are_configurable() {
        let limits = Limits {
            idle: S(5),
            ..Limits::default()
        };
        let mut i = Ingest::new(
            IngestConfig {
                limits,
                lenient_lines: false,
            },
            S(0),
        );
        feed(&mut i, S(0), H);
        assert_eq!(i.poll_timeout(), Some(S(5)));
    }
}
