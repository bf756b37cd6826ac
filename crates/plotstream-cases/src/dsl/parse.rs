//! The parser of the bytes DSL: text to nodes, with string and head-modifier escapes and the
//! nesting limit [`MAX_DEPTH`].

use super::syntax::{Item, Mod, Node, END, P1, P2};
use crate::error::{bail, Error};

type Result<T> = std::result::Result<T, Error>;

/// The deepest nesting of `(…)` a program may have (the catalogue's deepest is 3).
pub const MAX_DEPTH: usize = 32;

/// The nodes of the program `text`.
pub(super) fn parse(text: &str) -> Result<Vec<Node>> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    p.seq(None)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    /// The `(…)` open around `pos`.
    depth: usize,
}

impl Parser<'_> {
    /// Items until `close` (or the end of input when `close` is None).
    fn seq(&mut self, close: Option<u8>) -> Result<Vec<Node>> {
        if close.is_some() {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                bail!(
                    Dsl,
                    "more than {MAX_DEPTH} nested `(…)` at byte {} (MAX_DEPTH)",
                    self.pos
                );
            }
        }
        let nodes = self.items(close)?;
        if close.is_some() {
            self.depth -= 1;
        }
        Ok(nodes)
    }

    fn items(&mut self, close: Option<u8>) -> Result<Vec<Node>> {
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
                    nodes.push(Node::Event(Item::Flush));
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
            "eof" => Node::Event(Item::Eof),
            "rst" => Node::Event(Item::Rst),
            "mark" => Node::Event(Item::Mark),
            "await_continue" => Node::Event(Item::AwaitContinue),
            "Hcl" => {
                let n = self.args_numbers(1)?[0];
                Node::Hcl(n)
            }
            "pause" => Node::Event(Item::Pause(self.args_numbers(1)?[0])),
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
                // Two hex digits: `from_str_radix` alone also takes a sign (`\x+f`).
                let v = std::str::from_utf8(hex)
                    .ok()
                    .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
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
                let c = Some(&hex)
                    .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
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
