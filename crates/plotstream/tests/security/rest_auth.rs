//! Keys mode (`serve --users FILE`): findings 2, 3, 10, 14, 15 and the rotated key.

use std::io::{BufRead, BufReader, Write};

use crate::{basic, fid_of, plot_body, points, temp_dir, user_cmd, Account, Server};

struct Keys {
    server: Server,
    users: std::path::PathBuf,
    alice: Account,
    mallory: Account,
}

fn keys_server() -> Keys {
    let dir = temp_dir("keys");
    let users = dir.join("users.jsonl");
    let alice = Account::add(&users, "alice");
    let mallory = Account::add(&users, "mallory");
    let server = Server::start(&["--users", users.to_str().unwrap()]);
    Keys {
        server,
        users,
        alice,
        mallory,
    }
}

/// The head of a response that may never end (SSE): the status code.
fn status_of_stream(server: &Server, path: &str) -> u16 {
    let mut s = crate::connect_from(server.addr, None);
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Finding 2: no credentials anywhere on REST. Anonymous and wrong-key calls are 401, another
/// user's calls 403, and none of them has any effect; a grid route never deletes a plot.
#[test]
fn anonymous_and_foreign_rest_calls_change_nothing() {
    let k = keys_server();
    let s = &k.server;
    let alice = k.alice.auth();
    let created = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &alice)],
        &plot_body(
            &k.alice.tokens[0],
            r#", "world_readable": false, "share_key_enabled": true"#,
        ),
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        created.head.starts_with("HTTP/1.1 201 Created"),
        "{}",
        created.head
    );
    let fid = fid_of(&created);
    let key = created.json()["file"]["share_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = fid.rsplit(':').next().unwrap();
    assert_eq!(n.len(), 12, "random 12-digit fids: {fid}");
    let page = format!("/~alice/{n}?share_key={key}");
    let replacement = plot_body(&k.alice.tokens[1], "");

    let anon = s.req("PUT", &format!("/v2/plots/{fid}"), &[], &replacement);
    assert_eq!(anon.status, 401, "{anon:?}");
    assert!(anon.json()["errors"][0]["message"].is_string());
    let wrong = basic("alice", "not-her-key");
    for (who, auth, status) in [
        ("wrong key", wrong.as_str(), 401),
        ("mallory", &k.mallory.auth(), 403),
    ] {
        let r = s.req(
            "PUT",
            &format!("/v2/plots/{fid}"),
            &[("authorization", auth)],
            &replacement,
        );
        assert_eq!(r.status, status, "{who}: {r:?}");
        let r = s.req(
            "DELETE",
            &format!("/v2/grids/{fid}"),
            &[("authorization", auth)],
            "",
        );
        assert!(r.status == 401 || r.status == 404, "{who}: {r:?}");
    }
    // A grid route does not delete a plot, even for its owner.
    let r = s.req(
        "DELETE",
        &format!("/v2/grids/{fid}"),
        &[("authorization", &alice)],
        "",
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(s.get(&page).status, 200, "the plot is still there");

    // Grids: only the owner deletes them.
    let grid = s.req(
        "POST",
        "/v2/grids",
        &[("authorization", &alice)],
        r#"{"data": {"cols": {"c": {"data": [1, 2], "order": 0}}}, "filename": "g"}"#,
    );
    assert_eq!(grid.status, 201, "{grid:?}");
    let gfid = fid_of(&grid);
    let r = s.req(
        "DELETE",
        &format!("/v2/grids/{gfid}"),
        &[("authorization", &k.mallory.auth())],
        "",
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = s.req("DELETE", &format!("/v2/grids/{gfid}"), &[], "");
    assert_eq!(r.status, 401, "{r:?}");

    // Lookups: a wrong key finds nothing, another user finds nothing.
    let r = s.req(
        "GET",
        "/v2/files/lookup?path=p",
        &[("authorization", &wrong)],
        "",
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = s.req(
        "GET",
        "/v2/files/lookup?path=p",
        &[("authorization", &k.mallory.auth())],
        "",
    );
    assert_eq!(r.status, 404, "{r:?}");
    let r = s.req(
        "GET",
        "/v2/files/lookup?path=p",
        &[("authorization", &alice)],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.req("GET", "/v2/users/current", &[("authorization", &wrong)], "");
    assert_eq!(r.status, 401);
    let r = s.req("GET", "/v2/users/current", &[("authorization", &alice)], "");
    assert_eq!(r.json()["username"], "alice");
}

/// Finding 14: secret plots are not secret. A share-key plot and its feed need the key;
/// fids cannot be guessed from their neighbours; listings do not show it.
#[test]
fn secret_plots_and_their_feeds_need_the_key() {
    let k = keys_server();
    let s = &k.server;
    let created = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &k.alice.auth())],
        &plot_body(
            &k.alice.tokens[0],
            r#", "world_readable": false, "share_key_enabled": true"#,
        ),
    );
    let fid = fid_of(&created);
    let key = created.json()["file"]["share_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = fid.rsplit(':').next().unwrap();
    assert_eq!(s.get(&format!("/~alice/{n}/")).status, 404);
    assert_eq!(s.get(&format!("/~alice/{n}.embed")).status, 404);
    assert_eq!(s.get(&format!("/~alice/{n}?share_key=wrong")).status, 404);
    let page = s.get(&format!("/~alice/{n}?share_key={key}"));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("share_key={key}")),
        "the feed URL carries the key"
    );
    assert_eq!(
        status_of_stream(s, &format!("/api/plots/{fid}/events")),
        404
    );
    assert_eq!(
        status_of_stream(s, &format!("/api/plots/{fid}/events?share_key={key}")),
        200
    );
    let next: u64 = n.parse::<u64>().unwrap() + 1;
    assert_eq!(s.get(&format!("/~alice/{next}/")).status, 404);
    assert!(
        !s.get("/").body.contains(n),
        "the index lists no secret plot"
    );
}

