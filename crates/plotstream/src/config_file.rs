//! `plotstream serve --config FILE` (docs/serve.md "Configuration file"): a TOML file whose keys
//! are `serve`'s long flags, read as if its flags came first on the command line, so that flags
//! given there override it. The keys come from the command's own definition, so every flag is
//! accepted and nothing else is: an unknown key, a table, or a value of the wrong kind is an
//! error naming the key and the file.
//!
//! `--print-config` prints the effective configuration (file, flags and defaults) in the same
//! format, so it can be saved and read back.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, ArgMatches, Command};

/// Flags that are about the file itself, not settings it may hold.
const NOT_IN_FILE: [&str; 3] = ["config", "print-config", "help"];

/// L57: the largest configuration file read (a config file is small; a huge one is a mistake).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `args` (a whole command line) with the flags of `serve --config FILE` inserted right after
/// `serve`, before the flags given, so those override the file. Other commands are returned
/// as they are. `serve` is the definition of the `serve` subcommand.
pub fn expand(args: Vec<OsString>, serve: &Command) -> Result<Vec<OsString>> {
    let Some(at) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    if at != 1 {
        return Ok(args);
    }
    let given = &args[at + 1..];
    let Some(file) = config_path(given) else {
        return Ok(args);
    };
    let text = read(Path::new(&file))?;
    let from_file = flags_of(&text, serve).with_context(|| file.to_string_lossy().into_owned())?;
    // A repeatable flag given on the command line replaces the file's values instead of adding
    // to them; a single one overrides by coming later (`args_override_self`).
    let on_command_line: Vec<String> = given
        .iter()
        .filter_map(|a| a.to_str()?.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    let mut flags: Vec<OsString> = Vec::new();
    for (key, values) in from_file {
        let repeatable = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .is_some_and(|a| matches!(a.get_action(), ArgAction::Append));
        if repeatable && on_command_line.contains(&key) {
            continue;
        }
        flags.extend(as_args(&key, values));
    }
    // The file alone must make sense (values, conflicts): say so naming the file, not as if
    // the flags had been typed.
    let alone = std::iter::once(OsString::from("serve")).chain(flags.iter().cloned());
    if let Err(e) = serve.clone().try_get_matches_from(alone) {
        let first = e.to_string();
        let first = first
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        bail!("{}: {first}", file.to_string_lossy());
    }
    let mut out: Vec<OsString> = args[..=at].to_vec();
    out.extend(flags);
    out.extend(given.iter().cloned());
    Ok(out)
}

/// The value of `--config FILE` or `--config=FILE` among `args`.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    None
}

fn read(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "{}: {} bytes, more than a configuration file may hold (L57: {MAX_CONFIG_BYTES})",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))
}

/// The flags `text` (TOML) stands for, in the file's order: each key with its values (`None`
/// for a flag without a value). Errors name the key.
pub fn flags_of(text: &str, serve: &Command) -> Result<Vec<(String, Vec<Option<String>>)>> {
    let doc: toml::Table = text.parse().context("not valid TOML")?;
    let mut out = Vec::new();
    for (key, value) in doc {
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&key.as_str()))
        else {
            bail!("unknown key {key:?}: `plotstream serve` has no --{key}");
        };
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => bail!(
                    "key {key:?}: expected a string or a number, not {}",
                    v.type_str()
                ),
            })
        };
        let values = match (&value, is_flag, repeatable) {
            (toml::Value::Boolean(true), true, _) => vec![None],
            (toml::Value::Boolean(false), true, _) => Vec::new(),
            (_, true, _) => bail!("key {key:?}: --{key} is a switch: use true or false"),
            (toml::Value::Array(items), false, true) => items
                .iter()
                .map(|v| scalar(v).map(Some))
                .collect::<Result<_>>()?,
            (toml::Value::Array(_), false, false) => {
                bail!("key {key:?}: --{key} takes one value, not a list")
            }
            (v, false, _) => vec![Some(scalar(v)?)],
        };
        out.push((key, values));
    }
    Ok(out)
}

/// One key of a file as the command line says it: `--key VALUE` for each value, `--key` for a
/// switch.
fn as_args(key: &str, values: Vec<Option<String>>) -> impl Iterator<Item = OsString> + '_ {
    values.into_iter().flat_map(move |v| {
        std::iter::once(OsString::from(format!("--{key}"))).chain(v.map(OsString::from))
    })
}

