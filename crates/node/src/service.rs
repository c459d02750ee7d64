//! The shell around the replica: one lock, group commit, replies.
//!
//! Requests run the [`Replica`] under one short lock and then wait, lock
//! released, for their reply. One group-commit thread repeatedly takes what the
//! replica says must be written ([`Replica::prepare_persist`]), writes and
//! flushes it to sled, and only then tells the replica ([`Replica::flushed`]),
//! which releases the replies of every request that flush covered. Many requests
//! share one `fsync`, and nothing is acknowledged before it is durable.

use crate::NodeError;
use crate::auth::Authenticator;
use crate::catalog::Catalog;
use crate::core::{Command, IdempotencyKey, Receipt, Refusal};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::replica::{Output, Persist, Replica};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// Why the service could not complete a request.
#[derive(Debug)]
pub enum Failure {
    /// The core refused it; nothing changed.
    Refused(Refusal),
    /// Storage failed; the request was not acknowledged (it may still apply later,
    /// which an idempotent retry resolves).
    Storage(NodeError),
}

/// A request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The caller's standing after the request.
    pub receipt: Receipt,
    /// Whether this replays an earlier request with the same idempotency key.
    pub replayed: bool,
}

enum Outcome {
    Replied(Result<Receipt, Refusal>, bool),
    StorageFailed,
}

struct Inner {
    replica: Replica,
    waiting: HashMap<u64, oneshot::Sender<Outcome>>,
    /// A persist whose write failed, retried before the next one.
    retry: Option<Persist>,
}

/// How far group commit has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Every write ticket up to this one is durable.
    durable: u64,
    /// The last flush failed.
    failing: bool,
}

/// Everything a request handler needs.
pub struct Service {
    inner: Mutex<Inner>,
    next_request: AtomicU64,
    pending: Mutex<bool>,
    kick: Condvar,
    /// Held for a whole commit: two commits in flight at once could release the
    /// replies of the first before its batch is durable.
    committing: Mutex<()>,
    progress: watch::Sender<Progress>,
    /// Durable storage.
    pub store: Store,
    /// The meme catalog.
    pub catalog: Catalog,
    /// Credential checks.
    pub auth: Authenticator,
    /// Per-user rate limit.
    pub limiter: Mutex<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Service {
    /// Assembles the service around a replica restored from `store`.
    pub fn new(
        replica: Replica,
        store: Store,
        catalog: Catalog,
        auth: Authenticator,
        limiter: RateLimiter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let durable = replica.written();
        Self {
            inner: Mutex::new(Inner {
                replica,
                waiting: HashMap::new(),
                retry: None,
            }),
            next_request: AtomicU64::new(0),
            pending: Mutex::new(false),
            kick: Condvar::new(),
            committing: Mutex::new(()),
            progress: watch::Sender::new(Progress {
                durable,
                failing: false,
            }),
            store,
            catalog,
            auth,
            limiter: Mutex::new(limiter),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The replica is only mutated through its own methods, each of which
        // leaves it consistent, so a panic elsewhere while holding the lock does
        // not leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Executes `command` for `user`; returns once the result is durable.
    pub async fn execute(
        &self,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
    ) -> Result<Answer, Failure> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.waiting.insert(request, tx);
            inner.replica.client(now_ms(), request, user, command, key);
            route(&mut inner);
            if inner.waiting.contains_key(&request) {
                self.wake_group_commit();
            }
        }
        match rx.await {
            Ok(Outcome::Replied(Ok(receipt), replayed)) => {
                if !replayed {
                    match command {
                        Command::Adjust(a) if a > 0 => self.metrics.credit(),
                        _ => self.metrics.spend(),
                    }
                }
                Ok(Answer { receipt, replayed })
            }
            Ok(Outcome::Replied(Err(refusal), _)) => Err(Failure::Refused(refusal)),
            Ok(Outcome::StorageFailed) | Err(_) => Err(Failure::Storage(NodeError::FlushFailed)),
        }
    }

    /// The user's standing, once everything it might show is durable.
    pub async fn receipt(&self, user: &str) -> Result<Receipt, NodeError> {
        let (receipt, ticket) = {
            let inner = self.lock();
            (inner.replica.receipt(user), inner.replica.written())
        };
        if self.progress.borrow().durable < ticket {
            self.wake_group_commit();
            let mut rx = self.progress.subscribe();
            rx.wait_for(|p| p.durable >= ticket || p.failing)
                .await
                .map_err(|_| NodeError::FlushFailed)?;
            if self.progress.borrow().durable < ticket {
                return Err(NodeError::FlushFailed);
            }
        }
        Ok(receipt)
    }

    /// Whether `who` may make another request now.
    pub fn admit(&self, who: &str) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        limiter.admit(who, now_ms())
    }

