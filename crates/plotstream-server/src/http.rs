//! Every route but the ingest endpoint: pages, inspection, SSE, tokens, metrics, assets.
//! One request per connection; every response carries `Connection: close` and, except SSE,
//! `Content-Length`, followed by the graceful close (docs/reliability.md P9).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::Status;

use crate::random::new_token;
use crate::response::{read_body, Response};
use crate::shared::Shared;
use crate::text::push_json_str;
use crate::transport::{close_gracefully, Io};
use crate::{pages, sse};

/// Serves one non-ingest request from `peer`.
pub async fn serve(
    mut stream: Io,
    head: RequestHead,
    mut rest: BytesMut,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    // On several nodes: tokens, files and folders as the cluster has them (not for the
    // probes, which must answer even when Redis does not).
    if !matches!(head.path(), "/healthz" | "/metrics") {
        crate::nodes::sync_tables(&shared).await;
    }
    let path = head.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = head.method.as_str();
    // Keys mode never shows or accepts a write token where a read id will do (pages, feeds,
    // listings, inspection); open mode still takes tokens, which are names there.
    let keys_mode = shared.config.store.users.is_some();
    let not_found = || Response::json(404, r#"{"errors":[{"message":"Not found"}]}"#);
    let response = match (method, segments.as_slice()) {
        ("GET", [""]) => {
            crate::nodes::load_unseen(&shared).await;
            pages::index(&shared)
        }
        ("GET", ["healthz"]) if shared.store.journal().is_failing() => Response::new(
            503,
            "text/plain",
            "the store cannot write (DC5): writers get 503, reads and viewers work",
        )
        .header("Retry-After", "5"),
        ("GET", ["healthz"]) if shared.cluster.as_ref().is_some_and(|c| c.is_unreachable()) => {
            Response::new(
                503,
                "text/plain",
                "Redis does not answer: writers get 503, reads and viewers show what this node has",
            )
            .header("Retry-After", "5")
        }
        ("GET", ["healthz"]) => Response::new(200, "text/plain", "ok"),
        ("GET", ["metrics"]) => {
            Response::new(200, "text/plain; version=0.0.4", shared.metrics.render())
        }
        ("GET", ["api", "streams"]) => {
            crate::nodes::load_unseen(&shared).await;
            Response::json(200, streams_json(&shared, !keys_mode))
        }
        ("GET", ["api", "streams", id]) => match crate::nodes::resolve(&shared, id, !keys_mode)
            .await
            .and_then(|token| shared.store.inspect(&token, !keys_mode))
        {
            Some(json) => Response::json(200, json),
            None => not_found(),
        },
        ("GET", ["api", "streams", id, "events"]) => {
            match crate::nodes::resolve(&shared, id, !keys_mode).await {
                Some(token) => {
                    sse::serve(stream, &head, sse::Feed::Stream(token), shared).await;
                    return;
                }
                None => not_found(),
            }
        }
        ("GET", ["api", "streams", id, "history"]) => {
            match crate::nodes::resolve(&shared, id, !keys_mode).await {
                Some(token) => {
                    crate::history::serve::serve(stream, &head, token, shared).await;
                    return;
                }
                None => not_found(),
            }
        }
        // The page addresses its feeds by the id it was opened with: a read id (keys mode), or
        // in open mode also a token, even one that has not streamed yet.
        ("GET", ["streams", id]) => {
            if crate::nodes::resolve(&shared, id, !keys_mode)
                .await
                .is_some()
                || (!keys_mode && plotstream_proto::Token::parse(id.as_bytes()).is_some())
            {
                pages::stream_page(&shared, id)
            } else {
                Response::error(Status::NOT_FOUND)
            }
        }
        ("GET", ["assets", file]) => pages::asset(&shared, file).await,
        ("GET", ["api", "plots", fid, "events"]) => {
            match crate::rest::visible_plot(&shared, &head, fid) {
                Some(plot) => {
                    let feed = crate::rest::plot_feed(&shared, fid, &plot);
                    sse::serve(stream, &head, feed, shared).await;
                    return;
                }
                None => not_found(),
            }
        }
        ("GET", [user, n] | [user, n, ""]) if user.starts_with('~') => {
            let embed = n.ends_with(".embed");
            let fid = crate::rest::page_fid(&user[1..], n);
            let share_key = head
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("share_key=")));
            match fid.filter(|fid| crate::rest::visible_plot(&shared, &head, fid).is_some()) {
                Some(fid) => pages::figure_page(&shared, &fid, share_key, embed),
                None => pages::not_found(&shared, embed),
            }
        }
        (_, ["v2", ..]) => {
            crate::rest::serve_v2(&mut stream, &head, &mut rest, &shared, peer.ip()).await
        }
        ("POST", ["clientresp"]) => {
            crate::rest::serve_clientresp(&mut stream, &head, &mut rest, &shared, peer.ip()).await
        }
        ("POST", ["api", "tokens"]) => {
            match read_body(&mut stream, &head, &mut rest, 64 * 1024, &shared).await {
                Ok(_) => post_tokens(&shared, &head, peer),
                Err(r) => r,
            }
        }
        ("POST", _) => Response::error(Status::NOT_FOUND),
        ("GET", _) => Response::new(404, "text/plain", "not found"),
        _ => Response::error(Status::METHOD_NOT_ALLOWED).header("Allow", "POST, GET"),
    };
    // DC1 for REST: a created or changed figure, grid or token is answered once it is durable.
    let mut response = response;
    if head.method != "GET" && response.status() < 300 {
        let journal = shared.store.journal();
        if journal.wait(journal.last_ticket()).await.is_err() {
            shared.metrics.limit_breach("DC5");
            response = crate::response::error(503, "the server cannot store this now; retry later")
                .header("Retry-After", "5");
        }
    }
    shared.metrics.response(response.status());
    close_gracefully(stream, &response.encode(), true, &shared).await;
}

