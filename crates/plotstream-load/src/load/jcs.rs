//! An RFC 8785 (JCS) encoder for the one shape the verifier needs, the window
//! `{"x":[...],"y":[...]}`, written independently of `plotstream_proto::canonical`: numbers go
//! through the standard library's shortest round-trip formatting, reshaped into ECMAScript's
//! `Number::toString` notation. A digest that matches proves the server's window and encoder
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

/// ECMAScript's `Number::toString` for a finite `f64` (RFC 8785 §3.2.2.3).
pub fn es_number(f: f64) -> String {
    if f == 0.0 {
        return "0".to_owned(); // -0 too
    }
    let magnitude = f.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Fixed notation with the shortest round-trip digits; Rust prints `3.0` as `3`.
        return format!("{f}");
    }
    // Exponent notation: `1.5e-7`, `1e+21`.
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
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
}
