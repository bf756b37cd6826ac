//! Calibration of `plotstream conform` (docs/reliability.md §8): the suite must fail on an endpoint
//! that breaks the rules, and pass on `plotstream-server`, for the same named cases.
//!
//! The broken endpoint (`broken_endpoint/`) is a proxy in front of a real server whose chunked
//! decoder reads an empty size line as the end of the body, accepts a bare LF after a size,
//! drops lines that are not JSON, and resets the connection after every error response.
//!
//! Group K (accounts and ownership) is calibrated the same way: it passes against a server
//! with accounts (keys mode) and fails against one that takes anonymous writes (open mode,
//! given the same credentials), NON-STRICT by its level and FAIL under `--strict-case K`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod broken_endpoint;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use plotstream_load::conform::{self, ConformArgs, Verdict};

/// Cases each mutation must make fail, with the mutation that does it.
const MUST_FAIL: &[(&str, &str)] = &[
    (
        "B5",
        "empty size line read as the last-chunk (the Arduino CRLF loses the data)",
    ),
    (
        "B7",
        "empty size line read as the last-chunk (200 instead of an unclean end)",
    ),
    ("B9", "bare LF accepted after a chunk size"),
    ("C5", "a bad JSON line accepted"),
    ("C7", "a reset right after the 422"),
    ("A2", "a reset right after the 405"),
    ("Q12", "a bad JSON line accepted, and a reset after errors"),
];

/// SHOULD cases whose timing bound the endpoint misses every time: a quiet rerun must not hide
/// that, so they are NON-STRICT.
const MUST_MISS: &[(&str, &str)] = &[
    ("A19", "every `100 Continue` 300 ms late"),
    ("E9", "every `100 Continue` 300 ms late"),
];

/// Cases the proxy does not disturb: they pass through it, which shows the failures above come
/// from the mutations and not from the proxy.
const MUST_PASS: &[&str] = &["C1", "B23", "A14", "Q13"];

/// Group K cases an endpoint that takes anonymous writes and any key must fail, and why.
const K_MUST_FAIL_OPEN: &[(&str, &str)] = &[
    ("K1", "an anonymous PUT of the user's plot is not 401"),
    ("K2", "a wrong-key DELETE deletes the user's grid"),
    ("K3", "a wrong key is taken"),
    ("K4", "anonymous POST /api/tokens issues tokens"),
    ("K5", "any token streams"),
    ("K6", "the listing shows the write token"),
    ("K10", "/clientresp takes a wrong key"),
    ("K11", "a figure binds a stream id its user does not own"),
];

/// The keys-mode account the K cases act as.
const USER: &str = "demo";
const KEY: &str = "demokey123";
const STREAM_ID: &str = "k0calib001";

async fn start_server(lenient_lines: bool) -> SocketAddr {
    let listener = plotstream_server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = plotstream_server::Config {
        lenient_lines,
        ..plotstream_server::Config::default()
    };
    tokio::spawn(plotstream_server::run(
        vec![listener],
        config,
        std::future::pending::<()>(),
    ));
    addr
}

/// A keys-mode server (`serve --users FILE`) with one user, [`USER`] with [`KEY`] owning
/// [`STREAM_ID`].
async fn start_keys_server() -> SocketAddr {
    use plotstream_server::users::{self, UserRecord, Users};
    let dir = std::env::temp_dir().join(format!(
        "plotstream-calibration-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users.jsonl");
    users::modify(&path, |all| {
        all.push(UserRecord::new(USER, KEY, vec![STREAM_ID.to_owned()]));
        Ok(())
    })
    .unwrap();
    let listener = plotstream_server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = plotstream_server::Config {
        store: plotstream_server::StoreConfig {
            users: Some(std::sync::Arc::new(Users::open(&path).unwrap())),
            ..plotstream_server::StoreConfig::default()
        },
        ..plotstream_server::Config::default()
    };
    tokio::spawn(plotstream_server::run(
        vec![listener],
        config,
        std::future::pending::<()>(),
    ));
    addr
}

/// Group K against `target` with the account; `extra` arguments after it.
async fn k_verdicts(target: SocketAddr, extra: &[&str]) -> BTreeMap<String, (Verdict, String)> {
    let mut argv = vec![
        "--target".to_owned(),
        format!("http://{target}"),
        "--credentials".to_owned(),
        format!("{USER}:{KEY}"),
        "--stream-id".to_owned(),
        STREAM_ID.to_owned(),
        "--case".to_owned(),
        "K".to_owned(),
    ];
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    let args = ConformArgs::from_args(argv).unwrap();
    let cases = args.selected_cases().unwrap();
    conform::run_cases(&args, cases, false)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), (r.verdict, r.reason.clone())))
        .collect()
}

async fn verdicts(
    target: SocketAddr,
    lenient: SocketAddr,
    ids: &[&str],
) -> BTreeMap<String, (Verdict, String)> {
    let mut argv = vec![
        "--target".to_owned(),
        format!("http://{target}"),
        "--target-lenient".to_owned(),
        format!("http://{lenient}"),
    ];
    for id in ids {
        argv.push("--case".to_owned());
        argv.push((*id).to_owned());
    }
    let args = ConformArgs::from_args(argv).unwrap();
    let cases = args.selected_cases().unwrap();
    conform::run_cases(&args, cases, false)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id.clone(), (r.verdict, r.reason.clone())))
        .collect()
}

