//! Figures and their streams: who may see a figure, the checks before a figure is stored
//! (ownership, L42), binding its traces' tokens to streams, and the figure page's feed.

use std::net::IpAddr;

use plotstream_proto::head::RequestHead;
use plotstream_proto::json::Str;
use plotstream_proto::{Maxpoints, Value};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use super::auth::{caller, constant_time_eq};
use crate::files::{split_fid, stream_token, FileError, Plot};
use crate::response::{error, Response};
use crate::shared::Shared;

/// The figure `fid` if the request may see it: world-readable, or `?share_key=` matches, or
/// the caller is its owner (Basic credentials, checked in keys mode). Unknown and hidden
/// figures look the same (404), so fids cannot be probed.
pub fn visible_plot(shared: &Shared, head: &RequestHead, fid: &str) -> Option<Plot> {
    let plot = shared.files.plot(fid)?;
    if plot.world_readable {
        return Some(plot);
    }
    let given = head
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("share_key=")));
    if let (Some(key), Some(given)) = (&plot.share_key, given) {
        if constant_time_eq(key.as_bytes(), given.as_bytes()) {
            return Some(plot);
        }
    }
    let (owner, _) = split_fid(fid)?;
    match caller(shared, head) {
        Ok(Some(u)) if u == owner && shared.config.store.users.is_some() => Some(plot),
        _ => None,
    }
}

/// The figure page's feed: the layout and, per trace, its token and static attributes.
pub fn plot_feed(shared: &Shared, fid: &str, plot: &Plot) -> crate::sse::Feed {
    let owner = split_fid(fid).map_or("", |(u, _)| u);
    let traces = plot
        .traces()
        .map(|t| {
            let token = stream_token(&t);
            let mut attrs = t;
            if let Some(obj) = attrs.as_object_mut() {
                obj.remove("stream");
                if token.is_some() {
                    // The stream's window provides the data.
                    for k in ["x", "y", "z", "text", "xsrc", "ysrc", "zsrc", "textsrc"] {
                        obj.remove(k);
                    }
                } else {
                    resolve_srcs(shared, owner, obj);
                }
            }
            (token, attrs.to_string())
        })
        .collect();
    crate::sse::Feed::Plot {
        fid: fid.to_owned(),
        layout: plot.layout.get().to_owned(),
        traces,
    }
}

/// `/~user/n` → the fid `user:n`, if both parts are well formed.
pub fn page_fid(user: &str, n: &str) -> Option<String> {
    let n = n.trim_end_matches(".embed");
    let fid = format!("{user}:{n}");
    split_fid(&fid).is_some().then_some(fid)
}

/// Everything a figure must satisfy before anything is stored or bound: at most L42 traces;
/// every streamed token free of other users' figures; in keys mode, owned by `user`.
pub(super) fn check_figure(shared: &Shared, user: &str, plot: &Plot) -> Result<(), Response> {
    if plot.traces.len() > MAX_TRACES {
        return Err(error(
            400,
            &format!("a figure has at most {MAX_TRACES} traces (L42)"),
        ));
    }
    let snapshot = shared.config.store.users.as_ref().map(|u| u.snapshot());
    for token in plot.tokens() {
        if let Some(snap) = &snapshot {
            if snap.owner_of(&token) != Some(user) {
                return Err(error(
                    403,
                    "a figure may stream only its owner's stream ids",
                ));
            }
        }
        if shared.files.token_claimed_by_other(user, &token).is_some() {
            return Err(error(
                403,
                "this stream id is used by another user's figure",
            ));
        }
    }
    Ok(())
}

