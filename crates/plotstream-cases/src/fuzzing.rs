//! The property body for the case files and the bytes DSL, shared by the cargo-fuzz target
//! `conform_dsl` (one line, in `fuzz/`) and proptest, so stable `cargo test` checks the same
//! property (as `plotstream_proto::fuzzing` and `plotstream_server::fuzzing` do for theirs).
//!
//! The catalogue is written by us, but a case file is still text that a typo, a merge or a
//! contributor's new case can make hostile: loading and evaluating it must fail with an error
//! that says why, never panic, hang or allocate without bound.

use crate::dsl::{payload, Item, Program, MAX_EVAL_BYTES, MAX_EVAL_ITEMS};
use crate::load::parse_case;

/// Arbitrary bytes as a program of the bytes DSL, as the contents of one `"…"` literal, and as
/// a case file. Never panics. A program that parses evaluates within [`MAX_EVAL_BYTES`] and
/// [`MAX_EVAL_ITEMS`] or fails, the same way twice (the same items, or the same error), with
/// adjacent bytes merged and no empty bytes item. A literal is what the documented escapes
/// say (a plain decoder here), refused exactly when one of its escapes is not one of them. A
/// case that loads has an id of a known group, the three standard placeholders, a variant
/// unless it has a driver or a skip reason, and in each variant exactly one of bytes and
/// script, `repeat` and `parallel` at least 1, and an expectation unless it is skipped; its
/// fixed tokens (`Case::fixed_tokens`) are distinct and of their placeholders' lengths (or a
/// number alone, when a length is too short to hold a distinguishing one), and every program
/// of it evaluates as above with them.
pub fn check_conform_dsl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    if let Ok(program) = Program::parse(&text) {
        check_program(&program, &standard_tokens());
        check_program(&program, &[]);
    }

    let literal = Program::parse(&format!("\"{text}\"")).and_then(|p| p.eval(&[]));
    match reference_literal(&text) {
        Literal::Bytes(bytes) => {
            let items = literal.unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
            let expected: Vec<Item> = if bytes.is_empty() {
                Vec::new()
            } else {
                vec![Item::Bytes(bytes)]
            };
            assert_eq!(items, expected, "{text:?}");
        }
        Literal::Invalid => assert!(literal.is_err(), "{text:?} accepted: {literal:?}"),
        Literal::Unquoted => {}
    }

    if let Ok(case) = parse_case(&text) {
        assert!("ABCDEQVK".contains(case.group()), "{}", case.id);
        for t in ["tok1", "tok2", "nosuch"] {
            assert!(case.tokens.contains_key(t), "{t}");
        }
        assert!(
            !case.variants.is_empty() || case.driver.is_some() || case.skip.is_some(),
            "{text:?}"
        );
        let fixed = case.fixed_tokens();
        assert_eq!(fixed.len(), case.tokens.len());
        for (i, (name, token)) in fixed.iter().enumerate() {
            assert!(
                Some(&token.len()) == case.tokens.get(name)
                    || token.bytes().all(|b| b.is_ascii_digit()),
                "{name}: {token:?}"
            );
            assert!(
                fixed[..i].iter().all(|(_, t)| t != token),
                "{name}: {token:?} twice in {fixed:?}"
            );
        }
        for v in &case.variants {
            assert!(v.bytes.is_some() == v.script.is_empty(), "{:?}", v.name);
            assert!(v.repeat >= 1 && v.parallel >= 1, "{:?}", v.name);
            assert!(
                !v.expect.is_empty() || !v.expect_conn.is_empty() || v.skip.is_some(),
                "{:?}",
                v.name
            );
            for program in v
                .bytes
                .iter()
                .chain(v.script.iter().filter_map(|(_, p)| p.as_ref()))
            {
                check_program(program, &fixed);
            }
        }
    }
}

/// Evaluates `program` twice under `subst`: the same result, within the bounds, merged.
fn check_program(program: &Program, subst: &[(String, String)]) {
    let once = program.eval(subst);
    let again = program.eval(subst);
    match (&once, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("{once:?} then {again:?}"),
    }
    let Ok(items) = once else { return };
    assert!(items.len() <= MAX_EVAL_ITEMS, "{} items", items.len());
    let bytes = payload(&items).len();
    assert!(bytes <= MAX_EVAL_BYTES, "{bytes} bytes");
    for pair in items.windows(2) {
        assert!(
            !matches!(pair, [Item::Bytes(_), Item::Bytes(_)]),
            "not merged: {pair:?}"
        );
    }
    assert!(!items.contains(&Item::Bytes(Vec::new())));
}

