//! The `MemeGenerator` seam: who makes an AI meme. Two backends: the embedded
//! procedural generator (the default, offline) and an OpenAI-compatible server
//! (`openai.rs`), which falls back to the embedded one.

use crate::{CaptionFilter, ImageSpec, ai_spec};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a job asks for.
#[derive(Clone, Debug)]
pub(crate) struct GenRequest {
    /// The caller's query.
    pub query: String,
    /// The locale nearest the caller's position (`en-US` without one).
    pub locale: &'static str,
    /// Makes each job's meme new; fixed per job, so a retried job draws the same.
    pub seed: u64,
}

/// The picture of a generated meme.
#[derive(Clone, Debug)]
pub(crate) enum Artwork {
    /// Drawn by the embedded renderer from this spec (stored: the image is a
    /// pure function of it).
    Spec(ImageSpec),
    /// A PNG an AI server drew (stored as bytes, size-capped).
    Png(Bytes),
}

/// A generated meme.
#[derive(Clone, Debug)]
pub(crate) struct Generated {
    pub art: Artwork,
    /// A human title: the captions, or the query.
    pub title: String,
    /// `embedded` or `openai`.
    pub generator: &'static str,
    /// Why the embedded generator made it instead of the configured server.
    pub fallback: Option<String>,
}

/// Why a meme could not be generated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenerateError {
    /// The AI server failed (after its retry), and there is no fallback.
    #[error("the AI server failed: {0}")]
    Upstream(String),
}

/// A boxed future, so backends can sit behind `dyn`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes AI memes.
pub(crate) trait MemeGenerator: Send + Sync {
    /// Generates one meme for `request`.
    fn generate<'a>(
        &'a self,
        request: &'a GenRequest,
    ) -> BoxFuture<'a, Result<Generated, GenerateError>>;

    /// The backend's name, for logs and `/v1/cluster`-style reports.
    fn name(&self) -> &'static str;
}

/// The embedded procedural generator: templates of a seeded grammar filled
/// with the query and a word of the locale, over procedurally drawn layouts.
/// Not a neural model.
pub(crate) struct Embedded {
    filter: Arc<CaptionFilter>,
}

impl Embedded {
    pub(crate) fn new(filter: Arc<CaptionFilter>) -> Self {
        Self { filter }
    }

    /// The meme, at once (cheap: the rendering happens in the job).
    pub(crate) fn make(&self, request: &GenRequest) -> Generated {
        let spec = ai_spec(&request.query, request.locale, request.seed, &self.filter);
        let title = title_of(&spec.captions);
        Generated {
            art: Artwork::Spec(spec),
            title,
            generator: "embedded",
            fallback: None,
        }
    }
}

impl MemeGenerator for Embedded {
    fn generate<'a>(
        &'a self,
        request: &'a GenRequest,
    ) -> BoxFuture<'a, Result<Generated, GenerateError>> {
        Box::pin(async move { Ok(self.make(request)) })
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// The captions as one title.
pub(crate) fn title_of(captions: &[String]) -> String {
    captions
        .iter()
        .filter(|c| !c.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" / ")
}