/// The fuzz property of the `config` target (docs/fuzzing.md): any bytes are read as a
/// configuration file or refused, never a panic; what is read is flags of `serve` only, each
/// of its kind; and when those flags make a valid `serve`, what `--print-config` prints of it
/// reads back to the same configuration. (The program itself calls it only in its tests.)
#[cfg_attr(not(test), allow(dead_code))]
pub fn check_document(data: &[u8], serve: &Command) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(flags) = flags_of(text, serve) else {
        return;
    };
    let line = |flags: Vec<(String, Vec<Option<String>>)>| -> Vec<OsString> {
        let mut line = vec![OsString::from("serve")];
        for (key, values) in flags {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .unwrap_or_else(|| panic!("{key} is not a flag of serve"));
            assert!(!NOT_IN_FILE.contains(&key.as_str()), "{key} in a file");
            let switch = matches!(arg.get_action(), ArgAction::SetTrue);
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            assert!(
                values.iter().all(|v| v.is_some() != switch),
                "{key}: {values:?}"
            );
            assert!(repeatable || values.len() <= 1, "{key}: {values:?}");
            line.extend(as_args(&key, values));
        }
        line
    };
    let Ok(matches) = serve.clone().try_get_matches_from(line(flags)) else {
        return;
    };
    let printed = print(serve, &matches);
    let again = flags_of(&printed, serve).unwrap_or_else(|e| panic!("{e:#}\n{printed}"));
    let reread = serve
        .clone()
        .try_get_matches_from(line(again))
        .unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(print(serve, &reread), printed);
}

/// The effective configuration of `matches` (the `serve` subcommand's) as TOML: every flag with
/// its value, whether from the file, the command line or the default.
pub fn print(serve: &Command, matches: &ArgMatches) -> String {
    let mut doc = toml::Table::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        match arg.get_action() {
            ArgAction::SetTrue => {
                doc.insert(long.to_owned(), toml::Value::Boolean(matches.get_flag(id)));
            }
            action => {
                let values: Vec<toml::Value> = matches
                    .get_raw(id)
                    .into_iter()
                    .flatten()
                    .map(|v| typed(&v.to_string_lossy()))
                    .collect();
                if matches.value_source(id).is_none() && values.is_empty() {
                    continue;
                }
                let value = if matches!(action, ArgAction::Append) {
                    toml::Value::Array(values)
                } else {
                    match values.into_iter().next() {
                        Some(v) => v,
                        None => continue,
                    }
                };
                doc.insert(long.to_owned(), value);
            }
        }
    }
    toml::to_string(&doc).unwrap_or_default()
}

