//! A writer connection as the store sees it: its identity, the tokens it holds, and how it
//! learns that it was displaced (P7, I3).

use std::any::Any;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use plotstream_proto::Status;
use tokio::sync::Notify;

/// A writer connection as the store sees it: an id and a way to tell it it was displaced.
#[derive(Debug)]
pub struct Conn {
    /// Unique per connection.
    pub id: u64,
    /// The peer's address, for the per-peer creation allowance (L43).
    pub peer: Option<IpAddr>,
    /// The status the connection must end with when it was displaced: 423 after a takeover,
    /// 449 when its figure stopped naming its token. 0 while it is not displaced.
    pub(super) kick: AtomicU16,
    /// Woken when the connection is displaced by a takeover.
    pub kicked: Notify,
    /// The tokens this connection became the writer of, so releasing them costs O(own tokens),
    /// not O(streams). Only touched under the store lock.
    pub(super) bound: Mutex<Vec<String>>,
    /// The journal ticket of its last accepted line: its final response waits until that is
    /// durable (docs/storage.md DC1).
    pub last_ticket: AtomicU64,
    /// When it last read bytes (ms since the Unix epoch, 0 before its first read): the receive
    /// time history keeps for every line of that read (docs/history.md "Points"), one clock
    /// read per read instead of one per line.
    pub(super) received_ms: AtomicI64,
    /// The streams it left lines in that are not queued to the journal yet: queued at the
    /// end of each read (`Store::flush_lines`), which also brings `last_ticket` up to them.
    /// Their cells, as `Any`: a connection is below the streams it writes.
    pub(super) buffered: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl Conn {
    /// True once another connection took one of its tokens (P7).
    pub fn is_displaced(&self) -> bool {
        self.kick.load(Ordering::Acquire) != 0
    }

    /// The status to end with, once displaced.
    pub fn kick_status(&self) -> Option<Status> {
        match self.kick.load(Ordering::Acquire) {
            0 => None,
            code => Some(Status::new(code)),
        }
    }

    /// True once this connection became the writer of `token` (and has not been released).
    pub fn holds(&self, token: &str) -> bool {
        self.bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|t| t == token)
    }

    /// Records that bytes arrived now (the receive time of the lines in them).
    pub fn mark_received(&self) {
        self.received_ms
            .store(super::history::now_ms(), Ordering::Relaxed);
    }

    /// The receive time of the line being applied: that of the read it came in, or now for a
    /// connection that does not record its reads.
    pub(super) fn received_ms(&self) -> i64 {
        match self.received_ms.load(Ordering::Relaxed) {
            0 => super::history::now_ms(),
            t => t,
        }
    }

    pub(super) fn displace(&self, status: Status) {
        // The first reason wins.
        let _ = self
            .kick
            .compare_exchange(0, status.code(), Ordering::AcqRel, Ordering::Acquire);
        self.kicked.notify_one();
    }
}
