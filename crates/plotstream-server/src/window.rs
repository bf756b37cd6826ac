//! A stream's window (docs/reliability.md §4.1): per attribute, the newest `maxpoints` values,
//! each with the seq of the line that added it and its RFC 8785 size, and the byte budget
//! (L24/L25) that evicts the oldest index. A plain value: no locks, channels, viewers or I/O,
//! so every rule is unit-tested here; `store::Stream` owns one and adds epochs, writers and
//! fan-out around it.

use std::collections::{BTreeMap, VecDeque};

use plotstream_proto::canonical::{write_jcs, write_jcs_object, write_jcs_string};
use plotstream_proto::{Maxpoints, Update, Value};

/// The window.
///
/// Invariants: every attribute holds at most `maxpoints` values; `bytes` is the sum of the
/// held values' sizes; values own their strings (`Value::detached`), so a window never pins a
/// connection's read buffer.
#[derive(Debug, Default)]
pub struct Window {
    maxpoints: usize,
    attrs: BTreeMap<String, VecDeque<(u64, Value, usize)>>,
    bytes: usize,
    /// Reused to size values (no allocation per value).
    scratch: Vec<u8>,
    /// Reused by [`Window::apply`] for a line's sizes.
    sizes: Vec<usize>,
}

impl Window {
    /// An empty window of `maxpoints`.
    pub fn new(maxpoints: Maxpoints) -> Window {
        Window {
            maxpoints: maxpoints.get(),
            ..Window::default()
        }
    }

    /// Values kept per attribute.
    pub fn maxpoints(&self) -> usize {
        self.maxpoints
    }

    /// Sets `maxpoints`, dropping the oldest values past it.
    pub fn set_maxpoints(&mut self, maxpoints: Maxpoints) {
        let maxpoints = maxpoints.get();
        self.maxpoints = maxpoints;
        for deque in self.attrs.values_mut() {
            while deque.len() > maxpoints {
                if let Some((_, _, old)) = deque.pop_front() {
                    self.bytes = self.bytes.saturating_sub(old);
                }
            }
        }
    }

    /// The RFC 8785 bytes of the values held (L24), separators included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The longest attribute's length.
    pub fn count(&self) -> usize {
        self.attrs.values().map(VecDeque::len).max().unwrap_or(0)
    }

    /// True when no attribute was ever set.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The oldest seq held, or `last_seq + 1` when nothing is.
    pub fn first_seq(&self, last_seq: u64) -> u64 {
        self.attrs
            .values()
            .filter_map(|d| d.front().map(|(s, _, _)| *s))
            .min()
            .unwrap_or(last_seq + 1)
    }

    /// Applies line `seq`: a scalar appends (the oldest past `maxpoints` goes), an array
    /// replaces the attribute (its newest `maxpoints`). Then the oldest index is evicted until
    /// the window is within `limit` bytes (I4).
    pub fn apply(&mut self, seq: u64, update: &Update, limit: usize) {
        let mut sizes = std::mem::take(&mut self.sizes);
        size_values(update, &mut sizes, &mut self.scratch);
        self.apply_sized(seq, update, &sizes, limit);
        self.sizes = sizes;
    }

    /// [`Window::apply`] with the values' sizes already taken by [`size_values`] (before any
    /// lock: the store sizes a line, then locks its stream only to apply it).
    pub fn apply_sized(&mut self, seq: u64, update: &Update, sizes: &[usize], limit: usize) {
        // Sizes are consumed in `size_values` order; a missing one (a caller that sized another
        // update) is computed here rather than trusted.
        let mut at = 0;
        for (attr, value) in &update.data {
            let key = attr.as_str();
            // Allocate the key only the first time an attribute appears.
            let deque = if let Some(deque) = self.attrs.get_mut(key) {
                deque
            } else {
                self.attrs.entry(key.to_owned()).or_default()
            };
            match value {
                Value::Array(values) => {
                    for (_, _, n) in deque.drain(..) {
                        self.bytes = self.bytes.saturating_sub(n);
                    }
                    let skip = values.len().saturating_sub(self.maxpoints);
                    for (i, v) in values.iter().enumerate().skip(skip) {
                        let n = sizes
                            .get(at + i)
                            .copied()
                            .unwrap_or_else(|| value_bytes_with(v, &mut self.scratch));
                        self.bytes += n;
                        deque.push_back((seq, v.detached(), n));
                    }
                    at += values.len();
                }
                v => {
                    let n = sizes
                        .get(at)
                        .copied()
                        .unwrap_or_else(|| value_bytes_with(v, &mut self.scratch));
                    at += 1;
                    self.bytes += n;
                    // Owned: a slice would keep the connection's whole read buffer alive.
                    deque.push_back((seq, v.detached(), n));
                    while deque.len() > self.maxpoints {
                        if let Some((_, _, old)) = deque.pop_front() {
                            self.bytes = self.bytes.saturating_sub(old);
                        }
                    }
                }
            }
        }
        self.evict_to(limit);
    }

