//! The bytes DSL of docs/reliability.md §8: what a case sends, as data.
//!
//! A program is a sequence of items separated by whitespace (a `+` between items is allowed and
//! means nothing, so §5's `H + c(P1) + END` reads as written):
//!
//! | item | bytes |
//! | --- | --- |
//! | `"…"` | the string with Rust byte escapes (`\r \n \t \0 \\ \" \xHH \u{…}`) |
//! | `H`, `Hn`, `H[…]…` | the §5 head; `[+F: v]` adds a field line, `[-Name]` drops fields, `[Name=v]` replaces a value (`token`, `TE` are aliases), `[method=M]`, `[line=L]` |
//! | `Hcl(n)` | the §5 Content-Length head |
//! | `P1`, `P2`, `END` | the §5 constants |
//! | `c(…)` | one chunk: lowercase hex length, CRLF, the bytes, CRLF |
//! | `body(…)` | a Content-Length body: `Content-Length: n`, the CRLF that ends the field and the empty line that ends the head, then the n bytes (REST requests) |
//! | `rep(n, …)` | the inner program n times |
//! | `padto(n, …)` | the inner bytes repeated (the last copy cut) until the enclosing sequence is n bytes long |
//! | `nums(a, b)` | `a,a+1,…,b` in decimal |
//! | `pause(ms)` | a write boundary and a pause |
//! | `drip(ms, …)`, `trickle(n, ms, …)` | the inner bytes one byte (or n bytes) per write, `ms` apart |
//! | `\|` | a write boundary without a pause (how a real client segments) |
//! | `eof`, `rst` | half-close; close with SO_LINGER 0 |
//! | `mark` | the origin of the case's `within_ms` |
//! | `await_continue` | wait (up to the response wait) for `100 Continue` before going on |
//!
//! Token placeholders (`tok1`, `tok2`, `nosuch` and those a case declares) are replaced in every
//! literal and head *before* chunk sizes and pads are computed, so a fresh token of another
//! length still gives exact framing.
//!
//! Variables, `$` and a name, are replaced the same way (group K, accounts and ownership):
//!
//! | variable | value |
//! | --- | --- |
//! | `$user`, `$key` | the user and API key of `--credentials USER:KEY` |
//! | `$auth` | `base64(user:key)`, the value of a Basic `Authorization` after `Basic ` |
//! | `$wrong_key`, `$wrong_auth` | a key that is not the user's (the key with `-wrong` appended), and its Basic value |
//! | `$sid` | the stream id of `--stream-id TOKEN`, one the user owns |
//! | `$name` | what an earlier script step captured from its response (`capture = { name = "/json/pointer" }`) |

use std::fmt::Write as _;

use crate::error::{bail, Error};

type Result<T> = std::result::Result<T, Error>;

/// One step of what a connection sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Bytes to send.
    Bytes(Vec<u8>),
    /// A write boundary followed by a pause of this many milliseconds (unscaled).
    Pause(u64),
    /// A write boundary without a pause.
    Flush,
    /// Half-close (`shutdown(Write)`).
    Eof,
    /// Close with SO_LINGER 0, which sends a reset.
    Rst,
    /// The origin of timing bounds.
    Mark,
    /// Wait for an interim `100 Continue` before going on.
    AwaitContinue,
}

/// A parsed program, evaluated per run with that run's tokens.
#[derive(Debug, Clone)]
pub struct Program {
    nodes: Vec<Node>,
}

impl Program {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Program> {
        let mut p = Parser {
            src: text.as_bytes(),
            pos: 0,
        };
        let nodes = p.seq(None)?;
        Ok(Program { nodes })
    }

    /// The items of one run; `subst` maps each placeholder to the token that replaces it.
    pub fn eval(&self, subst: &[(String, String)]) -> Result<Vec<Item>> {
        let mut subst: Vec<(Vec<u8>, Vec<u8>)> = subst
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        // Longest first, so that `tok10` is never read as `tok1` followed by `0`.
        subst.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        let mut out = Vec::new();
        eval_seq(&self.nodes, &subst, &mut out)?;
        Ok(merge(out))
    }
}

/// `P1` of §5.
pub const P1: &str = "{\"x\":1,\"y\":1}\n";
/// `P2` of §5.
pub const P2: &str = "{\"x\":2,\"y\":2}\n";
/// The last-chunk and the empty trailer section.
pub const END: &str = "0\r\n\r\n";

/// Every byte of `items`, concatenated.
pub fn payload(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        if let Item::Bytes(b) = item {
            out.extend_from_slice(b);
        }
    }
    out
}

