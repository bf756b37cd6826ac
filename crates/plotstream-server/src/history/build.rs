//! A stream's history as its owner builds it (docs/history.md "Records"): each point goes into
//! the open chunk and the open entry of every tier level; the open chunk's points are stored as
//! parts, each line's at once or, when the builder is lazy (the store's on one node, where the
//! line journal holds them meanwhile), when the store asks ([`Builder::unwritten`]) and at the
//! seal; every [`CHUNK`] points the chunk is sealed: its last part, a record that may replace
//! its parts, and the tier blocks finished since the last seal (and the open ones as they are)
//! are written with the head. No I/O: what to store comes out as [`Write`]s.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::point::{encode_point, put_varint, AsPoint, Point, PointRef, ValRef};
use super::tier::{encode_block, span, Mark, Summary, FANOUT, TOP};

/// Points per sealed chunk (a multiple of `span(2)`, so a chunk ends level-1 and level-2
/// entries).
pub const CHUNK: u64 = 1024;
/// The level of the head record (index 0).
pub const HEAD: u8 = 255;
/// A chunk stored in at most this many parts keeps them as its records: its seal writes no
/// record of its points again (docs/history.md "Records").
pub const KEEP_PARTS: u32 = 16;

/// What x holds, decided by the first point: it decides how ranges and buckets can use x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XKind {
    /// No point yet.
    #[default]
    Unknown,
    /// Points have no x (plotly draws them at their index).
    None,
    /// Numbers.
    Number,
    /// Date strings (ordered by their milliseconds).
    Date,
    /// Other strings.
    Category,
}

impl XKind {
    /// The kind of `x`, whose key is `k` (a string is a date when it has one).
    fn of(x: ValRef<'_>, k: f64) -> XKind {
        match x {
            ValRef::None => XKind::None,
            ValRef::Num(_) => XKind::Number,
            ValRef::Str(_) if !k.is_nan() => XKind::Date,
            ValRef::Str(_) => XKind::Category,
        }
    }

    /// Its name in responses.
    pub fn name(self) -> &'static str {
        match self {
            XKind::Unknown | XKind::None => "none",
            XKind::Number => "number",
            XKind::Date => "date",
            XKind::Category => "category",
        }
    }
}

/// What a stream's history is, beside its records (stored as the head at every seal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Head {
    /// Points before it were dropped (retention); a multiple of [`CHUNK`].
    pub first: u64,
    /// The receive time of point `first` (ms since the Unix epoch).
    pub first_t: i64,
    /// Points before it are in sealed chunks; those from it on are in parts.
    pub sealed: u64,
    /// Bytes of the sealed chunks kept (with the open chunk's, what L59 and L60 count).
    pub bytes: u64,
    /// What x holds.
    pub x: XKind,
    /// Every point's x so far is of kind `x` (a number or a date) and none is below the one
    /// before it: ranges and buckets may use x.
    pub monotone: bool,
    /// The last point's x key (for `monotone`).
    pub last_x: f64,
    /// The last point's receive time (a later point's is never earlier).
    #[serde(default)]
    pub last_t: i64,
}

impl Head {
    /// The head's record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The head in `bytes`, if it is one.
    pub fn decode(bytes: &[u8]) -> Option<Head> {
        serde_json::from_slice(bytes).ok()
    }

    /// Takes `p` into the x facts and the last time.
    pub fn observe(&mut self, p: &impl AsPoint) {
        let p = p.as_point();
        self.observe_keyed(p, p.x.key());
    }

    /// [`Head::observe`] with `p.x.key()` known: `k`.
    fn observe_keyed(&mut self, p: PointRef<'_>, k: f64) {
        self.last_t = self.last_t.max(p.t);
        let kind = XKind::of(p.x, k);
        if self.x == XKind::Unknown {
            self.x = kind;
            self.monotone = matches!(kind, XKind::Number | XKind::Date);
            // Finite: JSON has no infinity (the head would not read back).
            self.last_x = f64::MIN;
        }
        if self.monotone {
            if kind != self.x || k.is_nan() || k < self.last_x {
                self.monotone = false;
            } else {
                self.last_x = k;
            }
        }
    }

