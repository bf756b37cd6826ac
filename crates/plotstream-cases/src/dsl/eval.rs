//! The evaluation of the bytes DSL: nodes to items for one run's substitution, within the
//! budget of [`MAX_EVAL_BYTES`] and [`MAX_EVAL_ITEMS`].

use std::fmt::Write as _;

use super::subst::{substitute, Subst};
use super::syntax::{payload, Item, Mod, Node};
use crate::error::{bail, Error};

type Result<T> = std::result::Result<T, Error>;

/// The most bytes one evaluation of a program may make, counted at every nesting level (64
/// MiB): ten times what the largest case makes (B24, 6 MB), and room for a body one byte over
/// L45 (16 MiB) inside `body(…)`.
pub const MAX_EVAL_BYTES: usize = 64 << 20;
/// The most items (byte runs, pauses, write boundaries, connection events) one evaluation may
/// make, counted at every nesting level: about a hundred times what the most segmented case
/// makes (E8, 608), and a byte-by-byte `drip` of 32 KiB.
pub const MAX_EVAL_ITEMS: usize = 1 << 16;

/// The items of `nodes`, adjacent bytes merged; `subst` holds the placeholders longest first.
pub(super) fn eval(nodes: &[Node], subst: &Subst) -> Result<Vec<Item>> {
    let mut budget = Budget {
        bytes: MAX_EVAL_BYTES,
        items: MAX_EVAL_ITEMS,
    };
    let out = eval_seq(nodes, subst, &mut budget)?;
    Ok(merge(out))
}

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
            Node::Event(item) => out.push(item.clone())?,
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
pub(super) fn nums_len(a: i64, b: i64) -> u128 {
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