/// The three placeholders every case has, as `Case::fixed_tokens` makes them.
fn standard_tokens() -> Vec<(String, String)> {
    [
        ("nosuch", "nosuchxxxx"),
        ("tok1", "tok1xxxxxx"),
        ("tok2", "tok2xxxxxx"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// What `"…"` around a text holds.
enum Literal {
    /// The bytes of its escapes and characters.
    Bytes(Vec<u8>),
    /// An escape that is none of the documented ones, or a backslash at the end.
    Invalid,
    /// An unescaped `"`: the literal ends inside the text.
    Unquoted,
}

/// The documented escapes of a literal (`\r \n \t \0 \\ \" \' \[ \]`, `\x` and two hex
/// digits, `\u{…}` with hex digits naming a Unicode scalar value), decoded plainly.
fn reference_literal(text: &str) -> Literal {
    let mut out = Vec::new();
    let mut chars = text.chars();
    let hex = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    };
    while let Some(c) = chars.next() {
        let decoded: Option<Vec<u8>> = match c {
            '"' => return Literal::Unquoted,
            '\\' => match chars.next() {
                Some('r') => Some(b"\r".to_vec()),
                Some('n') => Some(b"\n".to_vec()),
                Some('t') => Some(b"\t".to_vec()),
                Some('0') => Some(vec![0]),
                Some(e @ ('\\' | '"' | '\'' | '[' | ']')) => Some(vec![e as u8]),
                Some('x') => {
                    let two: String = chars.by_ref().take(2).collect();
                    hex(&two)
                        .filter(|_| two.len() == 2)
                        .and_then(|v| u8::try_from(v).ok())
                        .map(|b| vec![b])
                }
                Some('u') if chars.next() == Some('{') => {
                    let mut digits = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        digits.push(c);
                    }
                    hex(&digits)
                        .filter(|_| closed)
                        .and_then(char::from_u32)
                        .map(|c| c.to_string().into_bytes())
                }
                _ => None,
            },
            c => Some(c.to_string().into_bytes()),
        };
        match decoded {
            Some(bytes) => out.extend_from_slice(&bytes),
            None => {
                // A refused escape refuses the literal, unless an unescaped quote after it
                // ended the literal first (then the program's error is another one).
                return if text_has_unescaped_quote(text) {
                    Literal::Unquoted
                } else {
                    Literal::Invalid
                };
            }
        }
    }
    Literal::Bytes(out)
}

/// Whether a `"` that no backslash escapes stands in `text`.
fn text_has_unescaped_quote(text: &str) -> bool {
    let mut escaped = false;
    for c in text.chars() {
        match c {
            '"' if !escaped => return true,
            '\\' if !escaped => escaped = true,
            _ => escaped = false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn conform_dsl(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            check_conform_dsl(&data)
        }

        /// Programs of the DSL's own words, numbers and literals.
        #[test]
        fn conform_dsl_programs(
            words in proptest::collection::vec(
                "(H|Hn|P1|P2|END|eof|rst|mark|\\||\\+|c\\(|body\\(|rep\\([0-9]{1,6},|padto\\([0-9]{1,6},|nums\\(-?[0-9]{1,4},-?[0-9]{1,4}\\)|pause\\([0-9]\\)|drip\\([0-9],|trickle\\([0-9],[0-9],|Hcl\\([0-9]\\)|\\)|\"[a-z\\\\x0-9{}u+]{0,6}\"|H\\[[a-z+:= -]{0,6}\\])",
                0..12,
            )
        ) {
            check_conform_dsl(words.join(" ").as_bytes())
        }

        /// Literals of escapes and near misses.
        #[test]
        fn conform_dsl_literals(text in "([a-z\"]|\\\\[rnt0\\\\\"'\\[\\]xu{}+a-fA-F0-9]{1,4}|\\\\){0,8}") {
            check_conform_dsl(text.as_bytes())
        }

        /// Case files with one field changed to text of the schema's shapes.
        #[test]
        fn conform_dsl_cases(
            id in "[A-Z][0-9]{0,2}",
            tokens in "(\\{ *([a-z0-9]{1,5} *= *[0-9]{1,3} *,? *){0,3}\\})?",
            bytes in "(H|c\\(P1\\)|END|rep\\([0-9]{1,4}, *\"a\"\\)| ){0,5}",
            extra in "(repeat|parallel|min_pass|wait_ms) = [0-9]{1,3}",
        ) {
            let tokens = if tokens.is_empty() { String::new() } else { format!("tokens = {tokens}\n") };
            let text = format!(
                "id = \"{id}\"\ntitle = \"t\"\nlevel = \"MUST\"\n{tokens}bytes = '{bytes}'\n{extra}\nexpect = [{{ status = 200 }}]\n"
            );
            check_conform_dsl(text.as_bytes())
        }
    }

    /// Every case of the catalogue holds the property (the seeds of the fuzz corpus).
    #[test]
    fn the_catalogue_holds_the_property() {
        for (_, text) in crate::load::CASE_FILES {
            check_conform_dsl(text.as_bytes());
        }
    }
}
