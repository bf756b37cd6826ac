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
//!
//! Limits, so that a hostile or mistyped case is refused with an error instead of hanging or
//! allocating without bound (`plotstream_cases::fuzzing` checks them): at most [`MAX_DEPTH`]
//! nested `(…)`, and an evaluation that makes more than [`MAX_EVAL_BYTES`] bytes or
//! [`MAX_EVAL_ITEMS`] items fails. Both count what every nesting level makes, before it is
//! merged: the bytes of `c(…)` count inside and again as the chunk, a `rep` counts its inner
//! program once and then its copies.

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
            depth: 0,
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
        let mut budget = Budget {
            bytes: MAX_EVAL_BYTES,
            items: MAX_EVAL_ITEMS,
        };
        let out = eval_seq(&self.nodes, &subst, &mut budget)?;
        Ok(merge(out))
    }
}

/// The most bytes one evaluation of a program may make, counted at every nesting level (64
/// MiB): ten times what the largest case makes (B24, 6 MB), and room for a body one byte over
/// L45 (16 MiB) inside `body(…)`.
pub const MAX_EVAL_BYTES: usize = 64 << 20;
/// The most items (byte runs, pauses, write boundaries, connection events) one evaluation may
/// make, counted at every nesting level: about a hundred times what the most segmented case
/// makes (E8, 608), and a byte-by-byte `drip` of 32 KiB.
pub const MAX_EVAL_ITEMS: usize = 1 << 16;
/// The deepest nesting of `(…)` a program may have (the catalogue's deepest is 3).
pub const MAX_DEPTH: usize = 32;

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

type Subst = [(Vec<u8>, Vec<u8>)];

/// What an evaluation may still make ([`MAX_EVAL_BYTES`], [`MAX_EVAL_ITEMS`]).
struct Budget {
    bytes: usize,
    items: usize,
}

impl Budget {
    /// Takes `bytes` bytes and `items` items, or fails if that is more than is left.
    fn take(&mut self, bytes: usize, items: usize) -> Result<()> {
        self.afford(bytes, items)?;
        self.bytes -= bytes;
        self.items -= items;
        Ok(())
    }

    /// Fails if `bytes` bytes and `items` items are more than is left.
    fn afford(&self, bytes: usize, items: usize) -> Result<()> {
        if bytes > self.bytes {
            bail!(
                Dsl,
                "the program makes more than {MAX_EVAL_BYTES} bytes (MAX_EVAL_BYTES)"
            );
        }
        if items > self.items {
            bail!(
                Dsl,
                "the program makes more than {MAX_EVAL_ITEMS} items (MAX_EVAL_ITEMS)"
            );
        }
        Ok(())
    }
}

/// One sequence being evaluated: its items and the bytes among them (`padto` pads to a length
/// of the sequence that encloses it).
struct Seq<'a> {
    items: Vec<Item>,
    len: usize,
    budget: &'a mut Budget,
}

impl Seq<'_> {
    /// Adds an item, paid from the budget.
    fn push(&mut self, item: Item) -> Result<()> {
        let bytes = match &item {
            Item::Bytes(b) => b.len(),
            _ => 0,
        };
        self.budget.take(bytes, 1)?;
        self.len += bytes;
        self.items.push(item);
        Ok(())
    }
}

