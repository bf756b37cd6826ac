//! A strict, bounded JSON parser for one trace-update line (docs/reliability.md P4, L19–L22).
//!
//! Why our own parser: the line rules are stricter than RFC 8259 (only SP and HTAB are
//! whitespace, duplicate member names are errors, depth is capped at 32) and strings should stay
//! zero-copy slices of the line. Numbers are parsed with the standard library's correctly
//! rounded `f64` parser, so every finite `f64` written by any flavour decodes to identical bits.

use bytes::Bytes;

use crate::limits::Limits;

/// A JSON value of an accepted line.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A finite number (P11: every number is held as an `f64`).
    Number(f64),
    /// A string, unescaped.
    Str(Str),
    /// An array of at most L22 values.
    Array(Vec<Value>),
    /// An object of at most L21 members with distinct names, in wire order.
    Object(Vec<(Str, Value)>),
}

/// An unescaped JSON string: a zero-copy slice of the line when it had no escapes.
///
/// Invariant: the bytes are valid UTF-8 without lone surrogates.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Str(Bytes);

impl Str {
    /// Wraps a `&'static str`.
    pub const fn from_static(s: &'static str) -> Str {
        Str(Bytes::from_static(s.as_bytes()))
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Invariant of `Str`: the parser only builds it from validated UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying shared bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(Bytes::from(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line is not one valid JSON value within limits. Every variant maps to 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// The bytes are not JSON at this offset.
    Syntax(usize),
    /// Bytes follow the value.
    TrailingBytes(usize),
    /// A number outside RFC 8259 §6 or outside the finite `f64` range.
    Number(usize),
    /// Invalid UTF-8, a raw control character or a lone surrogate in a string.
    String(usize),
    /// Nesting deeper than L19.
    TooDeep,
    /// A decoded string longer than L20.
    StringTooLong,
    /// An object with more than L21 members.
    TooManyMembers,
    /// An array with more than L22 values.
    ArrayTooLong,
    /// Two members of one object share a name after unescaping.
    DuplicateName,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Syntax(at) => write!(f, "invalid json at byte {at}"),
            JsonError::TrailingBytes(at) => write!(f, "bytes after the json value at byte {at}"),
            JsonError::Number(at) => write!(f, "invalid number at byte {at}"),
            JsonError::String(at) => write!(f, "invalid string at byte {at}"),
            JsonError::TooDeep => f.write_str("json nested deeper than the depth limit"),
            JsonError::StringTooLong => f.write_str("json string longer than the string limit"),
            JsonError::TooManyMembers => {
                f.write_str("json object with more members than the limit")
            }
            JsonError::ArrayTooLong => f.write_str("json array longer than the array limit"),
            JsonError::DuplicateName => f.write_str("duplicate member name"),
        }
    }
}

impl std::error::Error for JsonError {}

/// Parses `line` (without its LF and CR) as exactly one JSON value, SP/HTAB allowed around it.
pub fn parse(line: &Bytes, limits: &Limits) -> Result<Value, JsonError> {
    let mut p = Parser::new(line, line, limits);
    p.skip_ws();
    let value = p.value(1)?;
    p.skip_ws();
    if p.pos != line.len() {
        return Err(JsonError::TrailingBytes(p.pos));
    }
    Ok(value)
}

/// Parses `line` and requires a top-level object; returns its members.
pub fn parse_object(line: &Bytes, limits: &Limits) -> Result<Vec<(Str, Value)>, JsonError> {
    let mut p = Parser::new(line, line, limits);
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(JsonError::Syntax(p.pos));
    }
    let members = p.object(1)?;
    p.skip_ws();
    if p.pos != line.len() {
        return Err(JsonError::TrailingBytes(p.pos));
    }
    Ok(members)
}

/// A parser over `src`, a slice of `owner`: strings without escapes become zero-copy slices of
/// `owner`, and nothing else touches its reference count.
pub(crate) struct Parser<'a> {
    owner: &'a Bytes,
    /// Invariant: `src` lies within `owner`.
    src: &'a [u8],
    /// Invariant: pos <= src.len().
    pub(crate) pos: usize,
    limits: &'a Limits,
}

