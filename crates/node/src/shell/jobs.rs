//! AI meme jobs: a bounded queue, a worker pool below the core count, and the
//! two-phase charge.
//!
//! A subscriber's `GET /memes` becomes a job:
//! 1. Its id comes from the Idempotency-Key (or is random), so a retry finds
//!    the same job: it never takes a second hold or starts a second job.
//! 2. A queue slot is reserved first (a full queue answers at once, nothing
//!    held); then the job's record is written and the hold of the AI price is
//!    taken; the hold's flush makes both durable before the job is queued.
//! 3. A worker generates the meme and writes the result (the spec, or the
//!    server's PNG) with a flush. **Only then is the hold captured**: a charged
//!    meme can always be served, after a crash too, and a crash before the
//!    result is durable charges nothing. At restart an open hold whose job has
//!    a durable result is captured; any other job's hold is released.
//! 4. A failure releases the hold: nothing is charged. So does the hold's TTL,
//!    if the worker never comes back.
//!
//! Drawing is CPU-bound: it runs on the render threads (idle priority) behind
//! the shared CPU semaphore (see [`crate::shell::images`]), at most
//! `--ai-workers` at once.

use crate::shell::engine::{Answer, Engine, Failure, now_ms};
use crate::shell::generator::{Artwork, GenRequest, MemeGenerator};
use crate::shell::images::Images;
use crate::shell::keys;
use crate::shell::metrics::Metrics;
use crate::shell::store::Write as StoreWrite;
use crate::{Command, IdempotencyKey, NodeError, Receipt, Refusal};
use bincode::{Decode, Encode};
use ledger_crdt::wire;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Finished jobs stay in memory this long (then they are read from the store).
const KEEP_FINISHED_MS: u64 = 10 * 60 * 1000;
/// A server's PNG is kept this long.
pub(crate) const PNG_TTL_MS: u64 = 24 * 3600 * 1000;
/// The most bytes of a job record.
const MAX_JOB_RECORD_BYTES: usize = 8 * 1024;
/// Attempts at a capture or release whose flush was not acknowledged.
const CLOSE_ATTEMPTS: u32 = 3;

/// An AI meme, as delivered.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct AiMeme {
    /// The image's id (see [`crate::shell::images`]).
    pub image: String,
    pub title: String,
    /// `embedded` or `openai`.
    pub generator: String,
    /// Why the embedded generator made it instead of the configured server.
    pub fallback: Option<String>,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobView {
    Queued,
    Running,
    /// Delivered; `receipt` is the capture's answer (`None` while storage has
    /// not confirmed the capture: it is charged once it does, or at restart).
    Done {
        meme: AiMeme,
        receipt: Option<Receipt>,
    },
    /// Not delivered; nothing charged.
    Failed {
        reason: String,
    },
}

impl JobView {
    /// `queued`, `running`, `done` or `failed`.
    pub(crate) fn state(&self) -> &'static str {
        match self {
            JobView::Queued => "queued",
            JobView::Running => "running",
            JobView::Done { .. } => "done",
            JobView::Failed { .. } => "failed",
        }
    }

    fn finished(&self) -> bool {
        matches!(self, JobView::Done { .. } | JobView::Failed { .. })
    }
}

/// A job's durable record.
#[derive(Clone, Debug, Encode, Decode)]
struct JobRecord {
    /// What the request asked (a reused key with another request is refused).
    fingerprint: String,
    created_ms: u64,
    state: Stored,
}

#[derive(Clone, Debug, Encode, Decode)]
enum Stored {
    /// Held, not yet delivered.
    Pending,
    Done(AiMeme),
    Failed(String),
}

/// One job.
pub(crate) struct Job {
    pub(crate) user: String,
    pub(crate) id: String,
    fingerprint: String,
    created_ms: u64,
    request: GenRequest,
    view: watch::Sender<JobView>,
}

impl Job {
    /// Where the job stands now.
    pub(crate) fn view(&self) -> JobView {
        self.view.borrow().clone()
    }

    /// Waits until the job is finished or `budget` passes; returns where it stands.
    pub(crate) async fn wait(&self, budget: Duration) -> JobView {
        let mut rx = self.view.subscribe();
        let _ = tokio::time::timeout(budget, rx.wait_for(JobView::finished)).await;
        self.view()
    }
}

/// What a submission came to.
pub(crate) enum Submitted {
    /// A new job, queued.
    New(Arc<Job>),
    /// The key's job already exists: a retry.
    Existing(Arc<Job>),
}

