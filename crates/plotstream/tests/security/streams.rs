//! The default (open, loopback) server: findings 1, 3, 8, 9 and 17.

use crate::{basic, fid_of, plot_body, points, raw_from, Server};

/// Finding 1: stored XSS through `/clientresp` (`un`) and file names.
#[test]
fn hostile_names_are_refused_or_escaped() {
    let s = Server::start(&[]);
    let form = |un: &str, filename: &str| {
        format!(
            r#"platform=nodejs&version=1.0.4&args=[{{"x":[1],"y":[2]}}]&kwargs={{"filename":"{filename}"}}&un={un}&key=k&origin=plot"#
        )
    };
    let r = s.req(
        "POST",
        "/clientresp",
        &[],
        &form("<img src=x onerror=alert(1)>", "n"),
    );
    assert_ne!(r.json()["error"], "", "{r:?}");
    let hostile = "<img src=x onerror=alert(1)>";
    let r = s.req("POST", "/clientresp", &[], &form("demo", hostile));
    assert_eq!(r.json()["error"], "", "{r:?}");
    let index = s.get("/");
    assert!(!index.body.contains(hostile), "unescaped: {}", index.body);
    assert!(
        index.body.contains("&lt;img") || index.body.contains("&#60;img"),
        "shown, escaped: {}",
        index.body
    );
    let r = s.req(
        "GET",
        "/v2/users/current",
        &[("authorization", &basic("<b>", "k"))],
        "",
    );
    assert_eq!(r.status, 400, "{r:?}");
}

/// Finding 3: another user's figure cannot wipe, trim or retire a live stream.
#[test]
fn a_figure_cannot_wipe_a_stream_it_did_not_create() {
    let s = Server::start(&[]);
    let victim = basic("victim", "k");
    let attacker = basic("mallory", "k");
    // A plain ingest stream, and one created by the victim's figure.
    assert_eq!(s.ingest("plain12345", &points(3)).status, 200);
    let r = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &victim)],
        &plot_body("fig1234567", ""),
    );
    assert_eq!(r.status, 201);
    assert_eq!(s.ingest("fig1234567", &points(3)).status, 200);
    let before: Vec<_> = ["plain12345", "fig1234567"]
        .iter()
        .map(|t| s.get(&format!("/api/streams/{t}")).json())
        .collect();

    // The victim's figure's token is refused outright.
    let r = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &attacker)],
        &plot_body("fig1234567", ""),
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = s.req("POST", "/v2/plots", &[], &plot_body("fig1234567", ""));
    assert_eq!(r.status, 403, "anonymous too: {r:?}");
    // The plain stream is adopted, then dropped: nothing happens to it.
    let r = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &attacker)],
        &plot_body("plain12345", ""),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let fid = fid_of(&r);
    let r = s.req(
        "PUT",
        &format!("/v2/plots/{fid}"),
        &[("authorization", &attacker)],
        &plot_body("other12345", ""),
    );
    assert_eq!(r.status, 200, "{r:?}");
    for (t, b) in ["plain12345", "fig1234567"].iter().zip(before) {
        let a = s.get(&format!("/api/streams/{t}")).json();
        assert_eq!(
            (&a["epoch"], &a["last_seq"], &a["maxpoints"]),
            (&b["epoch"], &b["last_seq"], &b["maxpoints"]),
            "{t}"
        );
        assert_eq!(s.ingest(t, &points(1)).status, 200, "{t} still streams");
    }
    // Another user's PUT of the victim's plot is refused.
    let r = s.req(
        "PUT",
        &format!("/v2/plots/{fid}"),
        &[("authorization", &victim)],
        &plot_body("x123456789", ""),
    );
    assert_eq!(r.status, 403, "{r:?}");
}