    /// Starts again from `initial` arrays (seq 0), within `budget` bytes.
    pub fn restart(&mut self, initial: Vec<(String, Vec<Value>)>, budget: usize) {
        self.attrs.clear();
        self.bytes = 0;
        for (attr, values) in initial {
            let seqs = vec![0; values.len()];
            self.insert(attr, seqs, values);
        }
        self.evict_to(budget);
    }

    /// Takes the attributes of a snapshot record (recovery), each trimmed to `maxpoints`.
    pub fn restore(&mut self, attrs: Vec<(String, Vec<u64>, Vec<Value>)>) {
        self.attrs.clear();
        self.bytes = 0;
        for (attr, seqs, values) in attrs {
            self.insert(attr, seqs, values);
        }
    }

    fn insert(&mut self, attr: String, seqs: Vec<u64>, values: Vec<Value>) {
        let skip = values.len().saturating_sub(self.maxpoints);
        let scratch = &mut self.scratch;
        let deque: VecDeque<(u64, Value, usize)> = seqs
            .into_iter()
            .zip(values)
            .skip(skip)
            .map(|(seq, v)| {
                let n = value_bytes_with(&v, scratch);
                (seq, v, n)
            })
            .collect();
        self.bytes += deque.iter().map(|(_, _, n)| n).sum::<usize>();
        self.attrs.insert(attr, deque);
    }

    /// L24/L25: evicts the oldest index (every attribute's oldest value) until within `limit`.
    fn evict_to(&mut self, limit: usize) {
        while self.bytes > limit && self.count() > 0 {
            for deque in self.attrs.values_mut() {
                if let Some((_, _, old)) = deque.pop_front() {
                    self.bytes = self.bytes.saturating_sub(old);
                }
            }
        }
    }

    /// Each attribute with its `(seq, value)`s, oldest first, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Vec<(u64, &Value)>)> {
        self.attrs
            .iter()
            .map(|(k, d)| (k.as_str(), d.iter().map(|(s, v, _)| (*s, v)).collect()))
    }

    /// The window as an RFC 8785 object `{attr: [values]}`.
    pub fn write_jcs(&self, out: &mut Vec<u8>) {
        // BTreeMap order is byte order, which equals UTF-16 order for the ASCII names
        // attributes have; fall back to a full JCS sort otherwise.
        if self.attrs.keys().all(|k| k.is_ascii()) {
            out.push(b'{');
            for (i, (attr, values)) in self.attrs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs_string(attr, out);
                out.extend_from_slice(b":[");
                for (j, (_, v, _)) in values.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_jcs(v, out);
                }
                out.push(b']');
            }
            out.push(b'}');
        } else {
            let members: Vec<(String, Value)> = self
                .attrs
                .iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        Value::Array(d.iter().map(|(_, v, _)| v.clone()).collect()),
                    )
                })
                .collect();
            write_jcs_object(members.iter().map(|(k, v)| (k.as_str(), v)), out);
        }
    }
}

/// The sizes [`Window::apply_sized`] takes: each value of `update`'s data in order (every
/// element of an array), as [`value_bytes_with`] counts them.
pub fn size_values(update: &Update, sizes: &mut Vec<usize>, scratch: &mut Vec<u8>) {
    sizes.clear();
    for (_, value) in &update.data {
        match value {
            Value::Array(values) => {
                sizes.extend(values.iter().map(|v| value_bytes_with(v, scratch)));
            }
            v => sizes.push(value_bytes_with(v, scratch)),
        }
    }
}

