//! REST request bodies: their bound (L45), and `/clientresp` forms as the legacy clients send
//! them (docs/protocol.md §8.4): split only before known keys, values URL-decoded, JSON taken
//! as sent or form-encoded.

use serde_json::Value as Json;

/// The `/clientresp` form keys, `=` included: a `&` splits the body only before one of them.
pub(crate) const FORM_KEYS: [&str; 8] = [
    "platform=",
    "version=",
    "args=",
    "kwargs=",
    "un=",
    "key=",
    "origin=",
    "world_readable=",
];

/// Splits at `&` only before a known key, keeping values raw (docs/protocol.md §8.4).
pub(crate) fn split_form(body: &str) -> Vec<(&str, String)> {
    let mut cuts = vec![0usize];
    for (i, _) in body.match_indices('&') {
        if FORM_KEYS.iter().any(|k| body[i + 1..].starts_with(k)) {
            cuts.push(i + 1);
        }
    }
    let mut out = Vec::new();
    for (j, &start) in cuts.iter().enumerate() {
        let end = cuts.get(j + 1).map_or(body.len(), |&next| next - 1);
        let part = &body[start..end];
        if let Some((k, v)) = part.split_once('=') {
            out.push((k, v.trim_end_matches(['\r', '\n']).to_owned()));
        }
    }
    out
}

/// JSON as sent, or URL-decoded and tried again (legacy Python encodes properly).
pub(crate) fn parse_json_lenient(v: &str) -> Option<Json> {
    serde_json::from_str(v)
        .ok()
        .or_else(|| serde_json::from_str(&url_decode(v)).ok())
}

/// `+` → space, `%XX` (two hex digits) → that byte, anything else as sent.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex_digit(bytes.get(i + 1)), hex_digit(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of an ASCII hex digit (`from_str_radix` would also take a sign).
fn hex_digit(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// L45: REST and `/clientresp` bodies up to 16 MiB (docs/protocol.md §7.6 rule 7).
pub const MAX_BODY: u64 = 16 * 1024 * 1024;
