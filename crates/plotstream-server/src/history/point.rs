//! One kept point (docs/history.md "Points"): its line's seq, the server's receive time, its x
//! and y as sent; how a line becomes points; the records that hold them; and plotly's date
//! strings, which x is bucketed by when it holds them. Pure functions, no I/O.

use plotstream_proto::{Update, Value};

/// An x or y as kept: a number, a string (a date or a category), or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// No value (absent, `null`, or a type the history does not keep: booleans, containers).
    None,
    /// A number.
    Num(f64),
    /// A string, as sent.
    Str(Box<str>),
}

impl Val {
    /// The same value, borrowed.
    pub fn as_ref(&self) -> ValRef<'_> {
        match self {
            Val::None => ValRef::None,
            Val::Num(n) => ValRef::Num(*n),
            Val::Str(s) => ValRef::Str(s),
        }
    }

    /// The number it orders by: a number itself, a date string's milliseconds since the Unix
    /// epoch, else NaN.
    pub fn key(&self) -> f64 {
        self.as_ref().key()
    }
}

/// An x or y as the builder takes it ([`Val`] borrowed): a line's string is encoded where it
/// lies, not copied into a point of its own first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValRef<'a> {
    /// No value.
    None,
    /// A number.
    Num(f64),
    /// A string, as sent.
    Str(&'a str),
}

impl<'a> ValRef<'a> {
    fn of(value: Option<&'a Value>) -> ValRef<'a> {
        match value {
            Some(Value::Number(n)) => ValRef::Num(*n),
            Some(Value::Str(s)) => ValRef::Str(s.as_str()),
            _ => ValRef::None,
        }
    }

    /// [`Val::key`].
    pub fn key(self) -> f64 {
        match self {
            ValRef::Num(n) => n,
            ValRef::Str(s) => parse_date(s).unwrap_or(f64::NAN),
            ValRef::None => f64::NAN,
        }
    }

    /// The value owned.
    pub fn to_val(self) -> Val {
        match self {
            ValRef::None => Val::None,
            ValRef::Num(n) => Val::Num(n),
            ValRef::Str(s) => Val::Str(s.into()),
        }
    }
}

/// One kept point. Its position `n` in the stream's history is implicit (a record's key plus
/// its index in the record).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The seq of the line it came in (seqs restart with a stream's epoch; `n` does not).
    pub seq: u64,
    /// When the server accepted the line, in milliseconds since the Unix epoch.
    pub t: i64,
    /// Its x.
    pub x: Val,
    /// Its y.
    pub y: Val,
}

/// A point as the builder takes it ([`Point`] borrowed): a line's points are made one at a
/// time from its values ([`points_of`]), with nothing allocated for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRef<'a> {
    /// [`Point::seq`].
    pub seq: u64,
    /// [`Point::t`].
    pub t: i64,
    /// Its x.
    pub x: ValRef<'a>,
    /// Its y.
    pub y: ValRef<'a>,
}

impl PointRef<'_> {
    /// The point owned.
    pub fn to_point(self) -> Point {
        Point {
            seq: self.seq,
            t: self.t,
            x: self.x.to_val(),
            y: self.y.to_val(),
        }
    }
}

/// What the builder keeps a point from: a [`Point`] or a [`PointRef`] (or a reference to one).
pub trait AsPoint {
    /// The point, borrowed.
    fn as_point(&self) -> PointRef<'_>;
}

impl AsPoint for Point {
    fn as_point(&self) -> PointRef<'_> {
        PointRef {
            seq: self.seq,
            t: self.t,
            x: self.x.as_ref(),
            y: self.y.as_ref(),
        }
    }
}

impl AsPoint for PointRef<'_> {
    fn as_point(&self) -> PointRef<'_> {
        *self
    }
}

impl<T: AsPoint + ?Sized> AsPoint for &T {
    fn as_point(&self) -> PointRef<'_> {
        (**self).as_point()
    }
}

/// The points of one accepted line, in order: a scalar `x`/`y` is one point; arrays are one
/// point per index (the longer one decides, the other's missing values are `None`). A line
/// without `x` or `y` (style only) has none.
pub fn points_of(update: &Update, seq: u64, t: i64) -> LinePoints<'_> {
    let mut x = None;
    let mut y = None;
    for (attr, value) in &update.data {
        match attr.as_bytes() {
            b"x" => x = Some(value),
            b"y" => y = Some(value),
            _ => {}
        }
    }
    let len = |v: Option<&Value>| match v {
        Some(Value::Array(items)) => items.len(),
        Some(_) => 1,
        None => 0,
    };
    LinePoints {
        x,
        y,
        seq,
        t,
        next: 0,
        len: len(x).max(len(y)),
    }
}