/// The value's JCS size plus its separating comma, formatted into `scratch` (reused, so no
/// allocation per value).
pub fn value_bytes_with(v: &Value, scratch: &mut Vec<u8>) -> usize {
    // Whole numbers below 2^53 (timestamps, counters) print as their digits in JCS: count them
    // instead of formatting.
    if let Value::Number(f) = *v {
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            #[allow(clippy::cast_possible_truncation)] // |f| < 2^53: exact
            let n = f as i64;
            let digits = n
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |d| d as usize + 1);
            return digits + usize::from(n < 0) + 1;
        }
    }
    scratch.clear();
    write_jcs(v, scratch);
    scratch.len() + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use plotstream_proto::update::parse_update;
    use plotstream_proto::Limits;

    use super::*;

    fn apply(w: &mut Window, seq: u64, line: &str, limit: usize) {
        let u = parse_update(&Bytes::copy_from_slice(line.as_bytes()), &Limits::default()).unwrap();
        w.apply(seq, &u, limit);
    }

    fn mp(n: usize) -> Maxpoints {
        Maxpoints::new(n, Maxpoints::MAX)
    }

    fn jcs(w: &Window) -> String {
        let mut out = Vec::new();
        w.write_jcs(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scalars_append_arrays_replace_and_maxpoints_holds() {
        let mut w = Window::new(mp(3));
        for n in 1..=5 {
            apply(&mut w, n, &format!(r#"{{"x":{n},"y":{n}}}"#), usize::MAX);
        }
        assert_eq!(jcs(&w), r#"{"x":[3,4,5],"y":[3,4,5]}"#);
        assert_eq!((w.first_seq(5), w.count()), (3, 3));
        apply(&mut w, 6, r#"{"x":[1,2,3,4,5,6],"y":[7]}"#, usize::MAX);
        assert_eq!(jcs(&w), r#"{"x":[4,5,6],"y":[7]}"#);
        assert_eq!(w.first_seq(6), 6);
        w.set_maxpoints(mp(1));
        assert_eq!(jcs(&w), r#"{"x":[6],"y":[7]}"#);
    }

    #[test]
    fn bytes_track_the_jcs_size_and_the_budget_evicts_the_oldest_index() {
        let mut w = Window::new(mp(100));
        for n in 1..=10 {
            apply(&mut w, n, &format!(r#"{{"x":{n},"y":"v{n}"}}"#), usize::MAX);
        }
        let text = jcs(&w);
        // `{"x":[..],"y":[..]}`: each value plus its comma; the brackets and names are not counted.
        let values: usize = (1..=10u32)
            .map(|n| n.to_string().len() + 1 + format!("\"v{n}\"").len() + 1)
            .sum();
        assert_eq!(w.bytes(), values, "{text}");
        apply(&mut w, 11, r#"{"x":11,"y":"v11"}"#, 30);
        assert!(w.bytes() <= 30);
        assert_eq!(
            w.count(),
            11 - w.first_seq(11) as usize + 1,
            "whole indexes go"
        );
        assert!(jcs(&w).ends_with(r#""v11"]}"#));
    }

    #[test]
    fn restart_and_restore_take_seqs_and_trim() {
        let mut w = Window::new(mp(2));
        w.restart(
            vec![(
                "x".into(),
                vec![Value::Number(1.0), Value::Number(2.0), Value::Number(3.0)],
            )],
            usize::MAX,
        );
        assert_eq!(jcs(&w), r#"{"x":[2,3]}"#);
        assert_eq!(w.first_seq(0), 0);
        w.restore(vec![(
            "y".into(),
            vec![4, 5, 6],
            vec![Value::Null, Value::Bool(true), Value::Number(0.5)],
        )]);
        assert_eq!(jcs(&w), r#"{"y":[true,0.5]}"#);
        assert_eq!(w.first_seq(6), 5);
        let items: Vec<_> = w.iter().collect();
        assert_eq!(
            items[0].1.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![5, 6]
        );
    }

    #[test]
    fn attributes_print_in_name_order_as_rfc8785() {
        let mut w = Window::new(mp(5));
        apply(
            &mut w,
            1,
            r#"{"x":1,"text":"a","marker":{"color":"é"}}"#,
            usize::MAX,
        );
        assert_eq!(jcs(&w), r#"{"marker.color":["é"],"text":["a"],"x":[1]}"#);
    }
}