    /// Whether storage works: writable, and the last flush succeeded.
    pub fn ready(&self) -> bool {
        self.store.writable() && !self.progress.borrow().failing
    }

    /// Time passes for the replica (batches, anti-entropy).
    pub fn tick(&self) {
        let mut inner = self.lock();
        inner.replica.tick(now_ms());
        route(&mut inner);
    }

    /// Forgets expired idempotency records (persisted by the next flush).
    pub fn expire_records(&self) -> usize {
        let removed = self.lock().replica.expire_records(now_ms());
        if removed > 0 {
            self.wake_group_commit();
        }
        removed
    }

    fn wake_group_commit(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Only the first request since the last flush needs to wake the flusher;
        // the rest ride along, saving a futex syscall per request.
        if !std::mem::replace(&mut *pending, true) {
            self.kick.notify_one();
        }
    }

    /// Starts the group-commit thread. `linger` is how long it waits after the
    /// first write before flushing, so that more writes share one flush: each
    /// flush costs a log-buffer seal and an fsync, so fewer, larger flushes save
    /// CPU at the price of at most `linger` added latency.
    pub fn start_group_commit(self: &Arc<Self>, linger: Duration) -> Result<(), NodeError> {
        let service = self.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                loop {
                    let mut pending = service.pending.lock().unwrap_or_else(|p| p.into_inner());
                    while !*pending {
                        pending = service
                            .kick
                            .wait(pending)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    drop(pending);
                    if !linger.is_zero() {
                        std::thread::sleep(linger);
                    }
                    // Cleared only now: writes during the linger ride this flush.
                    *service.pending.lock().unwrap_or_else(|p| p.into_inner()) = false;
                    service.commit();
                }
            })?;
        Ok(())
    }

    /// One group commit: write what changed, make it durable, release replies.
    /// Blocking; also used once at shutdown.
    pub fn commit(&self) {
        let _one_at_a_time = self.committing.lock().unwrap_or_else(|p| p.into_inner());
        let (retry, persist) = {
            let mut inner = self.lock();
            (inner.retry.take(), inner.replica.prepare_persist())
        };
        if persist.is_empty() && retry.is_none() && persist.ticket <= self.progress.borrow().durable
        {
            return;
        }
        let started = Instant::now();
        let result = match &retry {
            Some(earlier) => self
                .store
                .persist(earlier)
                .and_then(|()| self.store.persist(&persist)),
            None => self.store.persist(&persist),
        };
        self.metrics.observe_flush(started.elapsed());
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                inner.replica.flushed(now_ms(), persist.ticket);
                route(&mut inner);
                self.progress.send_modify(|p| {
                    p.durable = p.durable.max(persist.ticket);
                    p.failing = false;
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; requests it covered are not acknowledged");
                // Keep what was not written, to write it first next time.
                let mut keep = retry.unwrap_or_default();
                keep.accounts.extend(persist.accounts);
                keep.seqs.extend(persist.seqs);
                keep.own.extend(persist.own);
                keep.records.extend(persist.records);
                keep.meta = persist.meta;
                keep.ticket = persist.ticket;
                inner.retry = Some(keep);
                for (_, tx) in inner.waiting.drain() {
                    let _ = tx.send(Outcome::StorageFailed);
                }
                self.progress.send_modify(|p| p.failing = true);
            }
        }
    }
}

/// Hands the replica's outputs on: replies to their waiting requests. (Peer
/// bytes go to the cluster transport once there is one; a single region has no
/// peers, so there are none.)
fn route(inner: &mut Inner) {
    while let Some(output) = inner.replica.poll_output() {
        match output {
            Output::Reply {
                request,
                result,
                replayed,
            } => {
                if let Some(tx) = inner.waiting.remove(&request) {
                    let _ = tx.send(Outcome::Replied(result, replayed));
                }
            }
            Output::Send { to, .. } => {
                tracing::debug!(%to, "no cluster transport yet; peer message dropped");
            }
            Output::Gossip { to, .. } => {
                tracing::debug!(%to, "no cluster transport yet; gossip dropped");
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: the shell's one clock, handed to
/// the core as an input.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
