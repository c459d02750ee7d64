//! Meme images over HTTP: `GET /v1/images/{id}.png`.
//!
//! Every image is named by its id (32 hex digits): a curated meme's from its
//! spec, an embedded AI meme's from its stored spec, an AI server's picture
//! from its bytes. So a name never changes meaning, and the answer is
//! `Cache-Control: immutable` with the id as `ETag`. A miss in the in-memory
//! cache renders again (specs) or reads the store (server pictures).
//!
//! Images carry no credential: a browser's `<img>` sends none. The names are
//! unguessable (an AI meme's id covers its seed), so an AI image is seen only by
//! whoever was given its link. AI images live in the region that made them.

use crate::shell::engine::{Engine, now_ms};
use crate::shell::http::Shared;
use crate::shell::jobs::PNG_TTL_MS;
use crate::shell::keys;
use crate::shell::metrics::Metrics;
use crate::shell::problem::{Problem, ProblemKind};
use crate::{ImageCache, ImageSpec, RenderError, curated_spec, render_png};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// The node's images.
pub(crate) struct Images {
    cache: ImageCache,
    /// Specs of the catalog's memes, by image id.
    curated: HashMap<String, ImageSpec>,
    /// Catalog id → the image's URL (made once: every curated spend links one).
    curated_urls: Vec<String>,
    /// CPU-bound work (rendering) runs at most this many at once, shared
    /// with the AI workers, so the ledger path keeps a core.
    cpu: Arc<Semaphore>,
    renderers: RenderPool,
    public_url: Option<String>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
}

impl Images {
    pub(crate) fn new(
        cache_bytes: usize,
        cpu: Arc<Semaphore>,
        public_url: Option<String>,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut curated = HashMap::new();
        let mut curated_urls = vec![String::new()];
        for catalog_id in 1.. {
            let Some(spec) = curated_spec(catalog_id) else {
                break;
            };
            let id = spec.id();
            curated_urls.push(image_url(public_url.as_deref(), &id));
            curated.insert(id, spec);
        }
        let renderers = RenderPool::start(cpu.available_permits());
        Self {
            cache: ImageCache::new(cache_bytes),
            curated,
            curated_urls,
            cpu,
            renderers,
            public_url,
            engine,
            metrics,
        }
    }

    /// The URL of image `id`: absolute under `--public-url`, else a path.
    pub(crate) fn url(&self, id: &str) -> String {
        image_url(self.public_url.as_deref(), id)
    }

    /// The URL of catalog meme `catalog_id`'s image.
    pub(crate) fn curated_url(&self, catalog_id: u32) -> &str {
        self.curated_urls
            .get(catalog_id as usize)
            .map_or("", String::as_str)
    }

    /// Renders `spec` (on a render thread, within the CPU permits) and caches it.
    pub(crate) async fn render(&self, spec: ImageSpec) -> Result<Bytes, RenderError> {
        let id = spec.id();
        if let Some(png) = self.cache.get(&id) {
            return Ok(png);
        }
        let _permit = self.cpu.acquire().await;
        let started = Instant::now();
        let rendered = self.renderers.render(spec).await?;
        self.metrics.observe_render(started.elapsed());
        let png = Bytes::from(rendered);
        self.cache.put(&id, png.clone());
        Ok(png)
    }

    /// Keeps an AI server's picture in the cache (the store has it too).
    pub(crate) fn remember(&self, id: &str, png: Bytes) {
        self.cache.put(id, png);
    }

