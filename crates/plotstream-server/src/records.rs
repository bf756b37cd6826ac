//! The records the durable store keeps (docs/storage.md "Records"): a stream's metadata, one
//! accepted update, and a window snapshot. Pure functions: bytes in, values out, no I/O, so the
//! recovery of arbitrary bytes is fuzzed and unit-tested here.
//!
//! Updates and snapshots are binary: numbers as their `f64` bits, strings as UTF-8, arrays,
//! objects and patches as RFC 8785 text read back with the protocol's own parser, so every value
//! round-trips to the same bits and prints the same bytes to viewers after a restart. Decoding never panics: a record that is not what the
//! encoder writes is `None`, and the caller keeps the valid prefix (DC6).

use bytes::Bytes;
use plotstream_proto::canonical::write_jcs;
use plotstream_proto::json::{self, Str};
use plotstream_proto::{Limits, Update, Value};
use serde::{Deserialize, Serialize};

/// What a stream keeps beside its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The generation its lines and snapshot are stored under (a new one per epoch).
    pub gen: u64,
    /// The read id of its pages and feeds.
    pub read_id: String,
    /// The epoch viewers know it by.
    pub epoch: String,
    /// Its window length.
    pub maxpoints: usize,
    /// The user whose figure claimed it.
    pub claimed_by: Option<String>,
    /// Lines skipped under `--lenient-lines`.
    pub rejected_lines: u64,
    /// Lines of displaced writers.
    pub displaced_lines: u64,
    /// L25 limited it once.
    pub budget_limited: bool,
    /// On several nodes: the generations of its epoch before `gen`, oldest first (at most
    /// [`PREV_GENS`]; docs/storage.md "Several nodes"). A writer that moved to another node
    /// ends a generation; a follower still in one of these reads the rest of each in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prev: Vec<u64>,
}

/// How many earlier generations of an epoch [`StreamMeta::prev`] names: a writer that moves
/// more often than this between two of a follower's checks (every 100 ms) resets its viewers.
pub const PREV_GENS: usize = 16;

impl StreamMeta {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record, if `bytes` is one.
    pub fn decode(bytes: &[u8]) -> Option<StreamMeta> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A window as a snapshot record holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowState {
    /// The seq of the newest line it includes.
    pub last_seq: u64,
    /// Per attribute, its values' seqs and the values, oldest first (of equal length).
    pub attrs: Vec<(String, Vec<u64>, Vec<Value>)>,
    /// The merged layout.
    pub layout: Vec<(Str, Value)>,
    /// The merged trace `line`.
    pub line: Vec<(Str, Value)>,
}

/// Limits for reading JSON values back: records are the server's own output (a window holds up
/// to L24's 4 MiB), so only the depth bound matters; values nest at most L19 deep in a line.
fn record_limits() -> Limits {
    Limits {
        line_bytes: usize::MAX,
        json_depth: 40,
        json_string: usize::MAX,
        json_members: usize::MAX,
        json_array: usize::MAX,
        ..Limits::default()
    }
}

// Value tags. Numbers are stored as their f64 bits: exact, 9 bytes, and no float formatting on
// the ingest path (formatting was most of the store's cost per line). Arrays and objects are
// rare in windows and patches: they are stored as RFC 8785 text and read back with the
// protocol's own parser.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const NUMBER: u8 = 3;
const STRING: u8 = 4;
const JSON: u8 = 5;

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        #[allow(clippy::cast_possible_truncation)] // the low 7 bits
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)] // < 0x80
    out.push(n as u8);
}

fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    put_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(f) => {
            out.push(NUMBER);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            out.push(STRING);
            put_bytes(s.as_bytes(), out);
        }
        v => {
            out.push(JSON);
            let mut text = Vec::new();
            write_jcs(v, &mut text);
            put_bytes(&text, out);
        }
    }
}

fn put_object(members: &[(Str, Value)], out: &mut Vec<u8>) {
    let mut text = Vec::new();
    write_jcs(&Value::Object(members.to_vec()), &mut text);
    put_bytes(&text, out);
}

