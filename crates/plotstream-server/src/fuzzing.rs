//! Property bodies for the server's parsers of peer and operator input, shared by cargo-fuzz
//! targets (one line each, in `fuzz/`) and proptest, so stable `cargo test` checks the same
//! properties (STYLE.md convention 8, rustls's shape; `plotstream_proto::fuzzing` for the
//! protocol).
//!
//! Each `check_*` takes arbitrary bytes, never panics on them, and panics (failing the fuzzer
//! or the test) only when a property is broken.

use std::collections::HashSet;

use serde_json::Value as Json;

use crate::files::Plot;
use crate::rest::auth::basic_of;
use crate::rest::form::{parse_json_lenient, split_form, url_decode, FORM_KEYS};
use crate::rest::{grid_from, plot_from, valid_path};
use crate::users::{self, valid_username, MAX_TOKENS_PER_USER};

/// The users file (`users::parse`): never panics; every accepted record has a valid name and
/// at most L49 stream ids, each a valid token; names are unique and no stream id appears twice
/// (in one record or two); the file as `user` commands write it back parses to the same
/// records; a refusal names a line of the input (or 0 for a conflict between two lines).
pub fn check_users(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match users::parse(&text) {
        Ok(records) => {
            let mut names = HashSet::new();
            let mut ids = HashSet::new();
            for r in &records {
                assert!(valid_username(&r.username), "{:?}", r.username);
                assert!(names.insert(&r.username), "{:?} twice", r.username);
                assert!(r.stream_ids.len() <= MAX_TOKENS_PER_USER);
                for t in &r.stream_ids {
                    assert!(
                        plotstream_proto::Token::parse(t.as_bytes()).is_some(),
                        "{t:?}"
                    );
                    assert!(ids.insert(t), "stream id {t:?} twice");
                }
            }
            assert_eq!(users::parse(&users::render(&records)), Ok(records));
        }
        Err((line, why)) => {
            assert!(line <= text.lines().count(), "line {line}: {why}");
            assert!(!why.is_empty());
        }
    }
}

/// `/v2/plots` and `/v2/grids` bodies and the `Basic` credentials of REST calls (docs/protocol.md
/// §7): never panics; an accepted plot keeps each trace as JSON the server reads (no number out
/// of range) and its layout as JSON text, holds no more than was sent, names only valid stream
/// tokens, and reads back unchanged from the record the file registry stores; an accepted grid
/// keeps each column as JSON text, in `order`; an accepted path is valid; `user:key` from the input,
/// base64-encoded by a plain encoder, reads back as sent.
pub fn check_rest(data: &[u8]) {
    // JSON text (any number, as browsers and Python read it), and what the server reads.
    let json = |text: &str| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    let readable = |text: &str| serde_json::from_str::<Json>(text).is_ok();
    if let Ok((plot, path)) = plot_from(data) {
        assert!(plot.traces.iter().all(|t| readable(t.get())));
        assert!(json(plot.layout.get()), "{}", plot.layout.get());
        // An absent layout is stored as `{}`.
        assert!(plot.n_bytes() <= data.len() + 2);
        for token in plot.tokens() {
            assert!(plotstream_proto::Token::parse(token.as_bytes()).is_some());
        }
        assert!(path.as_deref().is_none_or(valid_path), "{path:?}");
        let record = serde_json::to_vec(&plot).unwrap_or_else(|e| panic!("{e}"));
        let back: Plot = serde_json::from_slice(&record).unwrap_or_else(|e| panic!("{e}"));
        let texts = |p: &Plot| -> Vec<String> {
            p.traces
                .iter()
                .chain([&p.layout])
                .map(|t| t.get().to_owned())
                .collect()
        };
        assert_eq!(texts(&back), texts(&plot));
        assert_eq!(
            (back.share_key, back.world_readable),
            (plot.share_key, plot.world_readable)
        );
    }
    if let Ok((cols, path, _)) = grid_from(data) {
        assert!(cols.iter().all(|(_, c)| json(c.get())));
        assert!(cols.iter().map(|(_, c)| c.get().len()).sum::<usize>() <= data.len());
        assert!(path.as_deref().is_none_or(valid_path), "{path:?}");
    }
    let _ = basic_of(data);
    if let Some((user, key)) = std::str::from_utf8(data)
        .ok()
        .and_then(|t| t.split_once(':'))
    {
        let field = format!("Basic {}", base64(data));
        assert_eq!(
            basic_of(field.as_bytes()),
            Some((user.to_owned(), key.to_owned()))
        );
    }
}

