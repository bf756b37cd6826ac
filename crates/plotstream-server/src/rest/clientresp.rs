//! `POST /clientresp` (docs/protocol.md §8): the legacy form API of old Python and the Arduino
//! library, answered 200 with an `error` field as those clients expect.

use std::net::IpAddr;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::AsyncReadExt;

use super::figures::{
    bind_figure, check_figure, empty_object, error_message, origin, valid_path, web_url,
};
use super::form::{parse_json_lenient, split_form, MAX_BODY};
use crate::files::Plot;
use crate::response::{read_body, Response};
use crate::shared::Shared;
use crate::transport::Io;
use crate::users::valid_username;

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
    if let Err(status) = crate::nodes::own_for_figure(shared, &plot.tokens()).await {
        return failed(status.reason());
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
