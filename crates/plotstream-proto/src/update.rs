//! A line → a trace update (docs/protocol.md §3): token extraction, key rules, `convertTimestamp`.

use bytes::Bytes;
pub use jiff::{tz::TimeZone, Timestamp};

use std::borrow::Cow;

pub use smallvec::{smallvec, SmallVec};

use crate::json::{JsonError, Parser, Str, Value};
use crate::limits::Limits;

/// A stream token: `[A-Za-z0-9_-]{1,64}` (L7).
///
/// Stored inline (no heap, no reference count): the ingest machine hands one out with every
/// update, so a clone must cost a copy of at most 65 bytes and nothing more.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    /// Invariant: `1 <= len <= 64` and `bytes[..len]` matches L7 (ASCII).
    len: u8,
    bytes: [u8; 64],
}

impl Token {
    /// Validates `bytes` against L7.
    pub fn parse(bytes: &[u8]) -> Option<Token> {
        if !Token::valid(bytes) {
            return None;
        }
        let mut t = Token {
            len: 0,
            bytes: [0; 64],
        };
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        #[allow(clippy::cast_possible_truncation)] // valid() bounds the length by 64
        {
            t.len = bytes.len() as u8;
        }
        Some(t)
    }

    fn valid(bytes: &[u8]) -> bool {
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        // Invariant: the bytes are ASCII, so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// A log-safe fingerprint: the first 3 characters and the length (docs/reliability.md §1.4).
    pub fn fingerprint(&self) -> String {
        let s = self.as_str();
        format!("{}…({})", &s[..s.len().min(3)], s.len())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", self.fingerprint())
    }
}

/// An update's per-point attributes: two inline slots, so `{"x":..,"y":..}` allocates nothing.
pub type Attrs = SmallVec<[(Str, Value); 2]>;

/// One accepted trace-update line, with `streamtoken` and `type` removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// The line's own `streamtoken`, which beats the head's token for this line only.
    pub token: Option<Token>,
    /// Per-point attributes in wire order: `x`, `y`, `z`, `text` and flattened `marker.<k>` paths.
    /// A scalar appends one value; an array replaces the whole attribute.
    pub data: Attrs,
    /// Members of `line`, each setting the trace's `line.<k>`.
    pub line: Vec<(Str, Value)>,
    /// `layout`, deep-merged into the figure layout.
    pub layout: Option<Vec<(Str, Value)>>,
}

impl Update {
    /// Empties it, keeping the inline storage (the parser refills one `Update` per line).
    pub fn clear(&mut self) {
        self.token = None;
        self.data.clear();
        self.line = Vec::new();
        self.layout = None;
    }

    /// True when the update changes nothing (`{}`), which is still accepted and counted.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.line.is_empty() && self.layout.is_none()
    }
}

/// Why a data line is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Not one valid JSON value within L19–L22 (422).
    Json(JsonError),
    /// The value is not an object (422).
    NotObject,
    /// A key holds a value of the wrong shape, e.g. `"x": {}` or a non-object `marker` (422).
    Shape(&'static str),
    /// `streamtoken` is not a string matching L7 (400).
    Token,
}

impl UpdateError {
    /// The status this rejection is answered with.
    pub fn status(self) -> crate::status::Status {
        match self {
            UpdateError::Token => crate::status::Status::BAD_REQUEST,
            _ => crate::status::Status::UNPROCESSABLE,
        }
    }
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Json(e) => e.fmt(f),
            UpdateError::NotObject => f.write_str("line is not a json object"),
            UpdateError::Shape(key) => write!(f, "member {key:?} has the wrong shape"),
            UpdateError::Token => f.write_str("streamtoken is not a valid token string"),
        }
    }
}

impl std::error::Error for UpdateError {}

impl From<JsonError> for UpdateError {
    fn from(e: JsonError) -> Self {
        UpdateError::Json(e)
    }
}

/// Parses one data line (no LF, no trailing CR) into an update.
pub fn parse_update(line: &Bytes, limits: &Limits) -> Result<Update, UpdateError> {
    parse_update_in(line, line, limits)
}

/// Parses `line`, a slice of `owner`'s bytes (a chunk of the body), into an update. String
/// values become zero-copy slices of `owner`; numbers, member names and known keys touch no
/// reference count and allocate nothing, so a point line costs no allocation at all.
///
/// The line is checked as strict JSON in full before any shape or token error is reported, so
/// a line that is not JSON is always a JSON error (422).
pub fn parse_update_in(owner: &Bytes, line: &[u8], limits: &Limits) -> Result<Update, UpdateError> {
    let mut update = Update::default();
    parse_update_into(owner, line, limits, &mut update).map(|()| update)
}