/// Standard base64 with padding, the plain way (the reference for `check_rest`).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let mut n = [0u8; 3];
        n[..group.len()].copy_from_slice(group);
        let v = u32::from(n[0]) << 16 | u32::from(n[1]) << 8 | u32::from(n[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ABC[(v >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `/clientresp` form bodies (`split_form`): never panics; every field after the first has a
/// known key, its `key=value` stands in the body, and no value ends in CR or LF. Fields built
/// from the input, one per line, with the known keys in turn, come back as they were sent
/// unless a value itself holds `&` and a known key (the documented ambiguity of raw values).
pub fn check_form(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let fields = split_form(&text);
    for (i, (k, v)) in fields.iter().enumerate() {
        assert!(!k.contains('='), "{k:?}");
        assert!(i == 0 || FORM_KEYS.contains(&&*format!("{k}=")), "{k:?}");
        assert!(text.contains(&format!("{k}={v}")), "{k:?}={v:?}");
        assert!(!v.ends_with(['\r', '\n']), "{v:?}");
    }
    assert!(fields.len() <= 1 + text.matches('&').count());

    let sent: Vec<(&str, &str)> = text
        .split('\n')
        .zip(FORM_KEYS.iter().cycle())
        .map(|(v, k)| (&k[..k.len() - 1], v))
        .collect();
    let ambiguous = sent
        .iter()
        .any(|(_, v)| FORM_KEYS.iter().any(|k| v.contains(&format!("&{k}"))));
    if !ambiguous {
        let body = sent
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let expected: Vec<(&str, String)> = sent
            .iter()
            .map(|(k, v)| (*k, v.trim_end_matches(['\r', '\n']).to_owned()))
            .collect();
        assert_eq!(split_form(&body), expected, "{body:?}");
    }
}

/// Form values (`url_decode`, `parse_json_lenient`): `url_decode` is `+` → space and `%XX` (two
/// hex digits) → that byte, everything else as sent, and undoes form encoding; a JSON value
/// comes back from `parse_json_lenient` as sent and form-encoded (legacy Python), and whatever
/// it accepts is the JSON of the text or of its decoding.
pub fn check_form_value(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    assert_eq!(url_decode(&text), reference_url_decode(&text), "{text:?}");
    assert_eq!(url_decode(&form_encode(&text)), text);
    if let Ok(json) = serde_json::from_str::<Json>(&text) {
        assert_eq!(parse_json_lenient(&text).as_ref(), Some(&json));
        assert_eq!(parse_json_lenient(&form_encode(&text)), Some(json));
    } else if let Some(json) = parse_json_lenient(&text) {
        assert_eq!(
            serde_json::from_str::<Json>(&url_decode(&text)).ok(),
            Some(json)
        );
    }
}

/// WHATWG `application/x-www-form-urlencoded` decoding of one value, written plainly.
fn reference_url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form encoding as Python's `urllib.parse.quote_plus`: unreserved bytes as they are, space as
/// `+`, every other byte `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The durable store's records and recovery from arbitrary bytes on disk (docs/storage.md
/// DC6): decoding never panics; whatever decodes re-encodes to bytes that decode to the same
/// thing; a snapshot's seqs cover its values, in order, none past its last seq; a batch's seqs
/// end at its key; and `Store::recover` over records cut from the input never panics, keeps at
/// most one stream per input stream and windows within maxpoints.
pub fn check_records(data: &[u8]) {
    use crate::records::{
        decode_batch, decode_line, decode_snapshot, decode_update, encode_snapshot, encode_update,
        put_line_history,
    };
    if let Some(u) = decode_update(data) {
        let mut again = Vec::new();
        encode_update(&u, &mut again);
        assert_eq!(decode_update(&again).as_ref(), Some(&u));
    }
    // A journaled line: an update record, or one with its history (a plain update is one).
    if let Some((u, history)) = decode_line(data) {
        let mut again = Vec::new();
        encode_update(&u, &mut again);
        assert_eq!(history.is_none(), decode_update(data).is_some());
        if let Some(h) = history {
            put_line_history(h, &mut again);
        }
        assert_eq!(decode_line(&again), Some((u, history)));
    }
    if let Some(state) = decode_snapshot(data) {
        for (_, seqs, values) in &state.attrs {
            assert_eq!(seqs.len(), values.len());
            assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
            assert!(seqs.iter().all(|&seq| seq <= state.last_seq));
        }
        let mut again = Vec::new();
        encode_snapshot(
            state.last_seq,
            state.attrs.iter().map(|(name, seqs, values)| {
                (
                    name.as_str(),
                    seqs.iter().copied().zip(values.iter()).collect(),
                )
            }),
            &state.layout,
            &state.line,
            &mut again,
        );
        assert_eq!(decode_snapshot(&again), Some(state));
    }
    let last = data
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_le_bytes(*b).wrapping_add(2));
    if let Some(batch) = decode_batch(last, data) {
        assert_eq!(batch.last().map(|(s, _)| *s), Some(last));
        assert!(batch.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }
    // Recovery over records cut from the input: every 4th piece a metadata record, the rest a
    // snapshot and lines.
    let pieces: Vec<&[u8]> = data.split(|b| *b == 0xfe).collect();
    let mut loaded = crate::durable::Loaded::default();
    for (i, chunk) in pieces.chunks(4).enumerate() {
        let meta = crate::records::StreamMeta {
            gen: i as u64,
            prev: Vec::new(),
            read_id: format!("r{i}"),
            epoch: "00000000".into(),
            maxpoints: chunk.first().map_or(0, |p| p.len() % 7),
            claimed_by: None,
            rejected_lines: 0,
            displaced_lines: 0,
            budget_limited: false,
        };
        loaded.streams.push(crate::durable::LoadedStream {
            token: format!("tok{i}"),
            meta: if i % 3 == 2 {
                chunk[0].to_vec()
            } else {
                meta.encode()
            },
            snapshot: chunk.get(1).map(|p| (p.len() as u64, p.to_vec())),
            lines: chunk
                .iter()
                .skip(2)
                .enumerate()
                .map(|(j, p)| {
                    (
                        chunk.get(1).map_or(0, |p| p.len() as u64) + 1 + j as u64,
                        p.to_vec(),
                    )
                })
                .collect(),
        });
    }
    let n_streams = loaded.streams.len();
    let store = crate::store::Store::new(
        crate::store::StoreConfig::default(),
        std::sync::Arc::new(crate::metrics::Metrics::default()),
    );
    let report = store.recover(loaded);
    assert!(report.streams <= n_streams);
    for s in store.list() {
        let inspected = store.inspect(&s.token, true).unwrap_or_default();
        let v: Json = serde_json::from_str(&inspected).unwrap_or(Json::Null);
        let maxpoints = v["maxpoints"].as_u64().unwrap_or(0);
        assert!(
            v["count"].as_u64().unwrap_or(u64::MAX) <= maxpoints,
            "{inspected}"
        );
    }
}

/// The viewer feeds' peer input (`sse.rs`): the query of `/api/streams/{id}/events` and
/// `/api/plots/{fid}/events` (the input's first line), the `Last-Event-ID` header an
/// EventSource resends on reconnect (the rest), and the fid the figure feed names (the first
/// line again). Never panics; `?interval=` comes out at most the configured bound (L51: 5 s by
/// default; here also 0, 1 ms, 49 ms and unbounded), whatever the query, and as a plain
/// reading of the query says; a `Last-Event-ID` that parses has a 1–16 character alphanumeric
/// epoch and a seq, stands in the header as `<epoch>:<seq>` (the seq perhaps with a `+` or
/// leading zeros), and the `id:` the server writes for them (`event_head`) parses back to the
/// same; an id the server writes for any epoch it makes (8 hex digits) and any seq parses
/// back; a fid that parses names a valid user, and its canonical `<user>:<n>` parses back.
pub fn check_sse(data: &[u8]) {
    use std::time::Duration;

    use crate::sse::{event_head, interval_of, last_event_id, DEFAULT_INTERVAL};

    let (query, last) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let query = String::from_utf8_lossy(query);

    let asked = reference_interval(&query);
    for max in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(49),
        crate::store::StoreConfig::default().viewer_interval_max,
        Duration::MAX,
    ] {
        let interval = interval_of(Some(&query), max);
        assert!(interval <= max, "{query:?}: {interval:?} over {max:?}");
        assert_eq!(
            interval,
            asked.unwrap_or(DEFAULT_INTERVAL).min(max),
            "{query:?}"
        );
        assert_eq!(interval_of(None, max), DEFAULT_INTERVAL.min(max));
    }

    let head = |id: &[u8]| plotstream_proto::head::RequestHead {
        method: "GET".to_owned(),
        target: format!("/api/streams/abc/events?{query}"),
        version: 1,
        headers: vec![
            ("Host".to_owned(), bytes::Bytes::from_static(b"h")),
            (
                "last-EVENT-id".to_owned(),
                bytes::Bytes::copy_from_slice(id),
            ),
        ],
        len: 0,
    };
    // The `id:` line of an event the server writes for (epoch, seq).
    let id_written = |epoch: &str, seq: u64| -> Vec<u8> {
        let event = event_head("update", epoch, seq);
        let line = event
            .split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"id: "))
            .map(<[u8]>::to_vec);
        line.unwrap_or_default()
    };
    if let Some((epoch, seq)) = last_event_id(&head(last)) {
        assert!((1..=16).contains(&epoch.len()), "{epoch:?}");
        assert!(
            epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{epoch:?}"
        );
        let sent = std::str::from_utf8(last).map(str::trim).unwrap_or_default();
        let (e, s) = sent.split_once(':').unwrap_or_default();
        assert_eq!(e, epoch, "{sent:?}");
        assert_eq!(s.parse::<u64>(), Ok(seq), "{sent:?}");
        assert!(
            s == seq.to_string() || s.starts_with(['+', '0']),
            "{sent:?} is not {epoch}:{seq}"
        );
        let written = id_written(&epoch, seq);
        assert_eq!(written, format!("{epoch}:{seq}").into_bytes());
        assert_eq!(last_event_id(&head(&written)), Some((epoch, seq)));
    }
    if let (Some(e), Some(s)) = (data.first_chunk::<4>(), data.last_chunk::<8>()) {
        let (epoch, seq) = (crate::text::hex(e), u64::from_le_bytes(*s));
        let written = id_written(&epoch, seq);
        assert_eq!(last_event_id(&head(&written)), Some((epoch, seq)));
    }

    if let Some((user, n)) = crate::files::split_fid(&query) {
        assert!(valid_username(user), "{query:?}");
        let canonical = format!("{user}:{n}");
        assert_eq!(crate::files::split_fid(&canonical), Some((user, n)));
        let (u, digits) = query.rsplit_once(':').unwrap_or_default();
        assert_eq!((u, digits.parse()), (user, Ok(n)), "{query:?}");
        assert!(
            *query == canonical || digits.starts_with('0'),
            "{query:?} is not {canonical:?}"
        );
    }
    if let Some((user, n)) = query.split_once('/') {
        if let Some(fid) = crate::rest::page_fid(user, n) {
            assert!(crate::files::split_fid(&fid).is_some(), "{fid:?}");
        }
    }
}

/// `?interval=MS` read plainly: the value of the first `interval` key, if it is a whole number
/// of milliseconds (an optional `+`, then decimal digits) that fits in a `u64`.
fn reference_interval(query: &str) -> Option<std::time::Duration> {
    let value = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "interval")?
        .1;
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = digits.bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some(std::time::Duration::from_millis(ms))
}

