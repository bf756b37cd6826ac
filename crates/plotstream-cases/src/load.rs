//! The loader of the case catalogue: the case file schema (one TOML file per case in
//! `crates/plotstream-cases/cases/`, embedded in the binary by `build.rs`, docs/reliability.md
//! §8) and the rules a file must keep to become a [`Case`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::case::{Case, ScriptStep, Variant, MAX_TOKEN_LEN};
use crate::dsl::{self, Program};
use crate::error::{bail, Error};
use crate::expect::Expect;
use crate::setup::{Level, Segmentation, Setup};

type Result<T> = std::result::Result<T, Error>;

include!(concat!(env!("OUT_DIR"), "/case_files.rs"));

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    id: String,
    title: String,
    level: Level,
    #[serde(default)]
    anchor: Vec<String>,
    #[serde(default)]
    setup: Setup,
    #[serde(default)]
    tokens: BTreeMap<String, usize>,
    segmentation: Option<Vec<Segmentation>>,
    observe: Option<Vec<String>>,
    skip: Option<String>,
    #[serde(default)]
    timers: bool,
    wait_ms: Option<u64>,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    quiet: bool,
    note: Option<String>,
    driver: Option<String>,
    count: Option<u64>,
    #[serde(flatten)]
    body: VariantBody,
    #[serde(default)]
    variant: Vec<VariantFile>,
}

/// What a variant runs and expects; also the top level of a one-variant case.
#[derive(Debug, Clone, Default, Deserialize)]
struct VariantBody {
    bytes: Option<String>,
    script: Option<Vec<ScriptStep>>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    expect_conn: BTreeMap<String, Vec<Expect>>,
    repeat: Option<u32>,
    min_pass: Option<u32>,
    parallel: Option<u32>,
    keep_writing: Option<bool>,
    viewer: Option<bool>,
    optimized: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    name: String,
    setup: Option<Setup>,
    segmentation: Option<Vec<Segmentation>>,
    wait_ms: Option<u64>,
    skip: Option<String>,
    #[serde(flatten)]
    body: VariantBody,
}

/// Every case of the catalogue, in catalogue order (A–E, Q, V, K; by number).
pub fn catalogue() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (file, text) in CASE_FILES {
        let case = parse_case(text).map_err(|e| e.at(format!("cases/{file}")))?;
        let expected_file = format!("{}.toml", case.id);
        if *file != expected_file {
            bail!(
                Case,
                "cases/{file} holds case {}; name it {expected_file}",
                case.id
            );
        }
        cases.push(case);
    }
    cases.sort_by_key(|c| (group_rank(c.group()), c.number()));
    Ok(cases)
}

