//! The records the durable store keeps (docs/storage.md "Records"): a stream's metadata, one
//! accepted update, and a window snapshot. Pure functions: bytes in, values out, no I/O, so the
//! recovery of arbitrary bytes is fuzzed and unit-tested here.
//!
//! Updates and snapshots are JSON written with the protocol's own RFC 8785 encoder and read
//! back with its own parser, so every value round-trips to the same bits and prints the same
//! bytes to viewers after a restart. Decoding never panics: a record that is not what the
//! encoder writes is `None`, and the caller keeps the valid prefix (DC6).

use bytes::Bytes;
use plotstream_proto::canonical::{write_jcs, write_jcs_string};
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
}

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

/// Limits for reading records back: records are the server's own output (a window holds up
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

fn write_object(members: &[(Str, Value)], out: &mut Vec<u8>) {
    write_jcs(&Value::Object(members.to_vec()), out);
}

/// One accepted update: `{"d":[["x",1],["y",2]],"l":{..},"y":{..}}` (`l`: trace line, `y`:
/// layout, each only when present). Attributes stay in wire order and keep dotted names.
pub fn encode_update(update: &Update, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"d\":[");
    for (i, (attr, value)) in update.data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_jcs_string(attr.as_str(), out);
        out.push(b',');
        write_jcs(value, out);
        out.push(b']');
    }
    out.push(b']');
    if !update.line.is_empty() {
        out.extend_from_slice(b",\"l\":");
        write_object(&update.line, out);
    }
    if let Some(layout) = &update.layout {
        out.extend_from_slice(b",\"y\":");
        write_object(layout, out);
    }
    out.push(b'}');
}

/// The update `bytes` holds, with strings that own their bytes.
pub fn decode_update(bytes: &[u8]) -> Option<Update> {
    let mut value = json::parse(&Bytes::copy_from_slice(bytes), &record_limits()).ok()?;
    value.detach();
    let Value::Object(members) = value else {
        return None;
    };
    let mut update = Update::default();
    let mut seen_d = false;
    for (k, v) in members {
        match (k.as_str(), v) {
            ("d", Value::Array(pairs)) if !seen_d => {
                seen_d = true;
                for pair in pairs {
                    let Value::Array(mut kv) = pair else {
                        return None;
                    };
                    if kv.len() != 2 {
                        return None;
                    }
                    let value = kv.pop()?;
                    let Some(Value::Str(attr)) = kv.pop() else {
                        return None;
                    };
                    update.data.push((attr, value));
                }
            }
            ("l", Value::Object(line)) if update.line.is_empty() => update.line = line,
            ("y", Value::Object(layout)) if update.layout.is_none() => {
                update.layout = Some(layout);
            }
            _ => return None,
        }
    }
    seen_d.then_some(update)
}

/// A window: `{"s":last_seq,"w":[["x",[[seq,n,step],..],[v,..]],..],"l":{..},"y":{..}}`.
/// Each attribute's seqs are runs `[first, count, step]` (step 1 for appended points, 0 for an
/// array that replaced the attribute), so they cost a few bytes per run, not per point.
pub fn encode_snapshot<'a>(
    last_seq: u64,
    attrs: impl Iterator<Item = (&'a str, Vec<(u64, &'a Value)>)>,
    layout: &[(Str, Value)],
    line: &[(Str, Value)],
    out: &mut Vec<u8>,
) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(b"{\"s\":");
    out.extend_from_slice(buf.format(last_seq).as_bytes());
    out.extend_from_slice(b",\"w\":[");
    for (i, (attr, values)) in attrs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_jcs_string(attr, out);
        out.extend_from_slice(b",[");
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (seq, _) in &values {
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
        for (j, (first, n, step)) in runs.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'[');
            out.extend_from_slice(buf.format(*first).as_bytes());
            out.push(b',');
            out.extend_from_slice(buf.format(*n).as_bytes());
            out.push(b',');
            out.extend_from_slice(buf.format(*step).as_bytes());
            out.push(b']');
        }
        out.extend_from_slice(b"],[");
        for (j, (_, v)) in values.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_jcs(v, out);
        }
        out.extend_from_slice(b"]]");
    }
    out.extend_from_slice(b"],\"l\":");
    write_object(line, out);
    out.extend_from_slice(b",\"y\":");
    write_object(layout, out);
    out.push(b'}');
}

fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // checked: whole, in range
        Value::Number(f) if f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 => {
            Some(f as u64)
        }
        _ => None,
    }
}

/// The window `bytes` holds, with strings that own their bytes; `None` unless it is exactly
/// what [`encode_snapshot`] writes (seq runs that cover the values, in order, none past `s`).
pub fn decode_snapshot(bytes: &[u8]) -> Option<WindowState> {
    let mut value = json::parse(&Bytes::copy_from_slice(bytes), &record_limits()).ok()?;
    value.detach();
    let Value::Object(members) = value else {
        return None;
    };
    let mut state = WindowState::default();
    let (mut s, mut w) = (None, None);
    for (k, v) in members {
        match (k.as_str(), v) {
            ("s", v) => s = Some(as_u64(&v)?),
            ("w", Value::Array(a)) => w = Some(a),
            ("l", Value::Object(o)) => state.line = o,
            ("y", Value::Object(o)) => state.layout = o,
            _ => return None,
        }
    }
    state.last_seq = s?;
    for attr in w? {
        let Value::Array(parts) = attr else {
            return None;
        };
        let [Value::Str(name), Value::Array(runs), Value::Array(values)] =
            <[Value; 3]>::try_from(parts).ok()?
        else {
            return None;
        };
        let mut seqs = Vec::with_capacity(values.len());
        for run in runs {
            let Value::Array(r) = run else {
                return None;
            };
            let [first, n, step] = <[Value; 3]>::try_from(r).ok()?;
            let (first, n, step) = (as_u64(&first)?, as_u64(&n)?, as_u64(&step)?);
            if step > 1 || n == 0 || seqs.len() as u64 + n > values.len() as u64 {
                return None;
            }
            let last = first.checked_add((n - 1).checked_mul(step)?)?;
            if last > state.last_seq || seqs.last().is_some_and(|&p| p > first) {
                return None;
            }
            seqs.extend((0..n).map(|i| first + i * step));
        }
        if seqs.len() != values.len() {
            return None;
        }
        state.attrs.push((name.as_str().to_owned(), seqs, values));
    }
    Some(state)
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
        encode_update(&update(r#"{"x":1,"y":2}"#), &mut out);
        for cut in 0..out.len() {
            assert!(decode_update(&out[..cut]).is_none(), "prefix {cut}");
        }
        for bad in [
            &br#"{"d":[["x"]]}"#[..],
            br#"{"d":[[1,2]]}"#,
            br#"{"d":[],"q":1}"#,
            br#"{"s":5,"w":[["x",[[1,3,1]],[1,2]]],"l":{},"y":{}}"#,
            br#"{"s":2,"w":[["x",[[1,3,1]],[1,2,3]]],"l":{},"y":{}}"#,
            br#"{"s":9,"w":[["x",[[5,1,1],[1,1,1]],[1,2]]],"l":{},"y":{}}"#,
            br#"{"s":9,"w":[["x",[[1,2,2]],[1,2]]],"l":{},"y":{}}"#,
            br#"{"s":-1,"w":[],"l":{},"y":{}}"#,
        ] {
            assert!(
                decode_update(bad).is_none() && decode_snapshot(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn meta_round_trips() {
        let m = StreamMeta {
            gen: 7,
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
    }
}
