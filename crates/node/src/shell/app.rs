//! What an HTTP handler needs: the engine, and the API's own parts (auth,
//! limits, the catalog, images and AI jobs).

use crate::shell::auth::Authenticator;
use crate::shell::engine::{Engine, now_ms};
use crate::shell::images::Images;
use crate::shell::jobs::Jobs;
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
    /// Meme images.
    pub images: Arc<Images>,
    /// AI meme jobs.
    pub jobs: Arc<Jobs>,
}

/// The parts that make and show memes.
pub(crate) struct MemeParts {
    pub catalog: Catalog,
    pub images: Arc<Images>,
    pub jobs: Arc<Jobs>,
}

impl App {
    /// The app around `engine`.
    pub(crate) fn new(
        engine: Arc<Engine>,
        memes: MemeParts,
        auth: Authenticator,
        limiter: RateLimiter,
        metrics: Arc<Metrics>,
        webhook: WebhookVerifier,
    ) -> Self {
        Self {
            engine,
            catalog: memes.catalog,
            auth,
            limiter: Mutex::new(limiter),
            metrics,
            webhook,
            images: memes.images,
            jobs: memes.jobs,
        }
    }

    /// Whether `who` may make another request now.
    pub(crate) fn admit(&self, who: &str) -> bool {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        limiter.admit(who, now_ms())
    }
}
