//! The mint gate: orders a mint's "is the parent still live?" check and its writes against
//! the revocation (or change) of that parent, without a sled transaction per mint.
//!
//! sled 0.34 seals and writes its I/O buffer twice for every transaction or batch (and
//! `sync_file_range`s each write), so a transactional mint cost two disk writes of its own
//! instead of sharing the group commit's. A mint therefore writes with plain inserts while
//! it holds the parent's stripe shared; whoever marks a parent revoked, replaces or deletes a
//! key holds that parent's stripe exclusively. So either the revocation comes first and the
//! mint sees the parent dead, or the mint's child-index entry exists before the revocation
//! commits, and the cascade (which scans the index after committing) finds it.

use std::{
    collections::BTreeSet,
    hash::{BuildHasher, RandomState},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

/// Stripes: enough that unrelated parents rarely share one, few enough to lock all at once.
const STRIPES: usize = 64;

/// Striped readers–writer locks keyed by parent id (access-key id or jti).
#[derive(Debug)]
pub struct MintGate {
    stripes: Vec<RwLock<()>>,
    hasher: RandomState,
}

impl Default for MintGate {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl MintGate {
    fn stripe(&self, id: &str) -> usize {
        (self.hasher.hash_one(id) as usize) % STRIPES
    }

    /// Held by a mint from `parent` across its liveness check and its writes.
    pub fn mint(&self, parent: &str) -> RwLockReadGuard<'_, ()> {
        let lock = &self.stripes[self.stripe(parent)];
        // A poisoned stripe only means a panic elsewhere while it was held; the lock
        // protects no data, so go on.
        lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held while any of `ids` is revoked, replaced or deleted. Stripes are taken in index
    /// order, so two revocations never deadlock.
    pub fn change<'a, I>(&self, ids: I) -> Vec<RwLockWriteGuard<'_, ()>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let stripes: BTreeSet<usize> = ids.into_iter().map(|id| self.stripe(id)).collect();
        stripes
            .into_iter()
            .map(|i| {
                self.stripes[i]
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            })
            .collect()
    }
}
