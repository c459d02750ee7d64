//! The engine: the replica behind one lock, group commit, replies, ticks.
//!
//! Requests run the [`Replica`] under one short lock and then wait, lock
//! released, for their reply. One group-commit thread repeatedly takes what the
//! replica says must be written ([`Replica::prepare_persist`]), appends it to
//! the write-ahead log with one `fdatasync` and applies it to sled
//! ([`Store::persist`]), and only then tells the replica
//! ([`Replica::handle_flushed`]), which releases the replies of every request
//! that flush covered. Many requests share one `fsync`, and nothing is
//! acknowledged before it is durable. A checkpoint thread flushes sled about
//! once a second and retires the log behind it. One task ticks the replica
//! when its [`Replica::poll_timeout`] comes, and sleeps otherwise.

use crate::hashing::Map;
use crate::shell::linger::{self, Linger};
use crate::shell::metrics::Metrics;
use crate::shell::notify::Notifier;
use crate::shell::store::{Store, Write as StoreWrite};
use crate::{
    ClientRequest, ClusterView, Command, IdempotencyKey, Millis, NodeError, Receipt, Refusal,
    Replica, RequestId, Seq, Standing, Transmit,
};
use ledger_crdt::RegionId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// Why the service could not complete a request.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The core refused it (storage failing among the reasons); nothing changed.
    Refused(Refusal),
    /// The request was applied in memory, but its flush failed or did not finish
    /// within [`ACK_TIMEOUT`]: it is not acknowledged, and takes effect if storage
    /// recovers (an idempotent retry then replays it, never charging twice).
    NotAcknowledged,
}

/// The longest a request waits for its write to become durable before it is
/// answered 503: a failing disk must never hang a request.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest the ticker sleeps, whatever the replica's deadline: a wall
/// clock stepped back must not park the timers.
const MAX_TICK_SLEEP_MS: u64 = 200;

/// How often the group-commit thread wakes when idle: to show it is alive, and,
/// while storage fails, to try the failed write again.
const COMMIT_BEAT: Duration = Duration::from_millis(250);

/// The group-commit thread counts as stalled when it has not beaten for this
/// long (one fsync stuck on a dying disk, say).
pub(crate) const COMMIT_STALLED_AFTER: Duration = Duration::from_secs(5);

/// A request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The caller's standing after the request.
    pub receipt: Receipt,
    /// Whether this replays an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// Which counter a request bumps when it succeeds.
enum Counted {
    Credit,
    Spend,
    Neither,
}

enum Outcome {
    Replied(Result<Receipt, Refusal>, bool),
    StorageFailed,
}

struct Inner {
    replica: Replica,
    /// Where transmits go: the cluster transport, once started.
    outbound: Option<mpsc::UnboundedSender<Transmit>>,
    waiting: Map<RequestId, oneshot::Sender<Outcome>>,
}

/// How far group commit has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Every write of ours up to this one is durable.
    durable: Seq,
    /// The last flush failed.
    failing: bool,
}

/// Writes signalled to the group commit since it last began a flush.
struct PendingWrites {
    count: u32,
    /// When the latest was signalled (also before the count was last cleared).
    last_at: Instant,
}

/// The replica, driven: group commit, reply routing, ticks.
pub(crate) struct Engine {
    inner: Mutex<Inner>,
    next_request: AtomicU64,
    /// Writes signalled since the group commit last began a flush.
    pending: Mutex<PendingWrites>,
    kick: Condvar,
    /// Held for a whole commit: two commits in flight at once could release the
    /// replies of the first before its batch is durable.
    committing: Mutex<()>,
    progress: watch::Sender<Progress>,
    /// When the group-commit thread last went round its loop, ms.
    commit_beat_ms: AtomicU64,
    /// When the replica next needs a tick, ms (see [`Engine::run_ticker`]).
    next_tick_ms: AtomicU64,
    /// Wakes the ticker when an input moved the next tick earlier.
    tick_sooner: Notify,
    store: Store,
    /// Writes of the shell's own (AI jobs' results) that ride the next group
    /// commit: one fsync for them and the ledger's writes, never a second
    /// flush competing with the ledger's.
    riders: Mutex<Vec<Rider>>,
    metrics: Arc<Metrics>,
    /// Low-balance notifications, found in the lines each commit writes.
    notifier: std::sync::OnceLock<Arc<Notifier>>,
    /// Requests inside [`Engine::run`] now: nearly all from HTTP clients; the
    /// few from background jobs (an AI meme's capture) can only end a linger
    /// early, never make it longer.
    in_flight: AtomicUsize,
    /// The HTTP connections open now, kept by the listener
    /// ([`Engine::connection_count`]).
    connections: Arc<AtomicUsize>,
}

