//! The Chart Studio v2 REST subset (docs/protocol.md §7) and the legacy `POST /clientresp`
//! (docs/protocol.md §8): enough for `py.plot`, `py.iplot`, `py.sign_in`, node `plot()` and the
//! Arduino `init()` to run unchanged, storing figures and binding their stream tokens.
//!
//! Who may do what (docs/security.md): in keys mode (`serve --users FILE`) every v2 call
//! authenticates with the Basic `username:api_key` that chart_studio sends and `/clientresp`
//! with its `un`/`key` fields; without `--users` the Basic user name is taken as a claim
//! (loopback-only by default, protected mode). Either way only a file's owner changes it, a
//! figure binds only tokens no other user's figure streams to (in keys mode: only its owner's
//! tokens), and every check happens before any effect.

use std::net::IpAddr;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::json::Str;
use plotstream_proto::{Maxpoints, Value};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::AsyncReadExt;

use crate::files::{split_fid, stream_token, FileError, Plot};
use crate::response::{error, read_body, Response};
use crate::transport::Io;
use crate::users::valid_username;
use crate::Shared;

/// Serves a `/v2/...` request.
pub async fn serve_v2(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    shared: &Shared,
    peer: IpAddr,
) -> Response {
    let path = head.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
    let body = match read_body(stream, head, rest, MAX_BODY, shared).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let user = match caller(shared, head) {
        Ok(Some(u)) => u,
        Ok(None) if shared.config.store.users.is_some() => {
            return error(401, "Authentication credentials were not provided.")
        }
        Ok(None) => "anonymous".to_owned(),
        Err(r) => return r,
    };
    match (head.method.as_str(), segments.as_slice()) {
        ("GET", ["users", "current"]) => {
            Response::json(200, json!({ "username": user }).to_string())
        }
        ("POST", ["folders"]) => {
            let parsed: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            let Some(p) = parsed.get("path").and_then(Json::as_str) else {
                return error(400, "path is required");
            };
            if !valid_path(p) {
                return error(400, "invalid path");
            }
            match shared.files.make_folder(&user, p) {
                Ok(created) => Response::json(
                    if created { 201 } else { 200 },
                    json!({"file": {"filetype": "fold", "path": p}}).to_string(),
                ),
                Err(e) => file_error(e),
            }
        }
        ("GET", ["files", "lookup"]) => {
            let p = head
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("path=")))
                .map(url_decode);
            match p.and_then(|p| shared.files.lookup(&user, &p).map(|f| (f, p))) {
                Some((f, p)) => {
                    let filename = p.rsplit('/').next().unwrap_or(&p).to_owned();
                    Response::json(
                        200,
                        json!({"fid": f.fid, "filetype": f.filetype, "filename": filename})
                            .to_string(),
                    )
                }
                None => error(404, "Not found"),
            }
        }
        ("DELETE", ["grids", fid]) => match shared.files.delete_grid(&user, fid) {
            Ok(()) => Response::new(204, "application/json", ""),
            Err(e) => file_error(e),
        },
        ("POST", ["grids"]) => {
            let Ok(grid) = serde_json::from_slice::<GridBody>(&body) else {
                return error(400, "data.cols is required");
            };
            let Some(path) = file_path(grid.filename.as_deref(), grid.parent_path.as_deref())
            else {
                return error(400, "invalid filename");
            };
            let mut cols: Vec<(String, GridCol)> = grid.data.cols.into_iter().collect();
            cols.sort_by_key(|(_, c)| c.order.unwrap_or(u64::MAX));
            let cols = cols.into_iter().map(|(name, c)| (name, c.data)).collect();
            let world_readable = grid.world_readable.unwrap_or(true);
            match shared.files.create_grid(&user, path, world_readable, cols) {
                Ok((fid, cols)) => {
                    let cols: Vec<Json> = cols
                        .into_iter()
                        .map(|(name, uid)| json!({"name": name, "uid": uid}))
                        .collect();
                    let url = web_url(shared, head, &fid);
                    Response::json(
                        201,
                        json!({"file": {"fid": fid, "filetype": "grid", "web_url": url, "cols": cols}})
                            .to_string(),
                    )
                }
                Err(e) => file_error(e),
            }
        }
        ("POST", ["plots"]) => {
            let (plot, path) = match plot_from(&body) {
                Ok(p) => p,
                Err(r) => return r,
            };
            if let Err(r) = check_figure(shared, &user, &plot) {
                return r;
            }
            let fid = match shared.files.create_plot(&user, path, plot.clone()) {
                Ok(fid) => fid,
                Err(e) => return file_error(e),
            };
            if let Err(r) = bind_figure(shared, &user, &fid, &plot, None, peer) {
                return r;
            }
            Response::json(201, file_json(shared, head, &fid, &plot).to_string())
        }
        ("PUT", ["plots", fid]) => {
            let (plot, _) = match plot_from(&body) {
                Ok(p) => p,
                Err(r) => return r,
            };
            if let Err(r) = check_figure(shared, &user, &plot) {
                return r;
            }
            match shared.files.replace_plot(&user, fid, plot.clone()) {
                Ok(old) => {
                    if let Err(r) = bind_figure(shared, &user, fid, &plot, Some(&old), peer) {
                        return r;
                    }
                    Response::json(200, file_json(shared, head, fid, &plot).to_string())
                }
                Err(e) => file_error(e),
            }
        }
        _ => error(404, "Not found"),
    }
}

