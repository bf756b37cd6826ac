#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use super::*;

/// What the test inputs try to smuggle in, and the only form each may take in the output.
const HOSTILE: [(&str, &str); 5] = [
    (
        "<img src=x onerror=alert(1)>",
        "&#60;img src=x onerror=alert(1)&#62;",
    ),
    (
        "\"><script>alert(2)</script>",
        "&#34;&#62;&#60;script&#62;alert(2)&#60;/script&#62;",
    ),
    ("it's", "it&#39;s"),
    ("a&b", "a&#38;b"),
    (
        "</title><script src=//evil>",
        "&#60;/title&#62;&#60;script src=//evil&#62;",
    ),
];

#[track_caller]
fn check_escaped(html: &str, raw: &str, escaped: &str) {
    assert!(!html.contains(raw), "{raw:?} came out unescaped:\n{html}");
    assert!(html.contains(escaped), "{escaped:?} missing:\n{html}");
}

/// Every `<script` of `html`, each with what follows it up to its `>`.
fn script_tags(html: &str) -> Vec<&str> {
    html.match_indices("<script")
        .map(|(i, _)| {
            let end = html[i..].find('>').map_or(html.len(), |e| i + e + 1);
            &html[i..end]
        })
        .collect()
}

#[test]
fn the_index_escapes_every_name() {
    for (raw, escaped) in HOSTILE {
        let page = IndexPage {
            streams: vec![StreamRow {
                token: raw.to_owned(),
                last_seq: 1,
                n_points: 1,
                writer_connected: true,
                n_viewers: 0,
            }],
            more_streams: 0,
            plots: vec![PlotRow {
                href: format!("/~{raw}/1/"),
                label: format!("{raw}:1"),
                name: raw.to_owned(),
            }],
            more_plots: 0,
        };
        let html = page.render().unwrap();
        check_escaped(&html, raw, escaped);
        // Token cell, link target, plot link, label and name: every place holds the escaped form.
        assert_eq!(html.matches(escaped).count(), 5, "{html}");
        assert_eq!(script_tags(&html), Vec::<&str>::new(), "{html}");
    }
}

#[test]
fn viewer_pages_escape_and_load_only_two_scripts_by_src() {
    for (raw, escaped) in HOSTILE {
        for embed in [false, true] {
            let page = ViewerPage {
                name: raw.to_owned(),
                embed,
                mode: Some("plot"),
                events: format!("/api/plots/{raw}/events"),
                inspect: Some(raw.to_owned()),
                history: true,
                plotly_src: plotly_src(&PlotlyJs::Embedded),
            };
            let html = page.render().unwrap();
            check_escaped(&html, raw, escaped);
            assert_eq!(
                script_tags(&html),
                [
                    "<script src=\"/assets/plotly-3.0.1.min.js\">",
                    format!("<script src=\"{}\">", viewer_js_href()).as_str(),
                ],
                "{html}"
            );
            assert_eq!(html.contains("<header>"), !embed, "{html}");
        }
    }
}

#[test]
fn the_index_says_how_many_rows_it_left_out() {
    let page = IndexPage {
        more_streams: 21,
        more_plots: 7,
        ..IndexPage::default()
    };
    let html = page.render().unwrap();
    assert!(html.contains("and 21 more streams"), "{html}");
    assert!(html.contains("and 7 more plots"), "{html}");
    assert!(html.contains("No streams yet"), "{html}");
    let html = IndexPage::default().render().unwrap();
    assert!(
        !html.contains("more streams") && !html.contains("more plots"),
        "{html}"
    );
}

#[test]
fn pages_link_the_versioned_assets() {
    let html = NotFoundPage.render().unwrap();
    assert!(
        html.contains(&format!("href=\"{}\"", viewer_css_href())),
        "{html}"
    );
    assert!(viewer_css_href().starts_with("/assets/viewer.css?v="));
    assert_eq!(viewer_css_href().len(), "/assets/viewer.css?v=".len() + 16);
    assert!(viewer_js_href().starts_with("/assets/viewer.js?v="));
}

#[track_caller]
fn check_plotly_js(arg: &str, expected: Result<PlotlyJs, &str>) {
    match (arg.parse::<PlotlyJs>(), expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{arg:?}"),
        (Err(got), Err(want)) => assert!(got.contains(want), "{arg:?}: {got}"),
        (got, want) => panic!("{arg:?}: got {got:?}, expected {want:?}"),
    }
}

fn url(url: &str, origin: &str) -> PlotlyJs {
    PlotlyJs::Url {
        url: url.to_owned(),
        origin: origin.to_owned(),
    }
}