/// Parses one case file.
pub fn parse_case(text: &str) -> Result<Case> {
    let file: CaseFile = toml::from_str(text)?;
    if !file.id.chars().next().is_some_and(|c| GROUPS.contains(c)) {
        bail!(Case, "id {} is not in groups A–E, Q, V or K", file.id);
    }
    let mut tokens: BTreeMap<String, usize> = [("tok1", 10), ("tok2", 10), ("nosuch", 10)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (name, len) in &file.tokens {
        if !(1..=MAX_TOKEN_LEN).contains(len) {
            bail!(
                Case,
                "token placeholder {name}: length {len} is not 1 to {MAX_TOKEN_LEN} (MAX_TOKEN_LEN)"
            );
        }
    }
    tokens.extend(file.tokens.clone());
    let base_segmentation = file.segmentation.clone().unwrap_or_else(|| {
        if file.timers {
            vec![Segmentation::Timed, Segmentation::Bytewise]
        } else {
            vec![
                Segmentation::Whole,
                Segmentation::Split,
                Segmentation::Bytewise,
            ]
        }
    });
    let base_wait = file.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    let mut raw = file.variant.clone();
    let top_has_body = file.body.bytes.is_some() || file.body.script.is_some();
    if top_has_body {
        if !raw.is_empty() {
            bail!(
                Case,
                "a case has either top-level bytes/script or [[variant]]s, not both"
            );
        }
        raw.push(VariantFile {
            name: String::new(),
            setup: None,
            segmentation: None,
            wait_ms: None,
            skip: None,
            body: file.body.clone(),
        });
    } else if !file.body.expect.is_empty() && !raw.is_empty() {
        bail!(Case, "top-level expect without top-level bytes");
    }
    if raw.is_empty() && file.skip.is_none() && file.driver.is_none() {
        bail!(
            Case,
            "a case needs bytes, a script, variants, a driver or a skip reason"
        );
    }
    let mut variants = Vec::new();
    for v in raw {
        let setup = v.setup.unwrap_or_else(|| file.setup.clone());
        if setup.n_special() > 1 {
            bail!(
                Case,
                "variant {:?}: at most one of registered, lenient, reject",
                v.name
            );
        }
        let bytes = v
            .body
            .bytes
            .as_deref()
            .map(Program::parse)
            .transpose()
            .map_err(|e| e.at(format!("variant {:?}: bytes", v.name)))?;
        let mut script = Vec::new();
        for step in v.body.script.clone().unwrap_or_default() {
            let program = step
                .send
                .as_deref()
                .map(Program::parse)
                .transpose()
                .map_err(|e| e.at(format!("variant {:?}: script", v.name)))?;
            if step.send.is_some() && step.conn.is_none() {
                bail!(Case, "variant {:?}: a send step needs conn", v.name);
            }
            script.push((step, program));
        }
        if bytes.is_some() != script.is_empty() {
            bail!(
                Case,
                "variant {:?}: exactly one of bytes and script",
                v.name
            );
        }
        if v.body.expect.is_empty() && v.body.expect_conn.is_empty() && v.skip.is_none() {
            bail!(Case, "variant {:?}: no expect", v.name);
        }
        for e in v
            .body
            .expect
            .iter()
            .chain(v.body.expect_conn.values().flatten())
        {
            for t in e
                .acc
                .keys()
                .chain(e.window.keys())
                .chain(e.window_keys.keys())
                .chain(e.converted.keys())
                .chain(e.maxpoints.keys())
            {
                if !tokens.contains_key(t) {
                    bail!(
                        Case,
                        "variant {:?}: `{t}` is not a declared token placeholder",
                        v.name
                    );
                }
            }
        }
        let (needs_credentials, needs_stream_id) = check_variables(&v.body)
            .map_err(|e| e.at(format!("variant {:?}: variables", v.name)))?;
        let repeat = v.body.repeat.unwrap_or(1).max(1);
        variants.push(Variant {
            name: v.name,
            setup,
            segmentation: v.segmentation.unwrap_or_else(|| base_segmentation.clone()),
            wait_ms: v.wait_ms.unwrap_or(base_wait),
            skip: v.skip,
            bytes,
            bytes_text: v.body.bytes,
            script,
            expect: v.body.expect,
            expect_conn: v.body.expect_conn,
            repeat,
            min_pass: v.body.min_pass.unwrap_or(repeat),
            parallel: v.body.parallel.unwrap_or(1).max(1),
            keep_writing: v.body.keep_writing.unwrap_or(false),
            viewer: v.body.viewer.unwrap_or(false),
            optimized: v.body.optimized.unwrap_or(false),
            needs_credentials,
            needs_stream_id,
        });
    }
    let observe_digest = file
        .observe
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x == "digest"));
    Ok(Case {
        id: file.id,
        title: file.title,
        level: file.level,
        anchor: file.anchor,
        tokens,
        skip: file.skip,
        timers: file.timers,
        exclusive: file.exclusive,
        quiet: file.quiet,
        note: file.note,
        driver: file.driver,
        count: file.count,
        observe_digest,
        variants,
    })
}

/// Checks that every variable a variant uses is an account variable or a capture of an earlier
/// step whose connection no later step sends on; returns whether it uses the credentials and
/// whether it uses the stream id.
fn check_variables(body: &VariantBody) -> Result<(bool, bool)> {
    let mut known: Vec<String> = ACCOUNT_VARIABLES
        .iter()
        .map(|v| (*v).to_owned())
        .chain(std::iter::once(STREAM_ID_VARIABLE.to_owned()))
        .collect();
    let mut used: Vec<String> = Vec::new();
    let mut use_text = |text: &str, known: &[String]| -> Result<()> {
        for v in dsl::variables(text) {
            if !known.contains(&v) {
                bail!(
                    Case,
                    "`{v}` is neither an account variable nor captured by an earlier step"
                );
            }
            used.push(v);
        }
        Ok(())
    };
    if let Some(bytes) = &body.bytes {
        use_text(bytes, &known)?;
    }
    let steps = body.script.as_deref().unwrap_or_default();
    let mut ended: Vec<&str> = Vec::new();
    for step in steps {
        if let (Some(conn), Some(send)) = (&step.conn, &step.send) {
            if ended.contains(&conn.as_str()) {
                bail!(
                    Case,
                    "connection {conn} sends after its response was captured"
                );
            }
            use_text(send, &known)?;
        }
        if let Some(capture) = &step.capture {
            let Some(conn) = &step.conn else {
                bail!(Case, "a capture step needs conn");
            };
            ended.push(conn);
            for (name, pointer) in capture {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    bail!(Case, "capture {name}: {pointer:?} is not a JSON pointer");
                }
                let var = format!("${name}");
                if known.contains(&var) || dsl::variables(&var) != [var.clone()] {
                    bail!(Case, "capture {name}: name a new variable of [A-Za-z0-9_]");
                }
                known.push(var);
            }
        }
    }
    for e in body
        .expect
        .iter()
        .chain(body.expect_conn.values().flatten())
    {
        let texts = e
            .body
            .iter()
            .chain(&e.body_contains)
            .chain(&e.body_lacks)
            .chain(e.headers.values())
            .chain(e.headers_contain.values());
        for text in texts {
            use_text(text, &known)?;
        }
    }
    let credentials = used.iter().any(|v| ACCOUNT_VARIABLES.contains(&v.as_str()));
    let stream_id = used.iter().any(|v| v == STREAM_ID_VARIABLE);
    Ok((credentials, stream_id))
}

