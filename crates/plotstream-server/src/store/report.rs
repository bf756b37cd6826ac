//! What the store reports to the routes and to start-up.

/// One row of `GET /api/streams`.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The token.
    pub token: String,
    /// The read id (pages and feeds).
    pub read_id: String,
    /// The newest seq.
    pub last_seq: u64,
    /// Window length.
    pub count: usize,
    /// A writer holds the token.
    pub writer_connected: bool,
    /// Subscribed viewers.
    pub n_viewers: usize,
}

/// What `Store::recover` found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Streams restored.
    pub streams: usize,
    /// Points in their windows.
    pub points: usize,
    /// Lines replayed after the snapshots.
    pub lines: usize,
    /// What was damaged and dropped, one sentence each (DC6).
    pub dropped: Vec<String>,
}

/// A followed stream, as the driver tails it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The write token.
    pub token: String,
    /// The generation whose lines it reads.
    pub gen: u64,
    /// The last seq this copy has.
    pub last_seq: u64,
    /// The copy must be loaded again before it is followed.
    pub stale: bool,
}

/// What a run of lines published live did to a copy that follows its stream
/// (`Store::follow_live`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Applied (or already there).
    Applied,
    /// It starts past the copy's last seq: the lines between are to be read from the stored
    /// ones, now rather than at the next poll.
    Ahead,
    /// Not for this copy (not followed here, owned here, stale, another epoch).
    Ignored,
}
