//! Group commit: callers whose writes are already applied wait here until one flush covers
//! them all, so an RPC answers OK only after its write is on disk.
//!
//! sled 0.34's `flush` ends in `sync_file_range`, which does not make data survive power loss
//! (spacejam/sled#1351, #1452); every flush here is followed by `fdatasync` of sled's log file.

use std::{fs::File, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// How many times the flusher yields while writers keep joining a batch.
const LINGER_YIELDS: usize = 4;

type Waiter = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl GroupCommit {
    /// Starts the task that owns flushing for `db`; `log` is sled's data file.
    pub fn start(db: sled::Db, log: File) -> Self {
        let (requests, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let log = Arc::new(log);
        tokio::spawn(async move {
            let mut last_batch = 0;
            while let Some(first) = rx.recv().await {
                // Everyone who asked before this flush starts is covered by it.
                let mut batch = vec![first];
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                // Under concurrency (the last flush covered several writers), let the tasks
                // that are ready run first: those mid-write join this flush instead of
                // paying for the next one. Alone, a writer flushes at once.
                if last_batch > 1 {
                    for _ in 0..LINGER_YIELDS {
                        tokio::task::yield_now().await;
                        let before = batch.len();
                        while let Ok(next) = rx.try_recv() {
                            batch.push(next);
                        }
                        if batch.len() == before {
                            break;
                        }
                    }
                }
                last_batch = batch.len();
                let (db, log) = (db.clone(), Arc::clone(&log));
                let outcome = tokio::task::spawn_blocking(move || sync(&db, &log))
                    .await
                    .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))))
                    .map_err(Arc::new);
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "group commit failed");
                }
                for waiter in batch {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        Self { requests }
    }

    /// Waits until every write applied before this call is durable.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Durability(e.to_string())),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// One durable flush: sled's own flush, then fdatasync so the bytes survive power loss.
pub(super) fn sync(db: &sled::Db, log: &File) -> Result<(), StoreError> {
    db.flush()?;
    log.sync_data()?;
    Ok(())
}
