//! What a program of the bytes DSL is made of: the parsed nodes and head modifiers, the items
//! an evaluation makes, and the §5 constants `P1`, `P2` and `END`.

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
pub(super) enum Mod {
    Add(Vec<u8>),
    Drop(String),
    Set(String, Vec<u8>),
}

/// One parsed item of a program; the words with arguments keep their inner programs.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Lit(Vec<u8>),
    Head(Vec<Mod>),
    Hcl(u64),
    Chunk(Vec<Node>),
    Body(Vec<Node>),
    Rep(u64, Vec<Node>),
    PadTo(u64, Vec<Node>),
    Drip(u64, u64, Vec<Node>),
    Nums(i64, i64),
    /// An item that is not bytes (a pause, a write boundary, a connection event), as it is.
    Event(Item),
}