impl<'a> Parser<'a> {
    /// A parser of `src`, which must be a slice of `owner`'s bytes.
    pub(crate) fn new(owner: &'a Bytes, src: &'a [u8], limits: &'a Limits) -> Parser<'a> {
        Parser {
            owner,
            src,
            pos: 0,
            limits,
        }
    }

    /// True when every byte was consumed.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.src.len()
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    #[inline]
    pub(crate) fn skip_ws(&mut self) {
        // P4: only SP and HTAB; a CR that survived the line strip is an error (C20).
        while let Some(b' ' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => Ok(Value::Object(self.object(depth)?)),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => Ok(Value::Number(self.number()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            _ => Err(JsonError::Syntax(self.pos)),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(JsonError::Syntax(self.pos))
        }
    }

    pub(crate) fn object(&mut self, depth: usize) -> Result<Vec<(Str, Value)>, JsonError> {
        if depth > self.limits.json_depth {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1; // '{'
        let mut members: Vec<(Str, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(JsonError::Syntax(self.pos));
            }
            let name = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(JsonError::Syntax(self.pos));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            if members.len() == self.limits.json_members {
                return Err(JsonError::TooManyMembers);
            }
            members.push((name, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
        check_distinct(&members)?;
        Ok(members)
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > self.limits.json_depth {
            return Err(JsonError::TooDeep);
        }
        self.pos += 1; // '['
        let mut values = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(values));
        }
        loop {
            self.skip_ws();
            let value = self.value(depth + 1)?;
            if values.len() == self.limits.json_array {
                return Err(JsonError::ArrayTooLong);
            }
            values.push(value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(values));
                }
                _ => return Err(JsonError::Syntax(self.pos)),
            }
        }
    }

    fn number(&mut self) -> Result<f64, JsonError> {
        let start = self.pos;
        let s: &'a [u8] = self.src;
        let mut i = start;
        let negative = s[i] == b'-';
        if negative {
            i += 1;
        }
        // The significant digits as they go by (at most 19 fit a u64), for the fast path.
        let mut mantissa: u64 = 0;
        let mut n_significant = 0u32;
        // int = zero / ( digit1-9 *DIGIT )
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digit_run(s, i, &mut mantissa, &mut n_significant),
            _ => return Err(JsonError::Number(start)),
        }
        let mut exp10: i64 = 0;
        // frac = decimal-point 1*DIGIT
        if s.get(i) == Some(&b'.') {
            i += 1;
            let end = digit_run(s, i, &mut mantissa, &mut n_significant);
            if end == i {
                return Err(JsonError::Number(start));
            }
            // Every fraction digit scales the mantissa down by ten (at most L19's line bytes).
            exp10 -= i64::try_from(end - i).map_err(|_| JsonError::Number(start))?;
            i = end;
        }
        // exp = e [ minus / plus ] 1*DIGIT
        if let Some(b'e' | b'E') = s.get(i) {
            i += 1;
            let exp_negative = s.get(i) == Some(&b'-');
            if let Some(b'+' | b'-') = s.get(i) {
                i += 1;
            }
            let digits = i;
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = s.get(i) {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 40);
                i += 1;
            }
            if i == digits {
                return Err(JsonError::Number(start));
            }
            exp10 += if exp_negative { -e } else { e };
        }
        // A leading zero followed by more digits ("01") ends the int early; the next byte is then
        // a digit, which no JSON grammar state accepts.
        if let Some(b'0'..=b'9') = s.get(i) {
            return Err(JsonError::Number(start));
        }
        self.pos = i;
        // Clinger's fast path: a mantissa below 2^53 and a power of ten below 10^23 are both
        // exact doubles, so one multiplication or division is correctly rounded.
        if n_significant <= 19 && mantissa <= 1 << 53 && (-22..=22).contains(&exp10) {
            #[allow(clippy::cast_precision_loss)] // mantissa <= 2^53: exact
            let m = mantissa as f64;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // |exp10| <= 22
            let p = POW10[exp10.unsigned_abs() as usize];
            let f = if exp10 < 0 { m / p } else { m * p };
            return Ok(if negative { -f } else { f });
        }
        // Up to 19 digits at other scales (full-precision values like 0.12345678901234567):
        // exact integer arithmetic, correctly rounded.
        if n_significant <= 19 {
            if let Some(f) = exact_from_parts(mantissa, exp10) {
                return Ok(if negative { -f } else { f });
            }
        }
        // Anything else through the standard library's correctly rounded parser.
        let text = std::str::from_utf8(&s[start..i]).map_err(|_| JsonError::Number(start))?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(JsonError::Number(start)),
        }
    }

    pub(crate) fn string(&mut self) -> Result<Str, JsonError> {
        Ok(match self.string_raw()? {
            std::borrow::Cow::Borrowed(raw) => Str(self.owner.slice_ref(raw)),
            std::borrow::Cow::Owned(v) => Str(Bytes::from(v)),
        })
    }

    /// A string's unescaped bytes, borrowed from the input when it had no escapes, without
    /// touching any reference count (member names on the hot path).
    pub(crate) fn string_raw(&mut self) -> Result<std::borrow::Cow<'a, [u8]>, JsonError> {
        let start = self.pos;
        self.pos += 1; // '"'
        let body = self.pos;
        let s: &'a [u8] = self.src;
        // Fast path: scan for the closing quote; bail to the slow path at the first escape.
        let mut i = body;
        loop {
            match s.get(i) {
                None => return Err(JsonError::String(start)),
                Some(b'"') => {
                    let raw = &s[body..i];
                    if raw.len() > self.limits.json_string {
                        return Err(JsonError::StringTooLong);
                    }
                    if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
                        return Err(JsonError::String(start));
                    }
                    self.pos = i + 1;
                    return Ok(std::borrow::Cow::Borrowed(raw));
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => return Err(JsonError::String(i)),
                Some(_) => i += 1,
            }
        }
        let mut out: Vec<u8> = s[body..i].to_vec();
        loop {
            match s.get(i) {
                None => return Err(JsonError::String(start)),
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    i += 1;
                    let esc = *s.get(i).ok_or(JsonError::String(i))?;
                    i += 1;
                    let byte = match esc {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let c = self.unicode_escape(&mut i)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(JsonError::String(i - 1)),
                    };
                    out.push(byte);
                }
                Some(&c) if c < 0x20 => return Err(JsonError::String(i)),
                Some(&c) => {
                    out.push(c);
                    i += 1;
                }
            }
            if out.len() > self.limits.json_string {
                return Err(JsonError::StringTooLong);
            }
        }
        if out.len() > self.limits.json_string {
            return Err(JsonError::StringTooLong);
        }
        if std::str::from_utf8(&out).is_err() {
            return Err(JsonError::String(start));
        }
        self.pos = i;
        Ok(std::borrow::Cow::Owned(out))
    }

    /// Reads `XXXX` (and a following `\uXXXX` low surrogate) after `\u`; lone surrogates fail (C12).
    fn unicode_escape(&self, i: &mut usize) -> Result<char, JsonError> {
        let hi = hex4(self.src, *i).ok_or(JsonError::String(*i))?;
        *i += 4;
        let code = match hi {
            0xD800..=0xDBFF => {
                if self.src.get(*i) != Some(&b'\\') || self.src.get(*i + 1) != Some(&b'u') {
                    return Err(JsonError::String(*i));
                }
                let lo = hex4(self.src, *i + 2).ok_or(JsonError::String(*i))?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(JsonError::String(*i));
                }
                *i += 6;
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(JsonError::String(*i)),
            c => c,
        };
        char::from_u32(code).ok_or(JsonError::String(*i))
    }
}