fn group_rank(g: &str) -> usize {
    GROUPS.find(g).unwrap_or(usize::MAX)
}

/// The groups, in catalogue order: docs/reliability.md §5 (A–E, Q), docs/protocol.md §9.2 (V), and
/// accounts and ownership (K).
const GROUPS: &str = "ABCDEQVK";
/// The variables of `--credentials USER:KEY` (see the DSL).
pub const ACCOUNT_VARIABLES: [&str; 5] = ["$user", "$key", "$auth", "$wrong_key", "$wrong_auth"];
/// The variable of `--stream-id TOKEN`.
pub const STREAM_ID_VARIABLE: &str = "$sid";

/// The response wait of §5: "the runner waits for a response (2 s, scaled)".
pub const DEFAULT_WAIT_MS: u64 = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_loads() {
        let cases = catalogue().unwrap();
        assert!(cases.len() > 100);
    }

    /// Found while writing `check_conform_dsl` (fuzz target `conform_dsl`): a placeholder's
    /// length was trusted (`tokens = { t = 100000000000 }` made a token that long, an abort
    /// when the allocation failed; length 0 made an empty token), and a token made distinct
    /// with a number could meet another placeholder's (`ab`, `ab2`, `abx` of length 3 gave
    /// `abx`, `ab2`, `ab2`).
    #[test]
    fn fuzz_token_placeholders_are_bounded_and_distinct() {
        let case = |tokens: &str| {
            parse_case(&format!(
                "id = \"A1\"\ntitle = \"t\"\nlevel = \"MUST\"\ntokens = {tokens}\nbytes = 'H'\nexpect = [{{ status = 200 }}]\n"
            ))
        };
        for bad in ["{ t = 100000000000 }", "{ t = 0 }", "{ t = 1025 }"] {
            let err = case(bad).unwrap_err().to_string();
            assert!(err.contains("MAX_TOKEN_LEN"), "{bad}: {err}");
        }
        assert!(case("{ t = 1024 }").is_ok());
        let fixed: BTreeMap<String, String> = case("{ ab = 3, ab2 = 3, abx = 3 }")
            .unwrap()
            .fixed_tokens()
            .into_iter()
            .collect();
        assert_eq!(fixed["ab"], "abx");
        assert_eq!(fixed["ab2"], "ab2");
        assert!(
            !["abx", "ab2"].contains(&fixed["abx"].as_str()),
            "{fixed:?}"
        );
        assert_eq!(fixed["abx"].len(), 3);
        // Too short to hold a distinguishing digit: a number alone.
        let fixed = case("{ a = 1, a0 = 1, a1 = 1, a2 = 1 }")
            .unwrap()
            .fixed_tokens();
        let mut tokens: Vec<&str> = fixed.iter().map(|(_, t)| t.as_str()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), fixed.len(), "{fixed:?}");
    }

    #[test]
    fn fixed_tokens_keep_their_lengths_and_differ() {
        for case in catalogue().unwrap() {
            let fixed = case.fixed_tokens();
            for (name, token) in &fixed {
                assert_eq!(token.len(), case.tokens[name], "{} {name}", case.id);
                assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
            }
            let mut tokens: Vec<&String> = fixed.iter().map(|(_, t)| t).collect();
            tokens.sort();
            tokens.dedup();
            assert_eq!(tokens.len(), fixed.len(), "{}", case.id);
        }
        let case = parse_case(
            "id = \"A1\"\ntitle = \"t\"\nlevel = \"MUST\"\ntokens = { abcdef1234 = 10, t = 3, tx = 3 }\nbytes = 'H'\nexpect = [{ status = 200 }]\n",
        )
        .unwrap();
        let fixed: BTreeMap<String, String> = case.fixed_tokens().into_iter().collect();
        assert_eq!(fixed["tok1"], "tok1xxxxxx");
        assert_eq!(fixed["abcdef1234"], "abcdef1234");
        assert_eq!(fixed["t"], "txx");
        assert_ne!(fixed["tx"], "txx");
    }
}
