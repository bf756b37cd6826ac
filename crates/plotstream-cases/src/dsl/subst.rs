//! Placeholders and variables: which variables a text names, and their replacement by one
//! run's values, longest name first.

pub(super) type Subst = [(Vec<u8>, Vec<u8>)];

/// `subst` as byte pairs, longest name first, so that `tok10` is never read as `tok1` followed
/// by `0`.
pub(super) fn pairs(subst: &[(String, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = subst
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    pairs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    pairs
}

/// Every variable (`$name`) `text` names, in order of first use.
pub fn variables(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = format!("${}", &rest[..len]);
        if len > 0 && !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[len..];
    }
    out
}

/// `text` with every placeholder and variable of `subst` replaced (expected bodies and headers
/// name them as the bytes do).
pub fn substitute_text(text: &str, subst: &[(String, String)]) -> String {
    String::from_utf8_lossy(&substitute(text.as_bytes(), &pairs(subst))).into_owned()
}

pub(super) fn substitute(bytes: &[u8], subst: &Subst) -> Vec<u8> {
    if subst.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'outer: while i < bytes.len() {
        for (from, to) in subst {
            if !from.is_empty() && bytes[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