/// Reads the digits from `s[i..]` into `mantissa` (leading zeros are not significant; digits
/// past the 19th are counted in `n_significant` but not added) and returns the index after them.
/// Eight digits at a time while they still fit the 19 of the mantissa.
#[inline(always)] // both call sites are the hot number path
fn digit_run(s: &[u8], mut i: usize, mantissa: &mut u64, n_significant: &mut u32) -> usize {
    loop {
        if *mantissa != 0 && *n_significant <= 11 {
            if let Some(v) = eight_digits(s, i) {
                *mantissa = *mantissa * 100_000_000 + v;
                *n_significant += 8;
                i += 8;
                continue;
            }
        }
        let Some(&d @ b'0'..=b'9') = s.get(i) else {
            return i;
        };
        i += 1;
        if *mantissa == 0 && d == b'0' {
            continue;
        }
        *n_significant += 1;
        if *n_significant <= 19 {
            *mantissa = *mantissa * 10 + u64::from(d - b'0');
        }
    }
}

/// The value of the eight ASCII digits at `s[i..i + 8]`, or `None` if there are fewer than eight
/// bytes or any is not a digit (SWAR, as in fast_float's `parse_eight_digits_unrolled`).
#[inline]
fn eight_digits(s: &[u8], i: usize) -> Option<u64> {
    let bytes: [u8; 8] = s.get(i..i + 8)?.try_into().ok()?;
    let v = u64::from_le_bytes(bytes);
    // Every byte in 0x30..=0x39: the high nibble is 3, and adding 6 does not carry out of it.
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    if v & HIGH != ZEROS || v.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    // Byte k (little-endian) holds the k-th digit; combine pairs, then quads, then the halves.
    let v = v - ZEROS;
    let v = (v * 10) + (v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32))
        + ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

