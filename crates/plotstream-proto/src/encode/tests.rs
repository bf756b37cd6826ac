#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;

use super::number::NumScratch;
use super::request::host_without_port;
use super::style::NumStyle;
use super::*;
use crate::chunked::encode_chunk;
use crate::ingest::{run_to_end, Event, IngestConfig};
use crate::json::{Str, Value};
use crate::limits::Limits;
use crate::status::Status;
use crate::update::{parse_update, Token, Update};

const ALL: [Flavour; 4] = [
    Flavour::Python,
    Flavour::Node,
    Flavour::Arduino,
    Flavour::Raw,
];

fn tok(s: &str) -> Token {
    Token::parse(s.as_bytes()).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn check(got: Vec<u8>, expected: &[u8]) {
    assert_eq!(text(&got), text(expected));
}

/// A compact line parsed by the server, then re-encoded in `flavour` and framed as one chunk.
fn update_chunk(flavour: Flavour, compact: &str) -> Vec<u8> {
    let update = parse_update(
        &Bytes::copy_from_slice(compact.as_bytes()),
        &Limits::default(),
    )
    .unwrap();
    let mut line = Vec::new();
    encode_update_line(flavour, &update, None, &mut line);
    let mut out = Vec::new();
    encode_chunk(&line, &mut out);
    out
}

// ---- byte-exact client output (docs/protocol.md §2.9–§2.11) -------------------------------------

#[test]
fn chart_studio_head_and_chunks() {
    let mut out = Vec::new();
    encode_head(
        Flavour::Python,
        "stream.example.org:9999",
        Some(&tok("abcdef1234")),
        None,
        &mut out,
    );
    check(
        out,
        b"POST / HTTP/1.1\r\nHost: stream.example.org:9999\r\nAccept-Encoding: identity\r\n\
          Transfer-Encoding: chunked\r\nHost: stream.example.org\r\nplotly-streamtoken: abcdef1234\r\n\r\n",
    );
    let p = Flavour::Python;
    check(
        update_chunk(p, r#"{"x":"2026-01-01 10:00:00.000000","y":0.5}"#),
        b"2e\r\n{\"x\": \"2026-01-01 10:00:00.000000\", \"y\": 0.5}\n\r\n",
    );
    check(
        update_chunk(p, r#"{"x":[1,2,3],"y":[4,5,6]}"#),
        b"21\r\n{\"x\": [1, 2, 3], \"y\": [4, 5, 6]}\n\r\n",
    );
    check(
        update_chunk(p, r#"{"x":1,"y":2,"layout":{"title":"t"}}"#),
        b"2b\r\n{\"x\": 1, \"y\": 2, \"layout\": {\"title\": \"t\"}}\n\r\n",
    );
    check(
        update_chunk(p, r#"{"marker":{"color":"red"},"x":[7],"y":[8]}"#),
        b"31\r\n{\"marker\": {\"color\": \"red\"}, \"x\": [7], \"y\": [8]}\n\r\n",
    );
    let mut out = Vec::new();
    encode_heartbeat(&mut out);
    encode_close(p, &mut out);
    check(out, b"1\r\n\n\r\n\r\n0\r\n\r\n");
    let mut out = Vec::new();
    encode_point_chunk(p, Num::Int(1), Num::Float(0.5), None, &mut out);
    check(out, b"13\r\n{\"x\": 1, \"y\": 0.5}\n\r\n");
}

#[test]
fn chart_studio_on_port_80_sends_equal_hosts() {
    let mut out = Vec::new();
    encode_head(
        Flavour::Python,
        "stream.plot.ly",
        Some(&tok("abcdef1234")),
        None,
        &mut out,
    );
    assert_eq!(text(&out).matches("Host: stream.plot.ly\r\n").count(), 2);
    assert_eq!(host_without_port("[::1]:9999"), "[::1]");
    assert_eq!(host_without_port("[::1]"), "[::1]");
    assert_eq!(host_without_port("::1"), "::1");
    assert_eq!(host_without_port("h:"), "h:");
}

#[test]
fn node_head_and_first_chunk() {
    let mut out = Vec::new();
    encode_head(
        Flavour::Node,
        "stream.example.org",
        Some(&tok("abcdef1234")),
        None,
        &mut out,
    );
    encode_point_chunk(Flavour::Node, Num::Int(0), Num::Float(0.0), None, &mut out);
    encode_close(Flavour::Node, &mut out);
    check(
        out,
        b"POST / HTTP/1.1\r\nplotly-streamtoken: abcdef1234\r\nHost: stream.example.org\r\n\
          Connection: close\r\nTransfer-Encoding: chunked\r\n\r\ne\r\n{\"x\":0,\"y\":0}\n\r\n0\r\n\r\n",
    );
}

#[test]
fn arduino_head_and_chunks() {
    let (a, z) = (tok("abcdef1234"), tok("zyxwvu9876"));
    let ard = Flavour::Arduino;
    let mut out = Vec::new();
    encode_head(
        ard,
        "arduino.plot.ly",
        Some(&a),
        Some("America/Montreal"),
        &mut out,
    );
    encode_point_chunk(ard, Num::Int(1500), Num::Int(512), Some(&a), &mut out);
    encode_point_chunk(ard, Num::Int(3500), Num::Int(7), Some(&z), &mut out);
    encode_point_chunk(
        ard,
        Num::Int(4_294_967_295),
        Num::Int(-32768),
        Some(&a),
        &mut out,
    );
    encode_close(ard, &mut out);
    check(
        out,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\nplotly-convertTimestamp: \"America/Montreal\"\r\n\r\n\
          33\r\n{\"x\": 1500, \"y\": 512, \"streamtoken\": \"abcdef1234\"}\n\r\n\
          31\r\n{\"x\": 3500, \"y\": 7, \"streamtoken\": \"zyxwvu9876\"}\n\r\n\
          3C\r\n{\"x\": 4294967295, \"y\": -32768, \"streamtoken\": \"abcdef1234\"}\n\r\n0\r\n\r\n",
    );
    // Without a zone the library ends the head with one CRLF too many (K2).
    let mut out = Vec::new();
    encode_head(ard, "arduino.plot.ly", None, None, &mut out);
    assert!(text(&out).ends_with("Connection: close\r\n\r\n\r\n"));
    // The size is right for any token length, unlike the library's `len(x) + len(y) + 44`.
    let mut out = Vec::new();
    encode_point_chunk(
        ard,
        Num::Int(1500),
        Num::Float(21.5),
        Some(&tok("abc")),
        &mut out,
    );
    check(
        out,
        b"2D\r\n{\"x\": 1500, \"y\": 21.5, \"streamtoken\": \"abc\"}\n\r\n",
    );
}

#[test]
fn raw_head_line_and_batch() {
    let mut out = Vec::new();
    encode_head(
        Flavour::Raw,
        "127.0.0.1:9999",
        Some(&tok("abcdef1234")),
        None,
        &mut out,
    );
    check(
        out,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:9999\r\nplotly-streamtoken: abcdef1234\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let mut out = Vec::new();
    encode_point_line(
        Flavour::Raw,
        Num::Int(1_700_000_000_123),
        Num::Float(0.5),
        None,
        &mut out,
    );
    check(out, b"{\"x\":1700000000123,\"y\":0.5}\n");

    let mut out = b"prefix".to_vec();
    let mut batch = ChunkBatch::begin(&mut out);
    batch.push_point(Flavour::Raw, Num::Int(1), Num::Float(1.0), None, &mut out);
    batch.push_point(
        Flavour::Raw,
        Num::Int(2),
        Num::Float(f64::NAN),
        None,
        &mut out,
    );
    assert_eq!(batch.n_points(), 2);
    batch.finish(&mut out);
    check(
        out,
        b"prefix0021\r\n{\"x\":1,\"y\":1.0}\n{\"x\":2,\"y\":null}\n\r\n",
    );

    let mut out = b"prefix".to_vec();
    ChunkBatch::begin(&mut out).finish(&mut out);
    check(out, b"prefix");
}

#[test]
fn batch_field_widens_past_64_kib() {
    let mut out = Vec::new();
    let mut batch = ChunkBatch::begin(&mut out);
    let mut i = 0;
    while out.len() < 0x1_0100 {
        batch.push_point(Flavour::Arduino, Num::Int(i), Num::Int(-i), None, &mut out);
        i += 1;
    }
    let n_lines = batch.n_points();
    batch.finish(&mut out);
    let crlf = out.iter().position(|&b| b == b'\r').unwrap();
    let size = usize::from_str_radix(std::str::from_utf8(&out[..crlf]).unwrap(), 16).unwrap();
    assert_eq!(crlf, 5);
    assert!(
        out[..crlf].iter().all(|b| !b.is_ascii_lowercase()),
        "Arduino sizes are uppercase"
    );
    assert_eq!(size, out.len() - crlf - 4);
    assert!(out.ends_with(b"}\n\r\n"));
    assert_eq!(
        out[crlf + 2..out.len() - 2]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        n_lines
    );
}

#[test]
fn encode_value_is_compact_and_exact() {
    let cases: &[(Value, &str)] = &[
        (Value::Number(-0.0), "-0"),
        (Value::Number(0.0), "0"),
        (Value::Number(1.0), "1"),
        (Value::Number(-42.0), "-42"),
        (Value::Number(9_007_199_254_740_991.0), "9007199254740991"),
        (Value::Number(9_007_199_254_740_992.0), "9007199254740992.0"),
        (Value::Number(0.5), "0.5"),
        (Value::Number(1e300), "1e+300"),
        (Value::Number(1e-7), "1e-7"),
        (Value::Number(f64::NAN), "null"),
        (Value::Null, "null"),
        (Value::Bool(true), "true"),
        (
            Value::Str(Str::from("a\"b\\c\n\u{1}é\u{7f}")),
            "\"a\\\"b\\\\c\\n\\u0001é\u{7f}\"",
        ),
        (
            Value::Object(vec![
                (
                    Str::from("k"),
                    Value::Array(vec![Value::Number(1.0), Value::Bool(false)]),
                ),
                (Str::from(""), Value::Object(vec![])),
            ]),
            "{\"k\":[1,false],\"\":{}}",
        ),
    ];
    for (value, expected) in cases {
        let mut out = Vec::new();
        encode_value(value, &mut out);
        assert_eq!(text(&out), *expected, "{value:?}");
    }
}

#[test]
fn strings_are_escaped_like_each_client() {
    let s = "é😀\u{1}\u{7f}\"\\/\n\u{2028}\u{8}\u{c}\t\r";
    let update = Update {
        token: None,
        data: smallvec::smallvec![(Str::from_static("x"), Value::Str(Str::from(s)))],
        line: vec![],
        layout: None,
    };
    let line = |flavour| {
        let mut out = Vec::new();
        encode_update_line(flavour, &update, None, &mut out);
        text(&out)
    };
    // Python 3.11 `json.dumps({"x": s})` and node `JSON.stringify({x: s})`.
    assert_eq!(
        line(Flavour::Python),
        "{\"x\": \"\\u00e9\\ud83d\\ude00\\u0001\\u007f\\\"\\\\/\\n\\u2028\\b\\f\\t\\r\"}\n"
    );
    assert_eq!(
        line(Flavour::Node),
        "{\"x\":\"é😀\\u0001\u{7f}\\\"\\\\/\\n\u{2028}\\b\\f\\t\\r\"}\n"
    );
}

#[test]
fn python_floats_match_repr() {
    // Python 3.11 `repr(v)`.
    let cases: &[(f64, &str)] = &[
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"),
        (1e-4, "0.0001"),
        (1.5e-7, "1.5e-07"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (f64::MAX, "1.7976931348623157e+308"),
        (123_456_789.0, "123456789.0"),
        (2.5e-5, "2.5e-05"),
        (-2.5e-5, "-2.5e-05"),
        (1.234_567_890_123_456_8e17, "1.2345678901234568e+17"),
        (1e-6, "1e-06"),
        (-1e-9, "-1e-09"),
        (9.999_999_999_999_999e-5, "9.999999999999999e-05"),
        (1e21, "1e+21"),
        (1.5e-6, "1.5e-06"),
        (f64::INFINITY, "null"),
        (f64::NAN, "null"),
    ];
    for &(v, expected) in cases {
        let mut s = NumScratch::new();
        assert_eq!(
            text(s.format(NumStyle::Python, Num::Float(v))),
            expected,
            "{v:e}"
        );
    }
}

#[test]
fn node_floats_match_number_to_string() {
    // node 20 `JSON.stringify(v)`.
    let cases: &[(f64, &str)] = &[
        (1e16, "10000000000000000"),
        (1e15, "1000000000000000"),
        (1e-5, "0.00001"),
        (1.5e-7, "1.5e-7"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (-0.0, "0"),
        (f64::MAX, "1.7976931348623157e+308"),
        (123_456_789.0, "123456789"),
        (2.5e-5, "0.000025"),
        (1.234_567_890_123_456_8e17, "123456789012345680"),
        (-1.234_567_890_123_456_8e17, "-123456789012345680"),
        (1e-6, "0.000001"),
        (-1.5e-6, "-0.0000015"),
        (1e-7, "1e-7"),
        (9.999_999_999_999_999e-5, "0.00009999999999999999"),
        (1e20, "100000000000000000000"),
        (1.5e20, "150000000000000000000"),
        (1e21, "1e+21"),
        (0.5, "0.5"),
        (1.0, "1"),
        (f64::NEG_INFINITY, "null"),
    ];
    for &(v, expected) in cases {
        let mut s = NumScratch::new();
        assert_eq!(
            text(s.format(NumStyle::Js, Num::Float(v))),
            expected,
            "{v:e}"
        );
    }
    let mut s = NumScratch::new();
    assert_eq!(
        text(s.format(NumStyle::Js, Num::Int(9_007_199_254_740_993))),
        "9007199254740992"
    );
    let mut s = NumScratch::new();
    assert_eq!(
        text(s.format(NumStyle::Js, Num::Int(i64::MAX))),
        "9223372036854776000"
    );
    let mut s = NumScratch::new();
    assert_eq!(
        text(s.format(NumStyle::Raw, Num::Int(i64::MIN))),
        "-9223372036854775808"
    );
}

#[test]
fn heads_are_admitted_with_their_token_and_zone() {
    for flavour in ALL {
        let mut input = Vec::new();
        encode_head(
            flavour,
            "localhost:9999",
            Some(&tok("abcdef1234")),
            Some("America/Manaus"),
            &mut input,
        );
        encode_point_chunk(
            flavour,
            Num::Int(1),
            Num::Int(2),
            Some(&tok("abcdef1234")),
            &mut input,
        );
        encode_close(flavour, &mut input);
        let (events, _) = run_to_end(IngestConfig::default(), &[&input], true);
        let Some(Event::Head(head)) = events.first() else {
            panic!("{flavour:?}: {events:?}")
        };
        let header_token = head.token.as_ref().map(Token::as_str);
        assert_eq!(
            header_token,
            (flavour != Flavour::Arduino).then_some("abcdef1234"),
            "{flavour:?}"
        );
        assert_eq!(
            head.convert_timestamp.as_deref(),
            Some("America/Manaus"),
            "{flavour:?}"
        );
        assert!(
            matches!(events.last(), Some(Event::End(e)) if e.status == Some(Status::OK) && e.n_points == 1)
        );
    }
}

// ---- round trips through the ingest state machine -------------------------------------------

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Item {
    Point {
        x: Num,
        y: Num,
        token: Option<Token>,
    },
    Update {
        update: Update,
        token: Option<Token>,
    },
    Heartbeat,
}

fn flavour() -> impl Strategy<Value = Flavour> {
    prop_oneof![
        Just(Flavour::Python),
        Just(Flavour::Node),
        Just(Flavour::Arduino),
        Just(Flavour::Raw)
    ]
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite()),
        (any::<i32>(), 0..8u32).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e as i32)),
        (any::<f64>(), -9..25i32)
            .prop_filter("finite", |(f, _)| f.is_finite())
            .prop_map(|(f, e)| (f % 10.0) * 10f64.powi(e)),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
    ]
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        any::<i64>().prop_map(Num::Int),
        (0..2_000_000_000_000i64).prop_map(Num::Int),
        finite_f64().prop_map(Num::Float),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
            .prop_map(Num::Float),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| tok(&s))
}

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<char>(),
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\u{7f}'),
            Just('é')
        ],
        0..12,
    )
    .prop_map(String::from_iter)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        finite_f64().prop_map(Value::Number),
        string().prop_map(|s| Value::Str(Str::from(s))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            members(inner).prop_map(Value::Object),
        ]
    })
}