/// A raw flag value as TOML: an integer when it is one, else a string.
fn typed(raw: &str) -> toml::Value {
    match raw.parse::<i64>() {
        Ok(i) if i.to_string() == raw => toml::Value::Integer(i),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use proptest::prelude::*;

    use super::*;

    fn serve() -> Command {
        crate::Cli::command()
            .find_subcommand("serve")
            .cloned()
            .unwrap_or_else(|| panic!("no serve command"))
    }

    /// The `serve` the fuzz target reads files against is the program's, flag for flag.
    #[test]
    fn the_fuzzed_serve_command_has_the_program_s_flags() {
        let flags = |c: &Command| -> Vec<String> {
            c.get_arguments()
                .map(|a| format!("{:?} {:?} {:?}", a.get_id(), a.get_long(), a.get_action()))
                .collect()
        };
        let (program, fuzzed) = (serve(), crate::serve_args::command());
        assert!(flags(&program).len() > 30);
        assert_eq!(flags(&program), flags(&fuzzed));
        assert!(program.is_args_override_self() && fuzzed.is_args_override_self());
    }

    /// The long flags a file may hold.
    fn keys(serve: &Command) -> Vec<String> {
        serve
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !NOT_IN_FILE.contains(l))
            .map(str::to_owned)
            .collect()
    }

    /// Any TOML value: scalars, lists and tables, two deep.
    fn value() -> impl Strategy<Value = toml::Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(toml::Value::Boolean),
            any::<i64>().prop_map(toml::Value::Integer),
            (-1e9f64..1e9).prop_map(toml::Value::Float),
            prop_oneof![
                Just("10s".to_owned()),
                Just("127.0.0.1:1".to_owned()),
                Just("open".to_owned()),
                "\\PC{0,12}",
            ]
            .prop_map(toml::Value::String),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any document is read as flags of `serve` only, each of the kind its flag takes, or
        /// refused naming the key at fault.
        #[test]
        fn a_document_is_read_as_serve_flags_or_refused_naming_its_key(
            entries in prop::collection::vec((0usize..1000, "[a-z-]{1,12}", value()), 0..6),
        ) {
            let serve = serve();
            let known = keys(&serve);
            let mut doc = toml::Table::new();
            for (i, junk, v) in entries {
                let key = if i % 4 == 0 { junk } else { known[i % known.len()].clone() };
                doc.insert(key, v);
            }
            let text = toml::to_string(&doc).unwrap_or_default();
            match flags_of(&text, &serve) {
                Ok(flags) => {
                    prop_assert_eq!(flags.len(), doc.len());
                    for (key, values) in flags {
                        prop_assert!(known.contains(&key), "{key} is not a flag of serve");
                        let arg = serve.get_arguments().find(|a| a.get_long() == Some(&*key));
                        let switch = arg.is_some_and(|a| matches!(a.get_action(), ArgAction::SetTrue));
                        prop_assert_eq!(switch, matches!(doc[&key], toml::Value::Boolean(_)));
                        prop_assert!(values.iter().all(|v| v.is_some() != switch));
                    }
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    prop_assert!(
                        doc.keys().any(|k| message.contains(&format!("{k:?}"))),
                        "{message} names no key of {text}"
                    );
                }
            }
        }

        /// Text that is not a document is refused, never a panic; the `config` fuzz target's
        /// property over any text and over documents of `serve`'s keys.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,200}") {
            check_document(text.as_bytes(), &crate::serve_args::command());
        }

        #[test]
        fn documents_of_serve_keys_hold_the_fuzz_property(
            entries in prop::collection::vec((0usize..1000, value()), 0..6),
        ) {
            let serve = crate::serve_args::command();
            let known = keys(&serve);
            let doc: toml::Table = entries
                .into_iter()
                .map(|(i, v)| (known[i % known.len()].clone(), v))
                .collect();
            check_document(toml::to_string(&doc).unwrap_or_default().as_bytes(), &serve);
        }

        /// `--print-config` of any command line that `serve` accepts reads back to the same
        /// configuration (docs/serve.md "Configuration file").
        #[test]
        fn what_print_config_prints_reads_back_the_same(
            picks in prop::collection::vec((0usize..1000, 0usize..10), 0..24),
        ) {
            const POOL: [&str; 10] =
                ["1", "7", "100", "10s", "250ms", "127.0.0.1:1", "x", "0", "007", "1.50"];
            let serve = serve();
            let args: Vec<_> = serve.get_arguments().filter(|a| a.get_long().is_some_and(|l| !NOT_IN_FILE.contains(&l))).cloned().collect();
            // Flags are added while the command line still parses (values, conflicts).
            let mut line = vec!["serve".to_owned()];
            for (i, v) in picks {
                let arg = &args[i % args.len()];
                let long = format!("--{}", arg.get_long().unwrap_or_default());
                let mut next = line.clone();
                next.push(long);
                if !matches!(arg.get_action(), ArgAction::SetTrue) {
                    let values = arg.get_possible_values();
                    next.push(match values.get(v % values.len().max(1)) {
                        Some(p) => p.get_name().to_owned(),
                        None => POOL[v].to_owned(),
                    });
                }
                if serve.clone().try_get_matches_from(&next).is_ok() {
                    line = next;
                }
            }
            let matches = serve.clone().try_get_matches_from(&line).unwrap_or_else(|e| panic!("{e}"));
            let printed = print(&serve, &matches);
            let flags = flags_of(&printed, &serve).unwrap_or_else(|e| panic!("{e:#}\n{printed}"));
            let mut again = vec![OsString::from("serve")];
            for (key, values) in flags {
                again.extend(as_args(&key, values));
            }
            let reread = serve.clone().try_get_matches_from(&again).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            prop_assert_eq!(&print(&serve, &reread), &printed, "{:?}", line);
            // Not only the same text: the same values, as the command line gave them.
            let raw = |m: &ArgMatches| -> Vec<Vec<String>> {
                args.iter()
                    .map(|a| {
                        m.get_raw(a.get_id().as_str())
                            .into_iter()
                            .flatten()
                            .map(|v| v.to_string_lossy().into_owned())
                            .collect()
                    })
                    .collect()
            };
            prop_assert_eq!(raw(&reread), raw(&matches), "{:?}\n{}", line, printed);
        }
    }
}