/// `mantissa × 10^exp10`, correctly rounded (to nearest, ties to even), for `mantissa < 2^64`
/// and `-21 <= exp10 <= 19`; `None` outside that range.
///
/// Positive scales multiply in `u128` (exact) and convert once; Rust's integer-to-float `as` is
/// correctly rounded. Negative scales divide a left-aligned `u128` numerator by `10^-exp10`: the
/// quotient keeps at least 57 bits, so with the remainder folded into its lowest bit as a sticky
/// bit the one conversion rounds exactly as the real quotient would, and the power-of-two scale
/// that follows is exact (the result stays far above the subnormals).
fn exact_from_parts(mantissa: u64, exp10: i64) -> Option<f64> {
    if mantissa == 0 {
        return Some(0.0);
    }
    let e = usize::try_from(exp10.unsigned_abs()).ok()?;
    if exp10 >= 0 {
        let p = *POW10_U128.get(e).filter(|_| e <= 19)?;
        #[allow(clippy::cast_precision_loss)] // correctly rounded by definition of `as`
        return Some((u128::from(mantissa) * p) as f64);
    }
    let d = *POW10_U128.get(e).filter(|_| e <= 21)?;
    let shift = 64 + mantissa.leading_zeros();
    let n = u128::from(mantissa) << shift;
    let (q, r) = (n / d, n % d);
    // 10^21 < 2^70 and n >= 2^127, so q >= 2^57: bit 0 lies below the rounding position.
    let q = q | u128::from(r != 0);
    #[allow(clippy::cast_precision_loss)] // correctly rounded by definition of `as`
    let f = q as f64;
    // 2^-shift, shift in 64..=127: a normal double.
    let scale = f64::from_bits(u64::from(1023 - shift) << 52);
    Some(f * scale)
}