/// Distinct names, as the parser requires.
fn members(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<(Str, Value)>> {
    prop::collection::btree_map(string(), inner, 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| (Str::from(k), v)).collect())
}

/// A value allowed for `x`, `y`, `z`, `text` and marker leaves: anything but an object.
fn attribute() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar(),
        prop::collection::vec(value(), 0..4).prop_map(Value::Array)
    ]
}

#[derive(Debug, Clone)]
enum MarkerNode {
    Leaf(Value),
    Object(Vec<(String, MarkerNode)>),
}

fn marker() -> impl Strategy<Value = Vec<(String, MarkerNode)>> {
    let node = attribute()
        .prop_map(MarkerNode::Leaf)
        .prop_recursive(2, 8, 3, |inner| {
            prop::collection::btree_map("[a-z]{1,6}", inner, 1..3)
                .prop_map(|m| MarkerNode::Object(m.into_iter().collect()))
        });
    prop::collection::btree_map("[a-z]{1,6}", node, 1..4).prop_map(|m| m.into_iter().collect())
}

/// The parser's flattening: depth first, in member order.
fn flatten(prefix: &str, members: &[(String, MarkerNode)], out: &mut Vec<(Str, Value)>) {
    for (key, node) in members {
        let path = format!("{prefix}.{key}");
        match node {
            MarkerNode::Leaf(v) => out.push((Str::from(path), v.clone())),
            MarkerNode::Object(inner) => flatten(&path, inner, out),
        }
    }
}

