//! The RFC 8785 (JCS) oracle: recomputes the inspection `digest` (docs/reliability.md P11,
//! §4.3) from a window or from a send log, so that a digest that matches proves the server's
//! window and encoder agree with what was sent, not merely with themselves.
//!
//! It shares nothing with `plotstream_proto::canonical` (which formats numbers with `ryu-js`):
//! numbers start from the standard library's shortest round-trip digits (`{:e}`), which break an
//! exact tie between two shortest candidates upwards where ECMAScript takes the even one
//! (`221.228668212890625` is `221.22866821289062` in JavaScript, `221.22866821289063` in
//! Rust), and are laid out by ECMA-262's `Number::toString` steps, written out below. The tests
//! hold it against proto's encoder and against serde_json, so a bug in either side shows.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical form of `v`. Numbers are taken as `f64` (P11), so integers beyond 2^53 lose
/// precision as they do on every path of the server.
pub fn encode(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The lowercase hex SHA-256 of [`encode`]`(v)`.
pub fn digest(v: &Value) -> String {
    sha256_hex(encode(v).as_bytes())
}

/// The lowercase hex SHA-256 of the canonical form of `{"x": xs, "y": ys}`, without building
/// the value.
pub fn window_digest(xs: &[f64], ys: &[f64]) -> String {
    let mut text = String::with_capacity(16 * (xs.len() + ys.len()) + 16);
    text.push_str("{\"x\":");
    write_list(&mut text, '[', xs, |x, out| out.push_str(&number(*x)), ']');
    text.push_str(",\"y\":");
    write_list(&mut text, '[', ys, |y, out| out.push_str(&number(*y)), ']');
    text.push('}');
    sha256_hex(text.as_bytes())
}

/// ECMAScript's `Number::toString` of `f` (RFC 8785 §3.2.2.3): the fewest digits that read
/// back as `f`, of those the closest to `f`, of two equally close the even one; then fixed or
/// exponent notation by the decimal exponent. `-0` is `0`; a non-finite number (which JSON
/// cannot hold) is `null`, as the server writes it.
pub fn number(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_owned();
    }
    if f == 0.0 {
        return "0".to_owned();
    }
    let (digits, exp) = shortest_digits(f.abs());
    let sign = if f < 0.0 { "-" } else { "" };
    format!("{sign}{}", notation(&digits, exp))
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => write_list(out, '[', items, write, ']'),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // Property names sort by their UTF-16 code units (RFC 8785 §3.2.3).
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            let member = |k: &&String, out: &mut String| {
                write_string(k, out);
                out.push(':');
                write(&map[k.as_str()], out);
            };
            write_list(out, '{', &keys, member, '}');
        }
    }
}

/// A string with RFC 8785's escapes (§3.2.2.2): `\"`, `\\`, the five short control escapes,
/// other controls as `\u00xx`, everything else as itself.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `open`, each item as `each` writes it, separated by commas, `close`.
fn write_list<T>(
    out: &mut String,
    open: char,
    items: &[T],
    mut each: impl FnMut(&T, &mut String),
    close: char,
) {
    out.push(open);
    for (idx, item) in items.iter().enumerate() {
        if idx > 0 {
            out.push(',');
        }
        each(item, out);
    }
    out.push(close);
}

/// Lowercase hex of SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// ECMAScript's digits of `f > 0` and the decimal exponent of the first one:
/// `f ≈ d1.d2d3… × 10^exp`.
fn shortest_digits(f: f64) -> (Vec<u8>, i32) {
    // The standard library's shortest round-trip digits, the closest of them to `f`.
    let (digits, exp) = scientific(&format!("{f:e}"));
    let Some((floor, floor_exp)) = tie_floor(f, digits.len()) else {
        return (digits, exp);
    };
    // An exact tie between `floor` and `floor + 1` in the last place: ECMAScript takes the
    // even one, if it reads back as `f` too.
    let even = if floor.last().is_some_and(|d| (d - b'0').is_multiple_of(2)) {
        (floor, floor_exp)
    } else {
        increment(&floor, floor_exp)
    };
    if (even.0 != digits || even.1 != exp) && reads_back(&even.0, even.1, f) {
        even
    } else {
        (digits, exp)
    }
}