fn ids() -> Vec<&'static str> {
    MUST_FAIL
        .iter()
        .chain(MUST_MISS)
        .map(|(id, _)| *id)
        .chain(MUST_PASS.iter().copied())
        .collect()
}

/// Starts the broken endpoint in front of `backend` on a free port.
async fn broken_in_front_of(
    backend: std::net::SocketAddr,
    lateness: broken_endpoint::Lateness,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(broken_endpoint::serve(listener, backend, lateness));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broken_endpoint_fails_the_named_cases() {
    let server = start_server(false).await;
    let lenient = start_server(true).await;
    let broken = broken_in_front_of(server, broken_endpoint::ALWAYS_LATE).await;
    let broken_lenient = broken_in_front_of(lenient, broken_endpoint::ALWAYS_LATE).await;

    let got = verdicts(broken, broken_lenient, &ids()).await;
    for (id, mutation) in MUST_FAIL {
        let (verdict, reason) = &got[*id];
        assert_eq!(
            *verdict,
            Verdict::Fail,
            "{id} must fail against the broken endpoint ({mutation}); got {verdict:?}: {reason}"
        );
    }
    for (id, mutation) in MUST_MISS {
        let (verdict, reason) = &got[*id];
        assert_eq!(
            *verdict,
            Verdict::NonStrict,
            "{id} must miss its timing bound ({mutation}), quiet rerun or not; got {verdict:?}: {reason}"
        );
        assert!(reason.contains("quiet rerun"), "{id}: {reason}");
    }
    for id in MUST_PASS {
        let (verdict, reason) = &got[*id];
        assert_eq!(*verdict, Verdict::Pass, "{id} through the proxy: {reason}");
    }
}

/// A timing bound missed once (a loaded machine) is judged on a quiet rerun: the case passes and
/// the report says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timing_miss_that_does_not_recur_passes_with_a_note() {
    let server = start_server(false).await;
    let lenient = start_server(true).await;
    let late_once = broken_in_front_of(
        server,
        broken_endpoint::Lateness {
            delay: std::time::Duration::from_millis(300),
            times: 1,
        },
    )
    .await;
    let argv = [
        "--target".to_owned(),
        format!("http://{late_once}"),
        "--target-lenient".to_owned(),
        format!("http://{lenient}"),
        "--case".to_owned(),
        "E9".to_owned(),
    ];
    let args = ConformArgs::from_args(argv).unwrap();
    let cases = args.selected_cases().unwrap();
    let reports = conform::run_cases(&args, cases, false).await.unwrap();
    let e9 = &reports[0];
    assert_eq!(e9.verdict, Verdict::Pass, "{}", e9.reason);
    let notes: Vec<&String> = e9.variants.iter().flat_map(|v| &v.notes).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("met it on a quiet rerun") && n.contains("100 Continue")),
        "the report must say that the first run was late: {notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cases_pass_against_plotstream_server() {
    let server = start_server(false).await;
    let lenient = start_server(true).await;
    let got = verdicts(server, lenient, &ids()).await;
    for (id, (verdict, reason)) in &got {
        assert_eq!(*verdict, Verdict::Pass, "{id}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_k_passes_with_accounts_and_fails_on_anonymous_writes() {
    let keys = start_keys_server().await;
    let got = k_verdicts(keys, &["--strict-case", "K"]).await;
    assert!(got.len() >= K_MUST_FAIL_OPEN.len(), "{got:?}");
    for (id, (verdict, reason)) in &got {
        assert_eq!(*verdict, Verdict::Pass, "{id} against keys mode: {reason}");
    }

    // Open mode takes the user name as a claim and any key: the same account's cases fail,
    // NON-STRICT by their level, FAIL when the group is strict.
    let open = start_server(false).await;
    for (extra, want) in [
        (&[][..], Verdict::NonStrict),
        (&["--strict-case", "K"][..], Verdict::Fail),
    ] {
        let got = k_verdicts(open, extra).await;
        for (id, why) in K_MUST_FAIL_OPEN {
            let (verdict, reason) = &got[*id];
            assert_eq!(
                *verdict, want,
                "{id} must fail against open mode ({why}), args {extra:?}; got {verdict:?}: {reason}"
            );
        }
    }
    // Without credentials the cases that act as the user are skipped, never passed.
    let argv = [
        "--target".to_owned(),
        format!("http://{keys}"),
        "--case".to_owned(),
        "K1".to_owned(),
    ];
    let args = ConformArgs::from_args(argv).unwrap();
    let reports = conform::run_cases(&args, args.selected_cases().unwrap(), false)
        .await
        .unwrap();
    assert_eq!(reports[0].verdict, Verdict::Skip, "{}", reports[0].reason);
    assert!(
        reports[0].reason.contains("--credentials"),
        "{}",
        reports[0].reason
    );
}
