//! The request around the points: the head each client sends, the heartbeat and the close.

use super::style::Flavour;
use crate::update::Token;

/// Appends the request head each client sends (docs/protocol.md §2.9–§2.14). `host` includes
/// `:port` when the port is not 80.
///
/// - Python: CPython's `Host` (with port), `Accept-Encoding: identity`, `Transfer-Encoding:
///   chunked`, chart_studio's own `Host` (without port), `plotly-streamtoken`.
/// - Node: `plotly-streamtoken`, `Host`, `Connection: close`, `Transfer-Encoding: chunked`.
/// - Arduino: `Host: 127.0.0.1` whatever `host` is, `User-Agent: Python`, `Transfer-Encoding:
///   chunked`, `Connection: close`, then `plotly-convertTimestamp: "<zone>"` (quoted), and no
///   token header: tokens go in the lines. Without a zone the library ends the head with an
///   extra CRLF (K2), which is reproduced.
/// - Raw: `Host`, `plotly-streamtoken`, `Transfer-Encoding: chunked`.
///
/// The token header is left out when `token` is `None`. Flavours other than Arduino add an
/// unquoted `plotly-convertTimestamp` field last when `convert_timestamp` is `Some`.
pub fn encode_head(
    flavour: Flavour,
    host: &str,
    token: Option<&Token>,
    convert_timestamp: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"POST / HTTP/1.1\r\n");
    match flavour {
        Flavour::Python => {
            field(out, "Host", host);
            field(out, "Accept-Encoding", "identity");
            field(out, "Transfer-Encoding", "chunked");
            field(out, "Host", host_without_port(host));
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
        }
        Flavour::Node => {
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
            field(out, "Host", host);
            field(out, "Connection", "close");
            field(out, "Transfer-Encoding", "chunked");
        }
        Flavour::Arduino => {
            out.extend_from_slice(
                b"Host: 127.0.0.1\r\nUser-Agent: Python\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
            );
            match convert_timestamp {
                Some(zone) => {
                    out.extend_from_slice(b"plotly-convertTimestamp: \"");
                    out.extend_from_slice(zone.as_bytes());
                    out.extend_from_slice(b"\"\r\n\r\n");
                }
                // `print("\r\n\r\n")` after the last field: one CRLF more than the head needs.
                None => out.extend_from_slice(b"\r\n\r\n"),
            }
            return;
        }
        Flavour::Raw => {
            field(out, "Host", host);
            if let Some(t) = token {
                field(out, "plotly-streamtoken", t.as_str());
            }
            field(out, "Transfer-Encoding", "chunked");
        }
    }
    if let Some(zone) = convert_timestamp {
        field(out, "plotly-convertTimestamp", zone);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the close sequence: chart_studio's `\r\n0\r\n\r\n` (an empty line, then the
/// last-chunk), or `0\r\n\r\n` for the others.
pub fn encode_close(flavour: Flavour, out: &mut Vec<u8>) {
    if flavour == Flavour::Python {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Appends chart_studio's heartbeat chunk `1\r\n\n\r\n` (the same for every flavour).
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(b"1\r\n\n\r\n");
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
pub(super) fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}
