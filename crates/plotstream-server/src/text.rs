//! Small text encoders the routes and the store share: lowercase hex and JSON string literals
//! (RFC 8785's escaping, so a token or id is written the same way everywhere).

use plotstream_proto::canonical::write_jcs_string;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    let mut buf = Vec::new();
    write_jcs_string(s, &mut buf);
    out.push_str(&String::from_utf8_lossy(&buf));
}