/// A head modifier inside `H[…]`.
#[derive(Debug, Clone)]
enum Mod {
    Add(Vec<u8>),
    Drop(String),
    Set(String, Vec<u8>),
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Vec<u8>),
    Head(Vec<Mod>),
    Hcl(u64),
    Chunk(Vec<Node>),
    Body(Vec<Node>),
    Rep(u64, Vec<Node>),
    PadTo(u64, Vec<Node>),
    Drip(u64, u64, Vec<Node>),
    Nums(i64, i64),
    Pause(u64),
    Flush,
    Eof,
    Rst,
    Mark,
    AwaitContinue,
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// Items until `close` (or the end of input when `close` is None).
    fn seq(&mut self, close: Option<u8>) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None if close.is_none() => return Ok(nodes),
                None => bail!(
                    Dsl,
                    "unexpected end of program, expected `{}`",
                    close_char(close)
                ),
                Some(b) if Some(b) == close => {
                    self.pos += 1;
                    return Ok(nodes);
                }
                Some(b'+') => self.pos += 1,
                Some(b'|') => {
                    self.pos += 1;
                    nodes.push(Node::Flush);
                }
                Some(b'"') => nodes.push(Node::Lit(self.string()?)),
                Some(b) if b.is_ascii_alphabetic() => nodes.push(self.word()?),
                Some(b) => bail!(Dsl, "unexpected `{}` at byte {}", char::from(b), self.pos),
            }
        }
    }

    fn word(&mut self) -> Result<Node> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        let name = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
        let node = match name.as_str() {
            "H" => {
                let mut mods = Vec::new();
                while self.peek() == Some(b'[') {
                    self.pos += 1;
                    mods.push(self.head_mod()?);
                }
                Node::Head(mods)
            }
            "Hn" => Node::Head(vec![Mod::Drop("plotly-streamtoken".into())]),
            "P1" => Node::Lit(P1.into()),
            "P2" => Node::Lit(P2.into()),
            "END" => Node::Lit(END.into()),
            "eof" => Node::Eof,
            "rst" => Node::Rst,
            "mark" => Node::Mark,
            "await_continue" => Node::AwaitContinue,
            "Hcl" => {
                let n = self.args_numbers(1)?[0];
                Node::Hcl(n)
            }
            "pause" => Node::Pause(self.args_numbers(1)?[0]),
            "nums" => {
                self.open()?;
                let a = self.signed()?;
                self.comma()?;
                let b = self.signed()?;
                self.close()?;
                Node::Nums(a, b)
            }
            "c" => {
                self.open()?;
                Node::Chunk(self.seq(Some(b')'))?)
            }
            "body" => {
                self.open()?;
                Node::Body(self.seq(Some(b')'))?)
            }
            "rep" | "padto" | "drip" => {
                self.open()?;
                let n = self.number()?;
                self.comma()?;
                let inner = self.seq(Some(b')'))?;
                match name.as_str() {
                    "rep" => Node::Rep(n, inner),
                    "padto" => Node::PadTo(n, inner),
                    _ => Node::Drip(1, n, inner),
                }
            }
            "trickle" => {
                self.open()?;
                let n = self.number()?;
                self.comma()?;
                let ms = self.number()?;
                self.comma()?;
                Node::Drip(n.max(1), ms, self.seq(Some(b')'))?)
            }
            other => bail!(Dsl, "unknown word `{other}` at byte {start}"),
        };
        Ok(node)
    }

    fn head_mod(&mut self) -> Result<Mod> {
        // The text up to the matching `]`, with escapes.
        let mut raw = Vec::new();
        loop {
            match self.next() {
                None => bail!(Dsl, "unterminated `H[`"),
                Some(b']') => break,
                Some(b'\\') => self.escape(&mut raw)?,
                Some(b) => raw.push(b),
            }
        }
        if let Some(rest) = raw.strip_prefix(b"+") {
            return Ok(Mod::Add(rest.to_vec()));
        }
        if let Some(rest) = raw.strip_prefix(b"-") {
            return Ok(Mod::Drop(alias(&String::from_utf8_lossy(rest))));
        }
        let Some(eq) = raw.iter().position(|&b| b == b'=') else {
            bail!(
                Dsl,
                "head modifier `{}` is none of +F: v, -F, F=v",
                String::from_utf8_lossy(&raw)
            );
        };
        let name = alias(&String::from_utf8_lossy(&raw[..eq]));
        Ok(Mod::Set(name, raw[eq + 1..].to_vec()))
    }

    fn string(&mut self) -> Result<Vec<u8>> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => bail!(Dsl, "unterminated string"),
                Some(b'"') => return Ok(out),
                Some(b'\\') => self.escape(&mut out)?,
                Some(b) => out.push(b),
            }
        }
    }

    /// One escape after a backslash, appended to `out`.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Some(e) = self.next() else {
            bail!(Dsl, "dangling backslash")
        };
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' | b'"' | b'\'' | b']' | b'[' => out.push(e),
            b'x' => {
                let hex = self
                    .src
                    .get(self.pos..self.pos + 2)
                    .ok_or_else(|| Error::Dsl("short \\x escape".to_owned()))?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| Error::Dsl("bad \\x escape".to_owned()))?;
                self.pos += 2;
                out.push(v);
            }
            b'u' => {
                if self.next() != Some(b'{') {
                    bail!(Dsl, "\\u needs braces: \\u{{…}}");
                }
                let start = self.pos;
                while self.peek().is_some_and(|b| b != b'}') {
                    self.pos += 1;
                }
                let hex = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
                self.pos += 1;
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| Error::Dsl(format!("\\u{{{hex}}} is not a scalar value")))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            other => bail!(Dsl, "unknown escape \\{}", char::from(other)),
        }
        Ok(())
    }

    fn args_numbers(&mut self, n: usize) -> Result<Vec<u64>> {
        self.open()?;
        let mut out = Vec::new();
        for i in 0..n {
            if i > 0 {
                self.comma()?;
            }
            out.push(self.number()?);
        }
        self.close()?;
        Ok(out)
    }

    fn number(&mut self) -> Result<u64> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'_') {
            self.pos += 1;
        }
        let text: String = String::from_utf8_lossy(&self.src[start..self.pos])
            .chars()
            .filter(|&c| c != '_')
            .collect();
        text.parse()
            .map_err(|_| Error::Dsl(format!("expected a number at byte {start}")))
    }

    fn signed(&mut self) -> Result<i64> {
        self.skip_ws();
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        let n = i64::try_from(self.number()?)
            .map_err(|_| Error::Dsl(format!("number too large at byte {}", self.pos)))?;
        Ok(if neg { -n } else { n })
    }

    fn open(&mut self) -> Result<()> {
        self.expect(b'(')
    }

    fn close(&mut self) -> Result<()> {
        self.expect(b')')
    }

    fn comma(&mut self) -> Result<()> {
        self.expect(b',')
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        self.skip_ws();
        if self.next() != Some(b) {
            bail!(Dsl, "expected `{}` at byte {}", char::from(b), self.pos);
        }
        Ok(())
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }
}

