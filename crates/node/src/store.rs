//! Durable storage in sled, with group commit.
//!
//! Writes go into sled right away (in memory and in its log buffer) but are not
//! durable until a flush returns. Every write takes a *ticket*; one dedicated
//! thread flushes whatever has been written so far and then publishes the highest
//! ticket that flush covered. Requests wait for their ticket before replying, so a
//! crash never loses an acknowledged write, and many requests share one `fsync`.
//!
//! The flusher is a plain thread calling the blocking `flush`, not `flush_async`:
//! sled 0.34's `flush_async` hands each flush to its own growing thread pool, and
//! that extra hop per group commit capped throughput (see the README's benchmark).
//!
//! Keys (one sled tree, so that an account and its idempotency record are written
//! in one atomic batch):
//! - `a` + user id → encoded [`Account`]
//! - `i` + scope + `0x00` + key → encoded [`IdempotencyRecord`]

use crate::NodeError;
use crate::core::IdempotencyRecord;
use crate::metrics::Metrics;
use ledger_crdt::{Account, wire};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// The most bytes of an idempotency record (fingerprint included).
const MAX_RECORD_BYTES: usize = 4 * 1024;

/// How far group commit has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Every ticket up to this one was covered by a flush that failed.
    failed: u64,
}

/// The node's sled database and its group-commit machinery.
pub struct Store {
    db: sled::Db,
    written: AtomicU64,
    /// Set when something was written since the flusher last looked.
    pending: Mutex<bool>,
    kick: Condvar,
    progress: watch::Sender<Progress>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, NodeError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Our group commit flushes; sled's own 500 ms flusher would only
            // compete with it for the log.
            .flush_every_ms(None)
            .open()?;
        Ok(Arc::new(Self {
            db,
            written: AtomicU64::new(0),
            pending: Mutex::new(false),
            kick: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            metrics,
        }))
    }

    /// Loads a user's account; a user never written has only the welcome grant.
    pub fn account(&self, user: &str) -> Result<Account, NodeError> {
        match self.db.get(account_key(user))? {
            Some(bytes) => Ok(Account::from_bytes(&bytes)?),
            None => Ok(Account::new()),
        }
    }

    /// Loads the idempotency record under `scope`/`key`, if any.
    pub fn record(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, NodeError> {
        match self.db.get(record_key(scope, key))? {
            Some(bytes) => Ok(Some(wire::decode::<_, MAX_RECORD_BYTES>(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes an account and, atomically with it, an idempotency record. Returns
    /// the ticket to wait for. Callers serialise writes per account.
    pub fn write(
        &self,
        user: &str,
        account: &Account,
        record: Option<(&str, &str, &IdempotencyRecord)>,
    ) -> Result<u64, NodeError> {
        let mut batch = sled::Batch::default();
        batch.insert(account_key(user), account.to_bytes()?);
        if let Some((scope, key, record)) = record {
            batch.insert(record_key(scope, key), wire::encode(record)?);
        }
        self.db.apply_batch(batch)?;
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Only the first write since the last flush needs to wake the flusher; the
        // rest ride along, saving a futex syscall per request.
        if !std::mem::replace(&mut *pending, true) {
            self.kick.notify_one();
        }
        Ok(ticket)
    }

    /// The ticket covering everything written so far: wait for it before showing
    /// state that might include writes not yet durable.
    pub fn current_ticket(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Waits until `ticket` is durable.
    pub async fn durable(&self, ticket: u64) -> Result<(), NodeError> {
        let mut rx = self.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.durable >= ticket || p.failed >= ticket)
            .await
            .map_err(|_| NodeError::FlushFailed)?;
        if progress.durable >= ticket {
            Ok(())
        } else {
            Err(NodeError::FlushFailed)
        }
    }

    /// Starts the group-commit thread: wait for a write, flush everything
    /// written so far, publish how far it got; for the life of the process.
    ///
    /// `linger` is how long the flusher waits after the first write before
    /// flushing, so that more writes share one flush: each sled flush costs a
    /// buffer seal, a thread hop and an fsync, so fewer, larger flushes save CPU at
    /// the price of at most `linger` added latency.
    pub fn start_group_commit(
        self: &Arc<Self>,
        linger: std::time::Duration,
    ) -> Result<(), NodeError> {
        let store = self.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                loop {
                    let mut pending = store.pending.lock().unwrap_or_else(|p| p.into_inner());
                    while !*pending {
                        pending = store.kick.wait(pending).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(pending);
                    if !linger.is_zero() {
                        std::thread::sleep(linger);
                    }
                    // Cleared only now: writes during the linger ride this flush
                    // without waking anyone.
                    *store.pending.lock().unwrap_or_else(|p| p.into_inner()) = false;
                    store.flush_once();
                }
            })?;
        Ok(())
    }

    /// One group commit: flushes everything written before it started. Blocking.
    pub fn flush_once(&self) {
        let target = self.written.load(Ordering::SeqCst);
        if target <= self.progress.borrow().durable {
            return;
        }
        let started = Instant::now();
        let result = self.db.flush();
        self.metrics.observe_flush(started.elapsed());
        self.progress.send_modify(|p| match result {
            Ok(_) => p.durable = p.durable.max(target),
            Err(ref e) => {
                tracing::error!(error = %e, "group commit failed");
                p.failed = p.failed.max(target);
            }
        });
    }

    /// Whether storage accepts a write right now (for `/ready`).
    pub fn writable(&self) -> bool {
        self.db.insert(b"~ready", &b"1"[..]).is_ok()
            && self.progress.borrow().failed <= self.progress.borrow().durable
    }

    /// Deletes idempotency records for which `expired` says so. A record rewritten
    /// meanwhile is left alone. Returns how many were removed.
    pub fn sweep_records(
        &self,
        expired: impl Fn(&IdempotencyRecord) -> bool,
    ) -> Result<usize, NodeError> {
        let mut removed = 0;
        for item in self.db.scan_prefix(b"i") {
            let (key, bytes) = item?;
            let Ok(record) = wire::decode::<IdempotencyRecord, MAX_RECORD_BYTES>(&bytes) else {
                continue;
            };
            if expired(&record)
                && self
                    .db
                    .compare_and_swap(&key, Some(&bytes), None as Option<&[u8]>)?
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn account_key(user: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + user.len());
    key.push(b'a');
    key.extend_from_slice(user.as_bytes());
    key
}

fn record_key(scope: &str, idempotency_key: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + scope.len() + idempotency_key.len());
    key.push(b'i');
    key.extend_from_slice(scope.as_bytes());
    key.push(0);
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}