/// Reads what the `put_*` functions wrote; every read is checked, never panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        let (b, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(b)
    }

    fn u64_le(&mut self) -> Option<u64> {
        let (b, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*b))
    }

    fn str(&mut self) -> Option<Str> {
        Some(Str::from(std::str::from_utf8(self.bytes()?).ok()?))
    }

    fn json(&mut self) -> Option<Value> {
        let mut v = json::parse(&Bytes::copy_from_slice(self.bytes()?), &record_limits()).ok()?;
        v.detach();
        Some(v)
    }

    fn value(&mut self) -> Option<Value> {
        Some(match self.byte()? {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            NUMBER => {
                let f = f64::from_bits(self.u64_le()?);
                // The protocol holds finite numbers only (P11).
                if !f.is_finite() {
                    return None;
                }
                Value::Number(f)
            }
            STRING => Value::Str(self.str()?),
            JSON => match self.json()? {
                v @ (Value::Array(_) | Value::Object(_)) => v,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn object(&mut self) -> Option<Vec<(Str, Value)>> {
        match self.json()? {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// One accepted update: the attributes in wire order (dotted names kept) as `varint n`, then
/// per attribute its name and value; then a flags byte (1: a trace `line` patch follows, 2: a
/// layout patch follows) and the patches as RFC 8785 text.
pub fn encode_update(update: &Update, out: &mut Vec<u8>) {
    put_varint(update.data.len() as u64, out);
    for (attr, value) in &update.data {
        put_bytes(attr.as_bytes(), out);
        put_value(value, out);
    }
    let flags = u8::from(!update.line.is_empty()) | (u8::from(update.layout.is_some()) << 1);
    out.push(flags);
    if !update.line.is_empty() {
        put_object(&update.line, out);
    }
    if let Some(layout) = &update.layout {
        put_object(layout, out);
    }
}

/// The update `bytes` holds, with strings that own their bytes; `None` unless the bytes are
/// exactly what [`encode_update`] writes.
pub fn decode_update(bytes: &[u8]) -> Option<Update> {
    let mut r = Reader(bytes);
    let update = read_update(&mut r)?;
    r.end()?;
    Some(update)
}

/// Where a journaled line's points go in its stream's history and when they came: until they
/// are stored as a part or in a sealed chunk, the line journal is what holds them
/// (docs/history.md "Records").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineHistory {
    /// The position of the line's first point.
    pub n: u64,
    /// The receive time of its points (ms since the Unix epoch).
    pub t: i64,
}

/// The marker of a [`LineHistory`] after a line's update record.
const LINE_HISTORY: u8 = b'H';

/// A journaled line: its update record ([`encode_update`]), then, when the stream keeps
/// history and the line has points, `LINE_HISTORY` (`H`), `varint n` and `t` (8 bytes,
/// little-endian).
pub fn put_line_history(h: LineHistory, out: &mut Vec<u8>) {
    out.push(LINE_HISTORY);
    put_varint(h.n, out);
    out.extend_from_slice(&h.t.to_le_bytes());
}

/// A journaled line's update and history ([`put_line_history`]); `None` unless the bytes are
/// exactly what those write.
pub fn decode_line(bytes: &[u8]) -> Option<(Update, Option<LineHistory>)> {
    let mut r = Reader(bytes);
    let update = read_update(&mut r)?;
    if r.end().is_some() {
        return Some((update, None));
    }
    if r.byte()? != LINE_HISTORY {
        return None;
    }
    let n = r.varint()?;
    let t = r.u64_le()? as i64;
    r.end()?;
    Some((update, Some(LineHistory { n, t })))
}

fn read_update(r: &mut Reader<'_>) -> Option<Update> {
    let mut update = Update::default();
    let n = r.len()?;
    for _ in 0..n {
        let attr = r.str()?;
        let value = r.value()?;
        update.data.push((attr, value));
    }
    let flags = r.byte()?;
    if flags > 3 {
        return None;
    }
    if flags & 1 != 0 {
        update.line = r.object()?;
        if update.line.is_empty() {
            return None;
        }
    }
    if flags & 2 != 0 {
        update.layout = Some(r.object()?);
    }
    Some(update)
}

/// A window: the last seq (8 bytes), then per attribute its name, its seqs as runs `(first,
/// count, step)` (step 1 for appended points, 0 for an array that replaced the attribute), so
/// they cost a few bytes per run, not per point, and its values; then the layout and the trace
/// `line` as RFC 8785 text.
pub fn encode_snapshot<'a>(
    last_seq: u64,
    attrs: impl Iterator<Item = (&'a str, Vec<(u64, &'a Value)>)>,
    layout: &[(Str, Value)],
    line: &[(Str, Value)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&last_seq.to_le_bytes());
    let attrs: Vec<_> = attrs.collect();
    put_varint(attrs.len() as u64, out);
    for (attr, values) in &attrs {
        put_bytes(attr.as_bytes(), out);
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (seq, _) in values {
            match runs.last_mut() {
                Some((first, n, step)) if *n == 1 && (*seq == *first || *seq == *first + 1) => {
                    *step = *seq - *first;
                    *n = 2;
                }
                Some((first, n, step)) if *n >= 2 && *seq == *first + *n * *step => {
                    *n += 1;
                }
                _ => runs.push((*seq, 1, 1)),
            }
        }
        put_varint(runs.len() as u64, out);
        for (first, n, step) in runs {
            put_varint(first, out);
            put_varint(n, out);
            put_varint(step, out);
        }
        for (_, v) in values {
            put_value(v, out);
        }
    }
    put_object(layout, out);
    put_object(line, out);
}

/// The window `bytes` holds, with strings that own their bytes; `None` unless it is exactly
/// what [`encode_snapshot`] writes (seq runs that cover the values, in order, none past the
/// last seq).
pub fn decode_snapshot(bytes: &[u8]) -> Option<WindowState> {
    let mut r = Reader(bytes);
    let mut state = WindowState {
        last_seq: r.u64_le()?,
        ..WindowState::default()
    };
    let n_attrs = r.len()?;
    for _ in 0..n_attrs {
        let name = r.str()?;
        let n_runs = r.len()?;
        let mut seqs: Vec<u64> = Vec::new();
        for _ in 0..n_runs {
            let (first, n, step) = (r.varint()?, r.varint()?, r.varint()?);
            // Each value takes at least one byte: a run cannot claim more than what is left.
            if step > 1 || n == 0 || n > r.0.len() as u64 {
                return None;
            }
            let last = first.checked_add((n - 1).checked_mul(step)?)?;
            if last > state.last_seq || seqs.last().is_some_and(|&p| p > first) {
                return None;
            }
            seqs.extend((0..n).map(|i| first + i * step));
        }
        let mut values = Vec::with_capacity(seqs.len());
        for _ in 0..seqs.len() {
            values.push(r.value()?);
        }
        state.attrs.push((name.as_str().to_owned(), seqs, values));
    }
    state.layout = r.object()?;
    state.line = r.object()?;
    r.end()?;
    Some(state)
}

/// A stream's lines of one commit as one stored value: the first seq (8 bytes, little-endian),
/// then each update record as a 4-byte little-endian length and its bytes. The key holds the
/// last seq, so a batch is self-checking.
pub fn encode_batch<'a>(
    first_seq: u64,
    records: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&first_seq.to_le_bytes());
    encode_batch_more(records, out);
}

/// Appends `records` to a batch [`encode_batch`] began in `out` (their seqs follow its last).
pub fn encode_batch_more<'a>(records: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for r in records {
        let n = u32::try_from(r.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&r[..n as usize]);
    }
}

