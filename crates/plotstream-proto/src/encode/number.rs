//! Numbers in each flavour's notation: integers with `itoa`, floats with `zmij` reshaped into
//! CPython's `repr` or ECMAScript's `Number::toString`, on stack buffers.

use super::style::NumStyle;

/// A point coordinate: an integer (e.g. milliseconds) or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer, printed exactly (in the Node style only up to 2^53, like a JavaScript number).
    Int(i64),
    /// A float; NaN and infinities are written as `null`, as PlotlyJSONEncoder does.
    Float(f64),
}

/// Stack buffers for one formatted number.
pub(super) struct NumScratch {
    itoa: itoa::Buffer,
    zmij: zmij::Buffer,
    /// A reshaped float; the longest is `-0.00000` plus 17 digits, or 21 digits and a sign.
    /// Only the Python and JavaScript notations need it: left `None` (one byte to initialise)
    /// on the Raw path.
    fixed: Option<[u8; 32]>,
}

impl NumScratch {
    #[inline]
    pub(super) fn new() -> NumScratch {
        NumScratch {
            itoa: itoa::Buffer::new(),
            zmij: zmij::Buffer::new(),
            fixed: None,
        }
    }

    /// A point coordinate in `style`.
    #[inline(always)]
    pub(super) fn format(&mut self, style: NumStyle, num: Num) -> &[u8] {
        match num {
            Num::Int(i) if style != NumStyle::Js || i.unsigned_abs() <= MAX_SAFE_INT => {
                self.itoa.format(i).as_bytes()
            }
            #[allow(clippy::cast_precision_loss)] // JavaScript rounds the integer to a double too
            Num::Int(i) => self.float(style, i as f64),
            Num::Float(f) => self.float(style, f),
        }
    }

    /// A JSON value number in `style`: integral values below 2^53 print as integers (Python
    /// users write `1`, not `1.0`, in arrays and layouts).
    pub(super) fn value_number(&mut self, style: NumStyle, f: f64) -> &[u8] {
        if style != NumStyle::Js && f.trunc() == f && f.abs() < MAX_SAFE_FLOAT {
            if f == 0.0 && f.is_sign_negative() {
                return if style == NumStyle::Python {
                    b"-0.0"
                } else {
                    b"-0"
                };
            }
            #[allow(clippy::cast_possible_truncation)] // integral and |f| < 2^53: exact
            return self.itoa.format(f as i64).as_bytes();
        }
        self.float(style, f)
    }

    #[inline(always)]
    fn float(&mut self, style: NumStyle, f: f64) -> &[u8] {
        if !f.is_finite() {
            return b"null";
        }
        if style == NumStyle::Js && f == 0.0 {
            return b"0"; // JavaScript prints -0 as 0.
        }
        let s = self.zmij.format_finite(f).as_bytes();
        match style {
            NumStyle::Raw => s,
            NumStyle::Python => python_repr(s, self.fixed.get_or_insert([0; 32])),
            NumStyle::Js => js_to_string(s, self.fixed.get_or_insert([0; 32])),
        }
    }
}

/// Reshapes `zmij`'s output into CPython's `repr`. Both pick the same shortest digits; they
/// differ in notation: Python uses exponents from 1e-05 on (zmij from 1e-6) and pads the
/// exponent to two digits.
#[inline]
fn python_repr<'a>(s: &'a [u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    let neg = usize::from(s[0] == b'-');
    let body = &s[neg..];
    if let Some(e) = body.iter().position(|&b| b == b'e') {
        let exp = &body[e + 2..];
        if exp.len() >= 2 {
            return s;
        }
        // `1e-6` → `1e-06`: one exponent digit, always negative here (zmij's positive exponents
        // start at 16).
        let mut w = Writer::new(buf);
        w.put(&s[..neg + e + 2]);
        w.put(b"0");
        w.put(exp);
        return w.finish();
    }
    if body.starts_with(b"0.0000") {
        // Exponent −5, which zmij still prints in fixed notation: `0.0000123` → `1.23e-05`.
        let digits = &body[6..];
        let mut w = Writer::new(buf);
        w.put(&s[..neg]);
        w.put(&digits[..1]);
        if digits.len() > 1 {
            w.put(b".");
            w.put(&digits[1..]);
        }
        w.put(b"e-05");
        return w.finish();
    }
    s
}

/// Reshapes `zmij`'s output into ECMAScript's `Number::toString`: no `.0` on integers, fixed
/// notation for decimal exponents −7 < e < 21, unpadded exponents otherwise.
#[inline]
fn js_to_string<'a>(s: &'a [u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    let neg = usize::from(s[0] == b'-');
    let body = &s[neg..];
    let Some(e) = body.iter().position(|&b| b == b'e') else {
        return s.strip_suffix(b".0").unwrap_or(s);
    };
    let exp_negative = body[e + 1] == b'-';
    let mut exp: usize = 0;
    for &d in &body[e + 2..] {
        exp = exp * 10 + usize::from(d - b'0');
    }
    let mantissa = &body[..e];
    let (lead, frac) = match mantissa.split_first() {
        Some((lead, rest)) => (*lead, rest.strip_prefix(b".").unwrap_or(rest)),
        None => return s,
    };
    let mut w = Writer::new(buf);
    w.put(&s[..neg]);
    if exp_negative && exp == 6 {
        // `1.5e-6` → `0.0000015`.
        w.put(b"0.00000");
        w.put(&[lead]);
        w.put(frac);
        w.finish()
    } else if !exp_negative && (16..=20).contains(&exp) {
        // `1.2345e+17` → `123450000000000000`: at most 17 digits, so all lie left of the point.
        w.put(&[lead]);
        w.put(frac);
        for _ in frac.len()..exp {
            w.put(b"0");
        }
        w.finish()
    } else {
        s
    }
}

/// Appends to a fixed stack buffer; reshaped numbers are at most 25 bytes.
struct Writer<'a> {
    buf: &'a mut [u8; 32],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8; 32]) -> Writer<'a> {
        Writer { buf, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(self) -> &'a [u8] {
        &self.buf[..self.len]
    }
}

/// 2^53: JavaScript's safe integers, and the integers every `f64` below it holds exactly.
const MAX_SAFE_INT: u64 = 1 << 53;
#[allow(clippy::cast_precision_loss)] // 2^53 is exact
const MAX_SAFE_FLOAT: f64 = MAX_SAFE_INT as f64;