/// The points of one line ([`points_of`]), made one at a time: no buffer per line.
#[derive(Debug)]
pub struct LinePoints<'a> {
    x: Option<&'a Value>,
    y: Option<&'a Value>,
    seq: u64,
    t: i64,
    next: usize,
    len: usize,
}

impl<'a> Iterator for LinePoints<'a> {
    type Item = PointRef<'a>;

    fn next(&mut self) -> Option<PointRef<'a>> {
        if self.next >= self.len {
            return None;
        }
        let at = |v: Option<&'a Value>, i: usize| match v {
            Some(Value::Array(items)) => ValRef::of(items.get(i)),
            other => ValRef::of(other),
        };
        let i = self.next;
        self.next += 1;
        Some(PointRef {
            seq: self.seq,
            t: self.t,
            x: at(self.x, i),
            y: at(self.y, i),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for LinePoints<'_> {}

const NONE: u8 = 0;
const NUM: u8 = 1;
const STR: u8 = 2;

pub(crate) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_val(v: ValRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValRef::None => out.push(NONE),
        ValRef::Num(n) => {
            out.push(NUM);
            out.extend_from_slice(&n.to_bits().to_le_bytes());
        }
        ValRef::Str(s) => {
            out.push(STR);
            put_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Appends `p`'s record to `out`: `varint seq, i64 t, x, y` (a value: a tag, then 8 bytes of
/// `f64` bits or a varint length and UTF-8). A points record is `varint count` then its points.
pub fn encode_point(p: &impl AsPoint, out: &mut Vec<u8>) {
    let p = p.as_point();
    put_varint(p.seq, out);
    out.extend_from_slice(&p.t.to_le_bytes());
    put_val(p.x, out);
    put_val(p.y, out);
}

/// Reads the values [`encode_point`] and [`put_varint`] write; every read checks its bounds.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    pub(super) fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(u64::from_le_bytes(self.bytes()?)))
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes()?))
    }

    fn val(&mut self) -> Option<Val> {
        let [tag] = self.bytes()?;
        match tag {
            NONE => Some(Val::None),
            NUM => Some(Val::Num(self.f64()?)),
            STR => {
                let len = usize::try_from(self.varint()?).ok()?;
                if len > self.0.len() {
                    return None;
                }
                let (s, rest) = self.0.split_at(len);
                self.0 = rest;
                Some(Val::Str(std::str::from_utf8(s).ok()?.into()))
            }
            _ => None,
        }
    }

    fn point(&mut self) -> Option<Point> {
        Some(Point {
            seq: self.varint()?,
            t: self.i64()?,
            x: self.val()?,
            y: self.val()?,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The points of a points record, or `None` unless `bytes` is exactly what the encoder writes
/// (never panics; a caller keeps the valid records before it).
pub fn decode_points(bytes: &[u8]) -> Option<Vec<Point>> {
    let mut r = Reader(bytes);
    let count = r.varint()?;
    // Each point takes at least 11 bytes: a count beyond that is not a record.
    if count > (bytes.len() / 11) as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        out.push(r.point()?);
    }
    r.is_empty().then_some(out)
}

/// A points record of `points`.
pub fn encode_points<'a>(points: impl ExactSizeIterator<Item = &'a Point>, out: &mut Vec<u8>) {
    put_varint(points.len() as u64, out);
    for p in points {
        encode_point(p, out);
    }
}

/// Days from 1970-01-01 to the civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `10^i`, exact, for a date's fraction of `i` digits.
const POW10: [f64; 13] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0')))
}

/// Milliseconds since the Unix epoch of a date string as plotly.js reads one on a date axis:
/// `YYYY-MM-DD`, then optionally ` HH:MM`, `:SS` and `.fraction` (or `T` for the space, and a
/// trailing `Z`), read as UTC. `None` for anything else (a category).
pub fn parse_date(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z').unwrap_or(s).as_bytes();
    if s.len() < 10 || s.len() > 32 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    let rest = &s[10..];
    if !rest.is_empty() {
        if rest.len() < 6 || !matches!(rest[0], b' ' | b'T') || rest[3] != b':' {
            return None;
        }
        let (h, mi) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
        if h > 23 || mi > 59 {
            return None;
        }
        ms += (h * 60 + mi) * 60_000;
        let rest = &rest[6..];
        let mut frac = 0.0;
        if !rest.is_empty() {
            if rest.len() < 3 || rest[0] != b':' {
                return None;
            }
            let sec = digits(&rest[1..3])?;
            if sec > 59 {
                return None;
            }
            ms += sec * 1000;
            let rest = &rest[3..];
            if !rest.is_empty() {
                if rest.len() < 2 || rest[0] != b'.' {
                    return None;
                }
                // At most 12 digits (the length check above): the digits and their power of
                // ten are exact in an f64, so one division rounds `0.<digits>` once, as parsing
                // it would (`fractions_read_as_their_decimal`), without a string per point.
                let f = &rest[1..];
                frac = digits(f)? as f64 / POW10.get(f.len()).copied()? * 1000.0;
            }
        }
        return Some(ms as f64 + frac);
    }
    Some(ms as f64)
}

/// `ms` since the Unix epoch as plotly's date string, `YYYY-MM-DD HH:MM:SS.ffffff` (UTC,
/// microseconds), or `None` when it is not finite or outside years 0–9999.
pub fn format_date(ms: f64) -> Option<String> {
    if !ms.is_finite() || !(-62_167_219_200_000.0..253_402_300_800_000.0).contains(&ms) {
        return None;
    }
    let us = (ms * 1000.0).round() as i64;
    let days = us.div_euclid(86_400_000_000);
    let in_day = us.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let (secs, micros) = (in_day / 1_000_000, in_day % 1_000_000);
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds (CSV and NDJSON `time`).
pub fn format_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotstream_proto::json::Str;

    proptest::proptest! {
        /// A date's fraction reads as its decimal, correctly rounded (what `str::parse` of
        /// `0.<digits>` gives), for every length a date may have.
        #[test]
        fn fractions_read_as_their_decimal(digits in "[0-9]{1,12}") {
            let want = format!("0.{digits}").parse::<f64>().unwrap() * 1000.0;
            let got = parse_date(&format!("1970-01-01 00:00:00.{digits}")).unwrap();
            proptest::prop_assert_eq!(got.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn dates_read_as_plotly_reads_them_and_print_back() {
        assert_eq!(parse_date("1970-01-01"), Some(0.0));
        assert_eq!(parse_date("1970-01-02 00:00:01"), Some(86_401_000.0));
        assert_eq!(
            parse_date("2026-12-06T22:21:29.5Z"),
            Some(1_796_595_689_500.0)
        );
        assert_eq!(parse_date("2026-12-06 22:21"), Some(1_796_595_660_000.0));
        for bad in [
            "",
            "abc",
            "2026-13-01",
            "2026-12-06 25:00",
            "2026-12-06 22:21:29.",
            "12",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        let ms = parse_date("2026-12-06 22:21:29.123456").unwrap_or(0.0);
        assert_eq!(
            format_date(ms).as_deref(),
            Some("2026-12-06 22:21:29.123456")
        );
        assert_eq!(
            format_date(-1.0).as_deref(),
            Some("1969-12-31 23:59:59.999000")
        );
        assert_eq!(format_time(1_796_595_689_500), "2026-12-06T22:21:29.500Z");
        assert_eq!(format_date(f64::NAN), None);
    }

    #[test]
    fn a_line_is_its_points_and_they_round_trip() {
        let mut u = Update::default();
        u.data.push((
            Str::from("x"),
            Value::Array(vec![Value::Number(1.0), Value::Number(2.0)]),
        ));
        u.data.push((
            Str::from("y"),
            Value::Array(vec![Value::Str(Str::from("a"))]),
        ));
        let pts: Vec<Point> = points_of(&u, 7, 1000).map(PointRef::to_point).collect();
        assert_eq!(points_of(&u, 7, 1000).len(), 2);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[1].x, Val::Num(2.0));
        assert_eq!(pts[1].y, Val::None);
        let mut rec = Vec::new();
        encode_points(pts.iter(), &mut rec);
        assert_eq!(decode_points(&rec), Some(pts));
        for cut in 0..rec.len() {
            assert_eq!(decode_points(&rec[..cut]), None);
        }
        let mut style = Update::default();
        style
            .data
            .push((Str::from("marker.color"), Value::Str(Str::from("red"))));
        assert_eq!(points_of(&style, 1, 0).len(), 0);
        assert_eq!(points_of(&style, 1, 0).next(), None);
    }
}
