//! HTML pages and static assets. Peer data never reaches the HTML: pages carry only validated
//! tokens (L7: `[A-Za-z0-9_-]`), and the browser fetches data as JSON over SSE.

use crate::http::Response;
use crate::Shared;

const CDN_PLOTLY: &str = "https://cdn.plot.ly/plotly-2.35.2.min.js";

/// Rows of the stream table on `GET /`.
pub const INDEX_ROWS: usize = 500;

/// `GET /`: the streams (live ones first, at most [`INDEX_ROWS`]) and the plots.
pub fn index(shared: &Shared) -> String {
    let mut streams = shared.store.list();
    // Streams with a writer first (the live ones a visitor looks for), then by token; at most
    // INDEX_ROWS rows, so the page stays small with 10 000 streams (the API lists them all).
    streams.sort_by(|a, b| {
        b.writer_connected
            .cmp(&a.writer_connected)
            .then_with(|| a.token.cmp(&b.token))
    });
    let more = streams.len().saturating_sub(INDEX_ROWS);
    streams.truncate(INDEX_ROWS);
    let mut rows = String::new();
    for s in streams {
        // Stream tokens were validated against L7 before they could create a stream.
        // Keys mode lists read ids only, never a write token.
        let t = if shared.config.store.users.is_some() {
            &s.read_id
        } else {
            &s.token
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"/streams/{t}\">{t}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.last_seq,
            s.count,
            if s.writer_connected { "connected" } else { "-" },
            s.n_viewers,
        ));
    }
    let mut plots = String::new();
    let (listed, more_plots) = shared.files.plots(false, INDEX_ROWS);
    for entry in listed {
        let (fid, path) = (entry.fid, entry.path);
        if let Some((user, n)) = crate::files::split_fid(&fid) {
            let name = path.map(|p| html_escape(&p)).unwrap_or_default();
            plots.push_str(&format!(
                "<li><a href=\"/~{user}/{n}/\">{fid}</a> {name}</li>\n"
            ));
        }
    }
    if more_plots > 0 {
        plots.push_str(&format!("<li>and {more_plots} more plots</li>"));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=5>No streams yet. Point a Plotly streaming client at this server.</td></tr>");
    }
    if more > 0 {
        rows.push_str(&format!(
            "<tr><td colspan=5>and {more} more streams: <a href=\"/api/streams\">/api/streams</a> lists them all.</td></tr>"
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>plotstream</title>\
         <link rel=icon href=\"data:,\"><link rel=stylesheet href=\"/assets/viewer.css\"></head><body><main>\
         <h1>plotstream</h1><p>Live streams on this server.</p>\
         <table><thead><tr><th>stream</th><th>last seq</th><th>points</th><th>writer</th><th>viewers</th></tr></thead>\
         <tbody>{rows}</tbody></table><h2>Plots</h2><ul>{plots}</ul></main></body></html>"
    )
}

/// `GET /~{user}/{n}/` and `.embed`: the live view of a figure, every trace.
pub fn figure_page(shared: &Shared, fid: &str, share_key: Option<&str>, embed: bool) -> String {
    // The feed needs the same key the page was opened with.
    let key = share_key
        .filter(|k| k.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map_or(String::new(), |k| format!("?share_key={k}"));
    let plotly = plotly_src(shared);
    // fids are `<user>:<n>` with a validated user name and a number.
    let header = if embed {
        String::new()
    } else {
        format!(
            "<header><a href=\"/\">plotstream</a> <span class=token>{fid}</span>\
             <span id=state class=state>connecting</span> <span id=rate class=rate></span> <span id=count class=rate></span></header>"
        )
    };
    let class = if embed { " class=embed" } else { "" };
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{fid} · plotstream</title>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <link rel=icon href=\"data:,\"><link rel=stylesheet href=\"/assets/viewer.css\"></head><body{class}>{header}\
         <div id=plot data-mode=plot data-events=\"/api/plots/{fid}/events{key}\"></div>\
         <script src=\"{plotly}\"></script>\
         <script>if(!window.Plotly){{document.write('<script src=\"{CDN_PLOTLY}\"><\\/script>')}}</script>\
         <script src=\"/assets/viewer.js\"></script></body></html>"
    )
}

/// The page for an unknown figure.
pub fn not_found() -> &'static str {
    "<!doctype html><html><head><meta charset=utf-8><title>not found · plotstream</title></head>\
     <body><p>No such plot on this server.</p><p><a href=\"/\">All streams and plots</a></p></body></html>"
}

/// `GET /streams/{token}`: the live view of one stream.
pub fn stream_page(shared: &Shared, token: &str) -> String {
    let plotly = plotly_src(shared);
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{token} · plotstream</title>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <link rel=icon href=\"data:,\"><link rel=stylesheet href=\"/assets/viewer.css\"></head><body>\
         <header><a href=\"/\">plotstream</a> <span class=token>{token}</span>\
         <span id=state class=state>connecting</span> <span id=rate class=rate></span> <span id=count class=rate></span></header>\
         <div id=plot data-events=\"/api/streams/{token}/events\" data-inspect=\"/api/streams/{token}\"></div>\
         <script src=\"{plotly}\"></script>\
         <script>if(!window.Plotly){{document.write('<script src=\"{CDN_PLOTLY}\"><\\/script>')}}</script>\
         <script src=\"/assets/viewer.js\"></script></body></html>"
    )
}

fn plotly_src(shared: &Shared) -> String {
    match &shared.config.plotly_js {
        Some(p) if p.starts_with("http://") || p.starts_with("https://") => p.clone(),
        _ => "/assets/plotly.min.js".to_owned(),
    }
}

/// `GET /assets/{file}`: the viewer's files and plotly.js.
pub async fn asset(shared: &Shared, file: &str) -> Response {
    let dir = &shared.config.viewer_dir;
    let (path, content_type) = match file {
        "viewer.js" => (dir.join("viewer.js"), "text/javascript; charset=utf-8"),
        "viewer.css" => (dir.join("viewer.css"), "text/css; charset=utf-8"),
        "plotly.min.js" => {
            let path = match &shared.config.plotly_js {
                Some(p) if !p.starts_with("http") => p.into(),
                _ => dir.join("node_modules/plotly.js-dist-min/plotly.min.js"),
            };
            (path, "text/javascript; charset=utf-8")
        }
        _ => return Response::new(404, "text/plain", "not found"),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            Response::new(200, content_type, bytes).header("Cache-Control", "max-age=3600")
        }
        // Without a local plotly.js the page falls back to the CDN build.
        Err(_) => Response::new(404, "text/plain", "not found"),
    }
}

/// Escapes text for HTML element content.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