fn update() -> impl Strategy<Value = Update> {
    let attrs = Just(["x", "y", "z", "text"])
        .prop_shuffle()
        .prop_flat_map(|keys| {
            (0..=4usize, prop::collection::vec(attribute(), 4)).prop_map(move |(n, values)| {
                keys[..n]
                    .iter()
                    .map(|k| Str::from(*k))
                    .zip(values)
                    .collect::<Vec<_>>()
            })
        });
    (
        attrs,
        prop::option::of((marker(), any::<prop::sample::Index>())),
        members(value()),
        prop::option::of(members(value())),
    )
        .prop_map(|(mut data, marker, line, layout)| {
            if let Some((tree, at)) = marker {
                let mut paths = Vec::new();
                flatten("marker", &tree, &mut paths);
                let at = at.index(data.len() + 1);
                data.splice(at..at, paths);
            }
            Update {
                token: None,
                data: data.into(),
                line,
                layout,
            }
        })
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (num(), num(), prop::option::of(token())).prop_map(|(x, y, token)| Item::Point { x, y, token }),
        3 => (update(), prop::option::of(token())).prop_map(|(update, token)| Item::Update { update, token }),
        1 => Just(Item::Heartbeat),
    ]
}

/// Encodes `items` as one request. `modes` pick each item's framing: its own chunk, a line in
/// the open [`ChunkBatch`], or a line gathered into a chunk with [`encode_chunk`].
fn encode_request(flavour: Flavour, items: &[(Item, u8)], head_token: &Token) -> Vec<u8> {
    let mut out = Vec::new();
    encode_head(flavour, "localhost:9999", Some(head_token), None, &mut out);
    let mut batch: Option<ChunkBatch> = None;
    for (item, mode) in items {
        if *mode % 3 != 1 || matches!(item, Item::Heartbeat) {
            if let Some(b) = batch.take() {
                b.finish(&mut out);
            }
        }
        match (item, mode % 3) {
            (Item::Point { x, y, token }, 0) => {
                encode_point_chunk(flavour, *x, *y, token.as_ref(), &mut out)
            }
            (Item::Point { x, y, token }, 1) => batch
                .get_or_insert_with(|| ChunkBatch::begin(&mut out))
                .push_point(flavour, *x, *y, token.as_ref(), &mut out),
            (Item::Point { x, y, token }, _) => {
                let mut line = Vec::new();
                encode_point_line(flavour, *x, *y, token.as_ref(), &mut line);
                encode_chunk(&line, &mut out);
            }
            (Item::Update { update, token }, 1) => {
                batch.get_or_insert_with(|| ChunkBatch::begin(&mut out));
                encode_update_line(flavour, update, token.as_ref(), &mut out);
            }
            (Item::Update { update, token }, _) => {
                let mut line = Vec::new();
                encode_update_line(flavour, update, token.as_ref(), &mut line);
                encode_chunk(&line, &mut out);
            }
            (Item::Heartbeat, _) => encode_heartbeat(&mut out),
        }
    }
    if let Some(b) = batch.take() {
        b.finish(&mut out);
    }
    encode_close(flavour, &mut out);
    out
}