/// Writes waiting to ride a group commit, and who to tell once it is durable.
struct Rider {
    writes: Vec<StoreWrite>,
    done: oneshot::Sender<bool>,
}

impl Engine {
    /// The engine around a replica restored from `store`.
    pub(crate) fn new(replica: Replica, store: Store, metrics: Arc<Metrics>) -> Self {
        let durable = replica.last_written();
        Self {
            inner: Mutex::new(Inner {
                replica,
                outbound: None,
                waiting: Map::default(),
            }),
            next_request: AtomicU64::new(0),
            pending: Mutex::new(PendingWrites {
                count: 0,
                last_at: Instant::now(),
            }),
            kick: Condvar::new(),
            committing: Mutex::new(()),
            progress: watch::Sender::new(Progress {
                durable,
                failing: false,
            }),
            commit_beat_ms: AtomicU64::new(now_ms()),
            next_tick_ms: AtomicU64::new(0),
            tick_sooner: Notify::new(),
            store,
            riders: Mutex::new(Vec::new()),
            metrics,
            notifier: std::sync::OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            connections: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of open HTTP connections, for the listener to keep: the
    /// group commit stops lingering once every one of them has a request in
    /// here, since no other write can come from them.
    pub(crate) fn connection_count(&self) -> Arc<AtomicUsize> {
        self.connections.clone()
    }

    /// The HTTP connections open now (0 before serving).
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether every open HTTP connection has a request inside
    /// [`Engine::run`]. HTTP/1.1 carries one request at a time per
    /// connection, so until a reply goes out, no client can send a write: the
    /// linger would wait for writes that cannot come.
    fn every_connection_waits(&self) -> bool {
        let open = self.open_connections();
        open > 0 && self.in_flight.load(Ordering::Relaxed) >= open
    }

    /// Sends low-balance notifications from now on (set once, at start).
    pub(crate) fn set_notifier(&self, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// The node's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Makes `writes` durable with the next group commit; fails within
    /// [`ACK_TIMEOUT`] if storage does not confirm them.
    pub(crate) async fn write_durable(&self, writes: Vec<StoreWrite>) -> Result<(), Failure> {
        let (done, confirmed) = oneshot::channel();
        self.riders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rider { writes, done });
        self.wake_group_commit();
        match tokio::time::timeout(ACK_TIMEOUT, confirmed).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(Failure::NotAcknowledged),
        }
    }

    /// Runs `f` on the store off the async threads (sled's calls block); a
    /// panic in it is a store failure like any other.
    pub(crate) async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || f(engine.store()))
            .await
            .map_err(|_| NodeError::StorePanicked)?
    }

    /// The store, for the AI job path's own writes.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// This node's region and start, as a prefix of request ids (`r1-<hex ms>`).
    pub(crate) fn identity_prefix(&self) -> String {
        let identity = self.lock().replica.identity();
        format!("r{}-{:x}", identity.region.0, identity.generation)
    }

    /// Every open hold of this region.
    pub(crate) fn open_holds(&self) -> Vec<(crate::HoldId, u64)> {
        self.lock().replica.open_hold_ids()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The replica is only mutated through its own methods, each of which
        // leaves it consistent, so a panic elsewhere while holding the lock does
        // not leave it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Executes `command` for `user`, letting it wait up to `wait_for_rights`
    /// for rights held by other regions; returns once the result is durable,
    /// or fails within that wait plus [`ACK_TIMEOUT`].
    pub(crate) async fn execute(
        &self,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
        wait_for_rights: Duration,
    ) -> Result<Answer, Failure> {
        let skip_none = |_: &Replica, _: Millis| false;
        let answer = self
            .run(user, command, key, wait_for_rights, skip_none)
            .await?;
        // Never `None`: nothing was skipped.
        answer.ok_or(Failure::NotAcknowledged)
    }

    /// A memes call charged at the curated price, unless the premium tier
    /// covers `user` (then `None`, nothing done): the tier is read under the
    /// same lock as the charge, so the spend path takes no extra lock.
    pub(crate) async fn curated_call(
        &self,
        user: &str,
        key: Option<IdempotencyKey>,
        wait_for_rights: Duration,
    ) -> Result<Option<Answer>, Failure> {
        let premium = |replica: &Replica, now: Millis| replica.memes_ai(user, now);
        self.run(user, Command::ChargeCall, key, wait_for_rights, premium)
            .await
    }

    /// Runs `command` unless `skip` says not to (checked under the lock).
    async fn run(
        &self,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
        wait_for_rights: Duration,
        skip: impl FnOnce(&Replica, Millis) -> bool,
    ) -> Result<Option<Answer>, Failure> {
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let _in_flight = InFlight::enter(&self.in_flight);
        let counted = match command {
            Command::Adjust(a) if a > 0 => Counted::Credit,
            Command::ChargeCall | Command::Adjust(_) | Command::Capture { .. } => Counted::Spend,
            _ => Counted::Neither,
        };
        let mut request = ClientRequest::new(id, user, command, key);
        request.wait_for_rights_ms = u64::try_from(wait_for_rights.as_millis()).unwrap_or(u64::MAX);
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let now = now();
            if skip(&inner.replica, now) {
                return Ok(None);
            }
            inner.waiting.insert(id, tx);
            inner.replica.handle_client(now, request);
            self.after_input(&mut inner);
        }
        let outcome = match tokio::time::timeout(ACK_TIMEOUT + wait_for_rights, rx).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.lock().waiting.remove(&id);
                return Err(Failure::NotAcknowledged);
            }
        };
        match outcome {
            Ok(Outcome::Replied(Ok(receipt), replayed)) => {
                if !replayed {
                    match counted {
                        Counted::Credit => self.metrics.credit(),
                        Counted::Spend => self.metrics.spend(),
                        Counted::Neither => {}
                    }
                }
                Ok(Some(Answer { receipt, replayed }))
            }
            Ok(Outcome::Replied(Err(refusal), _)) => Err(Failure::Refused(refusal)),
            Ok(Outcome::StorageFailed) | Err(_) => Err(Failure::NotAcknowledged),
        }
    }

    /// The user's standing, once every write of this region that it shows is
    /// durable (at most [`ACK_TIMEOUT`]). A user with no write in flight is
    /// answered at once, even while storage fails.
    pub(crate) async fn standing(&self, user: &str) -> Result<Standing, Failure> {
        let (standing, shown) = {
            let inner = self.lock();
            inner.replica.standing_durable_at(user, now())
        };
        if self.progress.borrow().durable < shown {
            self.wake_group_commit();
            let mut rx = self.progress.subscribe();
            let reached =
                tokio::time::timeout(ACK_TIMEOUT, rx.wait_for(|p| p.durable >= shown)).await;
            if !matches!(reached, Ok(Ok(_))) {
                return Err(Failure::NotAcknowledged);
            }
        }
        Ok(standing)
    }

    /// Whether this region has seen `user` (a write here or replicated here).
    pub(crate) fn knows(&self, user: &str) -> bool {
        self.lock().replica.knows(user)
    }

    /// Whether storage works: the commit thread is alive, the last flush
    /// succeeded, and the store takes a write.
    pub(crate) fn ready(&self) -> bool {
        self.commit_thread_alive() && !self.progress.borrow().failing && self.store.writable()
    }

    /// Whether the last flush failed (and is being retried).
    pub(crate) fn storage_failing(&self) -> bool {
        self.progress.borrow().failing
    }

    /// How long ago the group-commit thread last went round its loop.
    pub(crate) fn commit_beat_age(&self) -> Duration {
        let beat = self.commit_beat_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(beat))
    }

    /// Whether the group-commit thread has beaten recently.
    pub(crate) fn commit_thread_alive(&self) -> bool {
        self.commit_beat_age() < COMMIT_STALLED_AFTER
    }

    /// Ticks the replica whenever its [`Replica::poll_timeout`] comes, and
    /// sooner when an input asks for it; runs for the life of the node.
    pub(crate) async fn run_ticker(self: Arc<Self>) {
        loop {
            let due = self.next_tick_ms.load(Ordering::Acquire);
            let wait = due.saturating_sub(now_ms()).min(MAX_TICK_SLEEP_MS);
            if wait > 0 {
                // A wake registered before this wait still counts (Notify
                // keeps one permit), so no input's deadline is missed.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    () = self.tick_sooner.notified() => continue,
                }
            }
            let mut inner = self.lock();
            inner.replica.handle_tick(now());
            // The deadline is re-read from the replica: set it outright, even
            // if later than before.
            self.next_tick_ms
                .store(inner.replica.poll_timeout().0, Ordering::Release);
            self.after_input(&mut inner);
        }
    }

    /// Routes what an input produced; wakes group commit if it wrote (accepted
    /// transfers, rebalancing), since those writes leave only once durable;
    /// wakes the ticker if the replica needs a tick sooner than planned.
    fn after_input(&self, inner: &mut Inner) {
        route(inner);
        if inner.replica.last_written() > self.progress.borrow().durable
            || inner.replica.needs_flush()
        {
            self.wake_group_commit();
        }
        let due = inner.replica.poll_timeout().0;
        if due < self.next_tick_ms.fetch_min(due, Ordering::AcqRel) {
            self.tick_sooner.notify_one();
        }
    }

    /// Sends transmits to the transport from now on.
    pub(crate) fn set_outbound(&self, tx: mpsc::UnboundedSender<Transmit>) {
        self.lock().outbound = Some(tx);
    }

    /// A replication message from peer region `from`.
    pub(crate) fn peer(&self, from: RegionId, bytes: &[u8]) {
        let mut inner = self.lock();
        inner.replica.handle_peer(now(), from, bytes);
        self.after_input(&mut inner);
    }

    /// A membership packet from the network.
    pub(crate) fn gossip(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        inner.replica.handle_gossip(now(), bytes);
        self.after_input(&mut inner);
    }

    /// Joins the cluster through these seed addresses.
    pub(crate) fn join(&self, seeds: &[SocketAddr]) {
        let mut inner = self.lock();
        inner.replica.join(now(), seeds);
        self.after_input(&mut inner);
    }

    /// Starts a graceful leave: every right this region holds goes to live
    /// peers. Poll [`Engine::left`] (ticking continues) until it is done.
    pub(crate) fn leave(&self) {
        let mut inner = self.lock();
        inner.replica.leave(now());
        self.after_input(&mut inner);
    }

    /// Whether a graceful leave has finished.
    pub(crate) fn left(&self) -> bool {
        self.lock().replica.left()
    }

    /// What this node knows of the cluster, for `GET /v1/cluster`.
    pub(crate) fn cluster(&self) -> ClusterView {
        self.lock().replica.cluster_view(now())
    }

    /// Forgets expired idempotency records (persisted by the next flush).
    pub(crate) fn expire_records(&self) -> usize {
        let removed = self.lock().replica.expire_records(now());
        if removed > 0 {
            self.wake_group_commit();
        }
        removed
    }

    fn wake_group_commit(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.count = pending.count.saturating_add(1);
        // The linger ends once writes stop coming.
        pending.last_at = Instant::now();
        // Once every connection waits, a lingering flusher is also woken to
        // flush at once.
        if linger::wakes_flusher(pending.count) || self.every_connection_waits() {
            self.kick.notify_one();
        }
    }

    /// Starts the group-commit thread. `linger` is the longest it waits after
    /// the first write before flushing, so that more writes share one flush,
    /// while writes come faster than one per flush and until they stop coming
    /// ([`Linger`]); at most `linger` added latency.
    ///
    /// The thread never dies of an error: a failed flush is kept and tried again
    /// every [`COMMIT_BEAT`] until storage recovers, and a panic inside the store
    /// counts as a failed flush.
    pub(crate) fn start_group_commit(self: &Arc<Self>, linger: Duration) -> Result<(), NodeError> {
        let service = self.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                let mut linger = Linger::new(linger);
                loop {
                    service.commit_beat_ms.store(now_ms(), Ordering::Relaxed);
                    let mut pending = service.pending.lock().unwrap_or_else(|p| p.into_inner());
                    if pending.count == 0 {
                        pending = service
                            .kick
                            .wait_timeout(pending, COMMIT_BEAT)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    let woken = pending.count > 0;
                    if !woken && !service.storage_failing() {
                        continue;
                    }
                    if woken {
                        let woke = Instant::now();
                        while let Some(wait) = linger.wait_before_flush(
                            woke,
                            pending.last_at,
                            Instant::now(),
                            pending.count,
                            !service.every_connection_waits(),
                        ) {
                            // Unlocked while it waits; woken early once every
                            // connection waits or enough writes share the
                            // flush (see `wake_group_commit`).
                            pending = service
                                .kick
                                .wait_timeout(pending, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                    // Cleared only now: writes during the linger ride this flush.
                    linger.flushing(std::mem::take(&mut pending.count));
                    drop(pending);
                    // Failures are logged and kept for the next round inside.
                    let _ = service.commit();
                }
            })?;
        Ok(())
    }

    /// Starts the checkpoint thread: every `interval`, sled is flushed and the
    /// write-ahead log behind it deleted ([`Store::checkpoint`]), off the
    /// group-commit thread, so a spend never waits for sled's flush. A failed
    /// checkpoint closes the store; the next group commit reopens it and
    /// replays the log.
    pub(crate) fn start_checkpoints(self: &Arc<Self>, interval: Duration) -> Result<(), NodeError> {
        let service = self.clone();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(interval);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        service.store.checkpoint()
                    }))
                    .unwrap_or_else(|_| Err(NodeError::StorePanicked));
                    match result {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::error!(error = %e, "checkpoint failed; the log is kept and replayed when storage reopens");
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(())
    }

    /// One group commit: write what changed, make it durable, release replies.
    /// Blocking; also used once at shutdown, where its result is the exit code.
    pub(crate) fn commit(&self) -> Result<(), NodeError> {
        let _one_at_a_time = self.committing.lock().unwrap_or_else(|p| p.into_inner());
        let persist = self.lock().replica.prepare_persist();
        let riders = std::mem::take(&mut *self.riders.lock().unwrap_or_else(|p| p.into_inner()));
        let progress = *self.progress.borrow();
        // While failing, even a persist of scalars alone is tried: its success
        // is what tells the replica that storage is back.
        if riders.is_empty()
            && persist.is_empty()
            && persist.upto <= progress.durable
            && !progress.failing
        {
            // Nothing to write: all before it is durable (replays wait on this).
            let mut inner = self.lock();
            inner
                .replica
                .handle_flushed(now(), persist.upto, persist.number);
            self.after_input(&mut inner);
            return Ok(());
        }
        let started = Instant::now();
        // A panic in the store must not kill this thread (every later write
        // would wait for it forever): it is a failed flush like any other.
        let mut extra: Vec<StoreWrite> = Vec::new();
        // Crossings go into the outbox in the same record as their lines.
        let notifier = self.notifier.get();
        if let Some(n) = notifier {
            extra.extend(n.writes(&persist.statement));
        }
        let mut confirm = Vec::with_capacity(riders.len());
        for rider in riders {
            extra.extend(rider.writes);
            confirm.push(rider.done);
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.store.persist(&persist, extra)
        }))
        .unwrap_or_else(|_| Err(NodeError::StorePanicked));
        for done in confirm {
            let _ = done.send(result.is_ok());
        }
        if let (Some(n), true) = (notifier, result.is_ok()) {
            n.wake();
        }
        self.metrics.observe_flush(started.elapsed());
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                inner
                    .replica
                    .handle_flushed(now(), persist.upto, persist.number);
                let recovered = self.progress.borrow().failing;
                self.progress.send_modify(|p| {
                    p.durable = p.durable.max(persist.upto);
                    p.failing = false;
                });
                self.after_input(&mut inner);
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
                inner.replica.handle_flush_failed(persist);
                for (_, tx) in inner.waiting.drain() {
                    let _ = tx.send(Outcome::StorageFailed);
                }
                self.progress.send_modify(|p| p.failing = true);
                Err(e)
            }
        }
    }
}

/// One client request inside [`Engine::run`], counted while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands the replica's outputs on: replies to their waiting requests,
/// transmits to the transport (dropped when there is none: a lone region).
fn route(inner: &mut Inner) {
    while let Some(reply) = inner.replica.poll_reply() {
        if let Some(tx) = inner.waiting.remove(&reply.request) {
            let _ = tx.send(Outcome::Replied(reply.result, reply.replayed));
        }
    }
    while let Some(transmit) = inner.replica.poll_transmit() {
        if let Some(tx) = &inner.outbound {
            let _ = tx.send(transmit);
        }
    }
}

/// The shell's one clock, handed to the core as an input.
pub(crate) fn now() -> Millis {
    Millis(now_ms())
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