/// Serves `POST /clientresp` (docs/protocol.md §8): always 200 with `error` a string.
pub async fn serve_clientresp(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    shared: &Shared,
    peer: IpAddr,
) -> Response {
    let body = match read_clientresp_body(stream, head, rest, shared).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let fields = split_form(&body);
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    let failed = |message: &str| {
        let body =
            json!({"url": "", "message": "", "warning": "", "filename": "", "error": message});
        Response::json(200, body.to_string())
    };
    let user = match field("un").filter(|u| !u.is_empty()) {
        Some(u) if !valid_username(u) => {
            return failed("invalid user name: use 1 to 64 characters of [A-Za-z0-9_.-]")
        }
        Some(u) => u.to_owned(),
        None if shared.config.store.users.is_some() => return failed("missing un and key"),
        None => "anonymous".to_owned(),
    };
    if let Some(users) = &shared.config.store.users {
        if users
            .authenticate(&user, field("key").unwrap_or(""))
            .is_none()
        {
            return failed("invalid username or api key");
        }
    }
    let args = field("args")
        .and_then(parse_json_lenient)
        .unwrap_or(Json::Null);
    let kwargs = field("kwargs")
        .and_then(parse_json_lenient)
        .unwrap_or(json!({}));
    let traces = match args {
        Json::Array(a) => a,
        obj @ Json::Object(_) => vec![obj],
        _ => return failed("args must be a JSON array of traces"),
    };
    let filename = kwargs
        .get("filename")
        .and_then(Json::as_str)
        .unwrap_or("plot from API")
        .to_owned();
    if !valid_path(&filename) {
        return failed("invalid filename");
    }
    let to_raw = |j: &Json| RawValue::from_string(j.to_string()).ok();
    let plot = Plot {
        traces: traces.iter().filter_map(to_raw).collect(),
        layout: kwargs
            .get("layout")
            .and_then(to_raw)
            .unwrap_or_else(empty_object),
        share_key: None,
        world_readable: kwargs
            .get("world_readable")
            .and_then(Json::as_bool)
            .unwrap_or(true),
    };
    if let Err(r) = check_figure(shared, &user, &plot) {
        return failed(&error_message(&r));
    }
    let fileopt = kwargs
        .get("fileopt")
        .and_then(Json::as_str)
        .unwrap_or("overwrite");
    let existing = (fileopt != "new")
        .then(|| shared.files.lookup(&user, &filename))
        .flatten();
    let fid = match existing.filter(|f| f.filetype == "plot") {
        Some(f) => match shared.files.replace_plot(&user, &f.fid, plot.clone()) {
            Ok(old) => {
                if let Err(r) = bind_figure(shared, &user, &f.fid, &plot, Some(&old), peer) {
                    return failed(&error_message(&r));
                }
                f.fid
            }
            Err(e) => return failed(e.status().1),
        },
        None => match shared
            .files
            .create_plot(&user, Some(filename.clone()), plot.clone())
        {
            Ok(fid) => {
                if let Err(r) = bind_figure(shared, &user, &fid, &plot, None, peer) {
                    return failed(&error_message(&r));
                }
                fid
            }
            Err(e) => return failed(e.status().1),
        },
    };
    let url = web_url(shared, head, &fid);
    let url = url.trim_end_matches('/');
    let origin = origin(shared, head);
    let host = origin
        .split("://")
        .nth(1)
        .unwrap_or(&origin)
        .split(['/', ':'])
        .next()
        .unwrap_or("127.0.0.1");
    let body = json!({
        "url": url, "message": "", "warning": "", "filename": filename, "error": "",
        "stream-status": "All Streams Go!", "stream-host": format!("http://{host}"),
    });
    Response::json(200, body.to_string())
}

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

