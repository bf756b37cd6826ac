//! HTML pages and static assets.
//!
//! Every page is an askama template (`templates/*.html`) rendered from a plain view model:
//! askama HTML-escapes every interpolated value, so a user name, a file name or a fid can never
//! become markup, whatever was or was not checked upstream. Rendering is pure; gathering what a
//! page shows is a separate function. No page carries inline script, and every HTML response
//! carries the policy of [`csp`].
//!
//! The assets come from the binary: plotly.js v3.0.1 from the `plotly` crate, `viewer.js`,
//! `viewer.css` and plotly.js's licence from `viewer/`. `--viewer-dir` reads the viewer's two
//! files from disk instead (development), `--plotly-js` serves another plotly.js or loads it
//! from a URL.

use std::sync::LazyLock;

use askama::Template;
use sha2::{Digest, Sha256};

use crate::config::PlotlyJs;
use crate::response::Response;
use crate::shared::Shared;

/// Rows of the stream table, and of the plot list, on `GET /`.
pub const INDEX_ROWS: usize = 500;

/// The version of the plotly.js embedded in the binary (the `plotly` crate's `plotly_embed_js`).
pub const PLOTLY_JS_VERSION: &str = "3.0.1";

/// Who may show a page in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Only pages of this server (`frame-ancestors 'self'`): the index and full views.
    SameOrigin,
    /// Any site: `.embed` pages, which notebooks (`py.iplot`, `tls.embed`) put in an iframe.
    Anywhere,
}

/// The Content-Security-Policy of every page: scripts only from this server (and the origin of
/// `--plotly-js URL`), no inline script, no eval, no plugin, no third-party connection.
///
/// `style-src` allows inline styles: plotly.js inserts its rules into a `<style>` element it
/// creates. Inline style cannot run script; inline script stays forbidden.
pub fn csp(plotly: &PlotlyJs, framing: Framing) -> String {
    let mut script_src = String::from("'self'");
    if let PlotlyJs::Url { origin, .. } = plotly {
        script_src.push(' ');
        script_src.push_str(origin);
    }
    let mut policy = format!(
        "default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'none'"
    );
    if framing == Framing::SameOrigin {
        policy.push_str("; frame-ancestors 'self'");
    }
    policy
}

/// What `GET /` shows.
#[derive(Debug, Clone, Default, Template)]
#[template(path = "index.html")]
pub struct IndexPage {
    /// The streams, in display order; at most [`INDEX_ROWS`].
    pub streams: Vec<StreamRow>,
    /// Streams left out.
    pub more_streams: usize,
    /// The plots, in display order; at most [`INDEX_ROWS`].
    pub plots: Vec<PlotRow>,
    /// Plots left out.
    pub more_plots: usize,
}

/// A row of the index's stream table.
#[derive(Debug, Clone)]
pub struct StreamRow {
    /// The stream token.
    pub token: String,
    /// The newest seq.
    pub last_seq: u64,
    /// Points in the window.
    pub n_points: usize,
    /// A writer holds the token.
    pub writer_connected: bool,
    /// Subscribed viewers.
    pub n_viewers: usize,
}

/// An entry of the index's plot list.
#[derive(Debug, Clone)]
pub struct PlotRow {
    /// The figure page (`/~<user>/<n>/`).
    pub href: String,
    /// The link text (the fid).
    pub label: String,
    /// The file name, or empty.
    pub name: String,
}

/// The live view of one stream or one figure.
#[derive(Debug, Clone, Template)]
#[template(path = "viewer.html")]
pub struct ViewerPage {
    /// The token or fid, in the title and header.
    pub name: String,
    /// Without header, framable from anywhere (`.embed`).
    pub embed: bool,
    /// `plot` for a figure (every trace); none for a single stream.
    pub mode: Option<&'static str>,
    /// The SSE feed.
    pub events: String,
    /// The inspection route polled for the writer's state (single streams).
    pub inspect: Option<String>,
    /// The server keeps history: a single stream's page gets the range buttons and the CSV
    /// link (docs/history.md).
    pub history: bool,
    /// Where plotly.js is loaded from.
    pub plotly_src: String,
}

/// The page for an unknown figure.
#[derive(Debug, Clone, Copy, Default, Template)]
#[template(path = "not_found.html")]
pub struct NotFoundPage;

/// `GET /`: the streams (live ones first) and the plots, each list capped at [`INDEX_ROWS`].
pub fn index(shared: &Shared) -> Response {
    render(shared, 200, &index_rows(shared), Framing::SameOrigin)
}