    /// The PNG of image `id`, if there is one.
    async fn png(&self, id: &str) -> Result<Option<Bytes>, Problem> {
        if let Some(png) = self.cache.get(id) {
            return Ok(Some(png));
        }
        let spec = match self.curated.get(id) {
            Some(spec) => Some(spec.clone()),
            None => {
                let store = self.engine.clone();
                let key = id.to_owned();
                let (spec, png) = tokio::task::spawn_blocking(move || {
                    let spec = store.store().get(&keys::image_spec(&key));
                    let png = store.store().get(&keys::image_png(&key));
                    (spec, png)
                })
                .await
                .map_err(|_| unavailable())?;
                if let Some(value) = png.map_err(|_| unavailable())? {
                    // When it was made (8 bytes), then the PNG.
                    let made = value
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u64::from_be_bytes);
                    if now_ms().saturating_sub(made) >= PNG_TTL_MS || value.len() <= 8 {
                        return Ok(None);
                    }
                    let png = Bytes::from(value).slice(8..);
                    self.cache.put(id, png.clone());
                    return Ok(Some(png));
                }
                spec.map_err(|_| unavailable())?
                    .and_then(|bytes| ImageSpec::from_bytes(&bytes))
            }
        };
        match spec {
            Some(spec) => self.render(spec).await.map(Some).map_err(|e| {
                tracing::error!(error = %e, "rendering an image failed");
                Problem::new(ProblemKind::Internal, "the image could not be drawn")
            }),
            None => Ok(None),
        }
    }
}

/// The threads that draw: as many as the CPU permits, each at the lowest
/// scheduling priority (nice 19). On a busy machine the ledger path's threads
/// (HTTP, group commit) then always run first, and an AI meme waits a little
/// instead of a spend.
struct RenderPool {
    tasks: std::sync::mpsc::SyncSender<RenderTask>,
}

type RenderTask = (
    ImageSpec,
    tokio::sync::oneshot::Sender<Result<Vec<u8>, RenderError>>,
);

impl RenderPool {
    fn start(threads: usize) -> Self {
        let threads = threads.max(1);
        let (tasks, queue) = std::sync::mpsc::sync_channel::<RenderTask>(threads * 2);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("render-{i}"))
                .spawn(move || {
                    lowest_priority();
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((spec, reply)) = next else {
                            return;
                        };
                        let _ = reply.send(render_png(&spec));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a render thread");
            }
        }
        Self { tasks }
    }

    async fn render(&self, spec: ImageSpec) -> Result<Vec<u8>, RenderError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Callers hold a CPU permit, so at most `threads` tasks are queued:
        // the channel has room and this never blocks.
        self.tasks
            .send((spec, reply))
            .map_err(|_| RenderError::Encode("no render thread is running".into()))?;
        answer
            .await
            .map_err(|_| RenderError::Encode("the render thread stopped".into()))?
    }
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only when
/// no other thread wants the CPU, so a spend never waits behind a drawing.
/// Where that is refused, nice 19 at least.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` on pid 0 changes only the calling thread's
    // policy and reads `param`, a live local, for the duration of the call.
    let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    if !idle && rustix::process::setpriority_process(None, 19).is_err() {
        tracing::warn!("could not lower the render thread's priority");
    }
}

fn image_url(public_url: Option<&str>, id: &str) -> String {
    format!("{}/v1/images/{id}.png", public_url.unwrap_or(""))
}

fn unavailable() -> Problem {
    Problem::new(
        ProblemKind::Unavailable,
        "storage is failing; retry shortly",
    )
    .retry_after(1)
}

/// A meme's image. Its name is a digest of what it shows, so it never changes:
/// cache it for ever. No credential is needed (an `<img>` sends none).
#[utoipa::path(get, path = "/v1/images/{file}", tag = "memes",
    params(
        ("file" = String, Path, description = "`<32 hex digits>.png`, from a meme's `image`", pattern = "^[0-9a-f]{32}\\.png$"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag a cache holds"),
    ),
    responses(
        (status = 200, description = "The PNG", content_type = "image/png", body = Vec<u8>, headers(
            ("ETag" = String, description = "The image's id, quoted"),
            ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"),
        )),
        (status = 304, description = "Not modified"),
        (status = 404, description = "`image-not-found`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn image(
    State(service): State<Shared>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let not_found = || Problem::new(ProblemKind::ImageNotFound, "no image has this name");
    let id = file.strip_suffix(".png").ok_or_else(not_found)?;
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(not_found());
    }
    let etag = format!("\"{id}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let png = if cached {
        None
    } else {
        Some(service.images.png(id).await?.ok_or_else(not_found)?)
    };
    let mut response = match png {
        Some(png) => (StatusCode::OK, png).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(response)
}