fn close_char(close: Option<u8>) -> char {
    close.map_or('?', char::from)
}

/// `token` and `TE` stand for the two fields the §5 notation names that way.
fn alias(name: &str) -> String {
    match name {
        "token" => "plotly-streamtoken".to_owned(),
        "TE" => "Transfer-Encoding".to_owned(),
        other => other.to_owned(),
    }
}

type Subst = [(Vec<u8>, Vec<u8>)];

fn eval_seq(nodes: &[Node], subst: &Subst, out: &mut Vec<Item>) -> Result<()> {
    for node in nodes {
        match node {
            Node::Lit(b) => out.push(Item::Bytes(substitute(b, subst))),
            Node::Head(mods) => out.push(Item::Bytes(substitute(&head(mods)?, subst))),
            Node::Hcl(n) => out.push(Item::Bytes(substitute(
                format!("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                subst,
            ))),
            Node::Chunk(inner) => {
                let data = pure_bytes(inner, subst, "c(…)")?;
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                out.push(Item::Bytes(chunk));
            }
            Node::Body(inner) => {
                let data = pure_bytes(inner, subst, "body(…)")?;
                let mut body = format!("Content-Length: {}\r\n\r\n", data.len()).into_bytes();
                body.extend_from_slice(&data);
                out.push(Item::Bytes(body));
            }
            Node::Rep(n, inner) => {
                let mut once = Vec::new();
                eval_seq(inner, subst, &mut once)?;
                let once = merge(once);
                let n = to_usize(*n)?;
                match once.as_slice() {
                    // The common case, bytes only: one allocation, not n.
                    [Item::Bytes(b)] => out.push(Item::Bytes(b.repeat(n))),
                    _ => {
                        for _ in 0..n {
                            out.extend(once.iter().cloned());
                        }
                    }
                }
            }
            Node::PadTo(n, inner) => {
                let unit = pure_bytes(inner, subst, "padto(…)")?;
                if unit.is_empty() {
                    bail!(Dsl, "padto(…) needs bytes to pad with");
                }
                let have = payload(out).len();
                let target = to_usize(*n)?;
                if have > target {
                    bail!(Dsl, "padto({n}): the sequence is already {have} bytes long");
                }
                let pad: Vec<u8> = unit.iter().copied().cycle().take(target - have).collect();
                out.push(Item::Bytes(pad));
            }
            Node::Drip(step, ms, inner) => {
                let data = pure_bytes(inner, subst, "drip(…)")?;
                let step = to_usize(*step)?;
                for (idx, piece) in data.chunks(step).enumerate() {
                    if idx > 0 {
                        out.push(Item::Pause(*ms));
                    }
                    out.push(Item::Bytes(piece.to_vec()));
                }
            }
            Node::Nums(a, b) => {
                let mut text = String::new();
                for n in *a..=*b {
                    if n > *a {
                        text.push(',');
                    }
                    let _ = write!(text, "{n}");
                }
                out.push(Item::Bytes(text.into_bytes()));
            }
            Node::Pause(ms) => out.push(Item::Pause(*ms)),
            Node::Flush => out.push(Item::Flush),
            Node::Eof => out.push(Item::Eof),
            Node::Rst => out.push(Item::Rst),
            Node::Mark => out.push(Item::Mark),
            Node::AwaitContinue => out.push(Item::AwaitContinue),
        }
    }
    Ok(())
}

/// A count of the program as a `usize`.
fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::Dsl(format!("{n} does not fit in memory")))
}