/// What the index shows, gathered from the store and the file registry; kept apart from
/// rendering so that which rows a visitor sees can change on its own.
pub fn index_rows(shared: &Shared) -> IndexPage {
    let mut streams = shared.store.list();
    // Streams with a writer first (the live ones a visitor looks for), then by token; at most
    // INDEX_ROWS rows, so the page stays small with 10 000 streams (the API lists them all).
    streams.sort_by(|a, b| {
        b.writer_connected
            .cmp(&a.writer_connected)
            .then_with(|| a.token.cmp(&b.token))
    });
    let more_streams = streams.len().saturating_sub(INDEX_ROWS);
    let streams = streams
        .into_iter()
        .take(INDEX_ROWS)
        .map(|s| StreamRow {
            // Keys mode lists read ids only, never a write token.
            token: if shared.config.store.users.is_some() {
                s.read_id
            } else {
                s.token
            },
            last_seq: s.last_seq,
            n_points: s.count,
            writer_connected: s.writer_connected,
            n_viewers: s.n_viewers,
        })
        .collect();
    // World-readable plots only: private and secret plots are never listed.
    let (plots, more_plots) = shared.files.plots(false, INDEX_ROWS);
    let plots = plots
        .into_iter()
        .filter_map(|p| {
            let (user, n) = crate::files::split_fid(&p.fid)?;
            Some(PlotRow {
                href: format!("/~{user}/{n}/"),
                label: p.fid.clone(),
                name: p.path.unwrap_or_default(),
            })
        })
        .collect();
    IndexPage {
        streams,
        more_streams,
        plots,
        more_plots,
    }
}

/// `GET /streams/{token}`: the live view of one stream.
pub fn stream_page(shared: &Shared, token: &str) -> Response {
    let page = ViewerPage {
        name: token.to_owned(),
        embed: false,
        mode: None,
        events: format!("/api/streams/{token}/events"),
        inspect: Some(format!("/api/streams/{token}")),
        history: shared.store.history().is_some(),
        plotly_src: plotly_src(&shared.config.plotly_js),
    };
    render(shared, 200, &page, Framing::SameOrigin)
}

/// `GET /~{user}/{n}/` and `.embed`: the live view of a figure, every trace. A secret plot's
/// feed needs the same `share_key` the page was opened with.
pub fn figure_page(shared: &Shared, fid: &str, share_key: Option<&str>, embed: bool) -> Response {
    let key = share_key
        .filter(|k| k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map_or(String::new(), |k| format!("?share_key={k}"));
    let page = ViewerPage {
        name: fid.to_owned(),
        embed,
        mode: Some("plot"),
        events: format!("/api/plots/{fid}/events{key}"),
        inspect: None,
        history: false,
        plotly_src: plotly_src(&shared.config.plotly_js),
    };
    render(shared, 200, &page, framing(embed))
}

/// `404` for an unknown figure; framable like the `.embed` page it stands for.
pub fn not_found(shared: &Shared, embed: bool) -> Response {
    render(shared, 404, &NotFoundPage, framing(embed))
}

/// `GET /assets/{file}`: plotly.js, its licence and the viewer's files.
pub async fn asset(shared: &Shared, file: &str) -> Response {
    let viewer_dir = shared.config.viewer_dir.as_deref();
    match file {
        _ if file == versioned_plotly_name() => embedded_plotly(IMMUTABLE),
        "plotly.min.js" => match &shared.config.plotly_js {
            PlotlyJs::File(path) => from_disk(path, JS, SHORT_CACHE).await,
            PlotlyJs::Embedded | PlotlyJs::Url { .. } => embedded_plotly(SHORT_CACHE),
        },
        "plotly.js.LICENSE.txt" => asset_response(TEXT, PLOTLY_JS_LICENSE.as_bytes(), SHORT_CACHE),
        "viewer.js" => match viewer_dir {
            Some(dir) => from_disk(&dir.join("viewer.js"), JS, NO_CACHE).await,
            None => asset_response(JS, VIEWER_JS.as_bytes(), SHORT_CACHE),
        },
        "viewer.css" => match viewer_dir {
            Some(dir) => from_disk(&dir.join("viewer.css"), CSS, NO_CACHE).await,
            None => asset_response(CSS, VIEWER_CSS.as_bytes(), SHORT_CACHE),
        },
        _ => Response::new(404, TEXT, "not found"),
    }
}

/// `/assets/viewer.css?v=<hash of the embedded file>`: a new binary's pages never get a cached
/// older stylesheet. (With `--viewer-dir` the file is served `no-cache`, so the URL needs no
/// other version.)
pub fn viewer_css_href() -> &'static str {
    static HREF: LazyLock<String> =
        LazyLock::new(|| format!("/assets/viewer.css?v={}", short_hash(VIEWER_CSS)));
    &HREF
}