/// What the server should see for `item`, numbers as the flavour spells them.
fn expected(flavour: Flavour, item: &Item, head_token: &Token) -> Option<(Token, Update)> {
    let num = |n: Num| match n {
        #[allow(clippy::cast_precision_loss)] // the decoder rounds the same way
        Num::Int(i) => Value::Number(i as f64),
        Num::Float(f) if f.is_finite() => Value::Number(f),
        Num::Float(_) => Value::Null,
    };
    let (update, token) = match item {
        Item::Point { x, y, token } => {
            let data = vec![
                (Str::from_static("x"), num(*x)),
                (Str::from_static("y"), num(*y)),
            ];
            (
                Update {
                    token: None,
                    data: data.into(),
                    line: vec![],
                    layout: None,
                },
                token.as_ref(),
            )
        }
        Item::Update { update, token } => {
            (update.clone(), token.as_ref().or(update.token.as_ref()))
        }
        Item::Heartbeat => return None,
    };
    let mut update = update;
    if flavour == Flavour::Node {
        // JavaScript prints -0 as 0.
        for (_, v) in update
            .data
            .iter_mut()
            .chain(update.line.iter_mut())
            .chain(update.layout.iter_mut().flatten())
        {
            positive_zero(v);
        }
    }
    update.token = None;
    Some((*token.unwrap_or(head_token), update))
}

