//! A history request's parameters and its rows in JSON, NDJSON and CSV (docs/history.md
//! "Reading"). Pure: the route parses with [`Request::parse`] and writes rows with [`Format`].

use plotstream_proto::canonical::{write_jcs_number, write_jcs_string};

use super::build::XKind;
use super::point::{format_date, format_time, parse_date, Val};
use super::query::By;
use super::tier::Mark;

/// L61: the most points one downsampled request may ask for.
pub const MAX_POINTS: usize = 100_000;

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object, its points as `[n, seq, t, x, y]` arrays.
    Json,
    /// One object per line.
    Ndjson,
    /// `n,seq,time,x,y`.
    Csv,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What `from` and `to` are.
    pub by: By,
    /// The first key wanted (inclusive).
    pub from: Option<f64>,
    /// The last key wanted (inclusive).
    pub to: Option<f64>,
    /// Downsample to at most this many points.
    pub max_points: Option<usize>,
    /// The rows' format.
    pub format: Format,
    /// `tiers=off`: downsample from every point, not from the tiers (for benchmarks and to
    /// check the tiers against).
    pub tiers: bool,
}

fn decode(v: &str) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn bound(v: &str) -> Option<f64> {
    if v.len() > 64 {
        return None;
    }
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() => Some(n),
        _ => parse_date(v),
    }
}

impl Request {
    /// The request a query string asks for, or why it cannot be served (a `400`).
    pub fn parse(query: Option<&str>) -> Result<Request, String> {
        let mut r = Request {
            by: By::Time,
            from: None,
            to: None,
            max_points: None,
            format: Format::Json,
            tiers: true,
        };
        let query = query.unwrap_or("");
        if query.len() > 1024 {
            return Err("query longer than 1024 bytes".into());
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).ok_or_else(|| format!("{k}: not a valid percent-encoding"))?;
            match k {
                "by" => {
                    r.by = match v.as_str() {
                        "time" => By::Time,
                        "x" => By::X,
                        "n" => By::N,
                        _ => return Err("by: one of time, x, n".into()),
                    }
                }
                "from" | "to" => {
                    let b = Some(bound(&v).ok_or_else(|| format!("{k}: a number or a date"))?);
                    if k == "from" {
                        r.from = b;
                    } else {
                        r.to = b;
                    }
                }
                "max_points" => {
                    r.max_points = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|n| (1..=MAX_POINTS).contains(n))
                            .ok_or_else(|| format!("max_points: 1 to {MAX_POINTS} (L61)"))?,
                    );
                }
                "tiers" => r.tiers = v != "off",
                "format" => {
                    r.format = match v.as_str() {
                        "json" => Format::Json,
                        "ndjson" => Format::Ndjson,
                        "csv" => Format::Csv,
                        _ => return Err("format: one of json, ndjson, csv".into()),
                    }
                }
                _ => {}
            }
        }
        Ok(r)
    }
}

/// A row's x: a kept value, or (downsampled) a key shown as the stream's x kind shows it.
#[derive(Debug, Clone, Copy)]
pub enum X<'a> {
    /// As sent.
    Kept(&'a Val),
    /// A number or a date's milliseconds.
    Key(f64, XKind),
}

/// One row.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Its position.
    pub n: u64,
    /// Its line's seq.
    pub seq: u64,
    /// Its receive time.
    pub t: i64,
    /// Its x.
    pub x: X<'a>,
    /// Its y.
    pub y: &'a Val,
}

impl<'a> Row<'a> {
    /// A downsampled point (its y as a number, or none).
    pub fn of_mark(m: &Mark, kind: XKind, y: &'a mut Val) -> Row<'a> {
        *y = if m.y.is_nan() {
            Val::None
        } else {
            Val::Num(m.y)
        };
        Row {
            n: m.n,
            seq: m.seq,
            t: m.t,
            x: X::Key(m.x, kind),
            y,
        }
    }
}

fn json_val(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::None => out.extend_from_slice(b"null"),
        Val::Num(n) => write_jcs_number(*n, out),
        Val::Str(s) => write_jcs_string(s, out),
    }
}