/// The `(seq, update record)`s of a batch stored under `last_seq`; `None` unless the bytes
/// are exactly what [`encode_batch`] writes and the seqs end at `last_seq`.
pub fn decode_batch(last_seq: u64, bytes: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let (first, mut rest) = bytes.split_first_chunk::<8>()?;
    let mut seq = u64::from_le_bytes(*first);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (n, tail) = rest.split_first_chunk::<4>()?;
        let n = usize::try_from(u32::from_le_bytes(*n)).ok()?;
        if tail.len() < n {
            return None;
        }
        out.push((seq, &tail[..n]));
        rest = &tail[n..];
        seq = seq.checked_add(1)?;
    }
    (!out.is_empty() && seq - 1 == last_seq).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotstream_proto::update::parse_update;

    fn update(line: &str) -> Update {
        parse_update(&Bytes::copy_from_slice(line.as_bytes()), &Limits::default())
            .unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    #[test]
    fn updates_round_trip_with_dotted_names_patches_and_odd_values() {
        for line in [
            r#"{"x":1,"y":2.5}"#,
            r#"{"x":"2026-12-06 10:00:00.123","y":-0.0,"text":"é\u0000\"x"}"#,
            r#"{"x":[1,2,3],"y":[4,5,6],"marker":{"color":"red","size":3}}"#,
            r#"{"y":1e300,"line":{"color":"blue"},"layout":{"title":{"text":"t"}}}"#,
            r#"{}"#,
        ] {
            let u = update(line);
            let mut out = Vec::new();
            encode_update(&u, &mut out);
            let back = decode_update(&out).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(back, u, "{line} -> {}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn snapshots_round_trip_with_runs_of_appends_and_replaces() {
        let v = |n: f64| Value::Number(n);
        let x: Vec<(u64, Value)> = vec![
            (3, v(1.0)),
            (3, v(2.0)),
            (4, v(3.0)),
            (5, v(4.0)),
            (9, v(5.0)),
        ];
        let y: Vec<(u64, Value)> = (10..20).map(|s| (s, Value::Str(Str::from("s")))).collect();
        let z: Vec<(u64, Value)> = vec![(0, v(1.0)), (0, v(2.0))];
        let attrs = [("x", &x), ("y", &y), ("z", &z)];
        let mut out = Vec::new();
        encode_snapshot(
            20,
            attrs
                .iter()
                .map(|(k, vals)| (*k, vals.iter().map(|(s, v)| (*s, v)).collect())),
            &[(Str::from("title"), Value::Str(Str::from("t")))],
            &[],
            &mut out,
        );
        let back =
            decode_snapshot(&out).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out)));
        assert_eq!(back.last_seq, 20);
        let pairs = |i: usize| -> (String, Vec<(u64, Value)>) {
            let (name, seqs, values) = back.attrs[i].clone();
            (name, seqs.into_iter().zip(values).collect())
        };
        assert_eq!(pairs(0), ("x".to_owned(), x));
        assert_eq!(pairs(1), ("y".to_owned(), y));
        assert_eq!(pairs(2), ("z".to_owned(), z));
        assert_eq!(back.layout.len(), 1);
    }

    #[test]
    fn damaged_records_are_refused_not_misread() {
        let mut out = Vec::new();
        encode_update(&update(r#"{"x":1,"y":"two","layout":{"a":1}}"#), &mut out);
        for cut in 0..out.len() {
            assert!(decode_update(&out[..cut]).is_none(), "prefix {cut}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(decode_update(&longer).is_none());
        let mut snap = Vec::new();
        let x = [(1, Value::Number(1.0)), (2, Value::Str(Str::from("s")))];
        encode_snapshot(
            2,
            [("x", x.iter().map(|(s, v)| (*s, v)).collect())].into_iter(),
            &[],
            &[],
            &mut snap,
        );
        assert!(decode_snapshot(&snap).is_some());
        for cut in 0..snap.len() {
            assert!(decode_snapshot(&snap[..cut]).is_none(), "prefix {cut}");
        }
        // Hand-made damage: a NaN, an unknown tag, a run past the last seq, runs out of order,
        // a run longer than the bytes left, invalid UTF-8 in a name.
        let nan = [
            &[1u8, 1, b'x', NUMBER][..],
            &f64::NAN.to_bits().to_le_bytes(),
            &[0],
        ]
        .concat();
        assert!(decode_update(&nan).is_none());
        assert!(decode_update(&[1, 1, b'x', 9, 0]).is_none());
        assert!(decode_update(&[1, 1, 0xff, NULL, 0]).is_none());
        let snap_with = |runs: &[u8], values: &[u8]| {
            [
                &5u64.to_le_bytes()[..],
                &[1, 1, b'x'],
                runs,
                values,
                &[2, b'{', b'}', 2, b'{', b'}'],
            ]
            .concat()
        };
        assert!(decode_snapshot(&snap_with(&[1, 1, 2, 1], &[NULL, NULL])).is_some());
        assert!(
            decode_snapshot(&snap_with(&[1, 5, 2, 1], &[NULL, NULL])).is_none(),
            "past last seq"
        );
        assert!(
            decode_snapshot(&snap_with(&[2, 3, 1, 1, 1, 1, 1], &[NULL, NULL])).is_none(),
            "order"
        );
        assert!(
            decode_snapshot(&snap_with(&[1, 1, 100, 1], &[NULL, NULL])).is_none(),
            "too long"
        );
        assert!(
            decode_snapshot(&snap_with(&[1, 1, 2, 2], &[NULL, NULL])).is_none(),
            "step 2"
        );
    }

    #[test]
    fn batches_round_trip_and_check_their_last_seq() {
        let mut out = Vec::new();
        encode_batch(7, [&b"a"[..], b"", b"ccc"].into_iter(), &mut out);
        assert_eq!(
            decode_batch(9, &out),
            Some(vec![(7, &b"a"[..]), (8, &b""[..]), (9, &b"ccc"[..])])
        );
        assert_eq!(decode_batch(10, &out), None);
        for cut in 0..out.len() {
            assert!(decode_batch(9, &out[..cut]).is_none(), "prefix {cut}");
        }
        assert_eq!(decode_batch(u64::MAX, &[0xff; 12]), None);
    }

    #[test]
    fn meta_round_trips() {
        let m = StreamMeta {
            gen: 7,
            prev: vec![5, 6],
            read_id: "abc".into(),
            epoch: "0a0b0c0d".into(),
            maxpoints: 500,
            claimed_by: Some("alice".into()),
            rejected_lines: 1,
            displaced_lines: 2,
            budget_limited: false,
        };
        assert_eq!(StreamMeta::decode(&m.encode()), Some(m));
        assert_eq!(StreamMeta::decode(b"{"), None);
        // A record stored before `prev` existed reads back without earlier generations.
        let older = br#"{"gen":7,"read_id":"abc","epoch":"e","maxpoints":500,"claimed_by":null,"rejected_lines":0,"displaced_lines":0,"budget_limited":false}"#;
        assert_eq!(StreamMeta::decode(older).map(|m| m.prev), Some(vec![]));
    }
}