/// The bytes of `nodes`, which must contain nothing but bytes.
fn pure_bytes(nodes: &[Node], subst: &Subst, what: &str) -> Result<Vec<u8>> {
    let mut inner = Vec::new();
    eval_seq(nodes, subst, &mut inner)?;
    if inner.iter().any(|i| !matches!(i, Item::Bytes(_))) {
        bail!(
            Dsl,
            "{what} may hold bytes only, not pauses or connection events"
        );
    }
    Ok(payload(&inner))
}

fn head(mods: &[Mod]) -> Result<Vec<u8>> {
    let mut line = b"POST / HTTP/1.1".to_vec();
    let mut fields: Vec<Vec<u8>> = vec![
        b"Host: 127.0.0.1".to_vec(),
        b"plotly-streamtoken: tok1".to_vec(),
        b"Transfer-Encoding: chunked".to_vec(),
    ];
    let name_of = |f: &[u8]| -> Vec<u8> {
        let end = f.iter().position(|&b| b == b':').unwrap_or(f.len());
        f[..end].to_ascii_lowercase()
    };
    for m in mods {
        match m {
            Mod::Add(raw) => fields.push(raw.clone()),
            Mod::Drop(name) => {
                let lower = name.to_ascii_lowercase().into_bytes();
                fields.retain(|f| name_of(f) != lower);
            }
            Mod::Set(name, value) if name == "method" => {
                let rest = line
                    .iter()
                    .position(|&b| b == b' ')
                    .map_or(Vec::new(), |sp| line[sp..].to_vec());
                line = [value.as_slice(), &rest].concat();
            }
            Mod::Set(name, value) if name == "line" => line = value.clone(),
            Mod::Set(name, value) => {
                let lower = name.to_ascii_lowercase().into_bytes();
                let Some(f) = fields.iter_mut().find(|f| name_of(f) == lower) else {
                    bail!(Dsl, "H[{name}=…]: the head has no such field");
                };
                let end = f.iter().position(|&b| b == b':').unwrap_or(f.len());
                let mut new = f[..end].to_vec();
                new.extend_from_slice(b": ");
                new.extend_from_slice(value);
                *f = new;
            }
        }
    }
    let mut out = line;
    out.extend_from_slice(b"\r\n");
    for f in fields {
        out.extend_from_slice(&f);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Every variable (`$name`) `text` names, in order of first use.
pub fn variables(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = format!("${}", &rest[..len]);
        if len > 0 && !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[len..];
    }
    out
}

/// `text` with every placeholder and variable of `subst` replaced (expected bodies and headers
/// name them as the bytes do).
pub fn substitute_text(text: &str, subst: &[(String, String)]) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = subst
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    pairs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    String::from_utf8_lossy(&substitute(text.as_bytes(), &pairs)).into_owned()
}

