//! What Rust source may contain: no I/O or clock in the protocol crate, no ignored or
//! `should_panic` tests, and no file over 700 lines outside its tests.

use std::path::{Component, Path};

use anyhow::Result;

use super::{read, relative};
use crate::util::{files_with_suffix, project_root};

/// STYLE.md convention 1: the protocol crate does no I/O and reads no clock; time comes in as a
/// `now` argument. Comment lines are skipped, so docs may say what is forbidden.
#[test]
fn proto_src_does_no_io_and_reads_no_clock() -> Result<()> {
    let src = project_root().join("crates/plotstream-proto/src");
    let mut offenders = Vec::new();
    for path in files_with_suffix(&src, ".rs")? {
        let text = read(&path)?;
        for (line_idx, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for pattern in FORBIDDEN_PROTO_CODE {
                if line.contains(pattern) {
                    offenders.push(format!("{}:{}: `{pattern}`", relative(&path), line_idx + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plotstream-proto performs no I/O and reads no clock (STYLE.md 1):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// STYLE.md convention 7: no ignored tests and no `should_panic` tests; a test that cannot run in
/// CI does not exist, and peer data never panics.
#[test]
fn no_ignored_or_should_panic_tests() -> Result<()> {
    // Spelled in pieces so that this file does not trip its own check.
    let forbidden = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let root = project_root();
    let mut offenders = Vec::new();
    for dir in ["crates", "benches"] {
        let dir = root.join(dir);
        if !dir.is_dir() {
            continue;
        }
        for path in files_with_suffix(&dir, ".rs")? {
            let text = read(&path)?;
            for (line_idx, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for pattern in forbidden {
                    if line.contains(pattern) {
                        offenders.push(format!(
                            "{}:{}: `{pattern}]`",
                            relative(&path),
                            line_idx + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "no ignored and no should_panic tests (STYLE.md 7):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

const FORBIDDEN_PROTO_CODE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::net",
    "tokio",
    "std::thread::sleep",
];

/// Issue 12: no source file is over [`MAX_LINES`] lines, counted up to its first `#[cfg(test)]`
/// line, under `crates/*/src` and `xtask/src`; test files (`tests.rs`, anything under a `tests/`
/// directory) are not counted. The files of [`LONG_FILES`] may not grow past their size.
#[test]
fn no_source_file_is_over_700_lines() -> Result<()> {
    let root = project_root();
    let mut dirs = vec![root.join("xtask/src")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        dirs.push(entry?.path().join("src"));
    }
    let mut sizes = Vec::new();
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        for path in files_with_suffix(dir, ".rs")? {
            let inside = path.strip_prefix(dir).unwrap_or(&path);
            if !is_test_file(inside) {
                sizes.push((relative(&path), counted_lines(&read(&path)?)));
            }
        }
    }
    sizes.sort();
    let offenders = oversized(&sizes, LONG_FILES);
    assert!(
        offenders.is_empty(),
        "source files over {MAX_LINES} lines before their tests (split them by concern):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The most lines a source file has before its tests.
const MAX_LINES: usize = 700;

/// The files over [`MAX_LINES`] when the guard came (issue 12), with their sizes then: each may
/// shrink but not grow; once split, its line goes.
/// Empty since issue 12 split the last of them.
const LONG_FILES: &[(&str, usize)] = &[];

/// The lines of `text` before its first `#[cfg(test)]` line.
fn counted_lines(text: &str) -> usize {
    text.lines()
        .take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"))
        .count()
}

/// A file of tests: `tests.rs`, or one under a `tests/` directory (`path` is relative to `src`).
fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "tests.rs")
        || path.parent().is_some_and(|dir| {
            dir.components()
                .any(|c| c == Component::Normal("tests".as_ref()))
        })
}

/// `path:line: N lines` for each file of `sizes` over [`MAX_LINES`], or over its size in
/// `allowed`; the line is the first one past the limit.
fn oversized(sizes: &[(String, usize)], allowed: &[(&str, usize)]) -> Vec<String> {
    let mut offenders = Vec::new();
    for (path, lines) in sizes {
        let limit = allowed
            .iter()
            .find(|(long, _)| long == path)
            .map_or(MAX_LINES, |(_, size)| *size);
        if *lines > limit {
            let allowance = if limit == MAX_LINES {
                String::new()
            } else {
                format!(", more than the {limit} it had when the guard came")
            };
            offenders.push(format!("{path}:{}: {lines} lines{allowance}", limit + 1));
        }
    }
    offenders
}

#[test]
fn long_files_are_named_and_may_not_grow() {
    let text = format!(
        "{}#[cfg(test)]\nmod tests {{}}\n",
        "fn f() {}\n".repeat(701)
    );
    assert_eq!(counted_lines(&text), 701);
    assert_eq!(counted_lines("a\n    #[cfg(test)]\nb\n"), 1);
    let sizes = [
        ("a/fine.rs".to_owned(), 700),
        ("a/new.rs".to_owned(), 701),
        ("a/old.rs".to_owned(), 800),
        ("a/grown.rs".to_owned(), 751),
    ];
    assert_eq!(
        oversized(&sizes, &[("a/old.rs", 800), ("a/grown.rs", 750)]),
        [
            "a/new.rs:701: 701 lines",
            "a/grown.rs:751: 751 lines, more than the 750 it had when the guard came",
        ]
    );
    assert!(is_test_file(Path::new("store/tests.rs")));
    assert!(is_test_file(Path::new("conform/tests/run.rs")));
    assert!(!is_test_file(Path::new("conform/run.rs")));
    assert!(!is_test_file(Path::new("tests_helpers.rs")));
}