/// 10^0 ..= 10^21 as integers.
const POW10_U128: [u128; 22] = {
    let mut t = [1u128; 22];
    let mut i = 1;
    while i < 22 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// 10^0 ..= 10^22, every one an exact double.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}

/// Duplicate names after unescaping (C10): pairwise for small objects, sorted otherwise, so the
/// check is O(n log n) at worst (F4).
fn check_distinct(members: &[(Str, Value)]) -> Result<(), JsonError> {
    if members.len() <= 8 {
        for (i, (a, _)) in members.iter().enumerate() {
            if members[..i].iter().any(|(b, _)| a == b) {
                return Err(JsonError::DuplicateName);
            }
        }
        return Ok(());
    }
    let mut names: Vec<&[u8]> = members.iter().map(|(n, _)| n.as_bytes()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(JsonError::DuplicateName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number_of(text: &str) -> f64 {
        match parse(&Bytes::copy_from_slice(text.as_bytes()), &Limits::default()) {
            Ok(Value::Number(f)) => f,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// Exactly halfway between two doubles, and one digit either side: ties go to even.
    #[test]
    fn long_mantissas_round_to_nearest_even() {
        // 2^53 + 1 is halfway between 2^53 and 2^53 + 2: the tie goes to 2^53 (even).
        for text in [
            "9007199254740993",
            "9007199254740993e0",
            "90071992547409930e-1",
            "9007199254740995",
            "0.9007199254740993",
            "0.12345678901234567",
            "1844674407370955161.5e-1",
            "1e-21",
            "9999999999999999999e-21",
            "9999999999999999999e19",
        ] {
            let want: f64 = text.parse().unwrap();
            assert_eq!(number_of(text).to_bits(), want.to_bits(), "{text}");
        }
    }

    #[test]
    fn eight_digits_at_a_time() {
        assert_eq!(eight_digits(b"12345678", 0), Some(12_345_678));
        assert_eq!(eight_digits(b"x00000009", 1), Some(9));
        assert_eq!(eight_digits(b"99999999", 0), Some(99_999_999));
        assert_eq!(eight_digits(b"1234567", 0), None);
        for bad in [
            b"1234567:",
            b"123/5678",
            b"1234 678",
            b"12345.78",
            b"e2345678",
        ] {
            assert_eq!(eight_digits(bad, 0), None, "{:?}", bad);
        }
    }

    proptest::proptest! {
        /// Any digit string in a number: the same value as the standard library's parser, and
        /// the same bytes consumed (fraction and exponent included).
        #[test]
        fn digit_runs_match_std(int in "[1-9][0-9]{0,24}", frac in "[0-9]{0,24}", exp in -30i32..30) {
            let text = if frac.is_empty() { format!("{int}e{exp}") } else { format!("{int}.{frac}e{exp}") };
            let want: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(number_of(&text).to_bits(), want.to_bits(), "{}", text);
            let text = format!("-0.{frac}1");
            let want: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(number_of(&text).to_bits(), want.to_bits(), "{}", text);
        }

        /// Every mantissa of up to 19 digits at every scale the integer path takes: the same
        /// bits as the standard library's correctly rounded parser.
        #[test]
        fn integer_path_matches_std(m in 0u64..=9_999_999_999_999_999_999, e in -21i64..=19) {
            let text = format!("{m}e{e}");
            let want: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(number_of(&text).to_bits(), want.to_bits(), "{}", text);
        }
    }

    #[track_caller]
    fn check(input: &[u8], expected: Result<(), JsonError>) {
        let got = parse(&Bytes::copy_from_slice(input), &Limits::default()).map(|_| ());
        assert_eq!(got, expected, "input {:?}", String::from_utf8_lossy(input));
    }

    #[track_caller]
    fn rejects(input: &[u8]) {
        let got = parse(&Bytes::copy_from_slice(input), &Limits::default());
        assert!(
            got.is_err(),
            "accepted {:?}: {got:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn accepts_rfc_values() {
        for ok in [
            &b"{}"[..],
            b"{\"x\": 1, \"y\": 2}",
            b" \t{\"x\":[1,2,3],\"y\":[4,5,6]} \t",
            b"{\"x\": \"2026-01-01T10:00:00.123456\", \"y\": null}",
            b"{\"a\":true,\"b\":false,\"c\":-0,\"d\":1.5e-3,\"e\":1E+2}",
            b"{\"x\":\"\\ud83d\\ude00\"}",
        ] {
            check(ok, Ok(()));
        }
    }

    #[test]
    fn rejects_non_rfc_numbers() {
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
            "-",
            "1e",
            "1e+",
        ] {
            rejects(format!("{{\"x\":{v},\"y\":1}}").as_bytes());
        }
    }

    #[test]
    fn only_sp_and_htab_are_whitespace() {
        rejects(b"{\"x\":1,\r\"y\":2}");
        rejects(b"{\"x\":1,\n\"y\":2}");
    }

    #[test]
    fn rejects_bad_strings() {
        rejects(b"{\"x\":\"\xff\",\"y\":1}");
        rejects(b"{\"x\":\"\xc0\xaf\",\"y\":1}");
        rejects(b"{\"x\":\"\xed\xa0\x80\",\"y\":1}");
        rejects(b"{\"x\":\"\\ud800\",\"y\":1}");
        rejects(b"{\"x\":\"\\udc00x\",\"y\":1}");
        rejects(b"{\"x\":\"a\x01\",\"y\":1}");
        rejects(b"{\"x\":\"a\tb\",\"y\":1}");
        rejects(b"{\"x\":\"\\q\"}");
    }

    #[test]
    fn rejects_duplicates_after_unescaping() {
        check(b"{\"x\":1,\"x\":2,\"y\":3}", Err(JsonError::DuplicateName));
        check(
            b"{\"x\":1,\"\\u0078\":2,\"y\":3}",
            Err(JsonError::DuplicateName),
        );
        check(
            b"{\"x\":1,\"y\":1,\"marker\":{\"color\":\"a\",\"color\":\"b\"}}",
            Err(JsonError::DuplicateName),
        );
        let many: String = (0..20).map(|i| format!("\"k{i}\":1,")).collect::<String>() + "\"k3\":2";
        check(
            format!("{{{many}}}").as_bytes(),
            Err(JsonError::DuplicateName),
        );
    }

    #[test]
    fn depth_limit_is_32() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // The top value is depth 1.
        check(nest(32).as_bytes(), Ok(()));
        check(nest(33).as_bytes(), Err(JsonError::TooDeep));
        check(nest(10_000).as_bytes(), Err(JsonError::TooDeep));
    }

    #[test]
    fn string_limit_at_boundaries() {
        for (n, ok) in [(1023, true), (1024, true), (1025, false)] {
            let line = format!("{{\"text\":\"{}\"}}", "A".repeat(n));
            assert_eq!(
                parse(&Bytes::from(line), &Limits::default()).is_ok(),
                ok,
                "{n}"
            );
        }
        // Escaped: the decoded length counts.
        let line = format!("{{\"text\":\"{}\"}}", "\\n".repeat(1024));
        assert!(parse(&Bytes::from(line), &Limits::default()).is_ok());
    }

    #[test]
    fn member_and_array_limits_at_boundaries() {
        for (n, ok) in [(255, true), (256, true), (257, false)] {
            let members: Vec<String> = (0..n).map(|i| format!("\"k{i}\":1")).collect();
            let line = format!("{{{}}}", members.join(","));
            assert_eq!(
                parse(&Bytes::from(line), &Limits::default()).is_ok(),
                ok,
                "{n}"
            );
        }
        for (n, ok) in [(9_999, true), (10_000, true), (10_001, false)] {
            let line = format!("{{\"x\":[{}]}}", vec!["0"; n].join(","));
            assert_eq!(
                parse(&Bytes::from(line), &Limits::default()).is_ok(),
                ok,
                "{n}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        rejects(b"{\"x\":1,\"y\":1}{\"x\":2,\"y\":2}");
        rejects(b"{\"x\":1,\"y\":1} x");
        rejects(b"{\"x\":1,\"y\":1},");
    }

    #[test]
    fn numbers_are_exact() {
        for f in [
            0.1,
            1.0 / 3.0,
            5e-324,
            f64::MAX,
            -2.2250738585072014e-308,
            123456.789,
        ] {
            let line = format!("{{\"y\":{f:e}}}");
            let v = parse(&Bytes::from(line), &Limits::default()).unwrap();
            let Value::Object(m) = v else { panic!() };
            assert_eq!(m[0].1, Value::Number(f));
        }
    }

    #[test]
    fn strings_without_escapes_are_zero_copy() {
        let line = Bytes::from_static(b"{\"x\":\"abc\"}");
        let m = parse_object(&line, &Limits::default()).unwrap();
        let Value::Str(s) = &m[0].1 else { panic!() };
        assert_eq!(s.as_bytes().as_ptr(), line[6..].as_ptr());
    }
}
