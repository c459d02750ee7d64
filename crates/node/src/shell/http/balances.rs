//! Balances: a user's standing (the caller's own, or any user's for the
//! operator) and the operator's credits and debits (the seed API's
//! `/update-token-balance` and `/v1/users/{id}/adjustments`).

use super::caller::{client, idempotency_key, json_body, operator, path_user};
use super::failures::failure;
use super::{Shared, mark_replay, rights_wait};
use crate::shell::app::App;
use crate::shell::auth::valid_user_id;
use crate::shell::engine::Answer;
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::{query, rfc3339};
use crate::{Command, IdempotencyKey};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// A user's standing, for `GET /v1/balance` and `GET /v1/users/{id}`.
#[derive(Serialize, ToSchema)]
pub(super) struct Standing {
    user_id: String,
    balance: u64,
    /// What this region may spend now: its rights minus its holds.
    spendable_here: u64,
    calls: u64,
    /// `memes-ai` while the premium subscription covers now, else `standard`.
    tier: &'static str,
    /// The subscription's end (RFC 3339), if the user ever had one.
    memes_ai_until: Option<String>,
    /// Tokens held here for AI memes being made.
    held: u64,
}

/// `user`'s standing as this region holds it.
async fn standing(service: &App, user: String) -> Result<Json<Standing>, Problem> {
    let standing = service
        .engine
        .standing(&user)
        .await
        .map_err(|f| failure(service, f))?;
    Ok(Json(Standing {
        user_id: user,
        balance: standing.receipt.balance,
        spendable_here: standing.receipt.spendable_here,
        calls: standing.receipt.calls,
        tier: if standing.memes_ai {
            "memes-ai"
        } else {
            "standard"
        },
        memes_ai_until: standing.memes_ai_until.map(|m| rfc3339::format(m.0)),
        held: standing.held,
    }))
}

/// The caller's own standing. A user this region never saw has the welcome
/// grant.
#[utoipa::path(get, path = "/v1/balance", tag = "balance",
    security(("client" = [])),
    responses(
        (status = 200, description = "The caller's balance, calls and tier", body = Standing),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn balance(
    State(service): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Standing>, Problem> {
    let user = client(&service, &headers)?;
    standing(&service, user).await
}

/// A user's standing, as this region knows it.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id (the JWT's `sub`), 1 to 128 characters")),
    responses(
        (status = 200, description = "The user's balance, calls and tier", body = Standing),
        (status = 400, description = "`invalid-request`: a malformed user id", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`: not the operator credential", content_type = "application/problem+json", body = Object),
        (status = 404, description = "`user-not-found`: never seen by this region", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn user(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Standing>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    // A client's own balance route shows the welcome grant to a new user; an
    // operator looking up an id this region never saw gets told so.
    if !service.engine.knows(&user) {
        return Err(Problem::new(
            ProblemKind::UserNotFound,
            format!(
                "user {:?} was never seen by this region (no spend, credit or replicated write)",
                query::truncate(&user)
            ),
        ));
    }
    standing(&service, user).await
}

/// The seed API's balance update: `{"user_id", "amount"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTokenBalance {
    user_id: String,
    amount: i64,
}

/// The seed API's answer.
#[derive(Serialize, ToSchema)]
pub(super) struct UpdateTokenBalanceResponse {
    success: bool,
    message: &'static str,
    user_id: String,
    new_balance: u64,
}

async fn adjust_balance(
    service: &App,
    headers: &HeaderMap,
    user: &str,
    amount: i64,
) -> Result<Answer, Problem> {
    if !valid_user_id(user) {
        return Err(Problem::new(
            ProblemKind::InvalidBody,
            "user_id must be 1 to 128 characters",
        ));
    }
    let key = idempotency_key(headers)?.map(|k| IdempotencyKey::adjustment(user, amount, k));
    // A debit this region's share does not cover waits for rights, as a
    // spend does; a credit needs none.
    let wait = if amount < 0 {
        rights_wait(None)
    } else {
        Duration::ZERO
    };
    service
        .engine
        .execute(user, Command::Adjust(amount), key, wait)
        .await
        .map_err(|f| failure(service, f))
}

/// The seed API's balance update: credits (positive `amount`) or debits
/// (negative) a user. A debit larger than the balance is refused, never
/// taken below zero.
#[utoipa::path(post, path = "/update-token-balance", tag = "operator",
    security(("operator" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]+$", description = "Makes a retry safe: applied once")),
    request_body = UpdateTokenBalance,
    responses(
        (status = 200, description = "Applied", body = UpdateTokenBalanceResponse, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this is a retry's replay"),
        )),
        (status = 400, description = "`invalid-request`: not JSON", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 402, description = "`insufficient-tokens` or `tokens-in-other-region`: a debit the balance does not cover, or this region's share with no rights come from the live regions holding them within 500 ms", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 409, description = "`idempotency-key-in-use`", content_type = "application/problem+json", body = Object),
        (status = 415, description = "Not `application/json`", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body` or `idempotency-key-reused`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing; not acknowledged", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn update_token_balance(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<UpdateTokenBalance>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&service, &headers)?;
    let body = json_body(body)?;
    let executed = adjust_balance(&service, &headers, &body.user_id, body.amount).await?;
    let mut response = Json(UpdateTokenBalanceResponse {
        success: true,
        message: "Token balance updated successfully",
        user_id: body.user_id,
        new_balance: executed.receipt.balance,
    })
    .into_response();
    mark_replay(&mut response, &executed);
    Ok(response)
}

/// `POST /v1/users/{id}/adjustments`: `{"amount": n}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Adjustment {
    amount: i64,
}

/// An adjustment, applied.
#[derive(Serialize, ToSchema)]
pub(super) struct AdjustmentResponse {
    user_id: String,
    amount: i64,
    balance: u64,
    spendable_here: u64,
}

/// Credits (positive `amount`) or debits (negative) a user; a debit is never
/// taken below zero.
#[utoipa::path(post, path = "/v1/users/{id}/adjustments", tag = "operator",
    security(("operator" = [])),
    params(
        ("id" = String, Path, description = "The user id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]+$", description = "Makes a retry safe: applied once"),
    ),
    request_body = Adjustment,
    responses(
        (status = 200, description = "Applied", body = AdjustmentResponse, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this is a retry's replay"),
        )),
        (status = 400, description = "`invalid-request`", content_type = "application/problem+json", body = Object),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 402, description = "`insufficient-tokens` or `tokens-in-other-region`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
        (status = 409, description = "`idempotency-key-in-use`", content_type = "application/problem+json", body = Object),
        (status = 415, description = "Not `application/json`", content_type = "application/problem+json", body = Object),
        (status = 422, description = "`invalid-body` or `idempotency-key-reused`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn adjust(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Adjustment>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    let body = json_body(body)?;
    let executed = adjust_balance(&service, &headers, &user, body.amount).await?;
    let mut response = Json(AdjustmentResponse {
        user_id: user,
        amount: body.amount,
        balance: executed.receipt.balance,
        spendable_here: executed.receipt.spendable_here,
    })
    .into_response();
    mark_replay(&mut response, &executed);
    Ok(response)
}