fn substitute(bytes: &[u8], subst: &Subst) -> Vec<u8> {
    if subst.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'outer: while i < bytes.len() {
        for (from, to) in subst {
            if !from.is_empty() && bytes[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
                continue 'outer;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Joins adjacent byte items.
fn merge(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        match (out.last_mut(), item) {
            (Some(Item::Bytes(prev)), Item::Bytes(b)) => prev.extend_from_slice(&b),
            (_, Item::Bytes(b)) if b.is_empty() => {}
            (_, item) => out.push(item),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[track_caller]
    fn check(program: &str, expected: &[u8]) {
        let items = Program::parse(program).unwrap().eval(&[]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&payload(&items)),
            String::from_utf8_lossy(expected)
        );
    }

    #[test]
    fn constants_and_chunks() {
        check("H c(P1) END", format!("{H}e\r\n{P1}\r\n{END}").as_bytes());
        check(r#""\r\n" + c("ab") + END"#, b"\r\n2\r\nab\r\n0\r\n\r\n");
        check(r#""\xff\x00\u{feff}""#, b"\xff\x00\xef\xbb\xbf");
        check("rep(3, \"ab\")", b"ababab");
        check("nums(0, 3)", b"0,1,2,3");
        check("Hcl(28)", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nContent-Length: 28\r\n\r\n");
    }

    #[test]
    fn head_modifiers() {
        check(
            "H[+Expect: 100-continue][token=a b][-Host]",
            b"POST / HTTP/1.1\r\nplotly-streamtoken: a b\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        );
        check(
            "H[method=PUT][TE=gzip, chunked]",
            b"PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        check(
            r"H[+X-A: a\rb]",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nTransfer-Encoding: chunked\r\nX-A: a\rb\r\n\r\n",
        );
        check(
            "Hn",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
    }

    #[test]
    fn pads_count_the_enclosing_sequence() {
        check("\"ab\" padto(5, \"xy\")", b"abxyx");
        check("c(\"a\" padto(3, \" \"))", b"3\r\na  \r\n");
    }

    #[test]
    fn substitution_happens_before_framing() {
        let p = Program::parse(r#"H c("{\"streamtoken\":\"tok1\"}\n")"#).unwrap();
        let items = p.eval(&[("tok1".into(), "abcdefghij".into())]).unwrap();
        let bytes = payload(&items);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("plotly-streamtoken: abcdefghij\r\n"));
        assert!(
            text.ends_with("1d\r\n{\"streamtoken\":\"abcdefghij\"}\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn bodies_carry_their_length_after_substitution() {
        let p = Program::parse(r#""PUT /v2/plots/$fid HTTP/1.1\r\n" body("{\"token\":\"$sid\"}")"#)
            .unwrap();
        let subst = [
            ("$fid".to_owned(), "demo:123456789012".to_owned()),
            ("$sid".to_owned(), "abcdef1234".to_owned()),
        ];
        let text = String::from_utf8(payload(&p.eval(&subst).unwrap())).unwrap();
        assert_eq!(
            text,
            "PUT /v2/plots/demo:123456789012 HTTP/1.1\r\nContent-Length: 22\r\n\r\n{\"token\":\"abcdef1234\"}"
        );
        check("body()", b"Content-Length: 0\r\n\r\n");
    }

    #[test]
    fn variables_are_named_once_and_substituted_longest_first() {
        assert_eq!(
            variables("a $auth b $wrong_auth $auth $ $fid."),
            ["$auth", "$wrong_auth", "$fid"]
        );
        let subst = [
            ("$auth".to_owned(), "A".to_owned()),
            ("$wrong_auth".to_owned(), "W".to_owned()),
            ("tok1".to_owned(), "t".to_owned()),
        ];
        assert_eq!(substitute_text("$auth/$wrong_auth/tok1", &subst), "A/W/t");
    }

    #[test]
    fn timing_items() {
        let items = Program::parse("\"a\" pause(5) | drip(7, \"bc\") eof")
            .unwrap()
            .eval(&[])
            .unwrap();
        assert_eq!(
            items,
            [
                Item::Bytes(b"a".to_vec()),
                Item::Pause(5),
                Item::Flush,
                Item::Bytes(b"b".to_vec()),
                Item::Pause(7),
                Item::Bytes(b"c".to_vec()),
                Item::Eof,
            ]
        );
    }

    #[test]
    fn errors_are_reported() {
        for bad in [
            "c(",
            "\"abc",
            "H[x",
            "foo",
            "rep(x, \"a\")",
            "c(pause(1))",
            "body(eof)",
        ] {
            let r = Program::parse(bad).and_then(|p| p.eval(&[]));
            assert!(r.is_err(), "{bad} parsed");
        }
    }
}
