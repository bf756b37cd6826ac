//! What the Python package's manifest (`python/pyproject.toml`) may say: the version is the
//! workspace's (left `dynamic`, so maturin takes the crate's, or written out equal to it), and
//! maturin builds the `plotstream` binary crate as a `bin` wheel.

use anyhow::Result;

use super::read;
use crate::util::{manifest_entries, project_root, unquote, workspace_version};

/// Issue 15 item 2: one version for the crates, `plotstream --version` and the wheel.
#[test]
fn the_wheel_has_the_workspace_version() -> Result<()> {
    let path = project_root().join(PYPROJECT);
    let offenders = pyproject_offenders(&read(&path)?, &workspace_version()?);
    assert!(
        offenders.is_empty(),
        "{PYPROJECT} against the workspace:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// `PYPROJECT:line: what` for each way `text` departs from the workspace at `version`.
fn pyproject_offenders(text: &str, version: &str) -> Vec<String> {
    let entries = manifest_entries(text);
    let find = |table: &str, key: &str| entries.iter().find(|e| e.table == table && e.key == key);
    let mut offenders = Vec::new();
    match (find("project", "version"), find("project", "dynamic")) {
        (Some(written), _) if unquote(&written.value) != version => offenders.push(format!(
            "{PYPROJECT}:{}: version {} is not the workspace's \"{version}\"",
            written.line, written.value
        )),
        (Some(_), _) => {}
        (None, Some(dynamic)) if dynamic.value.contains("\"version\"") => {}
        (None, _) => offenders.push(format!(
            "{PYPROJECT}: no version, and `dynamic` does not list \"version\""
        )),
    }
    for (key, wanted) in [
        ("bindings", "\"bin\""),
        ("manifest-path", "\"../crates/plotstream/Cargo.toml\""),
    ] {
        match find("tool.maturin", key) {
            Some(entry) if entry.value == wanted => {}
            Some(entry) => offenders.push(format!(
                "{PYPROJECT}:{}: [tool.maturin] {key} = {}, not {wanted}",
                entry.line, entry.value
            )),
            None => offenders.push(format!("{PYPROJECT}: no [tool.maturin] {key} = {wanted}")),
        }
    }
    offenders
}

const PYPROJECT: &str = "python/pyproject.toml";

#[test]
fn pyproject_versions_are_compared() {
    let maturin =
        "[tool.maturin]\nbindings = \"bin\"\nmanifest-path = \"../crates/plotstream/Cargo.toml\"\n";
    let check = |project: &str| pyproject_offenders(&format!("{project}{maturin}"), "0.1.0");
    assert!(check("[project]\nname = \"x\"\ndynamic = [\"version\"]\n").is_empty());
    assert!(check("[project]\nversion = \"0.1.0\"\n").is_empty());
    assert_eq!(
        check("[project]\nversion = \"0.2.0\"\n"),
        ["python/pyproject.toml:2: version \"0.2.0\" is not the workspace's \"0.1.0\""]
    );
    assert_eq!(
        check("[project]\ndynamic = [\"readme\"]\n"),
        ["python/pyproject.toml: no version, and `dynamic` does not list \"version\""]
    );
    assert_eq!(
        pyproject_offenders("[project]\nversion = \"0.1.0\"\n[tool.maturin]\nbindings = \"pyo3\"\n", "0.1.0"),
        [
            "python/pyproject.toml:4: [tool.maturin] bindings = \"pyo3\", not \"bin\"",
            "python/pyproject.toml: no [tool.maturin] manifest-path = \"../crates/plotstream/Cargo.toml\"",
        ]
    );
}