/// [`parse_update_in`] into an existing `update` (cleared first; unspecified after an error),
/// so that the hot path builds each line's update in place instead of moving ~300 bytes
/// through every return.
#[inline]
pub fn parse_update_into(
    owner: &Bytes,
    line: &[u8],
    limits: &Limits,
    update: &mut Update,
) -> Result<(), UpdateError> {
    update.clear();
    let mut p = Parser::new(owner, line, limits);
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(classify_non_object(owner, line, limits));
    }
    p.pos += 1;
    // Known keys seen (a bit each), and the other names for the duplicate check (C10).
    let mut seen = 0u8;
    let mut others: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut n_members = 0usize;
    let mut deferred: Option<UpdateError> = None;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            if p.peek() != Some(b'"') {
                return Err(JsonError::Syntax(p.pos).into());
            }
            let key = p.string_raw()?;
            p.skip_ws();
            if p.peek() != Some(b':') {
                return Err(JsonError::Syntax(p.pos).into());
            }
            p.pos += 1;
            p.skip_ws();
            let value = p.value(2)?;
            n_members += 1;
            if n_members > limits.json_members {
                return Err(JsonError::TooManyMembers.into());
            }
            let bit = match &*key {
                b"x" => 1,
                b"y" => 2,
                b"z" => 4,
                b"text" => 8,
                b"marker" => 16,
                b"line" => 32,
                b"layout" => 64,
                b"streamtoken" => 128,
                _ => 0,
            };
            if bit == 0 {
                // `type` and unknown keys are ignored (§3.3), but must still be distinct.
                others.push(key);
            } else {
                if seen & bit != 0 {
                    return Err(JsonError::DuplicateName.into());
                }
                seen |= bit;
                if let Err(e) = take_member(update, bit, value) {
                    deferred.get_or_insert(e);
                }
            }
            p.skip_ws();
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b'}') => {
                    p.pos += 1;
                    break;
                }
                _ => return Err(JsonError::Syntax(p.pos).into()),
            }
        }
    }
    p.skip_ws();
    if !p.at_end() {
        return Err(JsonError::TrailingBytes(p.pos).into());
    }
    if others.len() > 1 {
        // O(n log n) at worst (F4); known names never collide with these.
        others.sort_unstable();
        if others.windows(2).any(|w| w[0] == w[1]) {
            return Err(JsonError::DuplicateName.into());
        }
    }
    match deferred {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn take_member(update: &mut Update, bit: u8, value: Value) -> Result<(), UpdateError> {
    match bit {
        1 | 2 | 4 | 8 => {
            let name = match bit {
                1 => "x",
                2 => "y",
                4 => "z",
                _ => "text",
            };
            if matches!(value, Value::Object(_)) {
                return Err(UpdateError::Shape(name));
            }
            update.data.push((Str::from_static(name), value));
        }
        16 => {
            let Value::Object(members) = value else {
                return Err(UpdateError::Shape("marker"));
            };
            flatten_marker("marker", members, &mut update.data);
        }
        32 => {
            let Value::Object(members) = value else {
                return Err(UpdateError::Shape("line"));
            };
            update.line = members;
        }
        64 => {
            let Value::Object(members) = value else {
                return Err(UpdateError::Shape("layout"));
            };
            update.layout = Some(members);
        }
        _ => {
            let Value::Str(s) = value else {
                return Err(UpdateError::Token);
            };
            update.token = Some(Token::parse(s.as_bytes()).ok_or(UpdateError::Token)?);
        }
    }
    Ok(())
}

/// The time zone named by a `plotly-convertTimestamp` value: quotes stripped, unknown names
/// falling back to `America/Montreal` like the legacy middleware (docs/protocol.md §3.7).
pub fn zone_for(value: &str) -> TimeZone {
    let name = value.trim().trim_matches('"');
    jiff::tz::db()
        .get(name)
        .or_else(|_| jiff::tz::db().get("America/Montreal"))
        .unwrap_or(TimeZone::UTC)
}

/// Replaces every `x` that is a number or an ASCII-digit string (also inside an `x` array) by
/// `t0 + x` milliseconds in `zone`, formatted `YYYY-MM-DD HH:MM:SS.ffffff` (docs/protocol.md §3.7).
pub fn convert_timestamp(update: &mut Update, zone: &TimeZone, t0: Timestamp) {
    for (key, value) in &mut update.data {
        if key.as_bytes() == b"x" {
            match value {
                Value::Array(values) => values.iter_mut().for_each(|v| convert_one(v, zone, t0)),
                v => convert_one(v, zone, t0),
            }
        }
    }
}

fn convert_one(value: &mut Value, zone: &TimeZone, t0: Timestamp) {
    let millis = match value {
        Value::Number(n) => *n,
        Value::Str(s)
            if !s.as_bytes().is_empty() && s.as_bytes().iter().all(u8::is_ascii_digit) =>
        {
            match s.as_str().parse::<f64>() {
                Ok(n) => n,
                Err(_) => return,
            }
        }
        _ => return,
    };
    if let Some(text) = format_offset(millis, zone, t0) {
        *value = Value::Str(Str::from(text));
    }
}

/// `t0 + millis` in `zone`, or `None` when it leaves jiff's range (the value then stays).
pub fn format_offset(millis: f64, zone: &TimeZone, t0: Timestamp) -> Option<String> {
    let micros = (millis * 1000.0).round();
    if !micros.is_finite() || micros.abs() > 1e17 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // |micros| <= 1e17 fits i64
    let span = jiff::SignedDuration::from_micros(micros as i64);
    let at = t0.checked_add(span).ok()?;
    let dt = at.to_zoned(zone.clone()).datetime();
    Some(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1000
    ))
}

