//! JSON in each flavour's style: values, and whole updates with their `marker.*` paths
//! re-nested.

use super::number::NumScratch;
use super::style::{Flavour, Style, HEX_LOWER, RAW};
use crate::json::Value;
use crate::update::{Token, Update};

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

// `Style`'s JSON part lives here, beside `write_str`, so that `style.rs` imports nothing.
impl Style {
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

const MARKER_PREFIX: &str = "marker.";
