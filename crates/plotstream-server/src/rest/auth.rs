//! Who is calling (docs/security.md): Basic `username:api_key` checked in keys mode, taken as a
//! claim in open mode; compared in constant time.

use plotstream_proto::head::RequestHead;

use crate::response::{error, Response};
use crate::shared::Shared;
use crate::users::valid_username;

/// The authenticated (keys mode) or claimed (open mode) user of a request; `Ok(None)` when
/// it sent no credentials. Wrong credentials in keys mode are a 401 whatever the route.
pub fn caller(shared: &Shared, head: &RequestHead) -> Result<Option<String>, Response> {
    let Some((user, key)) = basic_credentials(head) else {
        return Ok(None);
    };
    match &shared.config.store.users {
        Some(users) => match users.authenticate(&user, &key) {
            Some(u) => Ok(Some(u)),
            None => Err(error(401, "Invalid username or API key.")),
        },
        None if valid_username(&user) => Ok(Some(user)),
        None => Err(error(
            400,
            "user names are 1 to 64 characters of [A-Za-z0-9_.-]",
        )),
    }
}

/// `(user, key)` of `Authorization: Basic` (or `plotly-authorization`, preferred when
/// present, docs/protocol.md §7.3).
fn basic_credentials(head: &RequestHead) -> Option<(String, String)> {
    let value = head
        .field("plotly-authorization")
        .or_else(|| head.field("authorization"))?;
    basic_of(value)
}

/// `(user, key)` of a `Basic` credentials field's value: base64 of `user:key`, UTF-8.
pub(crate) fn basic_of(value: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(value).ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (user, key) = raw.split_once(':')?;
    Some((user.to_owned(), key.to_owned()))
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            #[allow(clippy::cast_possible_truncation)] // masked to one byte
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