/// Why a submission was refused.
pub(crate) enum SubmitError {
    /// The queue is full; nothing was held.
    Busy,
    /// The key's job was for another request.
    KeyReused,
    /// The hold was refused or not acknowledged; nothing was charged.
    Hold(Failure),
    /// The key's job was started by another region (its record reached us):
    /// nothing was held here.
    InAnotherRegion,
}

/// How the job system is sized and priced.
pub(crate) struct JobsConfig {
    /// Jobs waiting for a worker, at most.
    pub queue_capacity: usize,
    /// Jobs generated at once.
    pub workers: usize,
    /// The AI price, tokens.
    pub cost: u64,
    /// How long a job's record is kept (the idempotency TTL).
    pub keep_records_ms: u64,
}

/// The AI job system.
pub(crate) struct Jobs {
    engine: Arc<Engine>,
    images: Arc<Images>,
    generator: Arc<dyn MemeGenerator>,
    table: Mutex<HashMap<(String, String), Arc<Job>>>,
    queue: mpsc::Sender<Arc<Job>>,
    queue_capacity: usize,
    cost: u64,
    /// A job's record is kept this long (the idempotency TTL: its key cannot
    /// be retried after it); its image stays.
    keep_records_ms: u64,
    metrics: Arc<Metrics>,
}

