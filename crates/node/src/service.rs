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
use crate::membership::MemberView;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::replica::{EscrowStats, PeerLag};
use crate::replica::{Output, Replica};
use crate::store::Store;
use ledger_crdt::RegionId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Why the service could not complete a request.
#[derive(Debug)]
pub enum Failure {
    /// The core refused it (storage failing among the reasons); nothing changed.
    Refused(Refusal),
    /// The request was applied in memory, but its flush failed or did not finish
    /// within [`ACK_TIMEOUT`]: it is not acknowledged, and takes effect if storage
    /// recovers (an idempotent retry then replays it, never charging twice).
    NotAcknowledged,
}

/// The longest a request waits for its write to become durable before it is
/// answered 503: a failing disk must never hang a request.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the group-commit thread wakes when idle: to show it is alive, and,
/// while storage fails, to try the failed write again.
const COMMIT_BEAT: Duration = Duration::from_millis(250);

/// The group-commit thread counts as stalled when it has not beaten for this
/// long (one fsync stuck on a dying disk, say).
pub const COMMIT_STALLED_AFTER: Duration = Duration::from_secs(5);

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
    /// Where peer-bound outputs go: the cluster transport, once started.
    outbound: Option<mpsc::UnboundedSender<Output>>,
    waiting: HashMap<u64, oneshot::Sender<Outcome>>,
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
    /// When the group-commit thread last went round its loop, ms.
    commit_beat_ms: AtomicU64,
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
                outbound: None,
                waiting: HashMap::new(),
            }),
            next_request: AtomicU64::new(0),
            pending: Mutex::new(false),
            kick: Condvar::new(),
            committing: Mutex::new(()),
            progress: watch::Sender::new(Progress {
                durable,
                failing: false,
            }),
            commit_beat_ms: AtomicU64::new(now_ms()),
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

    /// Executes `command` for `user`; returns once the result is durable, or
    /// fails within [`ACK_TIMEOUT`].
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
        let outcome = match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.lock().waiting.remove(&request);
                return Err(Failure::NotAcknowledged);
            }
        };
        match outcome {
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
            Ok(Outcome::StorageFailed) | Err(_) => Err(Failure::NotAcknowledged),
        }
    }

    /// The user's standing, once every write of this region that it shows is
    /// durable (at most [`ACK_TIMEOUT`]). A user with no write in flight is
    /// answered at once, even while storage fails.
    pub async fn receipt(&self, user: &str) -> Result<Receipt, Failure> {
        let (receipt, ticket) = {
            let inner = self.lock();
            inner.replica.receipt_durable_at(user)
        };
        if self.progress.borrow().durable < ticket {
            self.wake_group_commit();
            let mut rx = self.progress.subscribe();
            let reached =
                tokio::time::timeout(ACK_TIMEOUT, rx.wait_for(|p| p.durable >= ticket)).await;
            if !matches!(reached, Ok(Ok(_))) {
                return Err(Failure::NotAcknowledged);
            }
        }
        Ok(receipt)
    }

    /// Whether this region has seen `user` (a write here or replicated here).
    pub fn knows(&self, user: &str) -> bool {
        self.lock().replica.knows(user)
    }

    /// Whether `who` may make another request now.
    pub fn admit(&self, who: &str) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        limiter.admit(who, now_ms())
    }

    /// Whether storage works: the commit thread is alive, the last flush
    /// succeeded, and the store takes a write.
    pub fn ready(&self) -> bool {
        self.commit_thread_alive() && !self.progress.borrow().failing && self.store.writable()
    }

    /// Whether the last flush failed (and is being retried).
    pub fn storage_failing(&self) -> bool {
        self.progress.borrow().failing
    }

    /// How long ago the group-commit thread last went round its loop.
    pub fn commit_beat_age(&self) -> Duration {
        let beat = self.commit_beat_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(beat))
    }

    /// Whether the group-commit thread has beaten recently.
    pub fn commit_thread_alive(&self) -> bool {
        self.commit_beat_age() < COMMIT_STALLED_AFTER
    }

    /// Time passes for the replica (batches, anti-entropy, membership timers).
    pub fn tick(&self) {
        let mut inner = self.lock();
        inner.replica.tick(now_ms());
        self.after_input(&mut inner);
    }

    /// Routes what an input produced; wakes group commit if it wrote (accepted
    /// transfers, rebalancing), since those writes leave only once durable.
    fn after_input(&self, inner: &mut Inner) {
        route(inner);
        if inner.replica.written() > self.progress.borrow().durable || inner.replica.needs_flush() {
            self.wake_group_commit();
        }
    }

    /// Sends peer-bound outputs to the transport from now on.
    pub fn set_outbound(&self, tx: mpsc::UnboundedSender<Output>) {
        self.lock().outbound = Some(tx);
    }

    /// A replication message from peer region `from`.
    pub fn peer(&self, from: RegionId, bytes: &[u8]) {
        let mut inner = self.lock();
        inner.replica.peer(now_ms(), from, bytes);
        self.after_input(&mut inner);
    }

    /// A membership packet from the network.
    pub fn gossip(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        inner.replica.gossip(now_ms(), bytes);
        self.after_input(&mut inner);
    }

    /// Joins the cluster through these seed addresses.
    pub fn join(&self, seeds: &[SocketAddr]) {
        let mut inner = self.lock();
        inner.replica.join(now_ms(), seeds);
        self.after_input(&mut inner);
    }

    /// Starts a graceful leave: every right this region holds goes to live
    /// peers. Poll [`Service::left`] (ticking continues) until it is done.
    pub fn leave(&self) {
        let mut inner = self.lock();
        inner.replica.leave(now_ms());
        self.after_input(&mut inner);
    }

    /// Whether a graceful leave has finished.
    pub fn left(&self) -> bool {
        self.lock().replica.left()
    }

    /// What this node knows of the cluster, for `GET /v1/cluster`.
    pub fn cluster(&self) -> ClusterView {
        let now = now_ms();
        let inner = self.lock();
        ClusterView {
            identity: inner.replica.identity(),
            members: inner.replica.members().clone(),
            lag: inner.replica.lag(now),
            escrow: inner.replica.stats(),
            now_ms: now,
        }
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
    ///
    /// The thread never dies of an error: a failed flush is kept and tried again
    /// every [`COMMIT_BEAT`] until storage recovers, and a panic inside the store
    /// counts as a failed flush.
    pub fn start_group_commit(self: &Arc<Self>, linger: Duration) -> Result<(), NodeError> {
        let service = self.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                loop {
                    service.commit_beat_ms.store(now_ms(), Ordering::Relaxed);
                    let mut pending = service.pending.lock().unwrap_or_else(|p| p.into_inner());
                    if !*pending {
                        pending = service
                            .kick
                            .wait_timeout(pending, COMMIT_BEAT)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    let woken = *pending;
                    drop(pending);
                    if !woken && !service.storage_failing() {
                        continue;
                    }
                    if woken && !linger.is_zero() {
                        std::thread::sleep(linger);
                    }
                    // Cleared only now: writes during the linger ride this flush.
                    *service.pending.lock().unwrap_or_else(|p| p.into_inner()) = false;
                    // Failures are logged and kept for the next round inside.
                    let _ = service.commit();
                }
            })?;
        Ok(())
    }

    /// One group commit: write what changed, make it durable, release replies.
    /// Blocking; also used once at shutdown, where its result is the exit code.
    pub fn commit(&self) -> Result<(), NodeError> {
        let _one_at_a_time = self.committing.lock().unwrap_or_else(|p| p.into_inner());
        let persist = self.lock().replica.prepare_persist();
        let progress = *self.progress.borrow();
        // While failing, even a persist of scalars alone is tried: its success
        // is what tells the replica that storage is back.
        if persist.is_empty() && persist.ticket <= progress.durable && !progress.failing {
            // Nothing to write: all before it is durable (replays wait on this).
            let mut inner = self.lock();
            inner
                .replica
                .flushed(now_ms(), persist.ticket, persist.number);
            route(&mut inner);
            return Ok(());
        }
        let started = Instant::now();
        // A panic in the store must not kill this thread (every later write
        // would wait for it forever): it is a failed flush like any other.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.store.persist(&persist)
        }))
        .unwrap_or_else(|_| Err(NodeError::StorePanicked));
        self.metrics.observe_flush(started.elapsed());
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                inner
                    .replica
                    .flushed(now_ms(), persist.ticket, persist.number);
                route(&mut inner);
                let recovered = self.progress.borrow().failing;
                self.progress.send_modify(|p| {
                    p.durable = p.durable.max(persist.ticket);
                    p.failing = false;
                });
                if recovered {
                    tracing::warn!("storage recovered; writes are accepted again");
                }
                Ok(())
            }
            Err(e) => {
                if !self.progress.borrow().failing {
                    tracing::error!(error = %e, "group commit failed; requests it covered are not acknowledged, new writes are refused until storage recovers");
                }
                // The replica marks it all changed again for the next round.
                inner.replica.flush_failed(persist);
                for (_, tx) in inner.waiting.drain() {
                    let _ = tx.send(Outcome::StorageFailed);
                }
                self.progress.send_modify(|p| p.failing = true);
                Err(e)
            }
        }
    }
}

/// A snapshot of the cluster as this node sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node's identity.
    pub identity: crate::membership::NodeIdentity,
    /// Every other region seen.
    pub members: BTreeMap<RegionId, MemberView>,
    /// Replication lag of peers that are up.
    pub lag: BTreeMap<RegionId, PeerLag>,
    /// Escrow counters.
    pub escrow: EscrowStats,
    /// When the snapshot was taken, ms.
    pub now_ms: u64,
}

/// Hands the replica's outputs on: replies to their waiting requests, peer
/// bytes to the transport (dropped when there is none: a lone region).
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
            peer_bound => {
                if let Some(tx) = &inner.outbound {
                    let _ = tx.send(peer_bound);
                }
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
