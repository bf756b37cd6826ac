//! Protected mode: without accounts the server refuses to listen beyond loopback.

use std::process::Command;

#[test]
fn a_non_loopback_listener_needs_users_or_open() {
    let out = Command::new(crate::BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("protected mode")
            && err.contains("plotstream user add")
            && err.contains("--open"),
        "{err}"
    );
    let server = crate::Server::start(&["--listen", "0.0.0.0:0", "--open"]);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_missing_users_file_is_refused_by_name() {
    let out = Command::new(crate::BIN)
        .args(["serve", "--users", "/nonexistent/users.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/users.jsonl"), "{err}");
}

#[test]
fn user_names_and_keys_are_validated() {
    let dir = crate::temp_dir("names");
    let users = dir.join("u.jsonl");
    for args in [
        vec!["add", "<img src=x>"],
        vec!["add", "ok", "--api-key", "short"],
        vec!["add", "ok", "--api-key", "has:colon-in-it"],
    ] {
        let out = Command::new(crate::BIN)
            .arg("user")
            .args(&args)
            .arg("--users")
            .arg(&users)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
    let added = crate::user_cmd(
        &users,
        &[
            "add",
            "demo",
            "--api-key",
            "demokey123",
            "--stream-ids",
            "2",
        ],
    );
    assert_eq!(added["api_key"], "demokey123");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(!text.contains("demokey123"), "only a hash is stored");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the users file is private: {mode:o}");
    }
}
