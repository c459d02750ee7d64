//! The premium tier's product over HTTP: a subscriber's `GET /memes` makes an
//! AI meme (see [`crate::shell::jobs`]), and `GET /v1/jobs/{id}` follows it.

use crate::shell::generator::GenRequest;
use crate::shell::http::{BALANCE_HEADER, MemeQuery, REPLAYED_HEADER, Shared, client, failure};
use crate::shell::jobs::{AiMeme, Job, JobView, Jobs, SubmitError, Submitted};
use crate::shell::problem::{Problem, ProblemKind};
use crate::{IdempotencyKey, Receipt, nearest_locale};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;

/// Seconds a client is told to wait before asking about a job again.
const RETRY_AFTER_SECS: u64 = 1;

/// A delivered AI meme, as `GET /memes` and `GET /v1/jobs/{id}` show it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AiMemeBody {
    /// The job's id.
    id: String,
    title: String,
    image: String,
    source: &'static str,
    /// `ai`.
    kind: &'static str,
    /// `embedded` (the procedural generator) or `openai`.
    generator: String,
    /// Why the embedded generator made it instead of the configured server.
    fallback: Option<String>,
    /// Tokens charged for it.
    charged: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spendable_here: Option<u64>,
}

/// A job, as `GET /v1/jobs/{id}` and a 202 show it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobBody {
    id: String,
    /// `queued`, `running`, `done` or `failed`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meme: Option<AiMemeBody>,
    /// Why it failed (nothing was charged).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    location: String,
}

/// A subscriber's `GET /memes`: hold, generate, capture on delivery.
pub(crate) async fn ai_meme(
    service: &Shared,
    user: &str,
    request: &MemeQuery,
    key: Option<&str>,
) -> Result<Response, Problem> {
    let jobs = &service.jobs;
    let id = key.map_or_else(Jobs::fresh_id, |k| Jobs::id_for_key(user, k));
    let generate = GenRequest {
        query: request.query.clone(),
        locale: request.position.map_or("en-US", nearest_locale),
        seed: seed_of(&id),
    };
    let idempotency =
        |k: &str| IdempotencyKey::ai_meme(user, k.to_owned(), request.position, &request.query);
    let fingerprint = idempotency("").fingerprint;
    let submitted = jobs
        .submit(
            user,
            &id,
            fingerprint,
            key.map(idempotency),
            generate,
            request.rights_wait,
        )
        .await;
    let (job, replay) = match submitted {
        Ok(Submitted::New(job)) => (job, false),
        Ok(Submitted::Existing(job)) => (job, true),
        Err(SubmitError::Busy) => {
            return Err(Problem::new(
                ProblemKind::AiBusy,
                "too many AI memes are being made; nothing was held or charged. Retry, \
                 or ask with fallback=curated for a curated meme at the normal price",
            )
            .retry_after(2));
        }
        Err(SubmitError::KeyReused) => {
            return Err(Problem::new(
                ProblemKind::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request",
            ));
        }
        Err(SubmitError::Hold(f)) => return Err(failure(service, f)),
        Err(SubmitError::InAnotherRegion) => {
            return Err(Problem::new(
                ProblemKind::JobInAnotherRegion,
                "this Idempotency-Key's AI meme is being made (and charged, once \
                 delivered) by another region; ask that region for it, or use a new key \
                 for another meme",
            ));
        }
    };
    let view = job.wait(request.ai_budget).await;
    let mut response = match view {
        JobView::Done { meme, receipt } => {
            let body = meme_body(service, &job, &meme, receipt);
            let mut response = Json(body).into_response();
            if let Some(r) = receipt {
                response
                    .headers_mut()
                    .insert(BALANCE_HEADER, HeaderValue::from(r.balance));
            }
            response
        }
        JobView::Failed { reason } => {
            return Err(Problem::new(ProblemKind::AiFailed, reason));
        }
        JobView::Queued | JobView::Running => accepted(&job, &view),
    };
    if replay {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// 202 with `Location` and `Retry-After`.
fn accepted(job: &Job, view: &JobView) -> Response {
    let location = location(&job.id);
    let body = JobBody {
        id: job.id.clone(),
        state: view.state(),
        meme: None,
        error: None,
        location: location.clone(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

fn location(id: &str) -> String {
    format!("/v1/jobs/{id}")
}

fn meme_body(service: &Shared, job: &Job, meme: &AiMeme, receipt: Option<Receipt>) -> AiMemeBody {
    AiMemeBody {
        id: job.id.clone(),
        title: meme.title.clone(),
        image: service.images.url(&meme.image),
        source: "maas-ai",
        kind: "ai",
        generator: meme.generator.clone(),
        fallback: meme.fallback.clone(),
        charged: service.jobs.cost(),
        balance: receipt.map(|r| r.balance),
        spendable_here: receipt.map(|r| r.spendable_here),
    }
}

/// The caller's own AI meme job: the meme once delivered (and charged), or
/// why it failed (nothing charged).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "balance",
    security(("client" = [])),
    params(("id" = String, Path, description = "The job's id, from a 202's `Location`")),
    responses(
        (status = 200, description = "The job, done or failed", body = JobBody),
        (status = 202, description = "Still being made", body = JobBody, headers(
            ("Location" = String, description = "This job"),
            ("Retry-After" = u64, description = "Seconds before asking again"),
        )),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 404, description = "`job-not-found`: no job of the caller has this id", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn job(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let user = client(&service, &headers)?;
    let not_found = || Problem::new(ProblemKind::JobNotFound, "you have no job with this id");
    let Path(id) = path.map_err(|_| not_found())?;
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let job: Arc<Job> = service
        .jobs
        .find(&user, &id)
        .await
        .map_err(|_| {
            Problem::new(
                ProblemKind::Unavailable,
                "storage is failing; retry shortly",
            )
            .retry_after(1)
        })?
        .ok_or_else(not_found)?;
    let view = job.view();
    let (meme, error) = match &view {
        JobView::Done { meme, receipt } => (Some(meme_body(&service, &job, meme, *receipt)), None),
        JobView::Failed { reason } => (None, Some(reason.clone())),
        JobView::Queued | JobView::Running => return Ok(accepted(&job, &view)),
    };
    Ok(Json(JobBody {
        id: job.id.clone(),
        state: view.state(),
        meme,
        error,
        location: location(&job.id),
    })
    .into_response())
}

/// The job's generation seed, from its id (so a job draws the same meme
/// whenever it runs).
fn seed_of(id: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(seed)
}
