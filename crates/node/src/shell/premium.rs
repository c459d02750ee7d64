//! The premium tier's routes: the billing webhook and the operator's
//! subscription writes (the entitlement), and holds for jobs (the two-phase
//! charge of AI memes).

use crate::shell::auth::valid_user_id;
use crate::shell::engine::{Answer, now_ms};
use crate::shell::http::{Shared, failure, json_body, operator, path_user};
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::rfc3339;
use crate::shell::webhook::SIGNATURE_HEADER;
use crate::{Command, Millis};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest job id accepted.
const MAX_JOB_BYTES: usize = 128;

/// A billing event, as the billing system posts it.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct BillingEvent {
    /// The provider's event id (logged; ordering is by `version`).
    id: String,
    user_id: String,
    /// RFC 3339; a past instant cancels.
    memes_ai_until: String,
    /// Higher versions win, whatever order events arrive in.
    version: u64,
}

/// The operator's write of a subscription.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionWrite {
    memes_ai_until: String,
    version: u64,
}

/// Whether a subscription write changed anything.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Applied {
    /// `false` for a duplicate or an older version: not an error, so the
    /// billing system does not retry it forever.
    applied: bool,
    user_id: String,
    version: u64,
}

/// A subscription event from the billing system. Only a valid `Maas-Signature`
/// (HMAC-SHA256 over the timestamp and the body, within the tolerance) opens
/// it. Events may arrive in any order and more than once: the highest
/// `version` wins.
#[utoipa::path(post, path = "/v1/webhooks/billing", tag = "billing",
    params(("Maas-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">`")),
    request_body = BillingEvent,
    responses(
        (status = 200, description = "Taken (`applied` is false for a duplicate or an older version)", body = Applied),
        (status = 400, description = "`invalid-request`: not JSON", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`bad-signature`", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn billing_webhook(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Applied>, Problem> {
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    service
        .webhook
        .verify(header, &body, now_ms() / 1_000)
        .map_err(|why| Problem::new(ProblemKind::BadSignature, why))?;
    let event: BillingEvent = serde_json::from_slice(&body).map_err(|e| {
        let kind = if e.is_data() {
            ProblemKind::InvalidBody
        } else {
            ProblemKind::InvalidRequest
        };
        Problem::new(kind, format!("billing event: {e}"))
    })?;
    tracing::info!(event = %event.id, user = %event.user_id, version = event.version, "billing event");
    subscribe(
        &service,
        event.user_id,
        &event.memes_ai_until,
        event.version,
    )
    .await
}

/// Sets a user's Memes AI subscription, as a billing event would.
#[utoipa::path(put, path = "/v1/users/{id}/subscription", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id")),
    request_body = SubscriptionWrite,
    responses(
        (status = 200, description = "Taken (`applied` is false for a duplicate or an older version)", body = Applied),
        (status = 400, description = "`invalid-request`", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 415, description = "Not `application/json`", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn put_subscription(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<SubscriptionWrite>, JsonRejection>,
) -> Result<Json<Applied>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    let body = json_body(body)?;
    subscribe(&service, user, &body.memes_ai_until, body.version).await
}

async fn subscribe(
    service: &Shared,
    user: String,
    until: &str,
    version: u64,
) -> Result<Json<Applied>, Problem> {
    if !valid_user_id(&user) {
        return Err(Problem::new(
            ProblemKind::InvalidBody,
            "user_id must be 1 to 128 characters",
        ));
    }
    let until = rfc3339::parse(until).ok_or_else(|| {
        Problem::new(
            ProblemKind::InvalidBody,
            "memes_ai_until must be an RFC 3339 date-time, e.g. 2026-12-31T00:00:00Z",
        )
    })?;
    let command = Command::Subscribe {
        version,
        until: Millis(until),
    };
    let answer = service
        .engine
        .execute(&user, command, None, Duration::ZERO)
        .await
        .map_err(|f| failure(service, f))?;
    Ok(Json(Applied {
        applied: !answer.replayed,
        user_id: user,
        version,
    }))
}

/// `POST /v1/users/{id}/holds`: `{"job": "...", "amount": n}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldRequest {
    job: String,
    /// Tokens to set aside, at most 2^63 − 1 (a statement line's amount is
    /// signed).
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    amount: u64,
}

/// A hold after a request.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HoldResponse {
    user_id: String,
    job: String,
    /// `open`, `captured` or `released`.
    state: &'static str,
    balance: u64,
    spendable_here: u64,
}

/// Sets tokens aside for a job (the first phase of a charge on delivery).
/// Opening the same job's hold again with the same amount is a replay.
#[utoipa::path(post, path = "/v1/users/{id}/holds", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id")),
    request_body = HoldRequest,
    responses(
        (status = 200, description = "Held", body = HoldResponse),
        (status = 400, description = "`invalid-request`", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 402, description = "`insufficient-tokens` or `tokens-in-other-region`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 409, description = "`hold-conflict`: this job's hold has another amount or is closed", content_type = "application/problem+json", body = Object),
        (status = 415, description = "Not `application/json`", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn open_hold(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<HoldRequest>, JsonRejection>,
) -> Result<Json<HoldResponse>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    let body = json_body(body)?;
    let job = valid_job(body.job)?;
    if i64::try_from(body.amount).is_err() {
        return Err(Problem::new(
            ProblemKind::InvalidBody,
            "amount must be at most 9223372036854775807",
        ));
    }
    let command = Command::Hold {
        job: job.clone(),
        amount: body.amount,
    };
    let answer = run(&service, &user, command).await?;
    Ok(hold_response(user, job, "open", &answer))
}

/// The job delivered: the held tokens are charged.
#[utoipa::path(post, path = "/v1/users/{id}/holds/{job}/capture", tag = "operator",
    security(("operator" = [])),
    params(
        ("id" = String, Path, description = "The user id"),
        ("job" = String, Path, description = "The job the hold was opened for"),
    ),
    responses(
        (status = 200, description = "Done (again, for a retry)", body = HoldResponse),
        (status = 400, description = "`invalid-request`", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 404, description = "`hold-not-found`", content_type = "application/problem+json", body = Object),
        (status = 409, description = "`hold-conflict`: the hold was released", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body`: a malformed job id", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn capture_hold(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<HoldResponse>, Problem> {
    let close = |job| Command::Capture { job };
    close_hold(&service, &headers, path, close, "captured").await
}

/// The job failed: the held tokens go back, nothing is charged.
#[utoipa::path(post, path = "/v1/users/{id}/holds/{job}/release", tag = "operator",
    security(("operator" = [])),
    params(
        ("id" = String, Path, description = "The user id"),
        ("job" = String, Path, description = "The job the hold was opened for"),
    ),
    responses(
        (status = 200, description = "Done (again, for a retry)", body = HoldResponse),
        (status = 400, description = "`invalid-request`", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 404, description = "`hold-not-found`", content_type = "application/problem+json", body = Object),
        (status = 409, description = "`hold-conflict`: the hold was captured", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body`: a malformed job id", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(crate) async fn release_hold(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<HoldResponse>, Problem> {
    let close = |job| Command::Release { job };
    close_hold(&service, &headers, path, close, "released").await
}

/// Closes a hold with the command `close` makes for its job.
async fn close_hold(
    service: &Shared,
    headers: &HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    close: impl FnOnce(String) -> Command,
    state: &'static str,
) -> Result<Json<HoldResponse>, Problem> {
    operator(service, headers)?;
    let (user, job) = hold_path(path)?;
    let answer = run(service, &user, close(job.clone())).await?;
    Ok(hold_response(user, job, state, &answer))
}

async fn run(service: &Shared, user: &str, command: Command) -> Result<Answer, Problem> {
    service
        .engine
        .execute(user, command, None, Duration::ZERO)
        .await
        .map_err(|f| failure(service, f))
}

fn hold_response(
    user: String,
    job: String,
    state: &'static str,
    answer: &Answer,
) -> Json<HoldResponse> {
    Json(HoldResponse {
        user_id: user,
        job,
        state,
        balance: answer.receipt.balance,
        spendable_here: answer.receipt.spendable_here,
    })
}

fn hold_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), Problem> {
    let Path((user, job)) =
        path.map_err(|_| Problem::new(ProblemKind::InvalidRequest, "malformed path"))?;
    if !valid_user_id(&user) {
        return Err(Problem::new(
            ProblemKind::InvalidRequest,
            "user id must be 1 to 128 characters",
        ));
    }
    Ok((user, valid_job(job)?))
}

fn valid_job(job: String) -> Result<String, Problem> {
    if job.is_empty() || job.len() > MAX_JOB_BYTES || job.chars().any(char::is_control) {
        return Err(Problem::new(
            ProblemKind::InvalidBody,
            format!("job must be 1 to {MAX_JOB_BYTES} bytes without control characters"),
        ));
    }
    Ok(job)
}
