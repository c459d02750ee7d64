//! What an HTTP handler needs: the engine, and the API's own parts.

use crate::shell::auth::Authenticator;
use crate::shell::engine::{Engine, now_ms};
use crate::shell::metrics::Metrics;
use crate::shell::webhook::WebhookVerifier;
use crate::{Catalog, RateLimiter};
use std::sync::{Arc, Mutex};

/// The HTTP app's state.
pub(crate) struct App {
    /// The replica, driven.
    pub engine: Arc<Engine>,
    /// The meme catalog.
    pub catalog: Catalog,
    /// Credential checks.
    pub auth: Authenticator,
    /// Per-user rate limit.
    limiter: Mutex<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Billing webhook signatures.
    pub webhook: WebhookVerifier,
}

impl App {
    /// The app around `engine`.
    pub(crate) fn new(
        engine: Arc<Engine>,
        catalog: Catalog,
        auth: Authenticator,
        limiter: RateLimiter,
        metrics: Arc<Metrics>,
        webhook: WebhookVerifier,
    ) -> Self {
        Self {
            engine,
            catalog,
            auth,
            limiter: Mutex::new(limiter),
            metrics,
            webhook,
        }
    }

    /// Whether `who` may make another request now.
    pub(crate) fn admit(&self, who: &str) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        limiter.admit(who, now_ms())
    }
}
