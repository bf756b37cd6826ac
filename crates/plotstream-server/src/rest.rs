//! The Chart Studio v2 REST subset (PROTOCOL.md §7) and the legacy `POST /clientresp`
//! (PROTOCOL.md §8): enough for `py.plot`, `py.iplot`, `py.sign_in`, node `plot()` and the
//! Arduino `init()` to run unchanged, storing figures and binding their stream tokens.

use crate::transport::Io;
use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use plotstream_proto::json::Str;
use plotstream_proto::{Token, Value};
use serde_json::{json, Value as Json};
use tokio::io::AsyncReadExt;

use crate::files::{random_id, split_fid, Plot};
use crate::http::Response;
use crate::store::clamp_maxpoints;
use crate::Shared;

/// L: REST bodies up to 16 MiB (PROTOCOL.md §7.6 rule 7).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves a `/v2/...` request.
pub async fn serve_v2(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    shared: &Shared,
) -> Response {
    let user = user_of(head);
    let path = head.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
    let body = match crate::http::read_body(stream, head, rest, MAX_BODY).await {
        Some(b) => b,
        None => return error(413, "request body too large"),
    };
    let parsed: Json = if body.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Json::Null)
    };
    match (head.method.as_str(), segments.as_slice()) {
        ("GET", ["users", "current"]) => {
            Response::json(200, json!({ "username": user }).to_string())
        }
        ("POST", ["folders"]) => {
            let Some(p) = parsed.get("path").and_then(Json::as_str) else {
                return error(400, "path is required");
            };
            let created = shared.files.make_folder(&user, p);
            Response::json(
                if created { 201 } else { 200 },
                json!({"file": {"filetype": "fold", "path": p}}).to_string(),
            )
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
        ("DELETE", ["grids", fid]) => {
            shared.files.delete(fid);
            Response::new(204, "application/json", "")
        }
        ("POST", ["grids"]) => {
            let Some(cols) = parsed.pointer("/data/cols").and_then(Json::as_object) else {
                return error(400, "data.cols is required");
            };
            let (fid, cols) = shared.files.create_grid(&user, file_path(&parsed), cols);
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
        ("POST", ["plots"]) => {
            let Some(plot) = plot_from(&parsed, shared) else {
                return error(400, "figure.data is required");
            };
            let fid = shared
                .files
                .create_plot(&user, file_path(&parsed), plot.clone());
            bind_figure(shared, &plot, None);
            Response::json(201, file_json(shared, head, &fid, &plot).to_string())
        }
        ("PUT", ["plots", fid]) => {
            let Some(plot) = plot_from(&parsed, shared) else {
                return error(400, "figure.data is required");
            };
            match shared.files.replace_plot(fid, plot.clone()) {
                Some(old) => {
                    bind_figure(shared, &plot, Some(&old));
                    Response::json(200, file_json(shared, head, fid, &plot).to_string())
                }
                None => error(404, "Not found"),
            }
        }
        _ => error(404, "Not found"),
    }
}

/// Serves `POST /clientresp` (PROTOCOL.md §8): always 200 with `error` a string.
pub async fn serve_clientresp(
    stream: &mut Io,
    head: &RequestHead,
    rest: &mut BytesMut,
    shared: &Shared,
) -> Response {
    let body = read_clientresp_body(stream, head, rest).await;
    let fields = split_form(&body);
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    let user = field("un")
        .filter(|u| !u.is_empty())
        .unwrap_or("anonymous")
        .to_owned();
    let args = field("args")
        .and_then(parse_json_lenient)
        .unwrap_or(Json::Null);
    let kwargs = field("kwargs")
        .and_then(parse_json_lenient)
        .unwrap_or(json!({}));
    let traces = match args {
        Json::Array(a) => a,
        obj @ Json::Object(_) => vec![obj],
        _ => {
            let body = json!({"url": "", "message": "", "warning": "", "filename": "", "error": "args must be a JSON array of traces"});
            return Response::json(200, body.to_string());
        }
    };
    let filename = kwargs
        .get("filename")
        .and_then(Json::as_str)
        .unwrap_or("plot from API")
        .to_owned();
    let plot = Plot {
        data: traces,
        layout: kwargs.get("layout").cloned().unwrap_or(json!({})),
        share_key: None,
    };
    let fileopt = kwargs
        .get("fileopt")
        .and_then(Json::as_str)
        .unwrap_or("overwrite");
    let existing = (fileopt != "new")
        .then(|| shared.files.lookup(&user, &filename))
        .flatten();
    let fid = match existing.filter(|f| f.filetype == "plot") {
        Some(f) => {
            if let Some(old) = shared.files.replace_plot(&f.fid, plot.clone()) {
                bind_figure(shared, &plot, Some(&old));
            }
            f.fid
        }
        None => {
            let fid = shared
                .files
                .create_plot(&user, Some(filename.clone()), plot.clone());
            bind_figure(shared, &plot, None);
            fid
        }
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

/// The figure page's feed: the layout and, per trace, its token and static attributes.
pub fn plot_feed(shared: &Shared, fid: &str) -> Option<crate::sse::Feed> {
    let plot = shared.files.plot(fid)?;
    let traces = plot
        .data
        .iter()
        .map(|t| {
            let token = stream_token(t);
            let mut attrs = t.clone();
            if let Some(obj) = attrs.as_object_mut() {
                obj.remove("stream");
                if token.is_some() {
                    // The stream's window provides the data.
                    for k in ["x", "y", "z", "text", "xsrc", "ysrc", "zsrc", "textsrc"] {
                        obj.remove(k);
                    }
                } else {
                    resolve_srcs(shared, obj);
                }
            }
            (token, attrs.to_string())
        })
        .collect();
    Some(crate::sse::Feed::Plot {
        fid: fid.to_owned(),
        layout: plot.layout.to_string(),
        traces,
    })
}

/// The `/~user/n` page's fid, if the plot exists.
pub fn page_fid(shared: &Shared, user: &str, n: &str) -> Option<String> {
    let n = n.trim_end_matches(".embed");
    let fid = format!("{user}:{n}");
    split_fid(&fid)?;
    shared.files.plot(&fid).map(|_| fid)
}

fn bind_figure(shared: &Shared, plot: &Plot, old: Option<&Plot>) {
    let mut kept = Vec::new();
    for trace in &plot.data {
        let Some(token) = stream_token(trace) else {
            continue;
        };
        let maxpoints = trace
            .pointer("/stream/maxpoints")
            .and_then(Json::as_f64)
            .map_or(shared.config.store.default_maxpoints, |mp| {
                clamp_maxpoints(mp, shared.config.store.max_maxpoints)
            });
        let mut initial = Vec::new();
        for attr in ["x", "y", "z", "text"] {
            let values = match trace.get(attr) {
                Some(Json::Array(a)) => Some(Json::Array(a.clone())),
                _ => trace
                    .get(format!("{attr}src"))
                    .and_then(Json::as_str)
                    .and_then(|r| shared.files.column(r)),
            };
            if let Some(Json::Array(values)) = values {
                if !values.is_empty() {
                    initial.push((attr.to_owned(), values.iter().map(to_value).collect()));
                }
            }
        }
        shared.store.bind_trace(&token, maxpoints, initial);
        kept.push(token);
    }
    for trace in old.map(|p| p.data.as_slice()).unwrap_or_default() {
        if let Some(token) = stream_token(trace) {
            if !kept.contains(&token) {
                shared.store.retire_token(&token);
            }
        }
    }
}

fn stream_token(trace: &Json) -> Option<String> {
    let t = trace.pointer("/stream/token")?.as_str()?;
    Token::parse(t.as_bytes()).map(|_| t.to_owned())
}

fn resolve_srcs(shared: &Shared, obj: &mut serde_json::Map<String, Json>) {
    for attr in ["x", "y", "z", "text"] {
        if obj.get(attr).is_none() {
            if let Some(data) = obj
                .get(&format!("{attr}src"))
                .and_then(Json::as_str)
                .and_then(|r| shared.files.column(r))
            {
                obj.insert(attr.to_owned(), data);
            }
        }
    }
}

fn plot_from(body: &Json, _shared: &Shared) -> Option<Plot> {
    let figure = body.get("figure")?;
    let data = figure.get("data")?.as_array()?.clone();
    let share = body
        .get("share_key_enabled")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    Some(Plot {
        data,
        layout: figure.get("layout").cloned().unwrap_or(json!({})),
        share_key: share.then(|| random_id(22)),
    })
}

fn file_json(shared: &Shared, head: &RequestHead, fid: &str, plot: &Plot) -> Json {
    let mut file = json!({"fid": fid, "filetype": "plot", "web_url": web_url(shared, head, fid)});
    if let Some(key) = &plot.share_key {
        file["share_key"] = json!(key);
    }
    json!({ "file": file })
}

fn file_path(body: &Json) -> Option<String> {
    let name = body.get("filename")?.as_str()?;
    Some(match body.get("parent_path").and_then(Json::as_str) {
        Some(parent) if !parent.is_empty() => format!("{parent}/{name}"),
        _ => name.to_owned(),
    })
}

/// `{public origin}/~<user>/<n>/` (PROTOCOL.md §7.6 rule 4).
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

fn error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        json!({"errors": [{"message": message}]}).to_string(),
    )
}

/// The user of `Authorization: Basic` (or `plotly-authorization`, preferred when present).
fn user_of(head: &RequestHead) -> String {
    let value = head
        .field("plotly-authorization")
        .or_else(|| head.field("authorization"));
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split(':').next().map(str::to_owned))
        .filter(|u| {
            !u.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
        .unwrap_or_else(|| "anonymous".to_owned())
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

/// PROTOCOL.md §8.4: read Content-Length bytes; if `args` and `kwargs` do not parse yet (the
/// Arduino advertises 24 bytes too few), read on to the first CRLF, at most 4 KiB and 2 s more.
async fn read_clientresp_body(stream: &mut Io, head: &RequestHead, rest: &mut BytesMut) -> String {
    let mut body = crate::http::read_body(stream, head, rest, MAX_BODY)
        .await
        .unwrap_or_default();
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
    String::from_utf8_lossy(&body).into_owned()
}

/// Splits at `&` only before a known key, keeping values raw (PROTOCOL.md §8.4).
fn split_form(body: &str) -> Vec<(&str, String)> {
    const KEYS: [&str; 8] = [
        "platform=",
        "version=",
        "args=",
        "kwargs=",
        "un=",
        "key=",
        "origin=",
        "world_readable=",
    ];
    let mut cuts = vec![0usize];
    for (i, _) in body.match_indices('&') {
        if KEYS.iter().any(|k| body[i + 1..].starts_with(k)) {
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
fn parse_json_lenient(v: &str) -> Option<Json> {
    serde_json::from_str(v)
        .ok()
        .or_else(|| serde_json::from_str(&url_decode(v)).ok())
}

/// `+` → space, `%XX` → byte.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn basic_auth_user() {
        assert_eq!(
            base64_decode("ZGVtbzpkZW1va2V5MTIz").unwrap(),
            b"demo:demokey123"
        );
    }
}