/// `/assets/viewer.js?v=<hash of the embedded file>`, as [`viewer_css_href`].
pub fn viewer_js_href() -> &'static str {
    static HREF: LazyLock<String> =
        LazyLock::new(|| format!("/assets/viewer.js?v={}", short_hash(VIEWER_JS)));
    &HREF
}

/// The body of the first `<script type="text/javascript">…</script>` of `sources`, the string
/// `plotly::Plot::offline_js_sources()` returns (plotly.js, then MathJax's tex-svg).
///
/// Invariant: a script inlined in HTML cannot contain `</script>` (it would end the element),
/// so the first one after the opening tag ends plotly.js.
fn cut_first_script(sources: &str) -> Option<&str> {
    const OPEN: &str = "<script type=\"text/javascript\">";
    let start = sources.find(OPEN)? + OPEN.len();
    let len = sources[start..].find("</script>")?;
    Some(&sources[start..start + len])
}

fn render(shared: &Shared, status: u16, page: &impl Template, framing: Framing) -> Response {
    match page.render() {
        Ok(body) => Response::html(status, body, csp(&shared.config.plotly_js, framing)),
        // Only a failing Display impl fails a render; the view models hold strings and numbers.
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            Response::new(500, TEXT, "internal error")
        }
    }
}

fn framing(embed: bool) -> Framing {
    if embed {
        Framing::Anywhere
    } else {
        Framing::SameOrigin
    }
}

fn plotly_src(plotly: &PlotlyJs) -> String {
    match plotly {
        PlotlyJs::Embedded => format!("/assets/{}", versioned_plotly_name()),
        PlotlyJs::File(_) => "/assets/plotly.min.js".to_owned(),
        PlotlyJs::Url { url, .. } => url.clone(),
    }
}

fn versioned_plotly_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| format!("plotly-{PLOTLY_JS_VERSION}.min.js"));
    &NAME
}

/// plotly.js v3.0.1 (MIT, Copyright (c) 2021 Plotly, Inc; the licence is
/// `viewer/LICENSE-plotly.js.txt`, served at `/assets/plotly.js.LICENSE.txt`), cut once from
/// the copy the `plotly` crate embeds with its `plotly_embed_js` feature. `None` only if that
/// crate changed its output; a test pins it.
static PLOTLY_JS: LazyLock<Option<String>> =
    LazyLock::new(|| cut_first_script(&plotly::Plot::offline_js_sources()).map(str::to_owned));

fn embedded_plotly(cache: &'static str) -> Response {
    match PLOTLY_JS.as_deref() {
        Some(js) => asset_response(JS, js.as_bytes(), cache),
        None => {
            tracing::error!("the plotly crate's embedded plotly.js could not be found");
            Response::new(500, TEXT, "plotly.js is missing from this build")
        }
    }
}

fn asset_response(content_type: &'static str, body: &[u8], cache: &'static str) -> Response {
    Response::new(200, content_type, body)
        .header("Cache-Control", cache)
        .header("X-Content-Type-Options", "nosniff")
}

async fn from_disk(
    path: &std::path::Path,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    match tokio::fs::read(path).await {
        Ok(bytes) => asset_response(content_type, &bytes, cache),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "asset not readable");
            Response::new(404, TEXT, "not found")
        }
    }
}

/// The first 16 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

// crates/plotstream-server/viewer/ holds symlinks to the repository's viewer/, so that the
// packaged crate (which cannot reach outside its directory) carries the files themselves.
static VIEWER_JS: &str = include_str!("../viewer/viewer.js");
static VIEWER_CSS: &str = include_str!("../viewer/viewer.css");
static PLOTLY_JS_LICENSE: &str = include_str!("../viewer/LICENSE-plotly.js.txt");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
/// A versioned URL never changes content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const SHORT_CACHE: &str = "public, max-age=3600";
/// `--viewer-dir`: every reload shows the file as it is on disk.
const NO_CACHE: &str = "no-cache";

#[cfg(test)]
mod tests;