    /// True when ranges and buckets may use x.
    pub fn by_x(&self) -> bool {
        self.monotone && matches!(self.x, XKind::Number | XKind::Date)
    }
}

/// One thing to store, in order.
#[derive(Debug, PartialEq)]
pub enum Write<'a> {
    /// The encoded points `n..n + count` (without a count: a part's points).
    Points {
        /// The first one's position.
        n: u64,
        /// How many.
        count: u32,
        /// Their encodings, back to back.
        bytes: Cow<'a, [u8]>,
    },
    /// The points before `before` are dropped (retention).
    Trim {
        /// The first position kept.
        before: u64,
    },
    /// A record: a sealed chunk (level 0, replacing the parts in `index..index + replaces`),
    /// a tier block or the head.
    Put {
        /// The level (0 for points, [`HEAD`] for the head).
        level: u8,
        /// The record's index.
        index: u64,
        /// The record.
        value: Vec<u8>,
        /// Level-0 keys from `index` it replaces (the chunk's parts), else 0.
        replaces: u64,
    },
}

impl<'a> Write<'a> {
    /// The points `n..n + count`, their encodings `bytes` borrowed.
    pub fn points(n: u64, count: u32, bytes: &'a [u8]) -> Write<'a> {
        Write::Points {
            n,
            count,
            bytes: Cow::Borrowed(bytes),
        }
    }

    /// The same write, holding its bytes itself: to queue after the builder went on (a seal
    /// is made before the journal is locked, so its lock is not held while points are added).
    pub fn into_owned(self) -> Write<'static> {
        match self {
            Write::Points { n, count, bytes } => Write::Points {
                n,
                count,
                bytes: Cow::Owned(bytes.into_owned()),
            },
            Write::Trim { before } => Write::Trim { before },
            Write::Put {
                level,
                index,
                value,
                replaces,
            } => Write::Put {
                level,
                index,
                value,
                replaces,
            },
        }
    }
}

/// The owner's side of a stream's history.
#[derive(Debug, Default)]
pub struct Builder {
    /// The facts as of the last point.
    pub head: Head,
    /// The head as stored at the last seal (readers replay the parts after it).
    stored: Head,
    /// The next point's position.
    pub end: u64,
    /// The open chunk's point encodings, back to back.
    chunk: Vec<u8>,
    /// The open block of every level 1..=TOP (`levels[l - 1]`): `(slot, summary)`.
    levels: Vec<Vec<(u8, Summary)>>,
    /// Blocks finished since the last seal, written with it: `(level, index, record)`.
    done: Vec<(u8, u64, Vec<u8>)>,
    /// The open chunk's points from this position on are in no stored part yet (the store's
    /// line journal holds them: [`Builder::unwritten`]).
    written: u64,
    /// Where point `written` starts in `chunk`.
    written_at: usize,
    /// The open chunk's parts written so far: at least as many as a store holds (a store may
    /// join two in one; after a restore, unknown, so more than [`KEEP_PARTS`]).
    parts: u32,
    /// The open chunk's points are left to the store's line journal: only a chunk's last part
    /// is written (with its seal), and [`Builder::unwritten`] on demand.
    lazy: bool,
}

impl Builder {
    /// An empty history.
    pub fn new() -> Builder {
        Builder {
            levels: vec![Vec::new(); usize::from(TOP)],
            ..Builder::default()
        }
    }

    /// The history as stored: its head, the open tier blocks and the parts after the head's
    /// seal (`points` from `head.sealed` on). The parts are replayed without writing them again.
    pub fn restore(head: Head, open: Vec<(u8, Vec<(u8, Summary)>)>, points: &[Point]) -> Builder {
        let mut b = Builder::new();
        b.end = head.sealed;
        b.stored = head.clone();
        b.head = head;
        for (level, entries) in open {
            if let Some(l) = b.levels.get_mut(usize::from(level).wrapping_sub(1)) {
                *l = entries;
            }
        }
        for p in points {
            b.push(p, &mut |_| {});
        }
        b.mark_written();
        // The parts stored before are not counted: the seal writes the chunk whole.
        b.parts = KEEP_PARTS + 1;
        b
    }

    /// Leaves the open chunk's points to the store's line journal from now on (`lazy`), or
    /// writes each line's as a part (the default).
    pub fn set_lazy(&mut self, lazy: bool) {
        self.lazy = lazy;
    }

