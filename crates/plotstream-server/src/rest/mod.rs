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

pub(crate) mod auth;
mod clientresp;
mod figures;
pub(crate) mod form;

pub use self::auth::caller;
pub use self::clientresp::serve_clientresp;
pub use self::figures::{page_fid, plot_feed, visible_plot};
pub(crate) use self::form::url_decode;
pub use self::form::MAX_BODY;

use std::net::IpAddr;

use bytes::BytesMut;
use plotstream_proto::head::RequestHead;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};

pub(crate) use self::figures::valid_path;
use self::figures::{bind_figure, check_figure, empty_object, file_error, web_url};
use crate::files::Plot;
use crate::response::{error, read_body, Response};
use crate::shared::Shared;
use crate::transport::Io;

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
            let (cols, path, world_readable) = match grid_from(&body) {
                Ok(g) => g,
                Err(r) => return r,
            };
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
            if let Err(status) = crate::nodes::own_for_figure(shared, &plot.tokens()).await {
                return Response::error(status);
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
            if let Err(status) = crate::nodes::own_for_figure(shared, &plot.tokens()).await {
                return Response::error(status);
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

/// A grid's columns in their `order` (those without one last, by name), as the JSON text
/// sent; its path; whether it is world-readable.
pub(crate) type GridFrom = (Vec<(String, Box<RawValue>)>, Option<String>, bool);

/// Parses a grid body without building a `Value` of its columns (kept as the text sent).
pub(crate) fn grid_from(body: &[u8]) -> Result<GridFrom, Response> {
    let Ok(grid) = serde_json::from_slice::<GridBody>(body) else {
        return Err(error(400, "data.cols is required"));
    };
    let Some(path) = file_path(grid.filename.as_deref(), grid.parent_path.as_deref()) else {
        return Err(error(400, "invalid filename"));
    };
    let mut cols: Vec<(String, GridCol)> = grid.data.cols.into_iter().collect();
    cols.sort_by_key(|(_, c)| c.order.unwrap_or(u64::MAX));
    let cols = cols.into_iter().map(|(name, c)| (name, c.data)).collect();
    Ok((cols, path, grid.world_readable.unwrap_or(true)))
}

/// Parses a plot body without building a `Value` of its data (kept as the text sent).
pub(crate) fn plot_from(body: &[u8]) -> Result<(Plot, Option<String>), Response> {
    let Ok(b) = serde_json::from_slice::<PlotBody>(body) else {
        return Err(error(400, "figure.data is required"));
    };
    let Some(path) = file_path(b.filename.as_deref(), b.parent_path.as_deref()) else {
        return Err(error(400, "invalid filename"));
    };
    // The server reads each trace (its stream, its sources; `Plot::traces`): one it cannot
    // read (a number out of f64's range, found by the `rest` fuzz target) would be stored and
    // then dropped from the page unseen, its stream neither checked nor bound.
    if let Some(i) =
        (b.figure.data.iter()).position(|t| serde_json::from_str::<Json>(t.get()).is_err())
    {
        return Err(error(
            400,
            &format!("figure.data[{i}] holds a value this server cannot read"),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::auth::base64_decode;
    use super::form::{parse_json_lenient, split_form};
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