#[test]
fn plotly_js_is_a_file_or_a_url_with_a_plain_origin() {
    check_plotly_js(
        "https://cdn.plot.ly/plotly-3.0.1.min.js",
        Ok(url(
            "https://cdn.plot.ly/plotly-3.0.1.min.js",
            "https://cdn.plot.ly",
        )),
    );
    check_plotly_js(
        "HTTP://Assets.example:8080/p.js?v=1",
        Ok(url(
            "HTTP://Assets.example:8080/p.js?v=1",
            "http://Assets.example:8080",
        )),
    );
    check_plotly_js(
        "http://[::1]:9000/plotly.js",
        Ok(url("http://[::1]:9000/plotly.js", "http://[::1]:9000")),
    );
    check_plotly_js(
        "viewer/plotly.min.js",
        Ok(PlotlyJs::File(PathBuf::from("viewer/plotly.min.js"))),
    );
    check_plotly_js(
        "/opt/https://x",
        Ok(PlotlyJs::File(PathBuf::from("/opt/https://x"))),
    );
    // Anything that could end the CSP directive or the header is refused.
    check_plotly_js("https://cdn.example;script-src *", Err("plain host"));
    check_plotly_js(
        "https://cdn.example, 'unsafe-inline'/x.js",
        Err("plain host"),
    );
    check_plotly_js("https://user@cdn.example/x.js", Err("plain host"));
    check_plotly_js("https:///x.js", Err("plain host"));
    check_plotly_js(
        "https://cdn.example/x.js\r\nSet-Cookie: a=b",
        Err("control"),
    );
    check_plotly_js("https://cdn.example/x\".js", Err("quotes"));
}

#[test]
fn the_policy_allows_only_this_server_and_the_plotly_js_origin() {
    let base = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
                base-uri 'none'; form-action 'none'";
    let cases = [
        (
            PlotlyJs::Embedded,
            Framing::SameOrigin,
            format!("{base}; frame-ancestors 'self'"),
        ),
        (PlotlyJs::Embedded, Framing::Anywhere, base.to_owned()),
        (
            PlotlyJs::File(PathBuf::from("p.js")),
            Framing::SameOrigin,
            format!("{base}; frame-ancestors 'self'"),
        ),
        (
            url(
                "https://cdn.plot.ly/plotly-3.0.1.min.js",
                "https://cdn.plot.ly",
            ),
            Framing::Anywhere,
            base.replace("script-src 'self'", "script-src 'self' https://cdn.plot.ly"),
        ),
    ];
    for (plotly, framing, expected) in cases {
        assert_eq!(csp(&plotly, framing), expected, "{plotly:?} {framing:?}");
    }
}

#[test]
fn plotly_src_follows_the_option() {
    assert_eq!(
        plotly_src(&PlotlyJs::Embedded),
        "/assets/plotly-3.0.1.min.js"
    );
    assert_eq!(
        plotly_src(&PlotlyJs::File(PathBuf::from("x.js"))),
        "/assets/plotly.min.js"
    );
    assert_eq!(
        plotly_src(&url("https://c.example/p.js", "https://c.example")),
        "https://c.example/p.js"
    );
}

#[track_caller]
fn check_cut(sources: &str, expected: Option<&str>) {
    assert_eq!(cut_first_script(sources), expected, "{sources:?}");
}

#[test]
fn the_first_script_body_is_cut_exactly() {
    let open = "<script type=\"text/javascript\">";
    check_cut(
        &format!("{open}a()</script>\n\n  {open}b()</script>\n"),
        Some("a()"),
    );
    check_cut(&format!("\n  {open}</script>"), Some(""));
    check_cut(&format!("{open}a()"), None);
    check_cut("<script>a()</script>", None);
    check_cut("", None);
}

/// The plotly crate 0.14.1 embeds plotly.js v3.0.1 (`resource/plotly.min.js`, 4 653 932 bytes);
/// the cut must be exactly that file.
#[test]
fn the_embedded_plotly_js_is_v3_0_1_whole() {
    let js = PLOTLY_JS.as_deref().unwrap();
    assert!(
        js.starts_with(&format!("/**\n* plotly.js v{PLOTLY_JS_VERSION}\n")),
        "{}",
        &js[..80]
    );
    assert!(
        js.ends_with("window.Plotly = Plotly;\nreturn Plotly;\n}));"),
        "{}",
        &js[js.len() - 80..]
    );
    assert_eq!(js.len(), 4_653_932);
    assert_eq!(
        short_hash(js),
        "a32e817bb121e9e8",
        "the SHA-256 of resource/plotly.min.js of plotly 0.14.1 starts a32e817bb121e9e8"
    );
}

#[test]
fn the_licence_travels_with_the_binary() {
    assert!(
        PLOTLY_JS_LICENSE.starts_with("The MIT License (MIT)\n\nCopyright (c) 2021 Plotly, Inc\n")
    );
}