/// Everything a figure must satisfy before anything is stored or bound: at most L42 traces;
/// every streamed token free of other users' figures; in keys mode, owned by `user`.
fn check_figure(shared: &Shared, user: &str, plot: &Plot) -> Result<(), Response> {
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
fn bind_figure(
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
    Ok(())
}

fn initial_data(shared: &Shared, user: &str, trace: &Json) -> Vec<(String, Vec<Value>)> {
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

fn resolve_srcs(shared: &Shared, owner: &str, obj: &mut serde_json::Map<String, Json>) {
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

#[derive(Deserialize)]
struct PlotBody {
    figure: FigureBody,
    filename: Option<String>,
    parent_path: Option<String>,
    world_readable: Option<bool>,
    share_key_enabled: Option<bool>,
}

#[derive(Deserialize)]
struct FigureBody {
    data: Vec<Box<RawValue>>,
    layout: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct GridBody {
    data: GridData,
    filename: Option<String>,
    parent_path: Option<String>,
    world_readable: Option<bool>,
}

#[derive(Deserialize)]
struct GridData {
    cols: std::collections::BTreeMap<String, GridCol>,
}

#[derive(Deserialize)]
struct GridCol {
    data: Box<RawValue>,
    order: Option<u64>,
}

/// Parses a plot body without building a `Value` of its data (kept as the text sent).
fn plot_from(body: &[u8]) -> Result<(Plot, Option<String>), Response> {
    let Ok(b) = serde_json::from_slice::<PlotBody>(body) else {
        return Err(error(400, "figure.data is required"));
    };
    let Some(path) = file_path(b.filename.as_deref(), b.parent_path.as_deref()) else {
        return Err(error(400, "invalid filename"));
    };
    let plot = Plot {
        traces: b.figure.data,
        layout: b.figure.layout.unwrap_or_else(empty_object),
        share_key: b
            .share_key_enabled
            .unwrap_or(false)
            .then(|| crate::random::id(22)),
        world_readable: b.world_readable.unwrap_or(true),
    };
    Ok((plot, path))
}

fn file_json(shared: &Shared, head: &RequestHead, fid: &str, plot: &Plot) -> Json {
    let mut file = json!({"fid": fid, "filetype": "plot", "web_url": web_url(shared, head, fid)});
    if let Some(key) = &plot.share_key {
        file["share_key"] = json!(key);
    }
    json!({ "file": file })
}

/// `parent_path/filename`: `Some(None)` without a filename, `None` if invalid.
fn file_path(name: Option<&str>, parent: Option<&str>) -> Option<Option<String>> {
    let Some(name) = name else {
        return Some(None);
    };
    let path = match parent {
        Some(parent) if !parent.is_empty() => format!("{parent}/{name}"),
        _ => name.to_owned(),
    };
    valid_path(&path).then_some(Some(path))
}

/// File and folder paths: at most 512 bytes, no control characters (they reach pages, where
/// the templates escape them, and logs).
fn valid_path(p: &str) -> bool {
    p.len() <= 512 && !p.chars().any(char::is_control)
}

/// `{public origin}/~<user>/<n>/` (docs/protocol.md §7.6 rule 4).
fn web_url(shared: &Shared, head: &RequestHead, fid: &str) -> String {
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

fn error_message(r: &Response) -> String {
    serde_json::from_slice::<Json>(r.body())
        .ok()
        .and_then(|j| j.pointer("/errors/0/message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "refused".to_owned())
}

fn file_error(e: FileError) -> Response {
    let (status, message) = e.status();
    error(status, message)
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// `(user, key)` of `Authorization: Basic` (or `plotly-authorization`, preferred when
/// present, docs/protocol.md §7.3).
fn basic_credentials(head: &RequestHead) -> Option<(String, String)> {
    let value = head
        .field("plotly-authorization")
        .or_else(|| head.field("authorization"))?;
    let v = std::str::from_utf8(value).ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (user, key) = raw.split_once(':')?;
    Some((user.to_owned(), key.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// docs/protocol.md §8.4: read Content-Length bytes; if `args` and `kwargs` do not parse yet (the
/// Arduino advertises 24 bytes too few), read on to the first CRLF, at most 4 KiB and 2 s more.
async fn read_clientresp_body(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    shared: &Shared,
) -> Result<String, Response> {
    let mut body = read_body(stream, head, rest, MAX_BODY, shared).await?;
    let complete = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        let fields = split_form(&text);
        let ok = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| parse_json_lenient(v))
                .is_some()
        };
        ok("args") && ok("kwargs")
    };
    if !complete(&body) {
        body.extend_from_slice(rest);
        rest.clear();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut chunk = [0u8; 1024];
        let start = body.len();
        while body.len() < start + 4096
            && !body.windows(2).any(|w| w == b"\r\n")
            && !complete(&body)
        {
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        if let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
            body.truncate(i);
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

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

fn base64_decode(s: &str) -> Option<Vec<u8>> {
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

/// L45: REST and `/clientresp` bodies up to 16 MiB (docs/protocol.md §7.6 rule 7).
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// L42: traces per figure (one figure with 10 001 streamed traces made 10 001 streams and
/// 10 001 viewer subscriptions per page view).
pub const MAX_TRACES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_splits_only_before_known_keys() {
        let body = r#"platform=nodejs&version=1.0.4&args=[{"x":[],"mode":"lines+markers","name":"a&b"}]&kwargs={"filename":"n"}&un=demo&key=k&origin=plot"#;
        let f = split_form(body);
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("args").unwrap(),
            r#"[{"x":[],"mode":"lines+markers","name":"a&b"}]"#
        );
        assert_eq!(get("un").unwrap(), "demo");
        assert!(parse_json_lenient(&get("args").unwrap()).is_some());
    }

    #[test]
    fn legacy_python_bodies_are_url_decoded() {
        assert_eq!(
            parse_json_lenient("%5B%7B%22x%22%3A+%5B1%5D%7D%5D"),
            Some(json!([{"x": [1]}]))
        );
        assert_eq!(url_decode("a+b%2Fc%zz"), "a b/c%zz");
    }

    #[track_caller]
    fn check_url_decode(input: &str, expected: &str) {
        assert_eq!(url_decode(input), expected, "{input:?}");
    }

    /// `%` decodes only before two hex digits. Found by the `form_value` fuzz property:
    /// `u8::from_str_radix` accepts a sign, so `%+a` was the byte 0x0a.
    #[test]
    fn fuzz_url_decode_percent_needs_two_hex_digits() {
        for (input, expected) in [
            ("%+a", "% a"),
            ("%+0+", "% 0 "),
            ("%-1", "%-1"),
            ("%4", "%4"),
            ("%", "%"),
            ("%%41", "%A"),
            ("%41%4a%4A", "AJJ"),
            ("%e2%82%ac", "€"),
            ("%C3", "\u{fffd}"),
        ] {
            check_url_decode(input, expected);
        }
    }

    #[test]
    fn basic_auth_user() {
        assert_eq!(
            base64_decode("ZGVtbzpkZW1va2V5MTIz").unwrap(),
            b"demo:demokey123"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(file_path(None, None), Some(None));
        assert_eq!(
            file_path(Some("n"), Some("a/b")),
            Some(Some("a/b/n".to_owned()))
        );
        assert_eq!(file_path(Some("a\nb"), None), None);
        assert_eq!(file_path(Some(&"x".repeat(513)), None), None);
    }
}
