//! Just enough of a Rust lexer for the import guard: code without its comments and literals,
//! cut into identifiers, `::` and punctuation, each with its line.

/// A token of code, as far as paths need: identifiers (keywords among them), `::`, punctuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
    /// A number.
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Its line, from 1.
    pub(super) line: usize,
}

pub(super) fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Other
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
            Tok::PathSep
        } else {
            i += 1;
            Tok::Punct(c)
        };
        toks.push(Token { tok, line });
    }
    toks
}

/// `text` with its comments, string literals and character literals blanked (newlines kept),
/// so that what is left is code. Lifetimes stay.
pub(super) fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // A literal's prefix (`r`, `b`, `br`) starts a word, or it is part of an identifier.
        let word_start = |at: usize| at == 0 || !is_ident(chars[at - 1]);
        let mut end = None;
        if c == '/' && next == Some('/') {
            end = Some(
                chars[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(n, |p| i + p),
            );
        } else if c == '/' && next == Some('*') {
            let (mut j, mut depth) = (i + 2, 1);
            while j < n && depth > 0 {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            end = Some(j.min(n));
        } else if c == 'r'
            && (word_start(i) || (i > 0 && chars[i - 1] == 'b' && word_start(i - 1)))
            && matches!(next, Some('"' | '#'))
        {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            let open = i + 1 + hashes;
            if chars.get(open) == Some(&'"') {
                let mut j = open + 1;
                while j < n {
                    if chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|c| *c == '#') {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                end = Some(j.min(n));
            }
        } else if c == '"' {
            let mut j = i + 1;
            while j < n && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            end = Some((j + 1).min(n));
        } else if c == '\'' {
            if next == Some('\\') {
                let close = chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|c| *c == '\''));
                end = close.map(|p| i + 3 + p + 1);
            } else if chars.get(i + 2) == Some(&'\'') {
                end = Some(i + 3);
            }
        }
        match end {
            Some(end) => {
                // A byte literal's `b` goes with it.
                if i > 0 && chars[i - 1] == 'b' && word_start(i - 1) && c != '/' {
                    out.pop();
                    out.push(' ');
                }
                out.extend(chars[i..end].iter().map(|c| blank(*c)));
                i = end;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[test]
fn comments_and_literals_are_blanked_but_lifetimes_and_lines_stay() {
    let text =
        "a // b::c\n/* x /* y */ z */ \"s\\\"t\" r#\"u\"v\"# br\"w\" '{' '\\'' &'a T\nfor_r\"k\" e";
    let code = code_only(text);
    assert_eq!(code.lines().count(), 3);
    let words: Vec<(String, usize)> = tokens(&code)
        .into_iter()
        .filter_map(|t| match t.tok {
            Tok::Ident(word) => Some((word, t.line)),
            _ => None,
        })
        .collect();
    let expected = [("a", 1), ("a", 2), ("T", 2), ("for_r", 3), ("e", 3)];
    assert_eq!(words, expected.map(|(w, l)| (w.to_owned(), l)));
}
