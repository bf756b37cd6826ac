//! RFC 8785 (JCS) canonical JSON: the encoding behind window digests and byte budgets
//! (docs/reliability.md P11, §4.3). A public canonical form lets any test compute a digest from its
//! own send log without plotstream's code.

use crate::json::{Str, Value};

/// Appends the JCS encoding of `value`: members sorted by UTF-16 code units, numbers in
/// ECMAScript form (`-0` as `0`), strings with the minimal escapes.
pub fn write_jcs(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_jcs_number(*n, out),
        Value::Str(s) => write_jcs_string(s.as_str(), out),
        Value::Array(values) => {
            out.push(b'[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs(v, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            write_jcs_object(members.iter().map(|(k, v)| (k.as_str(), v)), out)
        }
    }
}

/// Appends a JCS object from members in any order (sorted here by UTF-16 code units).
pub fn write_jcs_object<'a>(
    members: impl Iterator<Item = (&'a str, &'a Value)>,
    out: &mut Vec<u8>,
) {
    let mut members: Vec<(&str, &Value)> = members.collect();
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_jcs_string(k, out);
        out.push(b':');
        write_jcs(v, out);
    }
    out.push(b'}');
}

/// The JCS size of `value` in bytes (the unit of the byte budgets L24 and L41).
pub fn jcs_len(value: &Value) -> usize {
    let mut out = Vec::new();
    write_jcs(value, &mut out);
    out.len()
}

/// Appends a number as ECMAScript's `Number.prototype.toString` writes it; non-finite
/// numbers (which no accepted line holds) as `null`.
pub fn write_jcs_number(n: f64, out: &mut Vec<u8>) {
    if !n.is_finite() {
        out.extend_from_slice(b"null");
    } else if n == 0.0 {
        out.push(b'0');
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    }
}

/// Appends a JSON string with RFC 8785's escapes: `\"`, `\\`, `\b \f \n \r \t`, other
/// controls as `\u00xx`, everything else verbatim.
pub fn write_jcs_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A `Value::Str` from text.
pub fn string(s: &str) -> Value {
    Value::Str(Str::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jcs(v: &Value) -> String {
        let mut out = Vec::new();
        write_jcs(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_follow_ecmascript() {
        for (n, s) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (9007199254740992.0, "9007199254740992"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(jcs(&Value::Number(n)), s, "{n}");
        }
    }

    #[test]
    fn members_sort_by_utf16_and_strings_escape_minimally() {
        // U+20AC sorts before U+1F600, whose UTF-16 form starts with the surrogate 0xD83D.
        let v = Value::Object(vec![
            (Str::from("y"), Value::Array(vec![Value::Number(1.0)])),
            (Str::from("\u{20ac}"), Value::Null),
            (Str::from("\u{1f600}"), Value::Bool(true)),
            (Str::from("x"), string("a\"\\\n\u{1}\u{2028}é")),
        ]);
        assert_eq!(jcs(&v), "{\"x\":\"a\\\"\\\\\\n\\u0001\u{2028}é\",\"y\":[1],\"\u{20ac}\":null,\"\u{1f600}\":true}");
    }
}
