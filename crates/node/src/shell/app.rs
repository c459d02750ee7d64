//! What an HTTP handler needs: the engine, and the API's own parts (auth,
//! limits, the catalog, images and AI jobs).

use crate::Catalog;
use crate::shell::auth::Authenticator;
use crate::shell::curated::CuratedBodies;
use crate::shell::engine::Engine;
use crate::shell::images::Images;
use crate::shell::jobs::Jobs;
use crate::shell::limits::Limits;
use crate::shell::metrics::Metrics;
use crate::shell::statements::Statements;
use crate::shell::webhook::WebhookVerifier;
use std::sync::Arc;

/// The HTTP app's state.
pub(crate) struct App {
    /// The replica, driven.
    pub engine: Arc<Engine>,
    /// The meme catalog.
    pub catalog: Catalog,
    /// The catalog's answers, rendered up to the balance.
    pub curated: CuratedBodies,
    /// Credential checks.
    pub auth: Authenticator,
    /// Rate limits per user and per client IP.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Billing webhook signatures.
    pub webhook: WebhookVerifier,
    /// Meme images.
    pub images: Arc<Images>,
    /// AI meme jobs.
    pub jobs: Arc<Jobs>,
    /// Users' statements.
    pub statements: Arc<Statements>,
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
        limits: Limits,
        metrics: Arc<Metrics>,
        webhook: WebhookVerifier,
        statements: Arc<Statements>,
    ) -> Self {
        let curated = CuratedBodies::new(&memes.catalog, |id| memes.images.curated_url(id));
        Self {
            engine,
            catalog: memes.catalog,
            curated,
            auth,
            limits,
            metrics,
            webhook,
            images: memes.images,
            jobs: memes.jobs,
            statements,
        }
    }
}
