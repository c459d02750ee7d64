//! The shell around the core: loads state, runs the core, persists, waits.
//!
//! This is the only place that holds the core's lock. Everything under the lock is
//! synchronous and short (a sled read, the core, a sled write); the wait for
//! durability happens after the lock is released, so requests for all users share
//! group commits.

use crate::NodeError;
use crate::auth::Authenticator;
use crate::catalog::Catalog;
use crate::core::{Command, Core, Executed, IdempotencyKey, Receipt, Refusal};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::Store;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the service could not complete a request.
#[derive(Debug)]
pub enum Failure {
    /// The core refused it; nothing changed.
    Refused(Refusal),
    /// Storage failed; the request was not acknowledged (it may still apply later,
    /// which an idempotent retry resolves).
    Storage(NodeError),
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        Failure::Storage(e)
    }
}

/// Everything a request handler needs.
pub struct Service {
    core: Mutex<Core>,
    /// Durable storage.
    pub store: Arc<Store>,
    /// The meme catalog.
    pub catalog: Catalog,
    /// Credential checks.
    pub auth: Authenticator,
    /// Per-user rate limit.
    pub limiter: Mutex<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Releases an idempotency key when its request is answered or abandoned (a client
/// that hangs up drops the handler's future, and with it this guard).
struct InFlight<'a> {
    service: &'a Service,
    key: IdempotencyKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.service.lock_core().finish(&self.key);
    }
}

impl Service {
    /// Assembles the service.
    pub fn new(
        core: Core,
        store: Arc<Store>,
        catalog: Catalog,
        auth: Authenticator,
        limiter: RateLimiter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            core: Mutex::new(core),
            store,
            catalog,
            auth,
            limiter: Mutex::new(limiter),
            metrics,
        }
    }

    fn lock_core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the core half-updated in a way
        // that matters: the in-flight set is the only state, and a stale entry only
        // delays a retry. So a poisoned lock is still usable.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Executes `command` for `user` and returns once the result is durable.
    pub async fn execute(
        &self,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
    ) -> Result<Executed, Failure> {
        let now = now_ms();
        let (executed, ticket) = {
            let mut core = self.lock_core();
            let mut account = self.store.account(user)?;
            let stored = match &key {
                Some(k) => self.store.record(&k.scope, &k.key)?,
                None => None,
            };
            let executed = core
                .execute(&mut account, command, key.as_ref(), stored, now)
                .map_err(Failure::Refused)?;
            let ticket = if executed.account_changed {
                let record = executed
                    .record
                    .as_ref()
                    .zip(key.as_ref())
                    .map(|(r, k)| (k.scope.as_str(), k.key.as_str(), r));
                match self.store.write(user, &account, record) {
                    Ok(ticket) => ticket,
                    Err(e) => {
                        if let Some(k) = &key {
                            core.finish(k);
                        }
                        return Err(e.into());
                    }
                }
            } else {
                self.store.current_ticket()
            };
            (executed, ticket)
        };
        let _release = key
            .filter(|_| executed.record.is_some())
            .map(|key| InFlight { service: self, key });
        self.store.durable(ticket).await?;
        if executed.account_changed {
            match command {
                Command::ChargeCall => self.metrics.spend(),
                Command::Adjust(a) if a > 0 => self.metrics.credit(),
                Command::Adjust(_) => self.metrics.spend(),
            }
        }
        Ok(executed)
    }

    /// The user's balance as it stands, once everything it might show is durable.
    pub async fn receipt(&self, user: &str) -> Result<Receipt, NodeError> {
        let (receipt, ticket) = {
            let core = self.lock_core();
            let account = self.store.account(user)?;
            (core.receipt(&account), self.store.current_ticket())
        };
        self.store.durable(ticket).await?;
        Ok(receipt)
    }

    /// Whether `who` may make another request now.
    pub fn admit(&self, who: &str) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        limiter.admit(who, now_ms())
    }

    /// Removes expired idempotency records.
    pub fn sweep_idempotency(&self) -> Result<usize, NodeError> {
        let now = now_ms();
        let ttl = self.lock_core().config().idempotency_ttl_ms;
        self.store
            .sweep_records(|r| now.saturating_sub(r.at_ms) >= ttl)
    }
}

/// Wall-clock milliseconds since the Unix epoch: the shell's one clock, handed to
/// the core as an input.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
