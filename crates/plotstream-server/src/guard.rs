//! A count that undoes itself: a connection is counted when its guard is made and uncounted when
//! the guard drops, on every path out (return, error, panic, cancellation). Viewer slots are
//! counted the same way, by `store::queue::ViewerGuard`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::shared::Shared;

/// One open connection, counted in `plotstream_connections_open` and per peer address (L10,
/// L11).
#[derive(Debug)]
pub struct ConnGuard<'a> {
    shared: &'a Shared,
    peer: IpAddr,
    /// Open connections, this one included, when it was counted.
    pub n_open: u64,
    /// Open connections from this peer address, this one included.
    pub n_from_peer: usize,
}

impl<'a> ConnGuard<'a> {
    /// Counts a connection from `peer`.
    pub fn new(shared: &'a Shared, peer: IpAddr) -> ConnGuard<'a> {
        let n_open = shared
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let n_from_peer = {
            let mut map = shared
                .per_peer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(peer).or_default();
            *n += 1;
            *n
        };
        ConnGuard {
            shared,
            peer,
            n_open,
            n_from_peer,
        }
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
        self.shared
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}