    /// True when the open chunk's points are left to the store's line journal.
    pub fn is_lazy(&self) -> bool {
        self.lazy
    }

    /// The open chunk's points that no stored part holds yet: `(n, count, encodings)`, for
    /// one part (`None` when there are none). The store writes them when the lines that hold
    /// them are about to go, or when a reader asks (docs/history.md "Records").
    pub fn unwritten(&self) -> Option<(u64, u32, &[u8])> {
        (self.end > self.written).then(|| {
            (
                self.written,
                (self.end - self.written) as u32,
                &self.chunk[self.written_at..],
            )
        })
    }

    /// Every point so far is stored ([`Builder::unwritten`] was written).
    pub fn mark_written(&mut self) {
        if self.end > self.written {
            self.parts = self.parts.saturating_add(1);
        }
        self.written = self.end;
        self.written_at = self.chunk.len();
    }

    /// The block each level's open entries belong to, for [`Builder::restore`]: `(level,
    /// index)` of the open block of every level at `sealed`.
    pub fn open_blocks(sealed: u64) -> impl Iterator<Item = (u8, u64)> {
        (1..=TOP)
            .filter(move |l| !sealed.is_multiple_of(span(l + 1)))
            .map(move |l| (l, sealed / span(l + 1)))
    }

    /// Adds `p` as the next point; `write` gets what to store (its part, and when it ends a
    /// chunk, the seal).
    pub fn push(&mut self, p: &impl AsPoint, write: &mut dyn FnMut(Write<'_>)) {
        self.push_all(std::slice::from_ref(p), write);
    }

    /// True when `count` more points stay in the open chunk: [`Builder::push_open`] takes them.
    pub fn fits(&self, count: usize) -> bool {
        (self.end % CHUNK).saturating_add(count as u64) < CHUNK
    }

    /// Adds `points` (one line's) when they [fit](Builder::fits) in the open chunk: nothing is
    /// sealed, and their part is returned instead of written (`n`, `count`, their encodings),
    /// so the caller can queue it with the line. The same records as [`Builder::push_all`].
    pub fn push_open<P: AsPoint>(
        &mut self,
        points: impl IntoIterator<Item = P>,
    ) -> (u64, u32, &[u8]) {
        let (n, at) = (self.end, self.chunk.len());
        for p in points {
            self.add(p.as_point());
        }
        debug_assert!(
            self.end == n || !self.end.is_multiple_of(CHUNK),
            "push_open sealed"
        );
        if !self.lazy {
            self.mark_written();
        }
        (n, (self.end - n) as u32, &self.chunk[at..])
    }

    /// Adds `points` (one line's) as the next ones: `write` gets one part per chunk they
    /// fall in (when [lazy](Builder::set_lazy), only for the chunks they end), and the seal of
    /// every chunk they end. The part of a chunk they end holds every point of it that no part
    /// holds yet ([`Builder::unwritten`]).
    pub fn push_all<P: AsPoint>(
        &mut self,
        points: impl IntoIterator<Item = P>,
        write: &mut dyn FnMut(Write<'_>),
    ) {
        let (mut run_n, mut run_at) = (self.end, self.chunk.len());
        for p in points {
            self.add(p.as_point());
            if self.end.is_multiple_of(CHUNK) {
                self.seal(write);
                (run_n, run_at) = (self.end, 0);
            }
        }
        if self.end > run_n && !self.lazy {
            write(Write::Points {
                n: run_n,
                count: (self.end - run_n) as u32,
                bytes: Cow::Borrowed(&self.chunk[run_at..]),
            });
            self.mark_written();
        }
    }

    fn add(&mut self, p: PointRef<'_>) {
        let n = self.end;
        encode_point(&p, &mut self.chunk);
        if n == self.head.first {
            self.head.first_t = p.t;
        }
        let key = p.x.key();
        self.head.observe_keyed(p, key);
        let mark = Mark::keyed(n, p, key);
        self.end += 1;
        // A point joins level 1; a finished level-1 entry (every 16 points) joins the open
        // entry of every level above, so at each multiple of 16 (every seal) all levels hold
        // every point, as if each point had joined each level (`Summary::merge` does not depend
        // on the grouping).
        let slot = |l: u8| ((n >> (4 * u32::from(l))) % FANOUT) as u8;
        let first = &mut self.levels[0];
        match first.last_mut() {
            Some((s, sum)) if *s == slot(1) => sum.push(mark),
            _ => first.push((slot(1), Summary::of(mark))),
        }
        if self.end.is_multiple_of(span(1)) {
            let done = first.last().map(|(_, sum)| *sum);
            for (l, open) in (2..=TOP).zip(&mut self.levels[1..]) {
                let Some(entry) = done else { break };
                match open.last_mut() {
                    Some((s, sum)) if *s == slot(l) => sum.merge(&entry),
                    _ => open.push((slot(l), entry)),
                }
            }
        }
        for l in 1..=TOP {
            let open = &mut self.levels[usize::from(l - 1)];
            if self.end.is_multiple_of(span(l + 1)) {
                let mut record = Vec::new();
                encode_block(open, &mut record);
                open.clear();
                self.done.push((l, n / span(l + 1), record));
            }
        }
    }

    /// Ends the open chunk: its last part (every point no part holds yet), its record when it
    /// was stored in more than [`KEEP_PARTS`] parts, the blocks finished, the open ones, the head.
    fn seal(&mut self, write: &mut dyn FnMut(Write<'_>)) {
        let index = self.head.sealed;
        let count = self.end - index;
        let mut len = Vec::with_capacity(3);
        put_varint(count, &mut len);
        self.head.bytes += (len.len() + self.chunk.len()) as u64;
        let record = (self.parts.saturating_add(1) > KEEP_PARTS).then(|| {
            let mut value = Vec::with_capacity(len.len() + self.chunk.len());
            value.extend_from_slice(&len);
            value.extend_from_slice(&self.chunk);
            value
        });
        let n = self.written;
        let bytes = if self.written_at == 0 {
            // The whole chunk is its last part: it goes as it is (no copy), a new one begins.
            let next = Vec::with_capacity(self.chunk.capacity());
            Cow::Owned(std::mem::replace(&mut self.chunk, next))
        } else {
            Cow::Borrowed(&self.chunk[self.written_at..])
        };
        write(Write::Points {
            n,
            count: (self.end - n) as u32,
            bytes,
        });
        self.chunk.clear();
        // The sealed chunk's record (or its parts) holds every point so far.
        self.written = self.end;
        self.written_at = 0;
        self.parts = 0;
        if let Some(value) = record {
            write(Write::Put {
                level: 0,
                index,
                value,
                replaces: CHUNK,
            });
        }
        for (level, index, value) in self.done.drain(..) {
            write(Write::Put {
                level,
                index,
                value,
                replaces: 0,
            });
        }
        for (l, open) in (1..=TOP).zip(&self.levels) {
            if !open.is_empty() {
                let mut value = Vec::new();
                encode_block(open, &mut value);
                write(Write::Put {
                    level: l,
                    index: (self.end - 1) / span(l + 1),
                    value,
                    replaces: 0,
                });
            }
        }
        self.head.sealed = self.end;
        self.stored = self.head.clone();
        write(Write::Put {
            level: HEAD,
            index: 0,
            value: self.head.encode(),
            replaces: 0,
        });
    }

    /// Bytes kept: the sealed chunks' and the open chunk's (L59).
    pub fn bytes(&self) -> u64 {
        self.head.bytes + self.chunk.len() as u64
    }

    /// Drops the oldest sealed chunk, `count` points in `bytes` bytes, after which the first
    /// point kept was received at `next_t` (retention). False when there is none to drop.
    pub fn trim(
        &mut self,
        count: u64,
        bytes: u64,
        next_t: i64,
        write: &mut dyn FnMut(Write<'_>),
    ) -> bool {
        if self.head.first + count > self.head.sealed || count == 0 {
            return false;
        }
        for h in [&mut self.head, &mut self.stored] {
            h.first += count;
            h.bytes = h.bytes.saturating_sub(bytes);
            h.first_t = next_t;
        }
        write(Write::Trim {
            before: self.head.first,
        });
        write(Write::Put {
            level: HEAD,
            index: 0,
            value: self.stored.encode(),
            replaces: 0,
        });
        true
    }
}