/// History (docs/history.md) from arbitrary bytes: its records as read from a store (points,
/// tier blocks, the head) decode without panicking and re-encode to what they decoded; a
/// request's query (the input's first line) parses or is refused, `max_points` within L61; and
/// points made from the input, stored through `Batch::hist_writes` as every backend stores
/// them, read back whole, and a downsampled range of them keeps at most `max` points in
/// position order, with x never decreasing when buckets are by x, the range's first and last
/// point and its highest y (and its lowest, from four points on).
pub fn check_history(data: &[u8]) {
    use crate::history::point::{decode_points, encode_points};
    use crate::history::tier::{decode_block, encode_block, TOP};
    use crate::history::{Bucketing, Builder, Head, Point, Val, View};
    if let Some(points) = decode_points(data) {
        // Compared as records, not as values: a y stored as NaN bits is NaN again, which `==`
        // on `f64` calls different (found by 30 minutes of the `history` target).
        let mut again = Vec::new();
        encode_points(points.iter(), &mut again);
        let mut twice = Vec::new();
        let decoded = decode_points(&again).unwrap_or_else(|| panic!("re-encoded points decode"));
        encode_points(decoded.iter(), &mut twice);
        assert_eq!(twice, again);
    }
    if let Some(entries) = decode_block(data) {
        // A block decodes to what it encodes to (compared as records, for NaN); the input
        // itself may be the older fixed-size encoding or spell a varint longer.
        let mut again = Vec::new();
        encode_block(&entries, &mut again);
        let decoded = decode_block(&again).unwrap_or_else(|| panic!("a re-encoded block decodes"));
        let mut twice = Vec::new();
        encode_block(&decoded, &mut twice);
        assert_eq!(twice, again);
        assert_eq!(decoded.len(), entries.len());
    }
    let _ = Head::decode(data);
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    if let Ok(r) =
        crate::history::export::Request::parse(Some(&String::from_utf8_lossy(first_line)))
    {
        assert!(r
            .max_points
            .is_none_or(|m| (1..=crate::history::export::MAX_POINTS).contains(&m)));
    }
    // Points from the input: each byte pair a y, x growing by the first byte's low bits (or
    // not a number when the byte is 0xff), a few thousand at most.
    let token: std::sync::Arc<str> = std::sync::Arc::from("fuzz");
    let repeat = usize::from(data.first().copied().unwrap_or(0) % 8) + 1;
    let mut builder = Builder::new();
    let mut batch = crate::durable::Batch::default();
    let mut x = 0.0;
    let mut ys = Vec::new();
    for (i, pair) in data
        .chunks(2)
        .cycle()
        .take(((data.len() / 2) * repeat * 16).min(5_000))
        .enumerate()
    {
        let y = if pair[0] == 0xff {
            Val::None
        } else {
            Val::Num(f64::from(i16::from_le_bytes([
                pair[0],
                *pair.get(1).unwrap_or(&0),
            ])))
        };
        x += f64::from(pair[0] & 3);
        ys.push(match y {
            Val::Num(v) => v,
            _ => f64::NAN,
        });
        let p = Point {
            seq: i as u64 + 1,
            t: i as i64,
            x: Val::Num(x),
            y,
        };
        builder.push(&p, &mut |w| batch.push_history(&token, w));
    }
    let mut mem = crate::history::mem::Mem::default();
    mem.commit(&batch);
    let Ok(view) = View::load(&mem) else {
        panic!("what the builder stored must load");
    };
    let end = ys.len() as u64;
    assert_eq!(view.end, end);
    let mut n_read = 0;
    let _ = view.points(0, end, &mut |n, _| {
        assert_eq!(n, n_read);
        n_read += 1;
        true
    });
    assert_eq!(n_read, end);
    if end == 0 {
        return;
    }
    let a = u64::from(data.get(1).copied().unwrap_or(0)) % end;
    let b = end - u64::from(data.get(2).copied().unwrap_or(0)) % (end - a);
    let max = usize::from(data.get(3).copied().unwrap_or(0)) + 1;
    let by_x = data.get(4).is_some_and(|b| b & 1 == 1);
    let bucketing = if by_x {
        let key = |n: u64| {
            let mut k = 0.0;
            let _ = view.points(n, n + 1, &mut |_, p| {
                k = p.x.key();
                false
            });
            k
        };
        Bucketing::X {
            lo: key(a),
            hi: key(b - 1),
        }
    } else {
        Bucketing::N { lo: a, hi: b }
    };
    let Ok(out) = view.downsample(a, b, max, bucketing, TOP) else {
        panic!("a stored range must downsample");
    };
    assert!(out.len() <= max, "{} > {max}", out.len());
    assert!(out.windows(2).all(|w| w[0].n < w[1].n && w[0].x <= w[1].x));
    assert!(out.iter().all(|m| (a..b).contains(&m.n)));
    let range = &ys[a as usize..b as usize];
    if let Some(hi) = range
        .iter()
        .copied()
        .filter(|y| !y.is_nan())
        .reduce(f64::max)
    {
        assert!(out.iter().any(|m| m.y == hi), "the highest y of {a}..{b}");
    }
    if max >= 4 {
        assert_eq!(out.first().map(|m| m.n), Some(a));
        assert_eq!(out.last().map(|m| m.n), Some(b - 1));
        if let Some(lo) = range
            .iter()
            .copied()
            .filter(|y| !y.is_nan())
            .reduce(f64::min)
        {
            assert!(out.iter().any(|m| m.y == lo), "the lowest y of {a}..{b}");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::users::UserRecord;

    /// 30 minutes of the `history` target: a points record whose y is NaN bits decodes and
    /// re-encodes to itself, and the property compares records, not `f64` values (NaN != NaN).
    #[test]
    fn fuzz_history_a_nan_y_round_trips() {
        let input = b"\x01bytes\x01\x03\x04\x00\x00\x01\x00\x00\x00\x00\x9e\x86\xff\xff";
        let points = crate::history::point::decode_points(input);
        assert!(points.is_some_and(|p| p
            .iter()
            .any(|p| matches!(p.y, crate::history::Val::Num(y) if y.is_nan()))));
        check_history(input);
    }

    /// Ten minutes into the `rest` target's first long run: a trace holding a number out of `f64`'s range is JSON,
    /// but the server cannot read it, so it was stored, then shown as `null` on the figure's
    /// page and its stream neither checked (a figure streams only its owner's stream ids) nor
    /// bound. Now a 400. A grid's
    /// column may hold one (the server keeps it as text; browsers and Python read it).
    #[test]
    fn fuzz_rest_a_trace_with_a_number_out_of_range_is_refused() {
        let plot = br#"{"figure":{"data":[{"x":[1,28440e0000000000555],"stream":{"token":"abcdef1234"}}]}}"#;
        let refused = plot_from(plot).err().map(|r| r.status());
        assert_eq!(refused, Some(400));
        check_rest(plot);
        let grid = br#"{"data":{"cols":{"a":{"data":[1e400]}}}}"#;
        assert!(grid_from(grid).is_ok());
        check_rest(grid);
    }

    /// A users-file line for proptest: a record with the given name and stream ids.
    fn record_line(name: &str, ids: &[String]) -> String {
        let r = UserRecord {
            username: name.to_owned(),
            key_salt: "s".to_owned(),
            key_sha256: "h".to_owned(),
            stream_ids: ids.to_vec(),
        };
        serde_json::to_string(&r).unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn users(data in proptest::collection::vec(any::<u8>(), 0..300)) { check_users(&data) }

        #[test]
        fn users_like(
            lines in proptest::collection::vec(
                ("[a-c._-]{0,3}", proptest::collection::vec("[a-c0-9_ -]{0,3}", 0..3), "[# \t]{0,2}"),
                0..5,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(name, ids, pad)| format!("{pad}{}\n", record_line(name, ids)))
                .collect();
            check_users(text.as_bytes())
        }

        #[test]
        fn form(data in proptest::collection::vec(any::<u8>(), 0..300)) { check_form(&data) }

        #[test]
        fn form_like(body in "((platform|args|kwargs|un|key|origin|x)=[a-z&=%+\r\n]{0,8}&?){0,6}") {
            check_form(body.as_bytes())
        }

        #[test]
        fn form_value(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            check_form_value(&data)
        }

        #[test]
        fn records(data in proptest::collection::vec(any::<u8>(), 0..300)) { check_records(&data) }

        #[test]
        fn history(data in proptest::collection::vec(any::<u8>(), 0..300)) { check_history(&data) }

        /// Real records with one byte changed: mostly refused, never misread into a broken one.
        #[test]
        fn records_like(
            xs in proptest::collection::vec(-1e6f64..1e6, 1..20),
            text in "[a-z]{0,5}",
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let values: Vec<plotstream_proto::Value> = xs
                .iter()
                .map(|x| plotstream_proto::Value::Number(*x))
                .chain([plotstream_proto::Value::Str(text.as_str().into())])
                .collect();
            let mut snap = Vec::new();
            crate::records::encode_snapshot(
                values.len() as u64,
                [("x", values.iter().enumerate().map(|(i, v)| (i as u64 + 1, v)).collect())].into_iter(),
                &[],
                &[],
                &mut snap,
            );
            let i = at % snap.len();
            snap[i] = byte;
            check_records(&snap);
        }

        #[test]
        fn sse(data in proptest::collection::vec(any::<u8>(), 0..200)) { check_sse(&data) }

        /// Queries and ids of the shapes viewers send, and near misses.
        #[test]
        fn sse_like(
            query in "((interval|share_key|x)=[+0-9a-z]{0,22}&?){0,3}",
            id in "[ \t]{0,2}[0-9a-fA-Z+-]{0,18}(:[+0-9]{0,22})?[ \t]{0,2}",
        ) {
            check_sse(format!("{query}\n{id}").as_bytes())
        }

        #[test]
        fn form_value_like(v in "[\\[\\]{}\":,0-9a-f %+\\-]{0,40}") { check_form_value(v.as_bytes()) }

        #[test]
        fn rest(data in proptest::collection::vec(any::<u8>(), 0..200)) { check_rest(&data) }

        /// Plot and grid bodies of the shapes chart_studio sends, and credentials.
        #[test]
        fn rest_like(
            token in "[a-z0-9]{8,12}",
            name in "[a-z/ \u{1}]{0,6}",
            parent in proptest::option::of("[a-z/]{0,4}"),
            order in proptest::option::of(0u64..3),
            layout in proptest::option::of("\\{\"title\": \"[a-z]{0,3}\"\\}"),
            credentials in "[a-z:]{0,8}",
        ) {
            let parent = parent.map_or(String::new(), |p| format!(r#","parent_path":"{p}""#));
            let layout = layout.map_or(String::new(), |l| format!(r#","layout":{l}"#));
            let order = order.map_or(String::new(), |o| format!(r#","order":{o}"#));
            let plot = format!(
                r#"{{"figure":{{"data":[{{"x":[1,2],"stream":{{"token":"{token}","maxpoints":5}}}}]{layout}}},"filename":"{name}"{parent},"world_readable":false}}"#
            );
            let grid = format!(
                r#"{{"data":{{"cols":{{"b":{{"data":[1, 2]{order}}},"a":{{"data":["x"],"order":1}}}}}},"filename":"{name}"{parent}}}"#
            );
            // Accepted unless the name holds a control character (JSON refuses a raw one).
            let fine = !name.contains('\u{1}');
            prop_assert_eq!(plot_from(plot.as_bytes()).map(|(p, _)| p.tokens()).ok(), fine.then(|| vec![token.clone()]));
            prop_assert_eq!(grid_from(grid.as_bytes()).is_ok(), fine);
            check_rest(plot.as_bytes());
            check_rest(grid.as_bytes());
            check_rest(credentials.as_bytes());
        }
    }
}
