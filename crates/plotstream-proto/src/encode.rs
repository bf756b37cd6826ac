//! The client side of the wire: request heads, point lines and chunks in each real client's exact
//! style (docs/protocol.md §2.9–§2.14, §3.6), and compact JSON for values.
//!
//! Everything appends to a buffer the caller owns; nothing allocates on the point path. Numbers
//! are formatted with `itoa` and `zmij` (shortest round trip), then reshaped into the flavour's
//! notation, so every finite `f64` written by any flavour decodes to identical bits — except
//! `-0.0` in the [`Flavour::Node`] style, which JavaScript prints as `0`.
//!
//! The point path is the hot one (docs/performance.md). Each flavour gets its own monomorphic copy,
//! so punctuation is copied in constant-size moves. Both numbers are formatted first, which gives
//! the line length, so the size line is written before the line and nothing is patched or moved
//! afterwards. The chunk is assembled in place at the end of `out`: a constant-size zeroed
//! reservation, constant-size (or two overlapping fixed-size) moves, then a truncation — one
//! capacity check and no `memcpy` call per point. [`ChunkBatch`] cannot know its length up
//! front: it reserves a fixed-width size field and fills it in with leading zeros at
//! [`ChunkBatch::finish`].
//!
//! The files: `style` (the flavours and their punctuation), `number` (numbers in each flavour's
//! notation), `point` (the point hot path and [`ChunkBatch`]), `value` (JSON values and updates)
//! and `request` (the request head, the heartbeat and the close).

mod number;
mod point;
mod request;
mod style;
mod value;

pub use number::Num;
pub use point::{encode_point_chunk, encode_point_line, ChunkBatch, BATCH_SIZE_DIGITS};
pub use request::{encode_close, encode_head, encode_heartbeat};
pub use style::Flavour;
pub use value::{encode_update_line, encode_value};

#[cfg(test)]
mod tests;
