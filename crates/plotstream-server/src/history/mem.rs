//! A backend's history keys in a map, for the tests and the `history` fuzz target: what a
//! commit's `Batch::hist_writes` leaves in a store, read back as a [`Source`].

use std::collections::BTreeMap;

use super::query::Source;
use crate::durable::{Batch, HistKv};
use crate::error::StorageError;

/// One stream's records by `(level, index)`.
#[derive(Debug, Default)]
pub struct Mem(pub BTreeMap<(u8, u64), Vec<u8>>);

impl Source for Mem {
    fn read(
        &self,
        level: u8,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .0
            .range((level, from)..(level, to))
            .take(limit)
            .map(|((_, i), v)| (*i, v.clone()))
            .collect())
    }
}

impl Mem {
    /// Applies the history writes of `batch`, as a backend's commit does.
    pub fn commit(&mut self, batch: &Batch) {
        for w in batch.hist_writes() {
            match w {
                HistKv::Put {
                    level,
                    index,
                    value,
                    ..
                } => {
                    self.0.insert((level, index), value.to_cow().into_owned());
                }
                HistKv::Delete {
                    level, from, to, ..
                } => {
                    let keys: Vec<_> = self
                        .0
                        .range((level, from)..(level, to))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        self.0.remove(&k);
                    }
                }
            }
        }
    }
}