/// `(digits, exponent)` of Rust's `{:e}` text, `d[.ddd]e[-]x`.
fn scientific(text: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// When `f`'s exact value has `k + 1` significant digits, the last a 5 (it lies halfway
/// between two `k`-digit decimals): the lower one's digits and exponent.
fn tie_floor(f: f64, k: usize) -> Option<(Vec<u8>, i32)> {
    // A cheap look first (`k + 25` digits); a tie is then confirmed on the exact expansion,
    // which never has more than 767 significant digits.
    let mut floor = None;
    for precision in [k + 24, EXACT_DIGITS] {
        let (digits, exp) = scientific(&format!("{f:.precision$e}"));
        let tail = digits.get(k + 1..)?;
        if digits.get(k) != Some(&b'5') || tail.iter().any(|&d| d != b'0') {
            return None;
        }
        floor = Some((digits[..k].to_vec(), exp));
    }
    floor
}

/// `digits × 10^exp` plus one unit in the last digit, carrying, without trailing zeros.
fn increment(digits: &[u8], exp: i32) -> (Vec<u8>, i32) {
    let mut up = digits.to_vec();
    let mut exp = exp;
    let mut at = up.len();
    loop {
        if at == 0 {
            // 99…9 + 1: one digit more in front, the exponent up by one.
            up.insert(0, b'1');
            up.pop();
            exp += 1;
            break;
        }
        at -= 1;
        if up[at] == b'9' {
            up[at] = b'0';
        } else {
            up[at] += 1;
            break;
        }
    }
    while up.len() > 1 && up.last() == Some(&b'0') {
        up.pop();
    }
    (up, exp)
}

/// Whether `d1.d2… × 10^exp` parses back to `f` (the standard library's parser is correctly
/// rounded).
fn reads_back(digits: &[u8], exp: i32, f: f64) -> bool {
    let text = format!(
        "{}.{}e{exp}",
        char::from(digits[0]),
        String::from_utf8_lossy(&digits[1..])
    );
    text.parse::<f64>() == Ok(f)
}

/// ECMA-262 `Number::toString` steps 6–10 for the `k` digits `s` and `n = exp + 1`: integers
/// up to 21 digits in full, fractions down to 10^-6 in fixed notation, everything else as
/// `d[.ddd]e±x`.
fn notation(digits: &[u8], exp: i32) -> String {
    let k = digits.len() as i32;
    let n = exp + 1;
    let d = |r: std::ops::Range<usize>| String::from_utf8_lossy(&digits[r]).into_owned();
    let all = d(0..digits.len());
    if k <= n && n <= 21 {
        format!("{all}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", d(0..n as usize), d(n as usize..digits.len()))
    } else if -6 < n && n <= 0 {
        format!("0.{}{all}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e < 0 { '-' } else { '+' };
        let mantissa = if k == 1 {
            all
        } else {
            format!("{}.{}", d(0..1), d(1..digits.len()))
        };
        format!("{mantissa}e{sign}{}", e.abs())
    }
}

/// Digits after the point that show any `f64` exactly (its expansion has at most 767
/// significant digits).
const EXACT_DIGITS: usize = 800;

#[cfg(test)]
mod tests {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Proto's encoder, the other side of every comparison.
    fn proto(v: &Value) -> String {
        let mut out = Vec::new();
        plotstream_proto::canonical::write_jcs(&proto_value(v), &mut out);
        String::from_utf8(out).expect("JCS is UTF-8")
    }

    fn proto_number(f: f64) -> String {
        let mut out = Vec::new();
        plotstream_proto::canonical::write_jcs_number(f, &mut out);
        String::from_utf8(out).expect("JCS is UTF-8")
    }

    fn proto_value(v: &Value) -> plotstream_proto::Value {
        use plotstream_proto::{Str, Value as P};
        match v {
            Value::Null => P::Null,
            Value::Bool(b) => P::Bool(*b),
            Value::Number(n) => P::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => P::Str(Str::from(s.as_str())),
            Value::Array(items) => P::Array(items.iter().map(proto_value).collect()),
            Value::Object(map) => P::Object(
                map.iter()
                    .map(|(k, v)| (Str::from(k.as_str()), proto_value(v)))
                    .collect(),
            ),
        }
    }

    #[track_caller]
    fn check(json: &str, expected: &str) {
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(encode(&v), expected);
    }

    #[test]
    fn rfc8785_examples() {
        check(
            r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}"#,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#,
        );
        check(
            r#"{"b":1,"a":[-0,9007199254740993]}"#,
            r#"{"a":[0,9007199254740992],"b":1}"#,
        );
        check(
            r#"{"\u20ac":1,"\ud83d\ude00":2,"a":3}"#,
            "{\"a\":3,\"€\":1,\"😀\":2}",
        );
    }

    #[test]
    fn properties_sort_by_utf16_code_units_not_utf8_bytes() {
        // U+FF61 comes first in UTF-8 (EF BD A1 < F0 9F 98 80), last in UTF-16
        // (FF61 > D83D).
        check(r#"{"\uff61":1,"\ud83d\ude00":2}"#, "{\"😀\":2,\"｡\":1}");
    }

    #[test]
    #[allow(clippy::excessive_precision)] // exact binary values, written out to show the ties
    fn numbers_follow_ecmascript() {
        for (f, s) in [
            (0.0, "0"),
            (-0.0, "0"),
            (3.0, "3"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (12345.678894042969, "12345.678894042969"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (2f64.powi(-16), "0.0000152587890625"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (123e-20, "1.23e-18"),
            (f64::NAN, "null"),
            (f64::NEG_INFINITY, "null"),
            // Exact ties between two shortest candidates: ECMAScript takes the even one.
            (221.228668212890625, "221.22866821289062"),
            (9925.630981445313, "9925.630981445312"),
            (2792.4588012695313, "2792.4588012695312"),
        ] {
            assert_eq!(number(f), s, "{f:e}");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // an exact binary value, written out to show the tie
    fn ties_are_confirmed_on_the_exact_expansion() {
        // 5e-324 (751 significant digits, "4.94065645841246544…") is no tie.
        assert_eq!(tie_floor(5e-324, 1), None);
        assert_eq!(
            tie_floor(221.228668212890625, 17),
            Some((b"22122866821289062".to_vec(), 2))
        );
        assert_eq!(increment(b"999", 4), (b"1".to_vec(), 5));
        assert_eq!(increment(b"129", -1), (b"13".to_vec(), -1));
    }

    #[test]
    fn digests_match_the_reference_text() {
        // printf '{"x":[1,2],"y":[0.5,3]}' | sha256sum
        let want = "202fa325e73c32f0f1b6aec2b31ffccad0ceb88555e05c2e1cd7cc9b469d7534";
        assert_eq!(window_digest(&[1.0, 2.0], &[0.5, 3.0]), want);
        assert_eq!(digest(&json!({"y": [0.5, 3.0], "x": [1, 2.0]})), want);
    }

    /// The oracle is independent only while it does not call what it checks.
    #[test]
    fn the_oracle_shares_no_code_with_proto() {
        let source = include_str!("jcs.rs");
        let oracle = &source[..source.find("#[cfg(test)]").expect("a test module")];
        for name in ["plotstream_proto", "canonical::", "ryu"] {
            let uses = oracle
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(name));
            assert!(!uses, "the oracle uses {name}");
        }
    }

    /// The load generator's values, tenths and random bit patterns, against proto's encoder.
    #[test]
    fn numbers_agree_with_proto_on_the_generators_values() {
        let mut bits: u64 = 0x1234_5678_9abc_def1;
        for i in 0..20_000u64 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            for v in [
                crate::load::schedule::value(3, i),
                f64::from_bits(bits),
                i as f64 * 0.1,
            ] {
                assert_eq!(number(v), proto_number(v), "{v:e}");
            }
        }
    }

    /// Finite and not: random bits, proptest's floats, integers, values with few significant
    /// bits (where exact ties live) and short decimals.
    fn numbers() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            any::<f64>(),
            any::<i64>().prop_map(|i| i as f64),
            (any::<u32>(), -60i32..20).prop_map(|(m, e)| f64::from(m) * 2f64.powi(e)),
            (any::<i32>(), 0i32..25).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e)),
        ]
    }

    /// The significant digits of a decimal number text.
    fn significant(text: &str) -> String {
        let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        digits.trim_matches('0').to_owned()
    }

    /// Strings with what JCS escapes and what it sorts differently from UTF-8.
    fn text() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            any::<char>(),
            (0u8..0x20).prop_map(char::from),
            Just('"'),
            Just('\\'),
            Just('\u{7f}'),
            proptest::char::range('\u{e000}', '\u{ffff}'),
            proptest::char::range('\u{10000}', '\u{10ffff}'),
        ];
        vec(c, 0..6).prop_map(String::from_iter)
    }

    fn values(
        number: BoxedStrategy<Value>,
        key: BoxedStrategy<String>,
    ) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 48, 6, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn numbers_agree_with_proto(f in numbers()) {
            prop_assert_eq!(number(f), proto_number(f), "{:e}", f);
        }

        /// serde_json (its own parser, its own shortest formatter) agrees that the text reads
        /// back as the number and that no shorter one would.
        #[test]
        fn numbers_read_back_in_the_fewest_digits(f in numbers().prop_filter("finite, not 0", |f| f.is_finite() && *f != 0.0)) {
            let ours = number(f);
            prop_assert_eq!(serde_json::from_str::<f64>(&ours).ok(), Some(f), "{}", ours);
            let theirs = serde_json::to_string(&f).expect("a finite number");
            prop_assert_eq!(significant(&ours).len(), significant(&theirs).len(), "{} vs {}", ours, theirs);
        }
    }

    proptest! {
        #[test]
        fn values_agree_with_proto(v in values(
            numbers().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)).boxed(),
            text().boxed(),
        )) {
            prop_assert_eq!(encode(&v), proto(&v));
        }

        /// With integers that are exact in an f64 and names whose UTF-8 order is their UTF-16
        /// order (no U+E000–U+FFFF), serde_json's compact output is canonical: the same text.
        #[test]
        fn values_agree_with_serde_json(v in values(
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|i| json!(i)).boxed(),
            text().prop_map(|k| k.chars().filter(|c| !('\u{e000}'..='\u{ffff}').contains(c)).collect()).boxed(),
        )) {
            prop_assert_eq!(encode(&v), serde_json::to_string(&v).expect("a value"));
        }
    }
}