fn positive_zero(v: &mut Value) {
    match v {
        Value::Number(f) if *f == 0.0 => *f = 0.0,
        Value::Array(vs) => vs.iter_mut().for_each(positive_zero),
        Value::Object(ms) => ms.iter_mut().for_each(|(_, v)| positive_zero(v)),
        _ => {}
    }
}

/// Values equal with numbers compared by bits.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => same_members(xs, ys),
        _ => a == b,
    }
}

fn same_members(xs: &[(Str, Value)], ys: &[(Str, Value)]) -> bool {
    xs.len() == ys.len()
        && xs
            .iter()
            .zip(ys)
            .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
}

fn same_update(a: &Update, b: &Update) -> bool {
    a.token == b.token
        && same_members(&a.data, &b.data)
        && same_members(&a.line, &b.line)
        && match (&a.layout, &b.layout) {
            (Some(x), Some(y)) => same_members(x, y),
            (None, None) => true,
            _ => false,
        }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_flavour_round_trips_through_ingest(
        flavour in flavour(),
        items in prop::collection::vec((item(), any::<u8>()), 0..12),
        head_token in token(),
        line_token in token(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // The Arduino head carries no token: every line names one.
        let items: Vec<(Item, u8)> = items
            .into_iter()
            .map(|(item, mode)| match item {
                Item::Point { x, y, token: None } if flavour == Flavour::Arduino => {
                    (Item::Point { x, y, token: Some(line_token) }, mode)
                }
                Item::Update { update, token: None } if flavour == Flavour::Arduino => {
                    (Item::Update { update, token: Some(line_token) }, mode)
                }
                other => (other, mode),
            })
            .collect();
        let input = encode_request(flavour, &items, &head_token);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        at.extend([0, input.len()]);
        at.sort_unstable();
        let pieces: Vec<&[u8]> = at.windows(2).map(|w| &input[w[0]..w[1]]).collect();

        let (events, _) = run_to_end(IngestConfig::default(), &pieces, true);
        let got: Vec<(Token, Update)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Update { token, update } => Some((*token, update.clone())),
                _ => None,
            })
            .collect();
        let want: Vec<(Token, Update)> = items.iter().filter_map(|(i, _)| expected(flavour, i, &head_token)).collect();
        prop_assert_eq!(got.len(), want.len(), "{}", text(&input));
        for (g, w) in got.iter().zip(&want) {
            prop_assert!(g.0 == w.0 && same_update(&g.1, &w.1), "got {:?}\nwant {:?}\ninput {}", g, w, text(&input));
        }
        let end = events.last();
        prop_assert!(
            matches!(end, Some(Event::End(e)) if e.status == Some(Status::OK)),
            "{:?}\n{}", end, text(&input)
        );
    }

    #[test]
    fn python_lines_are_pure_ascii(update in update(), token in prop::option::of(token())) {
        let mut out = Vec::new();
        encode_update_line(Flavour::Python, &update, token.as_ref(), &mut out);
        prop_assert!(out.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\n'), "{}", text(&out));
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn encode_value_round_trips_by_bits(value in value()) {
        let mut out = Vec::new();
        encode_value(&value, &mut out);
        let parsed = crate::json::parse(&Bytes::from(out.clone()), &Limits::default());
        prop_assert!(parsed.as_ref().is_ok_and(|p| same(p, &value)), "{:?} -> {} -> {:?}", value, text(&out), parsed);
    }
}
