//! A line → a trace update (PROTOCOL.md §3): token extraction, key rules, `convertTimestamp`.

use bytes::Bytes;
pub use jiff::{tz::TimeZone, Timestamp};

use crate::json::{self, JsonError, Str, Value};
use crate::limits::Limits;

/// A stream token: `[A-Za-z0-9_-]{1,64}` (L7).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(Str);

impl Token {
    /// Validates `bytes` against L7.
    pub fn parse(bytes: &[u8]) -> Option<Token> {
        Token::valid(bytes)
            .then(|| Token(Str::from(std::str::from_utf8(bytes).unwrap_or_default())))
    }

    fn from_str_checked(s: Str) -> Option<Token> {
        Token::valid(s.as_bytes()).then_some(Token(s))
    }

    fn valid(bytes: &[u8]) -> bool {
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A log-safe fingerprint: the first 3 characters and the length (RELIABILITY.md §1.4).
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

/// One accepted trace-update line, with `streamtoken` and `type` removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The line's own `streamtoken`, which beats the head's token for this line only.
    pub token: Option<Token>,
    /// Per-point attributes in wire order: `x`, `y`, `z`, `text` and flattened `marker.<k>` paths.
    /// A scalar appends one value; an array replaces the whole attribute.
    pub data: Vec<(Str, Value)>,
    /// Members of `line`, each setting the trace's `line.<k>`.
    pub line: Vec<(Str, Value)>,
    /// `layout`, deep-merged into the figure layout.
    pub layout: Option<Vec<(Str, Value)>>,
}

impl Update {
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
    pub fn status(self) -> crate::Status {
        match self {
            UpdateError::Token => crate::Status::BAD_REQUEST,
            _ => crate::Status::UNPROCESSABLE,
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
    let members = match json::parse_object(line, limits) {
        Ok(m) => m,
        Err(JsonError::Syntax(0)) => return Err(classify_non_object(line, limits)),
        Err(e) => return Err(e.into()),
    };
    let mut update = Update {
        token: None,
        data: Vec::with_capacity(members.len()),
        line: Vec::new(),
        layout: None,
    };
    for (key, value) in members {
        match key.as_bytes() {
            b"x" | b"y" | b"z" | b"text" => {
                if matches!(value, Value::Object(_)) {
                    return Err(UpdateError::Shape(static_key(&key)));
                }
                update.data.push((static_name(&key), value));
            }
            b"marker" => {
                let Value::Object(members) = value else {
                    return Err(UpdateError::Shape("marker"));
                };
                flatten_marker("marker", members, &mut update.data);
            }
            b"line" => {
                let Value::Object(members) = value else {
                    return Err(UpdateError::Shape("line"));
                };
                update.line = members;
            }
            b"layout" => {
                let Value::Object(members) = value else {
                    return Err(UpdateError::Shape("layout"));
                };
                update.layout = Some(members);
            }
            b"streamtoken" => {
                let Value::Str(s) = value else {
                    return Err(UpdateError::Token);
                };
                update.token = Some(Token::from_str_checked(s).ok_or(UpdateError::Token)?);
            }
            _ => {} // `type` and unknown keys are ignored (§3.3).
        }
    }
    Ok(update)
}

/// The time zone named by a `plotly-convertTimestamp` value: quotes stripped, unknown names
/// falling back to `America/Montreal` like the legacy middleware (PROTOCOL.md §3.7).
pub fn zone_for(value: &str) -> TimeZone {
    let name = value.trim().trim_matches('"');
    jiff::tz::db()
        .get(name)
        .or_else(|_| jiff::tz::db().get("America/Montreal"))
        .unwrap_or(TimeZone::UTC)
}

/// Replaces every `x` that is a number or an ASCII-digit string (also inside an `x` array) by
/// `t0 + x` milliseconds in `zone`, formatted `YYYY-MM-DD HH:MM:SS.ffffff` (PROTOCOL.md §3.7).
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

fn flatten_marker(prefix: &str, members: Vec<(Str, Value)>, out: &mut Vec<(Str, Value)>) {
    for (key, value) in members {
        let path = format!("{prefix}.{key}");
        match value {
            // Depth is bounded by L19, so this recursion is too.
            Value::Object(inner) => flatten_marker(&path, inner, out),
            v => out.push((Str::from(path), v)),
        }
    }
}

fn static_key(key: &Str) -> &'static str {
    match key.as_bytes() {
        b"x" => "x",
        b"y" => "y",
        b"z" => "z",
        _ => "text",
    }
}

/// Known attribute names as static strings: no allocation and no reference count per point.
fn static_name(key: &Str) -> Str {
    Str::from_static(static_key(key))
}

fn classify_non_object(line: &Bytes, limits: &Limits) -> UpdateError {
    match json::parse(line, limits) {
        Ok(_) => UpdateError::NotObject,
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
                crate::Status::UNPROCESSABLE,
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