/// Finding 8: one request with a new `streamtoken` per line could fill the stream table
/// (L26) for everyone. Now a peer's allowance (L43) stops it, other peers still create
/// streams, and idle streams go after L27.
#[test]
fn one_peer_cannot_fill_the_stream_table() {
    let s = Server::start(&["--new-streams-per-peer", "50", "--idle-stream-ttl", "1s"]);
    let mut body = String::from("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for i in 0..200 {
        let line = format!("{{\"x\":1,\"y\":1,\"streamtoken\":\"flood{i:05}\"}}\n");
        body.push_str(&format!("{:x}\r\n{line}\r\n", line.len()));
    }
    body.push_str("0\r\n\r\n");
    let r = s.raw(body.as_bytes());
    assert_eq!(r.status, 503, "{r:?}");
    let n_streams = s.get("/api/streams").json().as_array().unwrap().len();
    assert_eq!(n_streams, 50, "the allowance, then 503");
    assert!(s.metric("plotstream_limit_breaches_total{limit=\"L43\"}") >= 1);
    let other = raw_from(
        s.addr,
        Some("127.0.0.2"),
        b"POST / HTTP/1.1\r\nplotly-streamtoken: honest1234\r\nTransfer-Encoding: chunked\r\n\r\ne\r\n{\"x\":1,\"y\":1}\n\r\n0\r\n\r\n",
    );
    assert_eq!(
        other.status, 200,
        "another peer is not locked out: {other:?}"
    );
    // L27: the flood's streams had no writer and no viewer for 1 s: they go.
    let started = std::time::Instant::now();
    while !s.get("/api/streams").json().as_array().unwrap().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "idle streams stay"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(s.metric("plotstream_limit_breaches_total{limit=\"L27\"}") >= 50);
}

/// Finding 9: figures bypassed the stream caps (200 000 streams from two requests).
#[test]
fn figures_count_against_the_stream_caps() {
    let s = Server::start(&["--new-streams-per-peer", "20"]);
    let traces = |n: usize, prefix: &str| {
        let t: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"stream": {{"token": "{prefix}{i:05}"}}}}"#))
            .collect();
        format!(r#"{{"figure": {{"data": [{}]}}}}"#, t.join(","))
    };
    let r = s.req("POST", "/v2/plots", &[], &traces(257, "big"));
    assert_eq!(r.status, 400, "L42: {r:?}");
    assert!(r.body.contains("L42"));
    assert_eq!(
        s.req("POST", "/v2/plots", &[], &traces(15, "a")).status,
        201
    );
    let r = s.req("POST", "/v2/plots", &[], &traces(15, "b"));
    assert_eq!(r.status, 403, "L43 for figure streams too: {r:?}");
    assert!(s.get("/api/streams").json().as_array().unwrap().len() <= 20);
}

/// Finding 17: REST status lines, and REST framing by the ingest route's rules.
#[test]
fn rest_status_lines_and_framing() {
    let s = Server::start(&[]);
    let grid = r#"{"data": {"cols": {"c": {"data": [1], "order": 0}}}}"#;
    let r = s.req("POST", "/v2/grids", &[], grid);
    assert!(r.head.starts_with("HTTP/1.1 201 Created\r\n"), "{}", r.head);
    let fid = fid_of(&r);
    let r = s.req("DELETE", &format!("/v2/grids/{fid}"), &[], "");
    assert!(
        r.head.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{}",
        r.head
    );
    let dup = format!(
        "POST /v2/grids HTTP/1.1\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{grid}",
        n = grid.len()
    );
    assert_eq!(s.raw(dup.as_bytes()).status, 400);
    let clte = format!(
        "POST /v2/grids HTTP/1.1\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{grid}",
        n = grid.len()
    );
    assert_eq!(s.raw(clte.as_bytes()).status, 400);
    let r = s.raw(b"POST /v2/grids HTTP/1.1\r\nContent-Length: 16777217\r\n\r\n");
    assert_eq!(r.status, 413, "L45 before any body byte: {r:?}");
}