fn flatten_marker(prefix: &str, members: Vec<(Str, Value)>, out: &mut Attrs) {
    for (key, value) in members {
        let path = format!("{prefix}.{key}");
        match value {
            // Depth is bounded by L19, so this recursion is too.
            Value::Object(inner) => flatten_marker(&path, inner, out),
            v => out.push((Str::from(path), v)),
        }
    }
}

fn classify_non_object(owner: &Bytes, line: &[u8], limits: &Limits) -> UpdateError {
    let mut p = Parser::new(owner, line, limits);
    p.skip_ws();
    let verdict = p.value(1).and_then(|_| {
        p.skip_ws();
        if p.at_end() {
            Ok(())
        } else {
            Err(JsonError::TrailingBytes(p.pos))
        }
    });
    match verdict {
        Ok(()) => UpdateError::NotObject,
        Err(e) => UpdateError::Json(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Update, UpdateError> {
        parse_update(&Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
    }

    #[test]
    fn scalars_arrays_marker_line_layout() {
        let u = parse(r#"{"marker": {"color": "red", "line": {"color": "blue"}}, "x": [7], "y": [8], "type": "scatter", "line": {"width": 2}, "layout": {"title": "t"}}"#).unwrap();
        let keys: Vec<&str> = u.data.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["marker.color", "marker.line.color", "x", "y"]);
        assert_eq!(u.line.len(), 1);
        assert_eq!(u.layout.as_ref().map(Vec::len), Some(1));
        assert!(u.token.is_none());
    }

    #[test]
    fn streamtoken_is_extracted_and_validated() {
        let u = parse(r#"{"x": 1500, "y": 512, "streamtoken": "abcdef1234"}"#).unwrap();
        assert_eq!(u.token.as_ref().map(Token::as_str), Some("abcdef1234"));
        assert_eq!(u.data.len(), 2);
        for bad in [
            r#"{"streamtoken":"bad token"}"#,
            r#"{"streamtoken":5}"#,
            r#"{"streamtoken":""}"#,
        ] {
            assert_eq!(parse(bad), Err(UpdateError::Token), "{bad}");
        }
        assert_eq!(
            parse(r#"{"streamtoken":"x"}"#)
                .unwrap()
                .token
                .unwrap()
                .as_str(),
            "x"
        );
    }

    #[test]
    fn wrong_shapes_are_422() {
        for bad in [
            r#"{"x":{"a":1},"y":1}"#,
            r#"{"marker":1}"#,
            r#"{"line":[1]}"#,
            r#"{"layout":"t"}"#,
        ] {
            assert_eq!(
                parse(bad).unwrap_err().status(),
                crate::status::Status::UNPROCESSABLE,
                "{bad}"
            );
        }
        for bad in ["[1,2]", "42", "\"s\"", "null", "true"] {
            assert_eq!(parse(bad), Err(UpdateError::NotObject), "{bad}");
        }
        assert!(matches!(parse("{bad"), Err(UpdateError::Json(_))));
    }

    #[test]
    fn convert_timestamp_matches_the_spec_example() {
        let t0: Timestamp = "2026-01-15T15:00:00Z".parse().unwrap();
        let mut u = parse(r#"{"x": 1500, "y": 1}"#).unwrap();
        convert_timestamp(&mut u, &zone_for("\"America/Montreal\""), t0);
        assert_eq!(
            u.data[0].1,
            Value::Str(Str::from("2026-01-15 10:00:01.500000"))
        );
        let mut u = parse(r#"{"x":["12345", "a", 2], "y": "7"}"#).unwrap();
        convert_timestamp(&mut u, &zone_for("America/Manaus"), t0);
        let Value::Array(xs) = &u.data[0].1 else {
            panic!()
        };
        assert_eq!(xs[0], Value::Str(Str::from("2026-01-15 11:00:12.345000")));
        assert_eq!(xs[1], Value::Str(Str::from("a")));
        assert_eq!(
            u.data[1].1,
            Value::Str(Str::from("7")),
            "y is never converted"
        );
    }

    #[test]
    fn unknown_zone_falls_back_to_montreal() {
        let t0: Timestamp = "2026-01-15T15:00:00Z".parse().unwrap();
        assert_eq!(
            format_offset(0.0, &zone_for("Nowhere/Land"), t0).unwrap(),
            "2026-01-15 10:00:00.000000"
        );
    }
}
