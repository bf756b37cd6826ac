//! The case catalogue (`crates/plotstream-cases/cases/*.toml`) against docs/reliability.md §5 and
//! docs/protocol.md §9.2: every numbered case is there exactly once, at its level, and parses.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;

use plotstream_load::conform::{catalogue, Level};

/// Groups and how many cases each has in docs/reliability.md §5 and docs/protocol.md §9.2, and group K
/// (accounts and ownership, docs/conform.md).
const GROUPS: &[(&str, u32)] = &[
    ("A", 25),
    ("B", 25),
    ("C", 25),
    ("D", 12),
    ("E", 13),
    ("Q", 13),
    ("V", 23),
    ("K", 11),
];

fn level_of(id: &str) -> Level {
    const SHOULD: &[&str] = &["A19", "A21", "A22", "A23", "E9"];
    const INFO: &[&str] = &["C11", "C19"];
    const COMPAT: &[&str] = &[
        "A14", "B5", "B25", "E11", "E12", "Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7", "Q8", "Q10",
        "Q11", "Q12", "Q13", "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V19",
        "V20", "V21", "V22", "V23",
    ];
    // Group K (accounts and ownership) is SHOULD throughout: an endpoint without accounts is
    // NON-STRICT there, never failed.
    if SHOULD.contains(&id) || id.starts_with('K') {
        Level::Should
    } else if INFO.contains(&id) {
        Level::Info
    } else if COMPAT.contains(&id) {
        Level::Compat
    } else {
        Level::Must
    }
}

#[test]
fn every_numbered_case_is_there_once_at_its_level() {
    let cases = catalogue().unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate ids");
    let mut expected = BTreeSet::new();
    for (group, n) in GROUPS {
        for k in 1..=*n {
            expected.insert(format!("{group}{k}"));
        }
    }
    let got: BTreeSet<String> = unique.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(got, expected);
    for c in &cases {
        assert_eq!(c.level, level_of(&c.id), "{}", c.id);
        assert!(!c.title.is_empty() && !c.anchor.is_empty(), "{}", c.id);
    }
}

#[test]
fn cases_that_need_a_real_client_say_so() {
    for c in catalogue().unwrap() {
        if ["V20", "V21", "V22", "V23"].contains(&c.id.as_str()) {
            assert_eq!(
                c.skip.as_deref(),
                Some("needs the real client; see cargo xtask compat"),
                "{}",
                c.id
            );
        } else if let Some(reason) = &c.skip {
            assert!(
                c.id.starts_with('D') || c.id.starts_with('E'),
                "{}: {reason}",
                c.id
            );
        }
    }
}

#[test]
fn every_variant_has_bytes_or_a_script_and_modes() {
    for c in catalogue().unwrap() {
        if c.skip.is_some() || c.driver.is_some() {
            continue;
        }
        assert!(!c.variants.is_empty(), "{}", c.id);
        for v in &c.variants {
            assert!(!v.segmentation.is_empty(), "{} {}", c.id, v.name);
            assert!(
                v.bytes.is_some() || !v.script.is_empty(),
                "{} {}",
                c.id,
                v.name
            );
            assert!(
                !v.expect.is_empty() || !v.expect_conn.is_empty(),
                "{} {}",
                c.id,
                v.name
            );
        }
    }
}

#[test]
fn group_k_and_only_group_k_runs_against_the_target_with_accounts() {
    for c in catalogue().unwrap() {
        for v in &c.variants {
            assert_eq!(
                v.setup.accounts,
                c.id.starts_with('K'),
                "{} {}: setup = {{ accounts = true }} is group K's",
                c.id,
                v.name
            );
        }
    }
}