fn json_x(x: X<'_>, out: &mut Vec<u8>) {
    match x {
        X::Kept(v) => json_val(v, out),
        X::Key(k, _) if k.is_nan() => out.extend_from_slice(b"null"),
        X::Key(k, XKind::Date) => match format_date(k) {
            Some(d) => write_jcs_string(&d, out),
            None => out.extend_from_slice(b"null"),
        },
        X::Key(k, _) => write_jcs_number(k, out),
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break; a string that a spreadsheet
/// would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`.
fn csv_str(s: &str, out: &mut Vec<u8>) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        if formula {
            out.push(b'\'');
        }
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn csv_val(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::None => {}
        Val::Num(n) => write_jcs_number(*n, out),
        Val::Str(s) => csv_str(s, out),
    }
}

impl Format {
    /// The content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }

    /// What comes before the rows: JSON's object up to its points (with the history's extent
    /// `first..end` and the range's), CSV's header.
    pub fn start(
        self,
        kind: XKind,
        by_x: bool,
        downsampled: bool,
        (first, end): (u64, u64),
        range: std::ops::Range<u64>,
        out: &mut Vec<u8>,
    ) {
        match self {
            Format::Json => {
                out.extend_from_slice(b"{\"x_kind\":\"");
                out.extend_from_slice(kind.name().as_bytes());
                out.extend_from_slice(if by_x {
                    b"\",\"bucketed_by\":\"x\""
                } else {
                    b"\",\"bucketed_by\":\"n\""
                });
                out.extend_from_slice(format!(
                        ",\"downsampled\":{downsampled},\"first_n\":{first},\"end_n\":{end},\"from_n\":{},\"to_n\":{},\"points\":[",
                        range.start, range.end
                    ).as_bytes());
            }
            Format::Ndjson => {}
            Format::Csv => out.extend_from_slice(b"n,seq,time,x,y\n"),
        }
    }

    /// One row; `first` for the first row of a JSON body.
    pub fn row(self, r: &Row<'_>, first: bool, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        let mut seq = itoa::Buffer::new();
        match self {
            Format::Json => {
                if !first {
                    out.push(b',');
                }
                out.push(b'[');
                out.extend_from_slice(n.format(r.n).as_bytes());
                out.push(b',');
                out.extend_from_slice(seq.format(r.seq).as_bytes());
                out.push(b',');
                out.extend_from_slice(itoa::Buffer::new().format(r.t).as_bytes());
                out.push(b',');
                json_x(r.x, out);
                out.push(b',');
                json_val(r.y, out);
                out.push(b']');
            }
            Format::Ndjson => {
                out.extend_from_slice(b"{\"n\":");
                out.extend_from_slice(n.format(r.n).as_bytes());
                out.extend_from_slice(b",\"seq\":");
                out.extend_from_slice(seq.format(r.seq).as_bytes());
                out.extend_from_slice(b",\"time\":\"");
                out.extend_from_slice(format_time(r.t).as_bytes());
                out.extend_from_slice(b"\",\"x\":");
                json_x(r.x, out);
                out.extend_from_slice(b",\"y\":");
                json_val(r.y, out);
                out.extend_from_slice(b"}\n");
            }
            Format::Csv => {
                out.extend_from_slice(n.format(r.n).as_bytes());
                out.push(b',');
                out.extend_from_slice(seq.format(r.seq).as_bytes());
                out.push(b',');
                out.extend_from_slice(format_time(r.t).as_bytes());
                out.push(b',');
                match r.x {
                    X::Kept(v) => csv_val(v, out),
                    X::Key(..) => {
                        let mut j = Vec::new();
                        json_x(r.x, &mut j);
                        if j != b"null" {
                            out.extend_from_slice(
                                j.strip_prefix(b"\"")
                                    .and_then(|j| j.strip_suffix(b"\""))
                                    .unwrap_or(&j),
                            );
                        }
                    }
                }
                out.push(b',');
                csv_val(r.y, out);
                out.push(b'\n');
            }
        }
    }

    /// What comes after the rows.
    pub fn end(self, out: &mut Vec<u8>) {
        if self == Format::Json {
            out.extend_from_slice(b"]}\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_parsed_and_bounded() {
        let r = Request::parse(Some(
            "by=x&from=2026-12-06%2022:00:00&to=5&max_points=2000&format=csv",
        ));
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.by, By::X);
        assert_eq!(r.from, parse_date("2026-12-06 22:00:00"));
        assert_eq!(
            (r.to, r.max_points, r.format),
            (Some(5.0), Some(2000), Format::Csv)
        );
        for bad in [
            "by=y",
            "from=abc",
            "max_points=0",
            "max_points=100001",
            "format=xml",
            "from=%zz",
            "to=NaN",
        ] {
            assert!(Request::parse(Some(bad)).is_err(), "{bad}");
        }
        assert!(Request::parse(Some(&"a".repeat(1025))).is_err());
        assert_eq!(Request::parse(None).map(|r| r.by), Ok(By::Time));
    }

    #[test]
    fn rows_escape_what_they_carry() {
        let x = Val::Str("=HYPERLINK(\"x\"),1".into());
        let y = Val::Num(-1.5);
        let r = Row {
            n: 3,
            seq: 4,
            t: 0,
            x: X::Kept(&x),
            y: &y,
        };
        let mut csv = Vec::new();
        Format::Csv.row(&r, true, &mut csv);
        assert_eq!(
            String::from_utf8_lossy(&csv),
            "3,4,1970-01-01T00:00:00.000Z,\"'=HYPERLINK(\"\"x\"\"),1\",-1.5\n"
        );
        let mut nd = Vec::new();
        Format::Ndjson.row(&r, true, &mut nd);
        let v: serde_json::Value = serde_json::from_slice(&nd).unwrap_or_default();
        assert_eq!(v["x"], "=HYPERLINK(\"x\"),1");
        let mut j = Vec::new();
        Format::Json.start(XKind::Date, true, true, (0, 9), 2..5, &mut j);
        let d = Val::None;
        Format::Json.row(
            &Row {
                n: 0,
                seq: 1,
                t: 2,
                x: X::Key(86_400_000.0, XKind::Date),
                y: &d,
            },
            true,
            &mut j,
        );
        Format::Json.end(&mut j);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap_or_default();
        assert_eq!(v["points"][0][3], "1970-01-02 00:00:00.000000");
        assert_eq!(v["bucketed_by"], "x");
        assert_eq!(
            (v["from_n"].as_u64(), v["to_n"].as_u64()),
            (Some(2), Some(5))
        );
    }
}