/// `POST /api/tokens?count=N` (at most L53 a call). In keys mode the caller's credentials are
/// required and the tokens are written to the users file as theirs. Without users, only a
/// loopback peer (the operator on the machine) may issue tokens, which registered mode then
/// admits: an anonymous peer on the network can no longer mint write capabilities.
fn post_tokens(shared: &Shared, head: &RequestHead, peer: SocketAddr) -> Response {
    let count = head
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("count=")))
        .map_or(Some(1), |n| n.parse::<usize>().ok());
    let Some(count) = count.filter(|n| (1..=MAX_TOKENS_PER_CALL).contains(n)) else {
        return crate::response::error(
            400,
            &format!("count must be 1 to {MAX_TOKENS_PER_CALL} (L53)"),
        );
    };
    if let Some(users) = &shared.config.store.users {
        let user = match crate::rest::caller(shared, head) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return crate::response::error(401, "Authentication credentials were not provided.")
            }
            Err(r) => return r,
        };
        return match users.issue_tokens(&user, count) {
            Ok(tokens) => Response::json(201, serde_json::json!({ "tokens": tokens }).to_string()),
            Err(e) => crate::response::error(403, &e.to_string()),
        };
    }
    if !peer.ip().is_loopback() {
        return crate::response::error(
            403,
            "tokens are issued to loopback peers, or with credentials in keys mode (--users)",
        );
    }
    match issue_tokens(shared, count) {
        Some(body) => Response::json(201, body),
        None => crate::response::error(403, "registered token limit reached (L54)"),
    }
}

/// Issues `count` tokens of exactly 10 `[a-z0-9]` characters from the OS CSPRNG (L8), unique
/// among registered tokens, and registers them; `None` once the registered set is full.
pub fn issue_tokens(shared: &Shared, count: usize) -> Option<String> {
    let mut out = String::from("{\"tokens\":[");
    for i in 0..count {
        let token = loop {
            let t = new_token();
            if !shared.store.is_registered(&t) {
                break t;
            }
        };
        shared.store.register(&token).ok()?;
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, &token);
    }
    out.push_str("]}");
    Some(out)
}

/// `GET /api/streams`: every stream with its read `id`; its write `token` only when
/// `show_tokens` (open mode).
fn streams_json(shared: &Shared, show_tokens: bool) -> String {
    let mut out = String::from("[");
    for (i, s) in shared.store.list().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        push_json_str(&mut out, &s.read_id);
        if show_tokens {
            out.push_str(",\"token\":");
            push_json_str(&mut out, &s.token);
        }
        out.push_str(&format!(
            ",\"last_seq\":{},\"count\":{},\"writer_connected\":{},\"viewers\":{}}}",
            s.last_seq, s.count, s.writer_connected, s.n_viewers
        ));
    }
    out.push(']');
    out
}

/// L53: tokens issued by one `POST /api/tokens`.
pub const MAX_TOKENS_PER_CALL: usize = 100;