/// Findings 3 and 15: a stream cannot be wiped or hijacked by another user. Write tokens
/// appear in no listing, page or inspection; unowned tokens do not stream; another user's
/// figure naming the token is refused and the window keeps its epoch and data.
#[test]
fn streams_cannot_be_wiped_hijacked_or_listed() {
    let k = keys_server();
    let s = &k.server;
    let token = &k.alice.tokens[0];
    assert_eq!(s.ingest(token, &points(3)).status, 200);
    let listing = s.get("/api/streams");
    let id = listing.json()[0]["id"].as_str().unwrap().to_owned();
    let before = s.get(&format!("/api/streams/{id}")).json();
    assert_eq!(before["last_seq"], 3);
    for body in [
        listing.body.clone(),
        before.to_string(),
        s.get("/").body,
        s.get(&format!("/streams/{id}")).body,
    ] {
        assert!(
            !body.contains(token.as_str()),
            "a write token leaked: {body}"
        );
    }
    assert_eq!(
        s.get(&format!("/api/streams/{token}")).status,
        404,
        "tokens do not address reads"
    );

    let r = s.req(
        "POST",
        "/v2/plots",
        &[("authorization", &k.mallory.auth())],
        &plot_body(token, ""),
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = s.req("POST", "/v2/plots", &[], &plot_body(token, ""));
    assert_eq!(r.status, 401, "{r:?}");
    let after = s.get(&format!("/api/streams/{id}")).json();
    assert_eq!(
        (&after["epoch"], &after["last_seq"]),
        (&before["epoch"], &before["last_seq"])
    );

    assert_eq!(
        s.ingest("nosuchtoken", &points(1)).status,
        404,
        "only owned tokens stream"
    );
    assert_eq!(
        s.ingest(token, &points(1)).status,
        200,
        "the owner still streams"
    );
}

/// Finding 10: registered mode protected nothing. Tokens are issued only with credentials and
/// belong to the caller; `/clientresp` with a wrong key registers nothing.
#[test]
fn tokens_need_credentials_and_clientresp_checks_the_key() {
    let k = keys_server();
    let s = &k.server;
    let r = s.req("POST", "/api/tokens?count=2", &[], "");
    assert_eq!(r.status, 401, "{r:?}");
    let r = s.req(
        "POST",
        "/api/tokens?count=2",
        &[("authorization", &basic("alice", "wrong-key-1"))],
        "",
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = s.req(
        "POST",
        "/api/tokens?count=10000",
        &[("authorization", &k.alice.auth())],
        "",
    );
    assert_eq!(r.status, 400, "at most 100 a call: {r:?}");
    let r = s.req(
        "POST",
        "/api/tokens?count=2",
        &[("authorization", &k.alice.auth())],
        "",
    );
    assert_eq!(r.status, 201, "{r:?}");
    let issued = r.json()["tokens"][0].as_str().unwrap().to_owned();
    assert_eq!(s.ingest(&issued, &points(1)).status, 200);
    let listed = std::process::Command::new(crate::BIN)
        .args(["user", "list", "--users"])
        .arg(&k.users)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let alice_line = listed.lines().find(|l| l.contains("\"alice\"")).unwrap();
    assert!(
        alice_line.contains(&issued),
        "persisted in the users file: {listed}"
    );
    assert!(!listed.contains(&k.alice.key), "list never shows keys");

    let form = |key: &str| {
        format!(
            r#"platform=nodejs&version=1.0.4&args=[{{"x":[],"y":[],"stream":{{"token":"chosen1234","maxpoints":80}}}}]&kwargs={{"filename":"n"}}&un=alice&key={key}&origin=plot"#
        )
    };
    let r = s.req("POST", "/clientresp", &[], &form("wrong-key-1"));
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["error"], "", "{r:?}");
    assert_eq!(
        s.ingest("chosen1234", &points(1)).status,
        404,
        "nothing registered"
    );
    let r = s.req("POST", "/clientresp", &[], &form(&k.alice.key));
    assert_ne!(
        r.json()["error"],
        "",
        "a figure may not stream a token alice does not own"
    );
}

/// A rotated key stops working at once; a removed user's tokens stop streaming.
#[test]
fn rotated_keys_and_removed_users_stop_at_once() {
    let k = keys_server();
    let s = &k.server;
    let old = k.alice.auth();
    assert_eq!(
        s.req("GET", "/v2/users/current", &[("authorization", &old)], "")
            .status,
        200
    );
    let rotated = user_cmd(&k.users, &["rotate-key", "alice"]);
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_eq!(
        s.req("GET", "/v2/users/current", &[("authorization", &old)], "")
            .status,
        401
    );
    let new = basic("alice", new_key);
    assert_eq!(
        s.req("GET", "/v2/users/current", &[("authorization", &new)], "")
            .status,
        200
    );

    assert_eq!(s.ingest(&k.mallory.tokens[0], &points(1)).status, 200);
    user_cmd(&k.users, &["remove", "mallory"]);
    // The server re-reads a changed users file within 500 ms in the background.
    let started = std::time::Instant::now();
    while s.ingest(&k.mallory.tokens[1], &points(1)).status != 404 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "removed user still streams"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