/// Binds the figure's streamed traces (`Store::bind_trace`: the streams its owner's figures
/// claim restart from the figure's data; another user's live stream is adopted, never wiped). Tokens the figure
/// dropped, and that no other figure of the owner names, end with 449, then 403, if this
/// owner's figure claimed them.
pub(super) fn bind_figure(
    shared: &Shared,
    user: &str,
    fid: &str,
    plot: &Plot,
    old: Option<&Plot>,
    peer: IpAddr,
) -> Result<(), Response> {
    let old_tokens = old.map(Plot::tokens).unwrap_or_default();
    let mut kept = Vec::new();
    for trace in plot.traces() {
        let Some(token) = stream_token(&trace) else {
            continue;
        };
        let maxpoints = trace
            .pointer("/stream/maxpoints")
            .and_then(Json::as_f64)
            .map_or(shared.config.store.default_maxpoints, |mp| {
                Maxpoints::from_figure(mp, shared.config.store.max_maxpoints)
            });
        let initial = initial_data(shared, user, &trace);
        if shared
            .store
            .bind_trace(&token, maxpoints, initial, user, Some(peer))
            .is_err()
        {
            return Err(error(403, "stream limit reached (L26, L43)"));
        }
        kept.push(token);
    }
    for token in old_tokens {
        if !kept.contains(&token) && !shared.files.names_token(user, &token, fid) {
            shared.store.retire_token(&token, user);
        }
    }
    // On several nodes: the leases `nodes::own_for_figure` took go once these changes are
    // stored.
    if let Some(cluster) = &shared.cluster {
        for token in &kept {
            drop(cluster.release(token));
        }
    }
    Ok(())
}

pub(super) fn initial_data(shared: &Shared, user: &str, trace: &Json) -> Vec<(String, Vec<Value>)> {
    let mut initial = Vec::new();
    for attr in ["x", "y", "z", "text"] {
        let values = match trace.get(attr) {
            Some(Json::Array(a)) => Some(Json::Array(a.clone())),
            _ => trace
                .get(format!("{attr}src"))
                .and_then(Json::as_str)
                .and_then(|r| shared.files.column(user, r)),
        };
        if let Some(Json::Array(values)) = values {
            if !values.is_empty() {
                initial.push((attr.to_owned(), values.iter().map(to_value).collect()));
            }
        }
    }
    initial
}

pub(super) fn resolve_srcs(shared: &Shared, owner: &str, obj: &mut serde_json::Map<String, Json>) {
    for attr in ["x", "y", "z", "text"] {
        if obj.get(attr).is_none() {
            if let Some(data) = obj
                .get(&format!("{attr}src"))
                .and_then(Json::as_str)
                .and_then(|r| shared.files.column(owner, r))
            {
                obj.insert(attr.to_owned(), data);
            }
        }
    }
}

/// JSON → the proto's value type (numbers as f64, P11).
pub fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_f64().map_or(Value::Null, Value::Number),
        Json::String(s) => Value::Str(Str::from(s.as_str())),
        Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Json::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (Str::from(k.as_str()), to_value(v)))
                .collect(),
        ),
    }
}

/// L42: traces per figure (one figure with 10 001 streamed traces made 10 001 streams and
/// 10 001 viewer subscriptions per page view).
pub const MAX_TRACES: usize = 256;

/// File and folder paths: at most 512 bytes, no control characters (they reach pages, where
/// the templates escape them, and logs).
pub(crate) fn valid_path(p: &str) -> bool {
    p.len() <= 512 && !p.chars().any(char::is_control)
}

/// `{public origin}/~<user>/<n>/` (docs/protocol.md §7.6 rule 4).
pub(super) fn web_url(shared: &Shared, head: &RequestHead, fid: &str) -> String {
    let (user, n) = split_fid(fid).unwrap_or(("anonymous", 0));
    format!("{}/~{user}/{n}/", origin(shared, head))
}

/// `--public-url`, else `http://` + the request's Host.
pub fn origin(shared: &Shared, head: &RequestHead) -> String {
    match &shared.config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = head
                .field("host")
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .unwrap_or_else(|| "127.0.0.1".into());
            format!("http://{host}")
        }
    }
}

pub(super) fn error_message(r: &Response) -> String {
    serde_json::from_slice::<Json>(r.body())
        .ok()
        .and_then(|j| j.pointer("/errors/0/message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "refused".to_owned())
}

pub(super) fn file_error(e: FileError) -> Response {
    let (status, message) = e.status();
    error(status, message)
}

pub(super) fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}
