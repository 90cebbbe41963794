//! Key usage: `last_used_at` noted on each authentication and written in batches, at most
//! once per key per minute, so the hot path never waits for a write.

use std::{
    collections::HashMap,
    sync::{Mutex, Weak},
};

use super::Broker;
use crate::{pb::storage::AccessKeyRecord, store::Store};

/// A `last_used_at` is written at most this often per key.
const USAGE_WRITE_EVERY: i64 = 60;

/// Usage times waiting to be written, by key id.
#[derive(Debug, Default)]
pub struct UsageBatch {
    pending: Mutex<HashMap<String, i64>>,
}

impl UsageBatch {
    /// Notes a use of `key` unless its stored time is less than a minute old, so the write
    /// path sees at most one write per key per minute.
    pub fn saw(&self, key: &AccessKeyRecord, now: i64) {
        if now - key.last_used_at >= USAGE_WRITE_EVERY
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.insert(key.id.clone(), now);
        }
    }

    fn take(&self) -> HashMap<String, i64> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Writes the usage times noted since the last call.
    pub fn flush(&self, store: &Store) {
        let mut written = Vec::new();
        for (id, at) in self.take() {
            match store.touch_access_key(&id, at) {
                Ok(()) => written.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "cannot record key usage"),
            }
        }
        if !written.is_empty() {
            tracing::info!(keys = ?written, "key usage recorded");
        }
    }
}

/// Writes batched usage times every few seconds until the broker is dropped.
pub fn spawn_usage_writer(broker: Weak<Broker>) {
    tokio::spawn(async move {
        let Some(period) = broker.upgrade().map(|b| b.config().usage_flush_period) else {
            return;
        };
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker.authn.flush_usage();
        }
    });
}
