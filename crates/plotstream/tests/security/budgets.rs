//! Memory budgets of the REST surface: findings 5, 12 and 16, measured on the process.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::{connect_from, parse_reply, Server};

/// A grid body of about `bytes` bytes: one column of fractional numbers.
fn big_grid(bytes: usize) -> String {
    let head = r#"{"data": {"cols": {"c": {"order": 0, "data": ["#;
    let tail = "]}}}}";
    let mut body = String::with_capacity(bytes);
    body.push_str(head);
    let mut i = 0u64;
    while body.len() + 24 + tail.len() < bytes {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("{}.{:06}", i % 1000, i % 999_983));
        i += 1;
    }
    body.push_str(tail);
    body
}

/// Finding 5: three 16 MiB grids added ~810 MiB that stayed (17× the bytes sent). Grids are
/// kept as the JSON text sent, so they cost about what they weigh, and a user's quota (L47)
/// stops the fifth.
#[test]
fn grids_cost_what_they_weigh_and_quotas_hold() {
    let s = Server::start(&[]);
    let body = big_grid(16 * 1024 * 1024 - 64);
    let before = s.rss_kib();
    for _ in 0..3 {
        let r = s.req("POST", "/v2/grids", &[], &body);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let grown_mib = (s.rss_kib().saturating_sub(before)) / 1024;
    eprintln!("three 16 MiB grids: RSS +{grown_mib} MiB (was ~810 MiB before the fix)");
    // 48 MiB stored; parsing and reading buffers are transient.
    assert!(grown_mib < 160, "RSS grew by {grown_mib} MiB");
    // The default quota (L47) is 64 MiB: a fourth grid fits, a fifth does not.
    assert_eq!(s.req("POST", "/v2/grids", &[], &body).status, 201);
    let r = s.req("POST", "/v2/grids", &[], &body);
    assert_eq!(r.status, 403, "L47: {}", r.body);
    assert!(r.body.contains("L47"));
}

/// Finding 12: REST bodies trickled one byte at a time stayed open forever, each holding a
/// buffer. Now a body must arrive whole within L44.
#[test]
fn slow_rest_bodies_are_cut_off() {
    let s = Server::start(&["--rest-body-timeout", "1s"]);
    let mut c = connect_from(s.addr, None);
    c.write_all(b"POST /v2/grids HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if c.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
    }
    let r = parse_reply(&out);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// L50: bodies announced but not yet read count against the in-flight budget, so many
/// connections announcing 16 MiB cannot reserve unbounded memory.
#[test]
fn rest_bytes_in_flight_are_bounded() {
    let s = Server::start(&[]);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect_from(s.addr, None);
        c.write_all(b"POST /v2/grids HTTP/1.1\r\nContent-Length: 16777216\r\n\r\n{")
            .unwrap();
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let r = s.raw(b"POST /v2/grids HTTP/1.1\r\nContent-Length: 16777216\r\n\r\n");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.head.contains("Retry-After"), "{}", r.head);
    drop(held);
    let started = Instant::now();
    loop {
        let r = s.req("POST", "/v2/grids", &[], r#"{"data": {"cols": {}}}"#);
        if r.status == 201 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "budget not returned: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Finding 16: 20 000 anonymous plots made `GET /` 5.2 MB. The index lists at most 500 plots
/// and a user keeps at most L46 files.
#[test]
fn the_index_and_file_counts_are_capped() {
    let s = Server::start(&["--max-files-per-user", "600"]);
    let form = r#"platform=nodejs&version=1.0.4&args=[{"x":[1],"y":[2]}]&kwargs={"filename":"n","fileopt":"new"}&un=demo&key=k&origin=plot"#;
    for _ in 0..600 {
        assert_eq!(s.req("POST", "/clientresp", &[], form).json()["error"], "");
    }
    let r = s.req("POST", "/clientresp", &[], form);
    assert!(r.json()["error"].as_str().unwrap().contains("L46"), "{r:?}");
    let index = s.get("/");
    let links = index.body.matches("href=\"/~demo/").count();
    assert_eq!(links, 500, "at most 500 plots listed");
    assert!(index.body.contains("100 more"), "says how many more");
    assert!(index.body.len() < 200_000, "{} bytes", index.body.len());
}