fn eval_seq(nodes: &[Node], subst: &Subst, budget: &mut Budget) -> Result<Vec<Item>> {
    let mut out = Seq {
        items: Vec::new(),
        len: 0,
        budget,
    };
    for node in nodes {
        match node {
            Node::Lit(b) => out.push(Item::Bytes(substitute(b, subst)))?,
            Node::Head(mods) => out.push(Item::Bytes(substitute(&head(mods)?, subst)))?,
            Node::Hcl(n) => out.push(Item::Bytes(substitute(
                format!("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nplotly-streamtoken: tok1\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                subst,
            )))?,
            Node::Chunk(inner) => {
                let data = pure_bytes(inner, subst, out.budget, "c(…)")?;
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                out.push(Item::Bytes(chunk))?;
            }
            Node::Body(inner) => {
                let data = pure_bytes(inner, subst, out.budget, "body(…)")?;
                let mut body = format!("Content-Length: {}\r\n\r\n", data.len()).into_bytes();
                body.extend_from_slice(&data);
                out.push(Item::Bytes(body))?;
            }
            Node::Rep(n, inner) => {
                let once = merge(eval_seq(inner, subst, out.budget)?);
                // Paid for before a copy is made: `n` comes from the program.
                let n = usize::try_from(*n).unwrap_or(usize::MAX);
                let bytes = payload_len(&once).saturating_mul(n);
                match once.as_slice() {
                    // Nothing to repeat (`rep(n, )`): nothing to do, however large n is.
                    [] => {}
                    // The common case, bytes only: one allocation (and one item), not n.
                    [Item::Bytes(b)] => {
                        out.budget.take(bytes, 1)?;
                        out.len += bytes;
                        out.items.push(Item::Bytes(b.repeat(n)));
                    }
                    _ => {
                        out.budget.take(bytes, once.len().saturating_mul(n))?;
                        out.len += bytes;
                        for _ in 0..n {
                            out.items.extend(once.iter().cloned());
                        }
                    }
                }
            }
            Node::PadTo(n, inner) => {
                let unit = pure_bytes(inner, subst, out.budget, "padto(…)")?;
                if unit.is_empty() {
                    bail!(Dsl, "padto(…) needs bytes to pad with");
                }
                let have = out.len;
                let target = usize::try_from(*n).unwrap_or(usize::MAX);
                if have > target {
                    bail!(Dsl, "padto({n}): the sequence is already {have} bytes long");
                }
                // Affordable before the pad is made (`n` comes from the program); `push` pays.
                out.budget.afford(target - have, 1)?;
                let mut pad = unit.repeat((target - have) / unit.len() + 1);
                pad.truncate(target - have);
                out.push(Item::Bytes(pad))?;
            }
            Node::Drip(step, ms, inner) => {
                let data = pure_bytes(inner, subst, out.budget, "drip(…)")?;
                let step = usize::try_from(*step).unwrap_or(usize::MAX);
                for (idx, piece) in data.chunks(step).enumerate() {
                    if idx > 0 {
                        out.push(Item::Pause(*ms))?;
                    }
                    out.push(Item::Bytes(piece.to_vec()))?;
                }
            }
            Node::Nums(a, b) => {
                // Affordable before the text is made: `b - a` comes from the program.
                let len = nums_len(*a, *b);
                out.budget
                    .afford(usize::try_from(len).unwrap_or(usize::MAX), 1)?;
                let mut text = String::with_capacity(usize::try_from(len).unwrap_or(0));
                for n in *a..=*b {
                    if n > *a {
                        text.push(',');
                    }
                    let _ = write!(text, "{n}");
                }
                debug_assert_eq!(text.len() as u128, len);
                out.push(Item::Bytes(text.into_bytes()))?;
            }
            Node::Pause(ms) => out.push(Item::Pause(*ms))?,
            Node::Flush => out.push(Item::Flush)?,
            Node::Eof => out.push(Item::Eof)?,
            Node::Rst => out.push(Item::Rst)?,
            Node::Mark => out.push(Item::Mark)?,
            Node::AwaitContinue => out.push(Item::AwaitContinue)?,
        }
    }
    Ok(out.items)
}

/// The bytes of `nodes`, which must contain nothing but bytes.
fn pure_bytes(nodes: &[Node], subst: &Subst, budget: &mut Budget, what: &str) -> Result<Vec<u8>> {
    let inner = eval_seq(nodes, subst, budget)?;
    if inner.iter().any(|i| !matches!(i, Item::Bytes(_))) {
        bail!(
            Dsl,
            "{what} may hold bytes only, not pauses or connection events"
        );
    }
    Ok(payload(&inner))
}

/// The length of `nums(a, b)`: `a,a+1,…,b` in decimal, without making it.
fn nums_len(a: i64, b: i64) -> u128 {
    if a > b {
        return 0;
    }
    // Decimal digits of every n in lo..=hi (0 <= lo <= hi).
    let digits = |lo: u128, hi: u128| -> u128 {
        let mut total = 0;
        let mut start = 0u128;
        for d in 1..=20u128 {
            let end = 10u128.pow(u32::try_from(d).unwrap_or(20)) - 1;
            if start > hi {
                break;
            }
            let (from, to) = (start.max(lo), end.min(hi));
            if from <= to {
                total += (to - from + 1) * d;
            }
            start = end + 1;
        }
        total
    };
    let (a, b) = (i128::from(a), i128::from(b));
    let count = (b - a + 1).unsigned_abs();
    let mut len = count - 1; // the commas
    if a < 0 {
        // -1 down to the most negative: a sign each.
        let (lo, hi) = ((-b.min(-1)).unsigned_abs(), a.unsigned_abs());
        len += (hi - lo + 1) + digits(lo, hi);
    }
    if b >= 0 {
        len += digits(a.max(0).unsigned_abs(), b.unsigned_abs());
    }
    len
}

/// How many bytes `items` hold.
fn payload_len(items: &[Item]) -> usize {
    items
        .iter()
        .map(|i| match i {
            Item::Bytes(b) => b.len(),
            _ => 0,
        })
        .sum()
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
        check("nums(-2, 1)", b"-2,-1,0,1");
        check("nums(3, 2)", b"");
        for (a, b) in [
            (0, 0),
            (-1, -1),
            (-12, 3),
            (-1001, -9),
            (7, 1234),
            (-5, 105),
        ] {
            let text = payload(
                &Program::parse(&format!("nums({a}, {b})"))
                    .unwrap()
                    .eval(&[])
                    .unwrap(),
            );
            assert_eq!(nums_len(a, b), text.len() as u128, "nums({a}, {b})");
        }
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

    /// Found while writing `check_conform_dsl` (fuzz target `conform_dsl`): a count of the
    /// program was trusted. `rep(n, )` looped n times over nothing (2^64 - 1: a hang),
    /// `rep(n, "…")` allocated n copies at once (a capacity-overflow panic, or an abort when
    /// the allocation failed), and `padto(n, …)`, `nums(a, b)` and a `rep` of pauses made
    /// whatever the numbers said. Each is now refused past MAX_EVAL_BYTES or MAX_EVAL_ITEMS,
    /// before the allocation, and `rep` of nothing makes nothing.
    #[test]
    fn fuzz_counts_from_the_program_are_bounded() {
        let eval = |p: &str| Program::parse(p).and_then(|p| p.eval(&[]));
        assert_eq!(eval("rep(18446744073709551615, )").unwrap(), []);
        assert_eq!(eval("rep(18446744073709551615, rep(3, ))").unwrap(), []);
        for hostile in [
            "rep(18446744073709551615, \"ab\")",
            "rep(9223372036854775807, \"a\")",
            "rep(67108865, \"a\")",
            "rep(33554433, \"ab\")",
            "rep(65537, eof)",
            "rep(40000, pause(1) \"a\")",
            "rep(4096, rep(4096, rep(5, \"a\")))",
            "padto(18446744073709551615, \"a\")",
            "padto(67108865, \"a\")",
            "nums(0, 9223372036854775807)",
            "nums(-9223372036854775807, 9223372036854775807)",
            "drip(1, rep(65537, \"a\"))",
            "c(rep(67108860, \"a\"))",
        ] {
            let err = eval(hostile).unwrap_err().to_string();
            assert!(err.contains("MAX_EVAL_"), "{hostile}: {err}");
        }
        // At the bounds, counting what the inner program makes too: MAX_EVAL_BYTES bytes
        // made with "a" and its copies, MAX_EVAL_ITEMS items with the inner `eof`.
        let items = eval("rep(67108863, \"a\")").unwrap();
        assert_eq!(payload(&items).len(), MAX_EVAL_BYTES - 1);
        assert!(eval("rep(67108864, \"a\")").is_err());
        let pad = eval("padto(67108862, \"ab\")").unwrap();
        assert_eq!(payload(&pad).len(), MAX_EVAL_BYTES - 2);
        assert!(eval("padto(67108863, \"ab\")").is_err());
        assert_eq!(eval("rep(65535, eof)").unwrap().len(), MAX_EVAL_ITEMS - 1);
        assert!(eval("rep(65536, eof)").is_err());
    }

    /// Found while writing `check_conform_dsl`: `(…)` nested thousands deep recursed as deep in
    /// the parser and in the evaluation.
    #[test]
    fn fuzz_nesting_is_bounded() {
        let nested = |n: usize| format!("{}\"a\"{}", "c(".repeat(n), ")".repeat(n));
        assert!(Program::parse(&nested(MAX_DEPTH)).is_ok());
        let err = Program::parse(&nested(MAX_DEPTH + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_DEPTH"), "{err}");
        assert!(Program::parse(&nested(100_000)).is_err());
        // Depth counts what is open, not how many groups there were.
        assert!(Program::parse(&"c(\"a\") ".repeat(1000)).is_ok());
    }

    /// Found while writing `check_conform_dsl`'s plain decoder of literals: `\x` and `\u{…}`
    /// took a sign
    /// (`u8::from_str_radix` accepts `+`), so `"\x+f"` was the byte 0x0f, not an error (the
    /// same mistake as `url_decode`'s `%+a` in plotstream-server).
    #[test]
    fn fuzz_escapes_take_hex_digits_only() {
        for bad in [
            r#""\x+f""#,
            r#""\x-1""#,
            r#""\u{+41}""#,
            r#""\u{}""#,
            r#""\x f""#,
        ] {
            assert!(Program::parse(bad).is_err(), "{bad} parsed");
        }
        check(r#""\x0F\u{41}\u{0000041}""#, b"\x0fAA");
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
