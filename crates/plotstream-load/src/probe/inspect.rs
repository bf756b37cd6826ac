//! The inspection reader: `GET /api/streams/{id}` (docs/reliability.md §4.3), with the digest
//! checked against the window by the independent encoder of [`jcs`](super::jcs).

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use super::http::{self, Endpoint, Error, ErrorKind};
use super::jcs;

/// What the inspection route says about one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The newest seq (0 if none).
    pub last_seq: u64,
    /// The longest attribute array (0 when the target does not say).
    pub count: u64,
    /// Lines skipped in lenient mode (0 when the target does not say).
    pub rejected_lines: u64,
    /// The window's length per attribute (0 when the target does not say).
    pub maxpoints: u64,
    /// The stored window ([`Detail::Window`] only; `null` otherwise).
    pub window: Value,
    /// The server's digest (empty when the target does not say).
    pub digest: String,
    /// Set when `digest` is not the SHA-256 of the RFC 8785 form of `window`
    /// ([`Detail::Window`] only).
    pub digest_error: Option<String>,
}

/// How much of an inspection to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The counters and the digest; the window is skipped, not built (cheap, for the many
    /// reads that only compare counts).
    Counts,
    /// Everything, with the window parsed and its digest checked.
    Window,
}

/// Reads the inspection of `id` (a token or read id): `Ok(None)` for an unknown stream (404).
pub async fn read(
    endpoint: &Endpoint,
    id: &str,
    detail: Detail,
) -> Result<Option<Inspection>, Error> {
    let path = format!("/api/streams/{id}");
    let (status, body) = http::request(endpoint, "GET", &path, b"", http::TIMEOUT).await?;
    let what = format!("GET {path}");
    match status {
        404 => Ok(None),
        200 => parse(&body, detail)
            .map(Some)
            .map_err(|why| Error::new(&what, ErrorKind::Invalid(why))),
        other => Err(Error::new(&what, ErrorKind::Status(other))),
    }
}

/// An inspection body. Fields are read leniently (a missing or non-integer counter is 0);
/// only `last_seq` is required.
fn parse(body: &[u8], detail: Detail) -> Result<Inspection, String> {
    let fields: BTreeMap<String, &RawValue> = serde_json::from_slice(body)
        .map_err(|e| format!("the inspection is not a JSON object: {e}"))?;
    let counter = |k: &str| {
        fields
            .get(k)
            .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
    };
    let digest = fields
        .get("digest")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .unwrap_or_default();
    let (window, digest_error) = match detail {
        Detail::Counts => (Value::Null, None),
        Detail::Window => {
            let window = match fields.get("window") {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|e| format!("the window is not JSON: {e}"))?,
                None => Value::Null,
            };
            let ours = jcs::digest(&window);
            let error = (ours != digest)
                .then(|| format!("digest {digest:?} is not SHA-256(JCS(window)) = {ours}"));
            (window, error)
        }
    };
    Ok(Inspection {
        last_seq: counter("last_seq").ok_or("the inspection has no last_seq")?,
        count: counter("count").unwrap_or(0),
        rejected_lines: counter("rejected_lines").unwrap_or(0),
        maxpoints: counter("maxpoints").unwrap_or(0),
        window,
        digest,
        digest_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"token":"tok1","id":"k3v9x0q2m8ab","epoch":"5f0c9e2a","first_seq":4,"last_seq":6,"count":3,
 "maxpoints":3,"bytes":6,"budget_limited":false,"writer_connected":true,"rejected_lines":1,
 "displaced_lines":0,"window":{"y":[4,5,6],"x":[4,5,6.5]},"digest":"DIGEST"}"#;

    #[test]
    fn counts_skip_the_window_and_windows_check_the_digest() {
        let right = jcs::digest(&serde_json::json!({"x": [4, 5, 6.5], "y": [4, 5, 6]}));
        let body = BODY.replace("DIGEST", &right);
        let counts = parse(body.as_bytes(), Detail::Counts).expect("an inspection");
        assert_eq!(
            (
                counts.last_seq,
                counts.count,
                counts.rejected_lines,
                counts.maxpoints
            ),
            (6, 3, 1, 3)
        );
        assert_eq!(
            (counts.window.is_null(), counts.digest.as_str()),
            (true, right.as_str())
        );
        let full = parse(body.as_bytes(), Detail::Window).expect("an inspection");
        assert_eq!(full.digest_error, None);
        assert_eq!(full.window["x"][2], 6.5);
        let wrong = parse(BODY.as_bytes(), Detail::Window).expect("an inspection");
        assert!(wrong.digest_error.is_some_and(|e| e.contains(&right)));
    }

    #[test]
    fn only_last_seq_is_required() {
        let i = parse(br#"{"last_seq":2,"count":1.5}"#, Detail::Counts).expect("lenient");
        assert_eq!((i.last_seq, i.count, i.maxpoints), (2, 0, 0));
        assert!(parse(br#"{"count":1}"#, Detail::Counts).is_err());
        assert!(parse(b"[1]", Detail::Counts).is_err());
    }
}
