//! The spec in `docs/` (issue 12): every limit and invariant id and every section that code
//! cites exists, every case of the catalogue belongs to a described group, every relative link
//! resolves, and nothing cites the spec files that `docs/` replaced.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use anyhow::Result;

use super::{read, relative, source_files};
use crate::util::{files_with_suffix, project_root, unquote};

/// Issue 12: every limit id `L<n>` and invariant id `I<n>` that Rust source cites, in a comment
/// or a string, has its own row or heading in `docs/reliability.md`, so a reader can look it up.
#[test]
fn cited_limit_and_invariant_ids_are_defined() -> Result<()> {
    let root = project_root();
    let defined = defined_ids(&read(&root.join(RELIABILITY_DOC))?);
    let mut offenders = Vec::new();
    for path in source_files(&root, &["crates", "xtask", "benches", "fuzz"], &[".rs"])? {
        offenders.extend(undefined_citations(
            &relative(&path),
            &read(&path)?,
            &defined,
        ));
    }
    assert!(
        offenders.is_empty(),
        "ids cited in code but defined nowhere in {RELIABILITY_DOC} (add a row or heading that \
         starts with the id):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Issue 12: every case of the conformance catalogue belongs to a group that
/// `docs/reliability.md` describes (a heading `Group X`), within the range that heading gives.
#[test]
fn catalogue_cases_belong_to_described_groups() -> Result<()> {
    let root = project_root();
    let groups = described_groups(&read(&root.join(RELIABILITY_DOC))?);
    let mut offenders = Vec::new();
    for path in files_with_suffix(&root.join(CASES_DIR), ".toml")? {
        offenders.extend(cases_outside_groups(
            &relative(&path),
            &read(&path)?,
            &groups,
        ));
    }
    assert!(
        offenders.is_empty(),
        "conformance cases that {RELIABILITY_DOC} §5 does not describe:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Issue 12: every relative link in `README.md` and `docs/*.md` names an existing file, and an
/// `#anchor` names an existing heading of that file (GitHub's slugs).
#[test]
fn relative_links_in_docs_resolve() -> Result<()> {
    let root = project_root();
    let mut pages = vec![root.join("README.md")];
    pages.extend(files_with_suffix(&root.join("docs"), ".md")?);
    let mut offenders = Vec::new();
    for page in &pages {
        let text = read(page)?;
        let dir = page.parent().unwrap_or(&root);
        for link in relative_links(&text) {
            let target = if link.path.is_empty() {
                page.clone()
            } else {
                dir.join(&link.path)
            };
            let at = format!("{}:{}: `{}`", relative(page), link.line, link.text);
            if !target.exists() {
                offenders.push(format!("{at}: no file {}", relative(&target)));
                continue;
            }
            let Some(anchor) = &link.anchor else {
                continue;
            };
            if target.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&target)?).contains(anchor)
            {
                offenders.push(format!(
                    "{at}: no heading #{anchor} in {}",
                    relative(&target)
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "broken links in the docs:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Issue 12: the spec lives in `docs/`; nothing cites the files it replaced, which are not in
/// the repository: by file name, or by their capitalised names followed by a section or an id.
#[test]
fn no_citations_of_external_spec_files() -> Result<()> {
    let root = project_root();
    let mut offenders = Vec::new();
    for path in source_files(&root, &["."], &[])? {
        // Binary files (images, corpora) cannot cite anything.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        offenders.extend(external_citations(&relative(&path), &text));
    }
    assert!(
        offenders.is_empty(),
        "cite docs/protocol.md, docs/reliability.md or docs/performance.md instead:\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// Issue 12: a citation of a section, `docs/protocol.md §2.9` or `reliability.md §4.3` (both
/// ends of a range such as `§2.9–§2.14`), names a heading of that page that starts with it.
#[test]
fn cited_sections_exist() -> Result<()> {
    let root = project_root();
    let mut sections = BTreeMap::new();
    for doc in SECTIONED_DOCS {
        sections.insert(doc, defined_sections(&read(&root.join("docs").join(doc))?));
    }
    let mut offenders = Vec::new();
    for path in source_files(&root, &["."], &[])? {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        for (line_idx, line) in text.lines().enumerate() {
            for (doc, section) in cited_sections(line) {
                if !sections.get(&doc).is_some_and(|s| s.contains(&section)) {
                    offenders.push(format!(
                        "{}:{}: {doc} §{section}",
                        relative(&path),
                        line_idx + 1
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "sections cited but missing from docs/ (a heading starts with `§<number>`):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The ids `docs/reliability.md` defines: the first cell of a table row, or the first word of a
/// heading, when it is an id such as `L35`, `I5`, `P9` or `S12`.
fn defined_ids(doc: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for line in doc.lines() {
        let first = if let Some(row) = line.strip_prefix('|') {
            row.split('|').next().unwrap_or_default().trim()
        } else if line.starts_with('#') {
            let heading = line.trim_start_matches('#').trim();
            heading.split_whitespace().next().unwrap_or_default()
        } else {
            continue;
        };
        if is_id(first) {
            ids.insert(first.to_owned());
        }
    }
    ids
}

/// `path:line: Ln` for each limit or invariant id in `text` that `defined` lacks.
fn undefined_citations(path: &str, text: &str, defined: &BTreeSet<String>) -> Vec<String> {
    let mut offenders = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        for id in ids_in(line, &['L', 'I']) {
            if !defined.contains(id) {
                offenders.push(format!("{path}:{}: {id}", line_idx + 1));
            }
        }
    }
    offenders
}

/// The ids starting with one of `letters` in `line`: the letter, then digits, as a whole word
/// (`L35` and `I5` in "L35 (I5)", not `SHA256` or `L2x`).
fn ids_in<'a>(line: &'a str, letters: &[char]) -> Vec<&'a str> {
    let bytes = line.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut ids = Vec::new();
    for (start, c) in line.char_indices() {
        if !letters.contains(&c) || (start > 0 && is_word(bytes[start - 1])) {
            continue;
        }
        let digits = bytes[start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let end = start + 1 + digits;
        if digits > 0 && bytes.get(end).is_none_or(|b| !is_word(*b)) {
            ids.push(&line[start..end]);
        }
    }
    ids
}

/// `L35`, `I5`, `P9`: one capital letter, then digits.
fn is_id(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && !chars.as_str().is_empty()
        && chars.all(|c| c.is_ascii_digit())
}

/// The case groups `docs/reliability.md` describes: a heading `… Group X …`, with the range
/// `(X1–Xn)` when the heading gives one.
fn described_groups(doc: &str) -> BTreeMap<char, Option<u32>> {
    let mut groups = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with('#')) {
        let Some((_, after)) = line.split_once("Group ") else {
            continue;
        };
        let Some(letter) = after.chars().next().filter(char::is_ascii_uppercase) else {
            continue;
        };
        let last = line
            .rsplit_once(['–', '-'])
            .map(|(_, end)| end.trim_end_matches(')').trim())
            .and_then(|end| end.strip_prefix(letter))
            .and_then(|n| n.parse().ok());
        groups.insert(letter, last);
    }
    groups
}

/// `path:line: id` for a case whose `id = "X<n>"` lies outside the described groups.
fn cases_outside_groups(
    path: &str,
    text: &str,
    groups: &BTreeMap<char, Option<u32>>,
) -> Vec<String> {
    let mut offenders = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        let Some(value) = line.trim().strip_prefix("id") else {
            continue;
        };
        let Some(value) = value.trim_start().strip_prefix('=') else {
            continue;
        };
        let id = unquote(value);
        let at = format!("{path}:{}: case {id}", line_idx + 1);
        let mut chars = id.chars();
        let letter = chars.next().unwrap_or_default();
        let number: Option<u32> = chars.as_str().parse().ok();
        match (groups.get(&letter), number) {
            (None, _) => offenders.push(format!("{at}: no section describes group {letter}")),
            (Some(_), None) => offenders.push(format!("{at}: not a group letter and a number")),
            (Some(Some(last)), Some(n)) if n == 0 || n > *last => offenders.push(format!(
                "{at}: outside group {letter}'s {letter}1–{letter}{last}"
            )),
            _ => {}
        }
    }
    offenders
}

/// A relative link of a Markdown page: `[text](path#anchor)`.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    text: String,
    path: String,
    anchor: Option<String>,
}

/// The relative links of a Markdown page, outside code blocks and code spans; links with a
/// scheme (`https:`, `mailto:`) are not ours to check.
fn relative_links(text: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut in_code_block = false;
    for (line_idx, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        // Code spans sit between backticks: drop every second piece.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            rest = &after[end..];
            if target.contains(':') {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor.to_owned())),
                None => (target, None),
            };
            links.push(Link {
                line: line_idx + 1,
                text: target.to_owned(),
                path: path.to_owned(),
                anchor,
            });
        }
    }
    links
}

/// The anchors GitHub gives a page's headings (outside code blocks), and `<a id="…">` anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_code_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        for (_, after) in line
            .match_indices("<a id=\"")
            .map(|(i, _)| line.split_at(i + 7))
        {
            if let Some((id, _)) = after.split_once('"') {
                found.insert(id.to_owned());
            }
        }
        let hashes = line.bytes().take_while(|b| *b == b'#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug = github_slug(&line[hashes..]);
        let n = seen.entry(slug.clone()).or_insert(0);
        found.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    found
}

/// GitHub's heading anchor: lower case, letters, digits, `-` and `_` kept, spaces to `-`,
/// everything else (punctuation, `§`, `–`, backticks) dropped.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The sections a page defines: headings whose first word is `§<number>`.
fn defined_sections(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix('§'))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_owned())
        .collect()
}

/// The (page, section) pairs `line` cites, as `protocol.md §2.9` or `reliability.md §7–§8`.
fn cited_sections(line: &str) -> Vec<(&'static str, String)> {
    let number = |text: &str| -> String {
        let n: String = text
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        n.trim_end_matches('.').to_owned()
    };
    let mut cited = Vec::new();
    for doc in SECTIONED_DOCS {
        let pattern = format!("{doc} §");
        for (at, _) in line.match_indices(&pattern) {
            let after = &line[at + pattern.len()..];
            let first = number(after);
            if first.is_empty() {
                continue;
            }
            let rest = &after[first.len()..];
            let range_end = rest
                .strip_prefix('–')
                .or_else(|| rest.strip_prefix('-'))
                .map(|r| number(r.strip_prefix('§').unwrap_or(r)))
                .filter(|n| !n.is_empty());
            cited.push((doc, first));
            cited.extend(range_end.map(|n| (doc, n)));
        }
    }
    cited
}

/// `path:line: citation` for each citation of a spec file that lives outside the repository.
fn external_citations(path: &str, text: &str) -> Vec<String> {
    let mut offenders = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        for name in EXTERNAL_SPECS {
            for (at, _) in line.match_indices(name) {
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let file = format!("{name}.md");
                let cited = if line[at..].starts_with(&file) {
                    file
                } else {
                    (*name).to_owned()
                };
                let after = &line[at + cited.len()..];
                // What follows: `§2.9` or an id such as `P9`, which makes even the bare name a
                // citation.
                let what = after.strip_prefix(' ').map_or("", |rest| {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || "§.–-".contains(c)))
                        .unwrap_or(rest.len());
                    rest[..end].trim_end_matches('.')
                });
                let is_section = what.starts_with('§');
                if cited.ends_with(".md") || is_section || is_id(what) {
                    let shown = if is_section || is_id(what) {
                        format!("{cited} {what}")
                    } else {
                        cited
                    };
                    offenders.push(format!("{path}:{}: {shown}", line_idx + 1));
                }
            }
        }
    }
    offenders
}

const RELIABILITY_DOC: &str = "docs/reliability.md";

/// The pages whose numbered sections code and docs cite as `page §2.9`.
const SECTIONED_DOCS: [&str; 2] = ["protocol.md", "reliability.md"];

const CASES_DIR: &str = "crates/plotstream-cases/cases";

/// The spec files that were never in the repository, spelled so this file does not cite them.
const EXTERNAL_SPECS: [&str; 3] = [
    concat!("PROT", "OCOL"),
    concat!("RELIA", "BILITY"),
    concat!("PROD", "UCT"),
];

#[test]
fn ids_are_whole_words() {
    let line = "L35 (I5), L3–L5; not SHA256, L2x, xL1, I/O or L";
    assert_eq!(ids_in(line, &['L', 'I']), ["L35", "I5", "L3", "L5"]);
    assert!(is_id("P12") && !is_id("P") && !is_id("p1") && !is_id("L1a"));
}

#[test]
fn undefined_ids_are_named_with_file_and_line() {
    let doc = "| # | limit |\n| --- | --- |\n| L1 | pre-head |\n### I2 Atomicity\n";
    let defined = defined_ids(doc);
    assert_eq!(
        defined.iter().map(String::as_str).collect::<Vec<_>>(),
        ["I2", "L1"]
    );
    // Spelled in pieces so that this file does not cite undefined ids itself.
    let (l999, i9) = (concat!("L", "999"), concat!("I", "9"));
    let code = format!("// L1 holds\nlet x = \"{l999}\"; // and I2\n/// {i9}\n");
    assert_eq!(
        undefined_citations("a.rs", &code, &defined),
        [format!("a.rs:2: {l999}"), format!("a.rs:3: {i9}")]
    );
}

#[test]
fn cases_outside_the_described_groups_are_named() {
    let doc = "### §5.2 Group B: chunk framing (B1–B25)\n### §5.8 Group K: accounts\n";
    let groups = described_groups(doc);
    assert_eq!(groups.get(&'B'), Some(&Some(25)));
    assert_eq!(groups.get(&'K'), Some(&None));
    assert!(cases_outside_groups("B5.toml", "id = \"B5\"\n", &groups).is_empty());
    assert!(cases_outside_groups("K99.toml", "id = \"K99\"\n", &groups).is_empty());
    assert_eq!(
        cases_outside_groups("B26.toml", "title = \"x\"\nid = \"B26\"\n", &groups),
        ["B26.toml:2: case B26: outside group B's B1–B25"]
    );
    assert_eq!(
        cases_outside_groups("Z1.toml", "id = \"Z1\"\n", &groups),
        ["Z1.toml:1: case Z1: no section describes group Z"]
    );
}

#[test]
fn links_and_anchors_follow_github() {
    let page = "\
# `plotstream serve`: flags
## §2.7 Timers
## Notes
## Notes
See [timers](protocol.md#27-timers), [here](#notes-1), ![img](figure.png) and
[the web](https://example.org/x.md). `[not](a-link.md)`
```
[nor](this.md)
```
<a id=\"l35\"></a>
";
    let links = relative_links(page);
    let texts: Vec<(usize, &str, &str, Option<&str>)> = links
        .iter()
        .map(|l| {
            (
                l.line,
                l.text.as_str(),
                l.path.as_str(),
                l.anchor.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            (5, "protocol.md#27-timers", "protocol.md", Some("27-timers")),
            (5, "#notes-1", "", Some("notes-1")),
            (5, "figure.png", "figure.png", None),
        ]
    );
    let found = anchors(page);
    for anchor in [
        "plotstream-serve-flags",
        "27-timers",
        "notes",
        "notes-1",
        "l35",
    ] {
        assert!(found.contains(anchor), "{anchor} in {found:?}");
    }
    assert!(!found.contains("nor"));
}

#[test]
fn external_spec_citations_are_named() {
    let [protocol, reliability, product] = EXTERNAL_SPECS;
    let text = format!(
        "see {protocol}.md §2.9\n// {reliability} P9 (L32)\n{product} §7 and {reliability} §6\n\
         fine: {protocol}_VERSION, the {reliability} of it, docs/protocol.md §2.9\n"
    );
    assert_eq!(
        external_citations("x.rs", &text),
        [
            format!("x.rs:1: {protocol}.md §2.9"),
            format!("x.rs:2: {reliability} P9"),
            format!("x.rs:3: {reliability} §6"),
            format!("x.rs:3: {product} §7"),
        ]
    );
}

#[test]
fn cited_sections_are_parsed_with_ranges() {
    let line = "see docs/protocol.md §2.9–§2.14, reliability.md §7-§8 and protocol.md §4.3.";
    assert_eq!(
        cited_sections(line),
        [
            ("protocol.md", "2.9".to_owned()),
            ("protocol.md", "2.14".to_owned()),
            ("protocol.md", "4.3".to_owned()),
            ("reliability.md", "7".to_owned()),
            ("reliability.md", "8".to_owned()),
        ]
    );
    let doc = "## §2 Ingest\n### §2.9 chart_studio\n#### §5.1.3 Costs\n### P1 Head\n";
    assert_eq!(
        defined_sections(doc).into_iter().collect::<Vec<_>>(),
        ["2", "2.9", "5.1.3"]
    );
}
