//! No import circles between the files of a crate (issue 12: "no module imports back into a
//! module that imports it").
//!
//! Each file of a crate is a node; it imports another file when one of its `use` declarations
//! (`pub use` included) or a path in its code (`crate::a::b`, `super::x`, `self::y`) names
//! something in that file. A path leads to the file of its longest prefix that is a module with a
//! file: `use super::x` names sibling `x`'s file when `x` is a module with a file, else the
//! parent's; `use crate::a::B` names `a.rs` or `a/mod.rs`. `mod x;` declares, it does not import.
//! Items under `#[cfg(test)]` (test modules, test-only imports) are skipped: tests may import
//! anything. Comments, strings and character literals are skipped too.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::Result;

use super::{
    lexer::{code_only, tokens, Tok, Token},
    read, relative,
};
use crate::util::{files_with_suffix, project_root};

#[test]
fn no_import_cycles_between_the_files_of_a_crate() -> Result<()> {
    let root = project_root();
    let mut srcs = vec![root.join("xtask/src"), root.join("benches/src")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        srcs.push(entry?.path().join("src"));
    }
    srcs.sort();
    let mut offenders = Vec::new();
    for src in srcs.iter().filter(|src| src.is_dir()) {
        let mut files = Vec::new();
        for path in files_with_suffix(src, ".rs")? {
            let inside = path.strip_prefix(src).unwrap_or(&path);
            // `src/bin/*.rs` are crates of their own; the guard reads the crate of lib.rs/main.rs.
            if !inside.starts_with("bin") {
                files.push(SourceFile::new(relative(&path), inside, read(&path)?));
            }
        }
        for cycle in cycles(&files) {
            let allowed = ALLOWED_CYCLES.iter().any(|listed| {
                cycle
                    .files
                    .iter()
                    .all(|file| listed.contains(&file.as_str()))
            });
            if !allowed {
                offenders.push(cycle.describe());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "import circles between the files of a crate (move what both need into a module below \
         them, or import the defining file instead of a re-export):\n  {}",
        offenders.join("\n  ")
    );
    Ok(())
}

/// The import circles the code still had outside xtask when the guard came (issue 12 will cut
/// them), each as the set of files of one circle: a circle found among the files of one set
/// passes, so a circle may shrink or split but not take in another file. Once cut, its set goes.
const ALLOWED_CYCLES: &[&[&str]] = &[];

/// One Rust file of a crate.
#[derive(Debug)]
struct SourceFile {
    /// Its path as messages show it.
    path: String,
    /// Its module path inside the crate: `[]` for `lib.rs` or `main.rs`, `[a, b]` for `a/b.rs`
    /// or `a/b/mod.rs`.
    module: Vec<String>,
    text: String,
}

impl SourceFile {
    /// `inside` is the path relative to the crate's `src`.
    fn new(path: String, inside: &Path, text: String) -> SourceFile {
        let mut module: Vec<String> = inside
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
            module.clear();
        } else if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        SourceFile { path, module, text }
    }
}

/// An import circle: the files of one strongly connected component of the import graph, and
/// the imports between them (`from:line -> to`, the first line of each pair).
#[derive(Debug, PartialEq, Eq)]
struct Cycle {
    files: Vec<String>,
    imports: Vec<String>,
}

impl Cycle {
    fn describe(&self) -> String {
        format!(
            "{}\n      {}",
            self.files.join(" <-> "),
            self.imports.join("\n      ")
        )
    }
}

/// The import circles among `files`, one crate's.
fn cycles(files: &[SourceFile]) -> Vec<Cycle> {
    let modules: BTreeMap<&[String], usize> = files
        .iter()
        .enumerate()
        .map(|(idx, file)| (file.module.as_slice(), idx))
        .collect();
    let known: BTreeSet<&[String]> = modules.keys().copied().collect();
    // edges[from] = {to: first line}
    let mut edges: Vec<BTreeMap<usize, usize>> = vec![BTreeMap::new(); files.len()];
    for (from, file) in files.iter().enumerate() {
        for (path, line) in imported_paths(&file.text, &file.module, &known) {
            let to = (0..=path.len())
                .rev()
                .find_map(|len| modules.get(&path[..len]))
                .copied();
            if let Some(to) = to.filter(|to| *to != from) {
                edges[from].entry(to).or_insert(line);
            }
        }
    }
    let mut cycles = Vec::new();
    for component in strongly_connected(&edges) {
        if component.len() < 2 {
            continue;
        }
        let mut imports = Vec::new();
        for &from in &component {
            for (to, line) in &edges[from] {
                if component.contains(to) {
                    imports.push(format!(
                        "{}:{line} -> {}",
                        files[from].path, files[*to].path
                    ));
                }
            }
        }
        let mut names: Vec<String> = component.iter().map(|i| files[*i].path.clone()).collect();
        names.sort();
        imports.sort();
        cycles.push(Cycle {
            files: names,
            imports,
        });
    }
    cycles.sort_by(|a, b| a.files.cmp(&b.files));
    cycles
}

/// Tarjan's strongly connected components of the graph `edges` (node → successors).
fn strongly_connected(edges: &[BTreeMap<usize, usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeMap<usize, usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, node: usize) {
        s.index[node] = Some(s.next);
        s.low[node] = s.next;
        s.next += 1;
        s.stack.push(node);
        s.on_stack[node] = true;
        let successors: Vec<usize> = s.edges[node].keys().copied().collect();
        for next in successors {
            match s.index[next] {
                None => {
                    visit(s, next);
                    s.low[node] = s.low[node].min(s.low[next]);
                }
                Some(index) if s.on_stack[next] => s.low[node] = s.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[node]) == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack[top] = false;
                component.push(top);
                if top == node {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let n = edges.len();
    let mut state = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in 0..n {
        if state.index[node].is_none() {
            visit(&mut state, node);
        }
    }
    state.components
}

/// The crate-absolute paths that the code of a file at `module` names, with their lines: the
/// leaves of its `use` trees and the `crate::`/`super::`/`self::` paths of its code, outside
/// `#[cfg(test)]` items. A path whose first segment is neither `crate`, `self` nor `super`
/// counts when that segment is a child module in `known` (`use store::Store` in `lib.rs`);
/// other crates' paths do not.
fn imported_paths(
    text: &str,
    module: &[String],
    known: &BTreeSet<&[String]>,
) -> Vec<(Vec<String>, usize)> {
    let code = code_only(text);
    let toks = tokens(&code);
    let mut found = Vec::new();
    // The inline modules the scan is in: their path, and the brace depth their `}` returns to.
    let mut scopes: Vec<(Vec<String>, usize)> = vec![(module.to_vec(), usize::MAX)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let current = scopes
            .last()
            .map(|(path, _)| path.clone())
            .unwrap_or_default();
        let line = toks[i].line;
        match &toks[i].tok {
            Tok::Punct('#') if is_cfg_test(&toks[i..]) => {
                i = item_end(&toks, i + CFG_TEST.len());
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if scopes.len() > 1 && scopes.last().is_some_and(|(_, d)| *d == depth) {
                    scopes.pop();
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) = (
                    toks.get(i + 1).map(|t| &t.tok),
                    toks.get(i + 2).map(|t| &t.tok),
                ) {
                    let mut path = current.clone();
                    path.push(name.clone());
                    scopes.push((path, depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let mut leaves = Vec::new();
                let end = use_tree(&toks, i + 1, Vec::new(), &mut leaves);
                for leaf in leaves {
                    if let Some(path) = resolve(&current, &leaf, known) {
                        found.push((path, line));
                    }
                }
                i = end.max(i + 1);
                continue;
            }
            Tok::Ident(kw)
                if matches!(kw.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).is_some_and(|t| t.tok == Tok::PathSep)
                    && (i == 0 || !matches!(toks[i - 1].tok, Tok::Punct('$') | Tok::PathSep)) =>
            {
                let mut path = vec![kw.clone()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t.tok == Tok::PathSep) {
                    match toks.get(j + 1).map(|t| &t.tok) {
                        Some(Tok::Ident(segment)) => path.push(segment.clone()),
                        _ => break,
                    }
                    j += 2;
                }
                if let Some(path) = resolve(&current, &path, known) {
                    found.push((path, line));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The crate-absolute module path `path` names from inside `current`, if it is in this crate.
fn resolve(
    current: &[String],
    path: &[String],
    known: &BTreeSet<&[String]>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some([current, &path[1..]].concat()),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = current.get(..current.len().checked_sub(ups)?)?;
            Some([base, &path[ups..]].concat())
        }
        "::" => None,
        _ => {
            let child = [current, &path[..1]].concat();
            known
                .contains(child.as_slice())
                .then(|| [current, path].concat())
        }
    }
}

/// The leaves of the use tree at `toks[i]` under `prefix` into `leaves` (a glob, or `self` in a
/// group, is the module it names); the index after the tree (after its `;` at the top level).
fn use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: Vec<String>,
    leaves: &mut Vec<Vec<String>>,
) -> usize {
    let top = prefix.is_empty();
    let mut path = prefix;
    if top && toks.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
        // `use ::name`: another crate.
        path.push("::".to_owned());
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(name)) if name == "self" && !path.is_empty() => {
                leaves.push(path.clone());
                i += 1;
                break;
            }
            Some(Tok::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if toks.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
                    i += 1;
                    continue;
                }
                leaves.push(path.clone());
                break;
            }
            Some(Tok::Punct('*')) => {
                leaves.push(path.clone());
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                while let Some(tok) = toks.get(i).map(|t| &t.tok) {
                    match tok {
                        Tok::Punct('}') => {
                            i += 1;
                            break;
                        }
                        Tok::Punct(',') => i += 1,
                        _ => {
                            let end = use_tree(toks, i, path.clone(), leaves);
                            i = end.max(i + 1);
                        }
                    }
                }
                break;
            }
            _ => break,
        }
    }
    // `as name`, then (at the top level) the `;`.
    if top {
        while let Some(tok) = toks.get(i) {
            i += 1;
            if tok.tok == Tok::Punct(';') {
                break;
            }
        }
    } else if toks
        .get(i)
        .is_some_and(|t| t.tok == Tok::Ident("as".to_owned()))
    {
        i += 2;
    }
    i
}

/// `#[cfg(test)]`.
const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];

fn is_cfg_test(toks: &[Token]) -> bool {
    toks.len() >= CFG_TEST.len()
        && toks.iter().zip(CFG_TEST).all(|(tok, want)| match &tok.tok {
            Tok::Ident(name) => name == want,
            Tok::Punct(c) => want.len() == 1 && want.starts_with(*c),
            Tok::PathSep | Tok::Other => false,
        })
}

/// The index after the item starting at `toks[i]` (its other attributes included): after its
/// `;`, or after the `}` that closes its first `{`.
fn item_end(toks: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(tok) = toks.get(i) {
        i += 1;
        match tok.tok {
            Tok::Punct(';') if depth == 0 => break,
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Tok::Punct(')' | ']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    i
}

/// A crate of fixture files: `(path relative to src, text)`.
fn fixture(files: &[(&str, &str)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(path, text)| SourceFile::new(format!("src/{path}"), Path::new(path), (*text).into()))
        .collect()
}

#[test]
fn cycles_are_named_with_their_files_and_lines() {
    let files = fixture(&[
        // `mod` declares, it does not import; `pub use` imports.
        ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::A;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        // An inline path, after comments and strings that only look like imports.
        (
            "b.rs",
            "// use crate::c;\nconst S: &str = \"crate::c::C\";\n\
             pub fn f() -> u8 { super::a::g(); b'{' }\n\
             #[cfg(test)]\nmod tests {\n    use crate::*;\n}\n",
        ),
        // `use super::x` where x is no module: the parent's file.
        ("c/mod.rs", "mod d;\npub use self::d::D;\npub struct C;\n"),
        (
            "c/d.rs",
            "use super::{C, super::b::{self, f}};\npub struct D;\n",
        ),
    ]);
    assert_eq!(
        cycles(&files),
        [
            Cycle {
                files: vec!["src/a.rs".into(), "src/b.rs".into()],
                imports: vec![
                    "src/a.rs:1 -> src/b.rs".into(),
                    "src/b.rs:3 -> src/a.rs".into()
                ],
            },
            Cycle {
                files: vec!["src/c/d.rs".into(), "src/c/mod.rs".into()],
                imports: vec![
                    "src/c/d.rs:1 -> src/c/mod.rs".into(),
                    "src/c/mod.rs:2 -> src/c/d.rs".into(),
                ],
            },
        ]
    );
}

#[test]
fn test_items_and_sibling_modules_are_told_apart() {
    // A test module's `super` is its own file; a sibling with a file is that file.
    let files = fixture(&[
        ("main.rs", "mod a;\nmod b;\nfn main() { a::run(); }\n"),
        ("a.rs", "use super::b;\npub fn run() { b::go() }\n#[cfg(test)]\nmod tests { use super::*; use crate::b::*; }\n"),
        ("b.rs", "pub fn go() {}\n#[cfg(test)]\nuse crate::a::run;\n#[cfg(test)]\n#[allow(unused)]\nfn t() -> [u8; 1] { crate::a::run(); [0] }\n"),
    ]);
    assert_eq!(cycles(&files), []);
    let paths = |text: &str| {
        let known: BTreeSet<&[String]> = files.iter().map(|f| f.module.as_slice()).collect();
        imported_paths(text, &["a".to_owned()], &known)
            .into_iter()
            .map(|(path, line)| (path.join("::"), line))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths("use super::b::{self, go as g};\nuse std::fmt;\nlet r = r#\"crate::x\"#;\n'a: loop {}\nuse ::b;\n$crate::b::f();\n"),
        [("b".to_owned(), 1), ("b::go".to_owned(), 1)]
    );
}
