//! The client side of the wire: request heads, point lines and chunks in each real client's exact
//! style (docs/protocol.md §2.9–§2.14, §3.6), and compact JSON for values.
//!
//! Everything appends to a buffer the caller owns; nothing allocates on the point path. Numbers
//! are formatted with `itoa` and `zmij` (shortest round trip), then reshaped into the flavour's
//! notation, so every finite `f64` written by any flavour decodes to identical bits — except
//! `-0.0` in the [`Flavour::Node`] style, which JavaScript prints as `0`.
//!
//! The point path is the hot one (docs/performance.md). Each flavour gets its own monomorphic copy,
//! so punctuation is copied in constant-size moves. Both numbers are formatted first, which gives
//! the line length, so the size line is written before the line and nothing is patched or moved
//! afterwards. The chunk is assembled in place at the end of `out`: a constant-size zeroed
//! reservation, constant-size (or two overlapping fixed-size) moves, then a truncation — one
//! capacity check and no `memcpy` call per point. [`ChunkBatch`] cannot know its length up
//! front: it reserves a fixed-width size field and fills it in with leading zeros at
//! [`ChunkBatch::finish`].

use crate::json::Value;
use crate::update::{Token, Update};

/// Which real client's bytes to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// chart_studio 1.1.0 on CPython (§2.9): `json.dumps` with `", "` and `": "`, Python `repr`
    /// floats, pure ASCII strings, lowercase hex sizes, `\r\n0\r\n\r\n` at close.
    Python,
    /// npm plotly@1.0.6 (§2.10): `JSON.stringify`, compact, JavaScript number notation.
    Node,
    /// arduino-api v2 (§2.11): `", "` and `": "`, a `streamtoken` in every line, UPPERCASE sizes,
    /// `Host: 127.0.0.1` and no token header. Floats are written in Python notation, since the
    /// library's fixed two decimals would not round-trip.
    Arduino,
    /// plotstream's own writer: compact, shortest numbers as `zmij` prints them, fastest.
    Raw,
}

/// A point coordinate: an integer (e.g. milliseconds) or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer, printed exactly (in the Node style only up to 2^53, like a JavaScript number).
    Int(i64),
    /// A float; NaN and infinities are written as `null`, as PlotlyJSONEncoder does.
    Float(f64),
}

/// Appends one JSON line (with its `\n`) for the point `{x, y}` in the flavour's style, with a
/// `"streamtoken"` member last when `token` is `Some`:
///
/// | flavour | line |
/// |---|---|
/// | Python | `{"x": 1, "y": 0.5}` |
/// | Node, Raw | `{"x":1,"y":0.5}` |
/// | Arduino | `{"x": 1500, "y": 512, "streamtoken": "abcdef1234"}` |
pub fn encode_point_line(
    flavour: Flavour,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    // One monomorphic copy per flavour: the punctuation becomes constant-size copies.
    match flavour {
        Flavour::Python => point_line(&PYTHON, x, y, token, out),
        Flavour::Node => point_line(&NODE, x, y, token, out),
        Flavour::Arduino => point_line(&ARDUINO, x, y, token, out),
        Flavour::Raw => point_line(&RAW, x, y, token, out),
    }
}

/// Appends one point as one chunk in the flavour's framing: the size line (lowercase hex, or
/// UPPERCASE for Arduino, always with the correct size), the line and CRLF.
pub fn encode_point_chunk(
    flavour: Flavour,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    match flavour {
        Flavour::Python => point_chunk(&PYTHON, x, y, token, out),
        Flavour::Node => point_chunk(&NODE, x, y, token, out),
        Flavour::Arduino => point_chunk(&ARDUINO, x, y, token, out),
        Flavour::Raw => point_chunk(&RAW, x, y, token, out),
    }
}

