//! An RFC 8785 (JCS) encoder for the one shape the verifier needs, the window
//! `{"x":[...],"y":[...]}`, written independently of `plotstream_proto::canonical` (which uses
//! `ryu-js`): numbers start from the standard library's shortest round-trip digits, which
//! break exact ties upwards where ECMAScript takes the even digit (`221.228668212890625` is
//! `221.22866821289062` in JavaScript, `221.22866821289063` in Rust), and are laid out by
//! ECMA-262's `Number::toString` steps. A digest that matches proves the server's window and encoder
//! agree with what was sent, not merely with themselves.

use sha2::{Digest, Sha256};

/// The lowercase hex SHA-256 of the JCS text of `{"x": xs, "y": ys}`.
pub fn window_digest(xs: &[f64], ys: &[f64]) -> String {
    let mut text = String::with_capacity(16 * (xs.len() + ys.len()) + 16);
    text.push_str("{\"x\":[");
    push_numbers(&mut text, xs);
    text.push_str("],\"y\":[");
    push_numbers(&mut text, ys);
    text.push_str("]}");
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// ECMAScript's `Number::toString` for a finite `f64` (RFC 8785 §3.2.2.3, ECMA-262
/// Number::toString): the shortest digits that round-trip, the closest of them to the exact
/// value, and of two equally close the even one; then fixed or exponent notation by the
/// decimal exponent.
pub fn es_number(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return "0".to_owned(); // -0 too; JCS has no non-finite numbers
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (mut digits, mut exp) = shortest_digits(f.abs());
    even_on_ties(f.abs(), &mut digits, &mut exp);
    format!("{sign}{}", notation(&digits, exp))
}

/// The standard library's shortest round-trip digits of `f > 0` and the decimal exponent of
/// the first one: `f = 0.d1d2… × 10^(exp+1)`, i.e. `d1.d2… × 10^exp`.
fn shortest_digits(f: f64) -> (Vec<u8>, i32) {
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// The standard library breaks an exact tie between two shortest candidates upwards;
/// ECMAScript takes the even one. A tie is an exact value with one more digit, a 5.
fn even_on_ties(f: f64, digits: &mut Vec<u8>, exp: &mut i32) {
    let n = digits.len();
    let long = format!("{:.*e}", n + 24, f);
    let (mantissa, long_exp) = long.split_once('e').unwrap_or((&long, "0"));
    let exact: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let is_tie = exact.get(n) == Some(&b'5') && exact[n + 1..].iter().all(|&d| d == b'0');
    if !is_tie || digits.last().is_some_and(|d| (d - b'0').is_multiple_of(2)) {
        return;
    }
    let floor = &exact[..n];
    let floor_exp: i32 = long_exp.parse().unwrap_or(*exp);
    if *digits != floor {
        *digits = floor.to_vec();
        *exp = floor_exp;
        return;
    }
    // Round the floor up by one unit in the last place, carrying.
    let mut up = floor.to_vec();
    let mut at = up.len();
    loop {
        if at == 0 {
            up.insert(0, b'1');
            up.pop();
            *exp = floor_exp + 1;
            break;
        }
        at -= 1;
        if up[at] == b'9' {
            up[at] = b'0';
        } else {
            up[at] += 1;
            *exp = floor_exp;
            break;
        }
    }
    while up.len() > 1 && up.last() == Some(&b'0') {
        up.pop();
    }
    *digits = up;
}

/// ECMA-262 Number::toString steps 6–10, with `k` digits and `n = exp + 1`.
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

fn push_numbers(text: &mut String, values: &[f64]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&es_number(*v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (2f64.powi(-16), "0.0000152587890625"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (123e-20, "1.23e-18"),
            // Exact ties between two 17-digit candidates: ECMAScript takes the even one.
            (221.228668212890625, "221.22866821289062"),
            (9925.630981445313, "9925.630981445312"),
            (2792.4588012695313, "2792.4588012695312"),
        ] {
            assert_eq!(es_number(f), s, "{f:e}");
        }
    }

    #[test]
    fn digest_matches_the_reference_text() {
        // printf '{"x":[1,2],"y":[0.5,3]}' | sha256sum
        assert_eq!(
            window_digest(&[1.0, 2.0], &[0.5, 3.0]),
            "202fa325e73c32f0f1b6aec2b31ffccad0ceb88555e05c2e1cd7cc9b469d7534"
        );
    }

    /// Agreement with `ryu-js` (what `plotstream_proto::canonical` uses) on the generator's
    /// values and on random bit patterns.
    #[test]
    fn agrees_with_ryu_js() {
        let mut bits: u64 = 0x1234_5678_9abc_def1;
        for i in 0..20_000u64 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let random = f64::from_bits(bits);
            for v in [super::super::schedule::value(3, i), random, i as f64 * 0.1] {
                if !v.is_finite() || v == 0.0 {
                    continue;
                }
                let reference = ryu_js::Buffer::new().format_finite(v).to_owned();
                assert_eq!(es_number(v), reference, "{v:e}");
            }
        }
    }
}
