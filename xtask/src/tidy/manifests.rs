//! What the `Cargo.toml` files may say: the codemap's dependency directions (README.md,
//! Codemap), no I/O runtime in the protocol crate, no `anyhow` in library crates, published
//! crates ready for crates.io and the others unpublished, the workspace lints, documented
//! libraries.

use std::{collections::BTreeSet, fs, path::PathBuf};

use anyhow::{Context, Result};

use super::{read, relative};
use crate::util::{manifest_entries, project_root, unquote, ManifestEntry};

/// STYLE.md convention 1: the protocol crate depends on no I/O runtime or network stack.
#[test]
fn proto_has_no_io_dependencies() -> Result<()> {
    let path = project_root().join("crates/plotstream-proto/Cargo.toml");
    let manifest = read(&path)?;
    let mut offenders = Vec::new();
    for entry in manifest_entries(&manifest) {
        let Some(name) = dependency_name(&entry) else {
            continue;
        };
        if FORBIDDEN_PROTO_DEPENDENCIES.contains(&name.as_str()) {
            offenders.push(format!(
                "{}:{}: [{}] {}",
                relative(&path),
                entry.line,
                entry.table,
                entry.key
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "plotstream-proto is sans-IO (STYLE.md 1) but depends on:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// README codemap: `plotstream-proto` and `plotstream-cases` depend on nothing of ours (so that
/// proto's tests can read the catalogue without a cycle), `plotstream-server` and
/// `plotstream-load` never depend on each other, and no library crate depends on the `plotstream`
/// binary crate. Dev-dependencies are exempt: tests may link anything (proto's tests read the
/// catalogue, load's tests start the server).
#[test]
fn dependencies_follow_the_codemap() -> Result<()> {
    let offenders = direction_offenders(&workspace_members()?);
    assert!(
        offenders.is_empty(),
        "dependencies against the codemap's directions (README.md, Codemap):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Issue 12: library crates return typed errors; `anyhow` is for binaries and xtask. Its
/// dev-dependencies may list it.
#[test]
fn libraries_do_not_depend_on_anyhow() -> Result<()> {
    let offenders = anyhow_offenders(&workspace_members()?, ANYHOW_ALLOWED);
    assert!(
        offenders.is_empty(),
        "library crates with anyhow in [dependencies] (return a typed error instead):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The library crates that still list `anyhow` in `[dependencies]`.
const ANYHOW_ALLOWED: &[&str] = &[];

/// STYLE.md convention 10: internal crates are `publish = false`, the crates of [`PUBLISHED`]
/// carry what crates.io and docs.rs show (issue 15 item 1), and every crate takes the workspace
/// lints.
#[test]
fn crates_are_published_or_internal_and_use_workspace_lints() -> Result<()> {
    let mut offenders = Vec::new();
    for manifest_path in crate_manifests()? {
        let entries = manifest_entries(&read(&manifest_path)?);
        let has = |table: &str, key: &str, value: &str| {
            entries
                .iter()
                .any(|e| e.table == table && e.key == key && e.value == value)
        };
        let name = entries
            .iter()
            .find(|e| e.table == "package" && e.key == "name")
            .map(|e| unquote(&e.value).to_owned())
            .unwrap_or_default();
        let unpublished = has("package", "publish", "false");
        if PUBLISHED.contains(&name.as_str()) {
            if unpublished {
                offenders.push(format!(
                    "{}: published, but says `publish = false`",
                    relative(&manifest_path)
                ));
            }
            offenders.extend(publication_gaps(&manifest_path, &entries));
        } else if !unpublished {
            offenders.push(format!(
                "{}: missing `publish = false` (or add it to PUBLISHED)",
                relative(&manifest_path)
            ));
        }
        let lints_inline = has("lints", "workspace", "true");
        let lints_dotted = entries
            .iter()
            .any(|e| e.table.is_empty() && e.key == "lints.workspace" && e.value == "true");
        if !lints_inline && !lints_dotted {
            offenders.push(format!(
                "{}: missing `[lints] workspace = true`",
                relative(&manifest_path)
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "crate manifests break STYLE.md 10:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// A published crate links only published crates of ours (`cargo publish` refuses a normal or
/// build dependency that is not on crates.io; a dev-dependency without a version is dropped).
#[test]
fn published_crates_link_only_published_crates() -> Result<()> {
    let members = workspace_members()?;
    let ours: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut offenders = Vec::new();
    for member in members
        .iter()
        .filter(|m| PUBLISHED.contains(&m.name.as_str()))
    {
        for dependency in member.linked() {
            let to = dependency.name.as_str();
            if ours.contains(to) && !PUBLISHED.contains(&to) {
                offenders.push(format!(
                    "{}:{}: {} -> {to}",
                    member.manifest, dependency.line, member.name
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "published crates that link an unpublished one:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Every crate of ours in `[workspace.dependencies]` has a `version` (crates.io needs it), and it
/// is `[workspace.package] version`, the one every crate and the CLI's `--version` report.
#[test]
fn workspace_dependencies_on_our_crates_have_the_workspace_version() -> Result<()> {
    let entries = manifest_entries(&read(&project_root().join("Cargo.toml"))?);
    let version = entries
        .iter()
        .find(|e| e.table == "workspace.package" && e.key == "version")
        .map(|e| unquote(&e.value).to_owned())
        .context("[workspace.package] has no version")?;
    let wanted = format!("version = \"{version}\"");
    let mut offenders = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.table == "workspace.dependencies" && PUBLISHED.contains(&e.key.as_str()))
    {
        if !entry.value.contains(&wanted) {
            offenders.push(format!(
                "Cargo.toml:{}: {} = {}",
                entry.line, entry.key, entry.value
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "[workspace.dependencies] entries of our crates without `{wanted}`:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// What a published crate's manifest and directory lack: the metadata crates.io shows, an
/// `include` list (so tests, benches and fixtures never ship), the workspace version, and the
/// README and licence files that `include` names.
fn publication_gaps(manifest_path: &std::path::Path, entries: &[ManifestEntry]) -> Vec<String> {
    let mut gaps = Vec::new();
    for key in [
        "description",
        "keywords",
        "categories",
        "readme",
        "include",
        "license.workspace",
        "repository.workspace",
        "version.workspace",
    ] {
        if !entries.iter().any(|e| e.table == "package" && e.key == key) {
            gaps.push(format!("{}: missing `{key}`", relative(manifest_path)));
        }
    }
    let dir = manifest_path.parent().unwrap_or(manifest_path);
    for file in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        // `is_file` follows the symlinks to the repository's licence files.
        if !dir.join(file).is_file() {
            gaps.push(format!("{}: missing {file}", relative(&dir.join(file))));
        }
    }
    gaps
}

/// STYLE.md convention 6: library crates document every public item.
#[test]
fn libraries_deny_missing_docs() -> Result<()> {
    let mut offenders = Vec::new();
    for manifest_path in crate_manifests()? {
        let Some(crate_dir) = manifest_path.parent() else {
            continue;
        };
        let lib_rs = crate_dir.join("src/lib.rs");
        if lib_rs.is_file() && !read(&lib_rs)?.contains("#![deny(missing_docs)]") {
            offenders.push(relative(&lib_rs));
        }
    }
    assert!(
        offenders.is_empty(),
        "library crates need `#![deny(missing_docs)]` (STYLE.md 6):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The kind of a dependency table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Build,
    Dev,
}

/// One dependency a manifest declares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dependency {
    /// The package's name (a rename's `package = "…"`).
    name: String,
    kind: Kind,
    /// The first line that declares it.
    line: usize,
}

/// A workspace member, as far as the dependency checks read it.
#[derive(Debug)]
struct Member {
    name: String,
    /// Its manifest, relative to the repository root.
    manifest: String,
    /// It has a lib target (`src/lib.rs` or a `[lib]` table).
    has_lib: bool,
    dependencies: Vec<Dependency>,
}

impl Member {
    fn parse(manifest: &str, text: &str, has_lib_rs: bool) -> Member {
        let entries = manifest_entries(text);
        let name = entries
            .iter()
            .find(|e| e.table == "package" && e.key == "name")
            .map(|e| unquote(&e.value).to_owned())
            .unwrap_or_default();
        let mut dependencies: Vec<Dependency> = Vec::new();
        for entry in &entries {
            let Some((kind, name)) = dependency(entry) else {
                continue;
            };
            if !dependencies
                .iter()
                .any(|d| d.kind == kind && d.name == name)
            {
                dependencies.push(Dependency {
                    name,
                    kind,
                    line: entry.line,
                });
            }
        }
        Member {
            name,
            manifest: manifest.to_owned(),
            has_lib: has_lib_rs || text.lines().any(|l| l.trim() == "[lib]"),
            dependencies,
        }
    }

    /// A library crate: one with a lib target, except the binary crate and xtask.
    fn is_library(&self) -> bool {
        self.has_lib && self.name != CLI && self.name != "xtask"
    }

    /// Its dependencies outside `[dev-dependencies]`: what its library or binaries link.
    fn linked(&self) -> impl Iterator<Item = &Dependency> {
        self.dependencies.iter().filter(|d| d.kind != Kind::Dev)
    }
}

/// `path:line: crate -> dependency: rule` for each dependency between our crates that the
/// codemap forbids.
fn direction_offenders(members: &[Member]) -> Vec<String> {
    let ours: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut offenders = Vec::new();
    for member in members {
        for dependency in member.linked() {
            let (from, to) = (member.name.as_str(), dependency.name.as_str());
            if !ours.contains(to) {
                continue;
            }
            let rule = match (from, to) {
                (PROTO, _) => "plotstream-proto depends on nothing of ours",
                (CASES, _) => "plotstream-cases depends on nothing of ours",
                (SERVER, LOAD) | (LOAD, SERVER) => {
                    "plotstream-server and plotstream-load never depend on each other"
                }
                (_, CLI) if member.is_library() => {
                    "library crates never depend on the plotstream binary crate"
                }
                _ => continue,
            };
            offenders.push(format!(
                "{}:{}: {from} -> {to}: {rule}",
                member.manifest, dependency.line
            ));
        }
    }
    offenders
}

/// `path:line: crate` for each library crate outside `allowed` with `anyhow` in its
/// `[dependencies]` (a target-specific one included).
fn anyhow_offenders(members: &[Member], allowed: &[&str]) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.is_library() && !allowed.contains(&m.name.as_str()))
        .flat_map(|m| {
            m.dependencies
                .iter()
                .filter(|d| d.kind == Kind::Normal && d.name == "anyhow")
                .map(move |d| format!("{}:{}: {} -> anyhow", m.manifest, d.line, m.name))
        })
        .collect()
}

/// The members of the workspace, from the root manifest's `members` (a `dir/*` entry names every
/// directory of `dir` with a `Cargo.toml`).
fn workspace_members() -> Result<Vec<Member>> {
    let root = project_root();
    let mut dirs = Vec::new();
    for pattern in member_patterns(&read(&root.join("Cargo.toml"))?) {
        match pattern.strip_suffix("/*") {
            Some(parent) => {
                let parent = root.join(parent);
                let entries = fs::read_dir(&parent)
                    .with_context(|| format!("cannot list {}", parent.display()))?;
                for entry in entries {
                    dirs.push(entry?.path());
                }
            }
            None => dirs.push(root.join(pattern)),
        }
    }
    dirs.sort();
    let mut members = Vec::new();
    for dir in dirs {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            members.push(Member::parse(
                &relative(&manifest),
                &read(&manifest)?,
                dir.join("src/lib.rs").is_file(),
            ));
        }
    }
    Ok(members)
}

/// The strings of the `members = [...]` array of a workspace manifest (on one line or several).
fn member_patterns(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let array = rest
        .find('[')
        .and_then(|open| {
            rest[open..]
                .find(']')
                .map(|close| &rest[open..open + close])
        })
        .unwrap_or_default();
    array
        .split(',')
        .map(|item| unquote(item.trim_start_matches('[')).to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The dependency an entry declares, if it is one, with the kind of its table: `tokio = ...`
/// or `tokio.workspace = true` under `[dependencies]`, `[dev-dependencies]`,
/// `[build-dependencies]` or their target-specific tables, a `[dependencies.tokio]` table, or a
/// renamed `x = { package = "tokio" }`.
fn dependency(entry: &ManifestEntry) -> Option<(Kind, String)> {
    let segments: Vec<&str> = entry.table.split('.').collect();
    let (idx, kind) = segments
        .iter()
        .enumerate()
        .find_map(|(idx, segment)| match *segment {
            "dependencies" => Some((idx, Kind::Normal)),
            "dev-dependencies" => Some((idx, Kind::Dev)),
            "build-dependencies" => Some((idx, Kind::Build)),
            _ => None,
        })?;
    // A table is `[dependencies]` or `[target.CFG.dependencies]`, nothing else before the kind.
    if idx != 0 && segments.first() != Some(&"target") {
        return None;
    }
    if let Some(name) = segments.get(idx + 1) {
        return Some((kind, name.trim_matches('"').to_owned()));
    }
    if let Some((_, renamed)) = entry.value.split_once("package") {
        if let Some((_, name)) = renamed.split_once('=') {
            let name = name.split([',', '}']).next().unwrap_or_default();
            return Some((kind, unquote(name).to_owned()));
        }
    }
    // `tokio.workspace = true`, `tokio.features = [...]`: the name is the first key.
    let name = entry.key.split('.').next().unwrap_or_default();
    Some((kind, name.trim_matches('"').to_owned()))
}

/// The name of a dependency its library or binaries link (not a dev- or build-dependency).
fn dependency_name(entry: &ManifestEntry) -> Option<String> {
    dependency(entry)
        .filter(|(kind, _)| *kind == Kind::Normal)
        .map(|(_, name)| name)
}

/// `crates/*/Cargo.toml`, plus xtask's own manifest.
fn crate_manifests() -> Result<Vec<PathBuf>> {
    let root = project_root();
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.is_file() {
            manifests.push(manifest);
        }
    }
    manifests.sort();
    Ok(manifests)
}

const PROTO: &str = "plotstream-proto";
const CASES: &str = "plotstream-cases";
const SERVER: &str = "plotstream-server";
const LOAD: &str = "plotstream-load";
/// The binary crate: the command line.
const CLI: &str = "plotstream";
/// The crates on crates.io, in publishing order (docs/development.md, Publishing). Every other
/// crate is `publish = false`. plotstream-cases is here because plotstream-load links it.
const PUBLISHED: &[&str] = &[PROTO, CASES, SERVER, "plotstream-client", LOAD, CLI];

const FORBIDDEN_PROTO_DEPENDENCIES: &[&str] =
    &["tokio", "mio", "socket2", "async-std", "hyper", "reqwest"];

#[test]
fn dependency_names_cover_every_spelling() {
    let entries = manifest_entries(
        "\
[dependencies]
bytes = \"1\"
net = { package = \"tokio\", version = \"1\" }
socket2.workspace = true
[target.'cfg(unix)'.dependencies]
mio = \"1\"
[dependencies.hyper]
version = \"1\"
[dev-dependencies]
tokio = \"1\"
[build-dependencies]
cc = \"1\"
",
    );
    let names: Vec<String> = entries.iter().filter_map(dependency_name).collect();
    assert_eq!(names, ["bytes", "tokio", "socket2", "mio", "hyper"]);
    let kinds: Vec<(Kind, String)> = entries.iter().filter_map(dependency).collect();
    assert_eq!(kinds[5], (Kind::Dev, "tokio".to_owned()));
    assert_eq!(kinds[6], (Kind::Build, "cc".to_owned()));
}

/// A fixture workspace that breaks every direction once, in every spelling, beside
/// dependencies the codemap allows.
fn fixture_members() -> Vec<Member> {
    let member = |name: &str, lib: bool, deps: &str| {
        let path = format!("crates/{name}/Cargo.toml");
        Member::parse(&path, &format!("[package]\nname = \"{name}\"\n{deps}"), lib)
    };
    vec![
        member(
            PROTO,
            true,
            "[dependencies]\nbytes = \"1\"\n[dev-dependencies]\nplotstream-cases.workspace = true\n\
             [build-dependencies]\nplotstream-cases = { path = \"../plotstream-cases\" }\n",
        ),
        member(CASES, true, "[dependencies]\nplotstream-proto.workspace = true\n"),
        member(
            SERVER,
            true,
            "[dependencies]\nplotstream-proto.workspace = true\nanyhow = \"1\"\n\
             [dependencies.plotstream-load]\npath = \"../plotstream-load\"\n",
        ),
        member(
            LOAD,
            true,
            "[dependencies]\nplotstream-proto.workspace = true\nanyhow.workspace = true\n\
             [dev-dependencies]\nplotstream-server.workspace = true\n\
             [target.'cfg(unix)'.dependencies]\ncli = { package = \"plotstream\", path = \"../plotstream\" }\n",
        ),
        member(
            CLI,
            false,
            "[dependencies]\nplotstream-server.workspace = true\nplotstream-load.workspace = true\n\
             anyhow.workspace = true\n",
        ),
        member(
            "plotstream-client",
            true,
            "[dependencies]\nplotstream-proto.workspace = true\n\
             [dev-dependencies]\nanyhow = \"1\"\nplotstream = { path = \"../plotstream\" }\n",
        ),
    ]
}

#[test]
fn forbidden_directions_are_named_with_file_and_line() {
    assert_eq!(
        direction_offenders(&fixture_members()),
        [
            "crates/plotstream-proto/Cargo.toml:8: plotstream-proto -> plotstream-cases: \
             plotstream-proto depends on nothing of ours",
            "crates/plotstream-cases/Cargo.toml:4: plotstream-cases -> plotstream-proto: \
             plotstream-cases depends on nothing of ours",
            "crates/plotstream-server/Cargo.toml:7: plotstream-server -> plotstream-load: \
             plotstream-server and plotstream-load never depend on each other",
            "crates/plotstream-load/Cargo.toml:9: plotstream-load -> plotstream: \
             library crates never depend on the plotstream binary crate",
        ]
    );
}

#[test]
fn anyhow_in_a_library_is_named_unless_allowed() {
    let members = fixture_members();
    assert_eq!(
        anyhow_offenders(&members, &[]),
        [
            "crates/plotstream-server/Cargo.toml:5: plotstream-server -> anyhow",
            "crates/plotstream-load/Cargo.toml:5: plotstream-load -> anyhow",
        ]
    );
    assert_eq!(
        anyhow_offenders(&members, &[LOAD]),
        ["crates/plotstream-server/Cargo.toml:5: plotstream-server -> anyhow"]
    );
}

#[test]
fn workspace_members_are_read_from_the_root_manifest() {
    let manifest =
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/*\", \"xtask\",\n  \"benches\"]\n";
    assert_eq!(member_patterns(manifest), ["crates/*", "xtask", "benches"]);
}
