//! Every peer-controlled size and time the protocol layer bounds (docs/reliability.md §3).

use std::time::Duration;

/// The limits of docs/reliability.md §3 that the protocol layer enforces.
///
/// Each field names its L-number and the attack it stops. [`Limits::default`] gives the
/// documented defaults; tests and the server override single fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// L1: accept to first byte. A connection that never speaks is closed silently.
    /// Stops connect-and-hang; kept long because npm `plotly` sends its head with the first write.
    pub pre_head: Duration,
    /// L2: first byte to end of head, in total. Stops slowloris heads.
    pub head_deadline: Duration,
    /// L3: request line without its CRLF. Stops unbounded request-line buffering (414).
    pub request_line: usize,
    /// L4: whole head including leading empty lines. Stops unbounded head buffering (431).
    pub head_bytes: usize,
    /// L5: header fields. Real clients send at most 8 (431).
    pub head_fields: usize,
    /// L6: a `Content-Length` body. Answered 413 before any body byte is read.
    pub content_length: u64,
    /// L12: size digits including leading zeros. Stops unbounded size-line buffering.
    pub size_digits: usize,
    /// L14: chunk extension per size line, `;` to CR. Stops extension floods (Twisted, Go).
    pub chunk_ext: usize,
    /// L15: skipped empty lines in a row where a size line is expected (chart_studio and Arduino need 1).
    pub empty_size_lines: u32,
    /// L16: the decaying chunk-overhead budget (Go's CVE-2023-39326 rule). Stops tiny-chunk CPU floods.
    pub overhead_budget: u64,
    /// L17: trailer section bytes. Trailers are ignored but must be bounded.
    pub trailer_bytes: usize,
    /// L17: trailer fields.
    pub trailer_fields: usize,
    /// L18: a line including its LF (413). Bounds the per-connection line buffer.
    pub line_bytes: usize,
    /// L19: JSON nesting depth, the top object being 1. Stops stack exhaustion in parse and drop.
    pub json_depth: usize,
    /// L20: a decoded JSON string. Bounds retained bytes per value.
    pub json_string: usize,
    /// L21: members per object. Bounds the duplicate-name check.
    pub json_members: usize,
    /// L22: values per array: plotly.js's `stream.maxpoints` maximum.
    pub json_array: usize,
    /// L28: since the last completed line (data or heartbeat). Stops endless slow POSTs (408).
    pub idle: Duration,
    /// L29: an unbound connection since the end of its head. Heartbeats cannot hold a token-less socket (406).
    pub unbound: Duration,
    /// L56: the server's final response as a writer holds it (interim responses, head and body).
    /// Stops a hostile or broken server from growing a writer's memory with an endless response.
    pub response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pre_head: Duration::from_secs(60),
            head_deadline: Duration::from_secs(10),
            request_line: 8 * 1024,
            head_bytes: 16 * 1024,
            head_fields: 32,
            content_length: 8 * 1024 * 1024,
            size_digits: 32,
            chunk_ext: 4 * 1024,
            empty_size_lines: 2,
            overhead_budget: 16 * 1024,
            trailer_bytes: 4 * 1024,
            trailer_fields: 32,
            line_bytes: 64 * 1024,
            json_depth: 32,
            json_string: 1024,
            json_members: 256,
            json_array: crate::maxpoints::Maxpoints::MAX.get(),
            idle: Duration::from_secs(60),
            unbound: Duration::from_secs(60),
            response_bytes: 16 * 1024,
        }
    }
}

/// How a timer limit (and every other duration flag of `serve` and `load`) is spelled on a
/// command line: `60s`, `100ms`, `2m`, `1h`, `7d`,
/// or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m, 7d"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit_or_as_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400").is_err());
    }
}