/// Appends any update as one JSON line in the flavour's style: `data` in order, `marker.<k>`
/// paths re-nested into one `"marker"` object at the position of the first of them, then
/// `"line"` (when not empty), `"layout"` (when present) and `"streamtoken"` last — `token`, else
/// the update's own. Strings are escaped so the line is valid JSON without raw control
/// characters; the Python style also escapes everything outside printable ASCII (`ensure_ascii`).
pub fn encode_update_line(
    flavour: Flavour,
    update: &Update,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    let style = Style::of(flavour);
    out.push(b'{');
    let mut first = true;
    let mut marker_written = false;
    for (key, value) in &update.data {
        if key.as_str().starts_with(MARKER_PREFIX) {
            if marker_written {
                continue;
            }
            marker_written = true;
            let paths: Vec<(&str, &Value)> = update
                .data
                .iter()
                .filter_map(|(k, v)| k.as_str().strip_prefix(MARKER_PREFIX).map(|p| (p, v)))
                .collect();
            style.member_start(&mut first, "marker", out);
            write_nested(style, &paths, out);
        } else {
            style.member_start(&mut first, key.as_str(), out);
            write_value(style, value, out);
        }
    }
    if !update.line.is_empty() {
        style.member_start(&mut first, "line", out);
        write_object(style, &update.line, out);
    }
    if let Some(layout) = &update.layout {
        style.member_start(&mut first, "layout", out);
        write_object(style, layout, out);
    }
    if let Some(token) = token.or(update.token.as_ref()) {
        style.member_start(&mut first, "streamtoken", out);
        write_str(style.ascii, token.as_str(), out);
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `value` as compact JSON. Integral numbers below 2^53 in magnitude are printed as
/// integers (`-0.0` as `-0`), others as the shortest round-trip form; the output is valid JSON
/// and decodes to identical bits.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    write_value(&RAW, value, out);
}

/// Batches many points into one chunk (the Raw writer, `--points-per-chunk`).
///
/// [`ChunkBatch::begin`] reserves a size field of [`BATCH_SIZE_DIGITS`] hex digits,
/// [`ChunkBatch::push_point`] appends lines and [`ChunkBatch::finish`] fills the size in with
/// leading zeros (RFC 9112 allows them; the field only widens, by moving the lines once, for
/// chunks of 64 KiB and more) and appends the CRLF. Leading zeros measured faster than moving
/// the lines to an exact-width field, and they stay far below the 32-digit limit L12.
#[derive(Debug)]
pub struct ChunkBatch {
    /// Where the size field starts in the caller's buffer.
    /// Invariant: `out[start..start + BATCH_SIZE_DIGITS + 2]` is the reserved size line.
    start: usize,
    n_points: usize,
    upper_hex: bool,
}

impl ChunkBatch {
    /// Reserves the size line of a new chunk at the end of `out`.
    pub fn begin(out: &mut Vec<u8>) -> ChunkBatch {
        let start = out.len();
        out.extend_from_slice(&BATCH_SIZE_FIELD);
        ChunkBatch {
            start,
            n_points: 0,
            upper_hex: false,
        }
    }

    /// Appends one point line (see [`encode_point_line`]). `out` must be the buffer given to
    /// [`ChunkBatch::begin`]; whatever else is appended to it before [`ChunkBatch::finish`]
    /// (an [`encode_update_line`], say) becomes part of the chunk too.
    pub fn push_point(
        &mut self,
        flavour: Flavour,
        x: Num,
        y: Num,
        token: Option<&Token>,
        out: &mut Vec<u8>,
    ) {
        self.upper_hex = flavour == Flavour::Arduino;
        encode_point_line(flavour, x, y, token, out);
        self.n_points += 1;
    }

    /// Points pushed so far.
    pub fn n_points(&self) -> usize {
        self.n_points
    }

    /// Fills in the size and appends the chunk's CRLF. A batch without points leaves nothing,
    /// since an empty chunk would be the last-chunk.
    pub fn finish(self, out: &mut Vec<u8>) {
        let field_end = self.start + BATCH_SIZE_DIGITS;
        let data_start = field_end + 2;
        if out.len() <= data_start {
            out.truncate(self.start);
            return;
        }
        let len = out.len() - data_start;
        let n_digits = hex_digits(len);
        let mut at = field_end;
        if n_digits > BATCH_SIZE_DIGITS {
            // Widen the field: move the lines right once (only for chunks over 64 KiB).
            let extra = n_digits - BATCH_SIZE_DIGITS;
            let old_len = out.len();
            out.resize(old_len + extra, 0);
            out.copy_within(field_end..old_len, field_end + extra);
            at += extra;
        }
        let digits = if self.upper_hex { HEX_UPPER } else { HEX_LOWER };
        let mut v = len;
        for slot in out[self.start..at].iter_mut().rev() {
            *slot = digits[v & 0xf];
            v >>= 4;
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the request head each client sends (docs/protocol.md §2.9–§2.14). `host` includes
/// `:port` when the port is not 80.
///
/// - Python: CPython's `Host` (with port), `Accept-Encoding: identity`, `Transfer-Encoding:
///   chunked`, chart_studio's own `Host` (without port), `plotly-streamtoken`.
/// - Node: `plotly-streamtoken`, `Host`, `Connection: close`, `Transfer-Encoding: chunked`.
/// - Arduino: `Host: 127.0.0.1` whatever `host` is, `User-Agent: Python`, `Transfer-Encoding:
///   chunked`, `Connection: close`, then `plotly-convertTimestamp: "<zone>"` (quoted), and no
///   token header: tokens go in the lines. Without a zone the library ends the head with an
///   extra CRLF (K2), which is reproduced.
/// - Raw: `Host`, `plotly-streamtoken`, `Transfer-Encoding: chunked`.
///
/// The token header is left out when `token` is `None`. Flavours other than Arduino add an
/// unquoted `plotly-convertTimestamp` field last when `convert_timestamp` is `Some`.
pub fn encode_head(
    flavour: Flavour,
    host: &str,
    token: Option<&Token>,
    convert_timestamp: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"POST / HTTP/1.1\r\n");
    match flavour {
        Flavour::Python => {
            field(out, "Host", host);
            field(out, "Accept-Encoding", "identity");
            field(out, "Transfer-Encoding", "chunked");
            field(out, "Host", host_without_port(host));
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
        }
        Flavour::Node => {
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
            field(out, "Host", host);
            field(out, "Connection", "close");
            field(out, "Transfer-Encoding", "chunked");
        }
        Flavour::Arduino => {
            out.extend_from_slice(
                b"Host: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
            );
            match convert_timestamp {
                Some(zone) => {
                    out.extend_from_slice(b"plotly-convertTimestamp: \"");
                    out.extend_from_slice(zone.as_bytes());
                    out.extend_from_slice(b"\"\r\n\r\n");
                }
                // `print("\r\n\r\n")` after the last field: one CRLF more than the head needs.
                None => out.extend_from_slice(b"\r\n\r\n"),
            }
            return;
        }
        Flavour::Raw => {
            field(out, "Host", host);
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
            field(out, "Transfer-Encoding", "chunked");
        }
    }
    if let Some(zone) = convert_timestamp {
        field(out, "plotly-convertTimestamp", zone);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the close sequence: chart_studio's `\r\n0\r\n\r\n` (an empty line, then the
/// last-chunk), or `0\r\n\r\n` for the others.
pub fn encode_close(flavour: Flavour, out: &mut Vec<u8>) {
    if flavour == Flavour::Python {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Appends chart_studio's heartbeat chunk `1\r\n\n\r\n` (the same for every flavour).
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(b"1\r\n\n\r\n");
}

/// Hex digits of the size field [`ChunkBatch`] reserves: chunks up to 64 KiB − 1 need no move.
pub const BATCH_SIZE_DIGITS: usize = 4;

// ---- helpers -----------------------------------------------------------------------------

/// How a flavour spells numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumStyle {
    /// CPython `repr`: `1.0`, `1e-05`, `1e+16`.
    Python,
    /// ECMAScript `Number::toString`: `1`, `0.000001`, `1e-7`, `100000000000000000000`.
    Js,
    /// `zmij` as it prints: `1.0`, `0.00001`, `1e-6`, `1e+16`.
    Raw,
}

/// The punctuation and notations of one flavour.
#[derive(Debug, Clone, Copy)]
struct Style {
    comma: &'static [u8],
    colon: &'static [u8],
    num: NumStyle,
    /// Escape everything outside printable ASCII (`ensure_ascii`).
    ascii: bool,
    upper_hex: bool,
    x_prefix: &'static [u8],
    y_prefix: &'static [u8],
    token_prefix: &'static [u8],
}

impl Style {
    const fn of(flavour: Flavour) -> &'static Style {
        match flavour {
            Flavour::Python => &PYTHON,
            Flavour::Node => &NODE,
            Flavour::Arduino => &ARDUINO,
            Flavour::Raw => &RAW,
        }
    }

    /// Writes the separator (unless first) and `"key":`.
    fn member_start(&self, first: &mut bool, key: &str, out: &mut Vec<u8>) {
        if !*first {
            out.extend_from_slice(self.comma);
        }
        *first = false;
        write_str(self.ascii, key, out);
        out.extend_from_slice(self.colon);
    }
}

const PYTHON: Style = Style {
    comma: b", ",
    colon: b": ",
    num: NumStyle::Python,
    ascii: true,
    upper_hex: false,
    x_prefix: b"{\"x\": ",
    y_prefix: b", \"y\": ",
    token_prefix: b", \"streamtoken\": \"",
};

const ARDUINO: Style = Style {
    upper_hex: true,
    ascii: false,
    ..PYTHON
};

const NODE: Style = Style {
    comma: b",",
    colon: b":",
    num: NumStyle::Js,
    ascii: false,
    upper_hex: false,
    x_prefix: b"{\"x\":",
    y_prefix: b",\"y\":",
    token_prefix: b",\"streamtoken\":\"",
};

const RAW: Style = Style {
    num: NumStyle::Raw,
    ..NODE
};

#[inline(always)]
fn point_line(style: &Style, x: Num, y: Num, token: Option<&Token>, out: &mut Vec<u8>) {
    point::<false>(style, x, y, token, out);
}

#[inline(always)]
fn point_chunk(style: &Style, x: Num, y: Num, token: Option<&Token>, out: &mut Vec<u8>) {
    point::<true>(style, x, y, token, out);
}

/// Formats both numbers, then assembles the line (and its chunk framing when `CHUNK`) in place.
#[inline(always)]
fn point<const CHUNK: bool>(
    style: &Style,
    x: Num,
    y: Num,
    token: Option<&Token>,
    out: &mut Vec<u8>,
) {
    let (mut sx, mut sy) = (NumScratch::new(), NumScratch::new());
    let xs = sx.format(style.num, x);
    let ys = sy.format(style.num, y);
    match token {
        None => assemble::<SHORT_POINT, CHUNK>(style, xs, ys, None, out),
        Some(t) => assemble::<LONG_POINT, CHUNK>(style, xs, ys, Some(t.as_str().as_bytes()), out),
    }
}

/// Writes the pieces straight into `out`: `N` zero bytes are appended (constant-size stores),
/// the pieces are copied over them and `out` is truncated to what was written. Measured against
/// a stack buffer appended afterwards, this saves the read-back of freshly written bytes.
///
/// Invariant: `N` holds the longest point chunk of this shape: numbers are at most 24 bytes
/// (`-1.2345678901234567e-308`, `-9223372036854775808`), tokens at most 64 (L7), so a chunk is
/// at most 4 + 6 + 24 + 7 + 24 + 19 + 64 + 1 + 2 + 2 = 153 bytes and its size fits 2 hex digits.
#[inline(always)]
fn assemble<const N: usize, const CHUNK: bool>(
    style: &Style,
    xs: &[u8],
    ys: &[u8],
    token: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; N]);
    let Ok(buf) = <&mut [u8; N]>::try_from(&mut out[start..]) else {
        return; // Unreachable: exactly N bytes were just appended.
    };
    let mut w = 0;
    if CHUNK {
        let len = style.x_prefix.len()
            + xs.len()
            + style.y_prefix.len()
            + ys.len()
            + token.map_or(0, |t| style.token_prefix.len() + t.len() + 1)
            + 2;
        let digits = if style.upper_hex {
            HEX_UPPER
        } else {
            HEX_LOWER
        };
        if len >= 0x10 {
            buf[0] = digits[(len >> 4) & 0xf];
            w = 1;
        }
        buf[w] = digits[len & 0xf];
        buf[w + 1] = b'\r';
        buf[w + 2] = b'\n';
        w += 3;
    }
    put(buf, &mut w, style.x_prefix);
    put_short(buf, &mut w, xs);
    put(buf, &mut w, style.y_prefix);
    put_short(buf, &mut w, ys);
    if let Some(t) = token {
        put(buf, &mut w, style.token_prefix);
        // Tokens are `[A-Za-z0-9_-]` (L7): nothing to escape.
        put_short(buf, &mut w, t);
        put(buf, &mut w, b"\"");
    }
    put(buf, &mut w, if CHUNK { b"}\n\r\n" } else { b"}\n" });
    out.truncate(start + w);
}

/// Copies a piece whose length is a compile-time constant after inlining.
#[inline(always)]
fn put<const N: usize>(buf: &mut [u8; N], w: &mut usize, piece: &[u8]) {
    buf[*w..*w + piece.len()].copy_from_slice(piece);
    *w += piece.len();
}

/// Copies a number or token: below 32 bytes with two overlapping fixed-size moves, as `memcpy`
/// does inside, but inlined.
#[inline(always)]
fn put_short<const N: usize>(buf: &mut [u8; N], w: &mut usize, piece: &[u8]) {
    let (at, n) = (*w, piece.len());
    match n {
        32.. => buf[at..at + n].copy_from_slice(piece),
        16.. => {
            buf[at..at + 16].copy_from_slice(&piece[..16]);
            buf[at + n - 16..at + n].copy_from_slice(&piece[n - 16..]);
        }
        8.. => {
            buf[at..at + 8].copy_from_slice(&piece[..8]);
            buf[at + n - 8..at + n].copy_from_slice(&piece[n - 8..]);
        }
        4.. => {
            buf[at..at + 4].copy_from_slice(&piece[..4]);
            buf[at + n - 4..at + n].copy_from_slice(&piece[n - 4..]);
        }
        _ => {
            for (k, &b) in piece.iter().enumerate() {
                buf[at + k] = b;
            }
        }
    }
    *w += n;
}

fn hex_digits(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits as usize).div_ceil(4).max(1)
}

/// Stack buffers for one formatted number.
struct NumScratch {
    itoa: itoa::Buffer,
    zmij: zmij::Buffer,
    /// A reshaped float; the longest is `-0.00000` plus 17 digits, or 21 digits and a sign.
    /// Only the Python and JavaScript notations need it: left `None` (one byte to initialise)
    /// on the Raw path.
    fixed: Option<[u8; 32]>,
}

impl NumScratch {
    #[inline]
    fn new() -> NumScratch {
        NumScratch {
            itoa: itoa::Buffer::new(),
            zmij: zmij::Buffer::new(),
            fixed: None,
        }
    }

    /// A point coordinate in `style`.
    #[inline(always)]
    fn format(&mut self, style: NumStyle, num: Num) -> &[u8] {
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
    fn value_number(&mut self, style: NumStyle, f: f64) -> &[u8] {
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

fn write_value(style: &Style, value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(f) => out.extend_from_slice(NumScratch::new().value_number(style.num, *f)),
        Value::Str(s) => write_str(style.ascii, s.as_str(), out),
        Value::Array(values) => {
            out.push(b'[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(style.comma);
                }
                write_value(style, v, out);
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(style, members, out),
    }
}

fn write_object(style: &Style, members: &[(crate::json::Str, Value)], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (key, value) in members {
        style.member_start(&mut first, key.as_str(), out);
        write_value(style, value, out);
    }
    out.push(b'}');
}

/// Writes flattened `a.b.c` paths as nested objects, each name at its first appearance.
fn write_nested(style: &Style, paths: &[(&str, &Value)], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    let mut nested: Vec<&str> = Vec::new();
    for (i, (path, value)) in paths.iter().enumerate() {
        match path.split_once('.') {
            None => {
                style.member_start(&mut first, path, out);
                write_value(style, value, out);
            }
            Some((name, _)) => {
                if nested.contains(&name) {
                    continue;
                }
                nested.push(name);
                let inner: Vec<(&str, &Value)> = paths[i..]
                    .iter()
                    .filter_map(|(p, v)| {
                        p.split_once('.')
                            .filter(|(n, _)| *n == name)
                            .map(|(_, rest)| (rest, *v))
                    })
                    .collect();
                style.member_start(&mut first, name, out);
                write_nested(style, &inner, out);
            }
        }
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as `\b \f \n \r \t` or
/// `\u00XX`; with `ascii`, also DEL and every non-ASCII character as `\uXXXX` (surrogate pairs
/// above U+FFFF), lowercase hex like Python's `json`.
fn write_str(ascii: bool, s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let plain = match b {
            b'"' | b'\\' | 0..=0x1f => false,
            0x7f..=0xff => !ascii,
            _ => true,
        };
        if plain {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x7f => write_u_escape(u16::from(b), out),
            _ => {
                // `i` is at a char boundary: runs end only before escaped bytes, and non-ASCII
                // bytes are escaped whole, char by char.
                let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write_u_escape(*unit, out);
                }
                i += c.len_utf8();
                run = i;
                continue;
            }
        }
        i += 1;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

fn write_u_escape(unit: u16, out: &mut Vec<u8>) {
    let h = |shift: u16| HEX_LOWER[usize::from((unit >> shift) & 0xf)];
    out.extend_from_slice(&[b'\\', b'u', h(12), h(8), h(4), h(0)]);
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

const MARKER_PREFIX: &str = "marker.";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
/// Bytes reserved for a point chunk without a token (at most 4 + 6 + 24 + 7 + 24 + 4 = 69).
const SHORT_POINT: usize = 80;
/// Bytes reserved for a point chunk with a token (see [`assemble`]).
const LONG_POINT: usize = 160;
const BATCH_SIZE_FIELD: [u8; BATCH_SIZE_DIGITS + 2] = *b"0000\r\n";
/// 2^53: JavaScript's safe integers, and the integers every `f64` below it holds exactly.
const MAX_SAFE_INT: u64 = 1 << 53;
#[allow(clippy::cast_precision_loss)] // 2^53 is exact
const MAX_SAFE_FLOAT: f64 = MAX_SAFE_INT as f64;

#[cfg(test)]
mod tests;