impl Jobs {
    /// The job system, its workers started.
    pub(crate) fn start(
        engine: Arc<Engine>,
        images: Arc<Images>,
        generator: Arc<dyn MemeGenerator>,
        config: JobsConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let JobsConfig {
            queue_capacity,
            workers,
            cost,
            keep_records_ms,
        } = config;
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let jobs = Arc::new(Self {
            keep_records_ms,
            metrics,
            engine,
            images,
            generator,
            table: Mutex::new(HashMap::new()),
            queue: tx,
            queue_capacity: queue_capacity.max(1),
            cost,
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers.max(1) {
            tokio::spawn(jobs.clone().work(rx.clone()));
        }
        tokio::spawn(jobs.clone().sweep());
        jobs
    }

    /// The AI price.
    pub(crate) fn cost(&self) -> u64 {
        self.cost
    }

    /// Jobs waiting for a worker.
    pub(crate) fn queue_depth(&self) -> usize {
        self.queue_capacity - self.queue.capacity()
    }

    /// The job id of `user`'s Idempotency-Key `key`: the same key, the same job.
    pub(crate) fn id_for_key(user: &str, key: &str) -> String {
        let mut input = Vec::with_capacity(user.len() + key.len() + 1);
        input.extend_from_slice(user.as_bytes());
        input.push(0);
        input.extend_from_slice(key.as_bytes());
        hex_id(&ring::digest::digest(&ring::digest::SHA256, &input).as_ref()[..12])
    }

    /// A fresh job id, for a request without a key.
    pub(crate) fn fresh_id() -> String {
        let mut bytes = [0u8; 12];
        let filled = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        if filled.is_err() {
            // No system randomness: unique within this process still.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes[..8].copy_from_slice(&now_ms().to_be_bytes());
            bytes[8..].copy_from_slice(&(n as u32).to_be_bytes());
        }
        hex_id(&bytes)
    }

    /// `user`'s job `id`, from memory or the store.
    pub(crate) async fn find(&self, user: &str, id: &str) -> Result<Option<Arc<Job>>, NodeError> {
        let key = (user.to_owned(), id.to_owned());
        if let Some(job) = self.lock().get(&key) {
            return Ok(Some(job.clone()));
        }
        let Some(record) = self.load_record(user, id).await? else {
            return Ok(None);
        };
        if now_ms().saturating_sub(record.created_ms) >= self.keep_records_ms {
            // Expired with its key, whether or not the sweep came by yet.
            return Ok(None);
        }
        let view = match record.state {
            Stored::Done(meme) => JobView::Done {
                meme,
                receipt: None,
            },
            Stored::Failed(reason) => JobView::Failed { reason },
            // Recovery resolved every pending job at startup; one still pending
            // is being resolved now.
            Stored::Pending => JobView::Failed {
                reason: "the node restarted before the meme was made; nothing was charged".into(),
            },
        };
        let job = Arc::new(Job {
            user: user.to_owned(),
            id: id.to_owned(),
            fingerprint: record.fingerprint,
            created_ms: record.created_ms,
            request: GenRequest {
                query: String::new(),
                locale: "en-US",
                seed: 0,
            },
            view: watch::Sender::new(view),
        });
        let mut table = self.lock();
        Ok(Some(table.entry(key).or_insert(job).clone()))
    }

    /// Submits `user`'s job `id` for `request` (`fingerprint` identifies the
    /// request, for key reuse): reserves a queue slot, writes the record,
    /// takes the hold (with the client's `key`, so that a retry in another
    /// region finds it; waiting up to `rights_wait` for rights held in
    /// another region), queues the job.
    pub(crate) async fn submit(
        &self,
        user: &str,
        id: &str,
        fingerprint: String,
        key: Option<IdempotencyKey>,
        request: GenRequest,
        rights_wait: Duration,
    ) -> Result<Submitted, SubmitError> {
        let existing = self
            .find(user, id)
            .await
            .map_err(|_| SubmitError::Hold(Failure::NotAcknowledged))?;
        if let Some(job) = existing {
            return if job.fingerprint == fingerprint {
                Ok(Submitted::Existing(job))
            } else {
                Err(SubmitError::KeyReused)
            };
        }
        let Ok(slot) = self.queue.try_reserve() else {
            self.metrics.ai_job("busy");
            return Err(SubmitError::Busy);
        };
        let job = Arc::new(Job {
            user: user.to_owned(),
            id: id.to_owned(),
            fingerprint,
            created_ms: now_ms(),
            request,
            view: watch::Sender::new(JobView::Queued),
        });
        {
            let mut table = self.lock();
            let key = (user.to_owned(), id.to_owned());
            if let Some(racing) = table.get(&key) {
                // A concurrent retry got here first.
                return if racing.fingerprint == job.fingerprint {
                    Ok(Submitted::Existing(racing.clone()))
                } else {
                    Err(SubmitError::KeyReused)
                };
            }
            table.insert(key, job.clone());
        }
        // The record rides on the hold's flush (one fsync for both), with
        // the note of when it was made, for the sweep.
        let made = keys::made(keys::JOB_MADE, job.created_ms, &keys::job(user, id));
        let written = self
            .write(&job, Stored::Pending, vec![(made, Some(Vec::new()))], false)
            .await;
        let held = match written {
            Ok(()) => {
                let hold = Command::Hold {
                    job: id.to_owned(),
                    amount: self.cost,
                };
                self.engine.execute(user, hold, key, rights_wait).await
            }
            Err(_) => Err(Failure::NotAcknowledged),
        };
        match held {
            Ok(answer) if !answer.replayed => {
                slot.send(job.clone());
                Ok(Submitted::New(job))
            }
            Ok(_) => {
                self.lock().remove(&(user.to_owned(), id.to_owned()));
                let _ = self.forget(&job).await;
                job.view.send_replace(JobView::Failed {
                    reason: "this request's meme is made by another region".into(),
                });
                Err(SubmitError::InAnotherRegion)
            }
            Err(failure) => {
                self.lock().remove(&(user.to_owned(), id.to_owned()));
                let _ = self.forget(&job).await;
                job.view.send_replace(JobView::Failed {
                    reason: "the hold was not taken; nothing was charged".into(),
                });
                Err(SubmitError::Hold(failure))
            }
        }
    }

    /// Resolves jobs a previous life of this node left: an open hold whose job
    /// has a durable result is captured, any other job's open hold released.
    pub(crate) async fn recover(&self) -> Result<(), NodeError> {
        let records = self
            .engine
            .with_store(|store| store.scan(keys::JOB))
            .await?;
        let open: HashSet<(String, String)> = self
            .engine
            .open_holds()
            .into_iter()
            .map(|(id, _)| (id.user, id.job))
            .collect();
        let (mut captured, mut released) = (0, 0);
        for (k, v) in records {
            let Some((user, id)) = keys::split_job(&k) else {
                continue;
            };
            let Ok(record) = wire::decode::<JobRecord, MAX_JOB_RECORD_BYTES>(&v) else {
                tracing::warn!(%user, job = %id, "an unreadable job record; left alone");
                continue;
            };
            let held = open.contains(&(user.clone(), id.clone()));
            match record.state {
                Stored::Done(_) if held => {
                    let capture = Command::Capture { job: id.clone() };
                    if self.close_hold(&user, capture).await.is_ok() {
                        captured += 1;
                    }
                }
                Stored::Pending | Stored::Failed(_) => {
                    if held {
                        let release = Command::Release { job: id.clone() };
                        if self.close_hold(&user, release).await.is_ok() {
                            released += 1;
                        }
                    }
                    if matches!(record.state, Stored::Pending) {
                        let reason =
                            "the node restarted before the meme was made; nothing was charged";
                        let bytes = encode_record(
                            &record.fingerprint,
                            record.created_ms,
                            Stored::Failed(reason.into()),
                        );
                        let key = keys::job(&user, &id);
                        let _ = self
                            .engine
                            .with_store(move |store| {
                                store.write_now(vec![(key, Some(bytes))], true)
                            })
                            .await;
                    }
                }
                Stored::Done(_) => {}
            }
        }
        if captured + released > 0 {
            tracing::info!(captured, released, "AI jobs of the previous run resolved");
        }
        Ok(())
    }

    async fn work(self: Arc<Self>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Job>>>>) {
        loop {
            let next = rx.lock().await.recv().await;
            let Some(job) = next else {
                return;
            };
            self.run(&job).await;
        }
    }

    async fn run(&self, job: &Job) {
        job.view.send_replace(JobView::Running);
        let (meme, writes) = match self.generate(job).await {
            Ok(made) => made,
            Err(reason) => return self.fail(job, reason).await,
        };
        // The result, durable, before the charge.
        if self
            .write(job, Stored::Done(meme.clone()), writes, true)
            .await
            .is_err()
        {
            return self
                .fail(
                    job,
                    "storage could not keep the meme; nothing was charged".into(),
                )
                .await;
        }
        let capture = Command::Capture {
            job: job.id.clone(),
        };
        match self.close_hold(&job.user, capture).await {
            Ok(answer) => {
                self.metrics.ai_job("done");
                job.view.send_replace(JobView::Done {
                    meme,
                    receipt: Some(answer.receipt),
                });
            }
            Err(Failure::Refused(refusal)) => {
                let reason = match refusal {
                    Refusal::HoldReleased | Refusal::UnknownHold => {
                        "the hold expired before the meme was ready; nothing was charged".into()
                    }
                    other => format!("the charge was refused ({other:?}); nothing was charged"),
                };
                let _ = self
                    .write(job, Stored::Failed(reason.clone()), Vec::new(), true)
                    .await;
                self.metrics.ai_job("failed");
                job.view.send_replace(JobView::Failed { reason });
            }
            Err(Failure::NotAcknowledged) => {
                // The result is durable: the capture completes when storage
                // recovers, or at restart.
                self.metrics.ai_job("done");
                job.view.send_replace(JobView::Done {
                    meme,
                    receipt: None,
                });
            }
        }
    }

    /// Generates and draws the meme; returns it and the writes that keep it.
    async fn generate(&self, job: &Job) -> Result<(AiMeme, Vec<StoreWrite>), String> {
        let generated = self
            .generator
            .generate(&job.request)
            .await
            .map_err(|e| format!("{e}; nothing was charged"))?;
        let mut extra = Vec::new();
        let (image, write) = match generated.art {
            Artwork::Spec(spec) => {
                let id = spec.id();
                let bytes = spec.to_bytes();
                self.images
                    .render(spec)
                    .await
                    .map_err(|e| format!("drawing the meme failed ({e}); nothing was charged"))?;
                (id.clone(), (keys::image_spec(&id), Some(bytes)))
            }
            Artwork::Png(png) => {
                let id = hex_id(&ring::digest::digest(&ring::digest::SHA256, &png).as_ref()[..16]);
                let made = now_ms();
                let mut value = made.to_be_bytes().to_vec();
                value.extend_from_slice(&png);
                self.images.remember(&id, png);
                let note = (
                    keys::made(keys::PNG_MADE, made, &keys::image_png(&id)),
                    Some(Vec::new()),
                );
                extra.push(note);
                (id.clone(), (keys::image_png(&id), Some(value)))
            }
        };
        let meme = AiMeme {
            image,
            title: generated.title,
            generator: generated.generator.to_owned(),
            fallback: generated.fallback,
        };
        extra.push(write);
        Ok((meme, extra))
    }

    async fn fail(&self, job: &Job, reason: String) {
        tracing::warn!(user = %job.user, job = %job.id, %reason, "AI job failed");
        let release = Command::Release {
            job: job.id.clone(),
        };
        let _ = self.close_hold(&job.user, release).await;
        let _ = self
            .write(job, Stored::Failed(reason.clone()), Vec::new(), true)
            .await;
        self.metrics.ai_job("failed");
        job.view.send_replace(JobView::Failed { reason });
    }

    /// Captures or releases a hold, trying again while storage does not
    /// acknowledge (both are idempotent by job).
    async fn close_hold(&self, user: &str, command: Command) -> Result<Answer, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .engine
                .execute(user, command.clone(), None, Duration::ZERO)
                .await
            {
                Err(Failure::NotAcknowledged) if attempt < CLOSE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// Writes the job's record as `state`, with `more` writes, in one batch.
    async fn write(
        &self,
        job: &Job,
        state: Stored,
        mut more: Vec<StoreWrite>,
        flush: bool,
    ) -> Result<(), NodeError> {
        let bytes = encode_record(&job.fingerprint, job.created_ms, state);
        more.push((keys::job(&job.user, &job.id), Some(bytes)));
        if flush {
            // Rides the ledger's next group commit: one fsync for both.
            return self
                .engine
                .write_durable(more)
                .await
                .map_err(|_| NodeError::FlushFailed);
        }
        self.engine
            .with_store(move |store| store.write_now(more, false))
            .await
    }

    /// Removes `user`'s finished jobs (their queries and memes) from memory
    /// and disk; a job still being made is kept. Returns how many went.
    pub(crate) async fn forget_user(&self, user: &str) -> Result<usize, NodeError> {
        let mut running: Vec<String> = Vec::new();
        self.lock().retain(|(owner, id), job| {
            let keep = owner != user || !job.view.borrow().finished();
            if keep && owner == user {
                running.push(id.clone());
            }
            keep
        });
        let (start, end) = (keys::job(user, ""), keys::job(user, "\u{10FFFF}"));
        self.engine
            .with_store(move |store| {
                let gone: Vec<StoreWrite> = store
                    .scan_range(&start, &end)?
                    .into_iter()
                    .filter(|(k, _)| {
                        keys::split_job(k).is_some_and(|(_, id)| !running.contains(&id))
                    })
                    .map(|(k, _)| (k, None))
                    .collect();
                let count = gone.len();
                store.write_now(gone, true)?;
                Ok(count)
            })
            .await
    }

    async fn forget(&self, job: &Job) -> Result<(), NodeError> {
        let key = keys::job(&job.user, &job.id);
        self.engine
            .with_store(move |store| store.write_now(vec![(key, None)], false))
            .await
    }

    async fn load_record(&self, user: &str, id: &str) -> Result<Option<JobRecord>, NodeError> {
        let key = keys::job(user, id);
        let bytes = self.engine.with_store(move |store| store.get(&key)).await?;
        Ok(bytes.and_then(|b| wire::decode::<JobRecord, MAX_JOB_RECORD_BYTES>(&b).ok()))
    }

    /// Every minute: forgets finished jobs from memory after a while, job
    /// records after `keep_records_ms`, and servers' PNGs after
    /// [`PNG_TTL_MS`]. Reads only what expired (the `J`/`G` time notes).
    async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = now_ms();
            let keep = KEEP_FINISHED_MS.min(self.keep_records_ms);
            self.lock().retain(|_, job| {
                !job.view.borrow().finished() || now.saturating_sub(job.created_ms) < keep
            });
            let keep = self.keep_records_ms;
            let swept = self
                .engine
                .with_store(move |store| {
                    let mut gone = Vec::new();
                    for (prefix, ttl) in [(keys::JOB_MADE, keep), (keys::PNG_MADE, PNG_TTL_MS)] {
                        let before = keys::made(prefix, now.saturating_sub(ttl), &[]);
                        for (note, _) in store.scan_range(&[prefix], &before)? {
                            if let Some(entry) = keys::made_entry(&note) {
                                gone.push((entry.to_vec(), None));
                            }
                            gone.push((note, None));
                        }
                    }
                    store.write_now(gone, false)
                })
                .await;
            if let Err(e) = swept {
                tracing::warn!(error = %e, "sweeping old AI jobs failed; trying again later");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Job>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn encode_record(fingerprint: &str, created_ms: u64, state: Stored) -> Vec<u8> {
    let record = JobRecord {
        fingerprint: fingerprint.to_owned(),
        created_ms,
        state,
    };
    wire::encode(&record).unwrap_or_default()
}

fn hex_id(bytes: &[u8]) -> String {
    let mut id = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}
