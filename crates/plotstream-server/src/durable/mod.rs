//! What survives a restart (docs/storage.md): the journal that group-commits the store's
//! changes to a [`Backend`] (`journal`), and the backends: redb on disk (`redb`), Redis
//! (`redis`, issue #13's first part; its history in `redis_history`), and a fault
//! wrapper for the simulator's `disk-full` (`disk_full`); `ops` holds what they share: the ops,
//! the batch and its line records, what a load returns, and the trait.
//!
//! The store pushes [`Op`]s in apply order, under its lock, and gets a ticket back; a committer
//! thread commits everything pending at most `--sync-interval` apart in one transaction
//! (fsync'd), then publishes the highest ticket it made durable. A writer's final `200` waits
//! for its last line's ticket (docs/storage.md DC1); viewers never wait (fan-out happens before
//! the commit, DC3). When a commit fails the batch is kept and retried every interval, the
//! journal reports itself failing, and the store refuses new lines with 503 until a retry
//! succeeds (DC5).

mod cluster;
mod disk_full;
mod journal;
mod ops;
mod redb;
mod redis;
mod redis_history;

pub use self::cluster::{Acquired, ClusterLink, LiveRun, FOLLOWS_CHANNEL, OWNERS_CHANNEL};
pub use self::disk_full::DiskFull;
pub use self::journal::{Journal, Lines, Part, Progress, Queue, Run, MAX_BACKLOG};
pub use self::ops::{
    Backend, Batch, HistKv, HistValue, LineRun, Loaded, LoadedStream, Op, StorageError, Table,
};
pub use self::redb::{RedbBackend, RedbHistory};
pub use self::redis::{
    fence_of, OnFenced, RedisBackend, RedisLink, FENCE_SHIFT, PASSWORD_ENV as REDIS_PASSWORD_ENV,
};
pub use self::redis_history::RedisHistory;
