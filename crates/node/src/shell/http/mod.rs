//! The HTTP API: routes, request parsing, responses. The ledger's decisions are
//! the core's (the wait of `GET /memes` for rights included: the region holds
//! the spend until rights arrive); what is decided here is HTTP's own (limits,
//! problem answers).
//!
//! Layout: this file builds the router (every route and its OpenAPI operation
//! in one list) and holds what several routes share; `admit.rs` is what a
//! request meets before its handler; `caller.rs` who is calling and with which
//! retry key; `failures.rs` the core's refusals as problems; `memes.rs`,
//! `balances.rs` and `operations.rs` are routes. Statements' routes are
//! `shell/history.rs`, the premium tier's `shell/premium.rs`, AI jobs'
//! `shell/ai.rs`, images' `shell/images.rs`.

mod admit;
mod balances;
mod caller;
mod failures;
mod memes;
mod operations;

pub(crate) use caller::{client, json_body, operator, path_user};
pub(crate) use failures::failure;
pub(crate) use memes::{MemeQuery, MemeResponse};

use crate::shell::app::App;
use crate::shell::engine::Answer;
use crate::shell::front::{self, Front};
use crate::shell::listener::HttpService;
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::{ai, history, images, openapi, premium};
use admit::AdmitLayer;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

// Header names as `HeaderName`s: a `&str` name is parsed again on every
// insert or look-up.
/// Header carrying the caller's remaining balance on a memes response.
pub(crate) const BALANCE_HEADER: HeaderName = HeaderName::from_static("x-tokens-remaining");
/// Header set on a response replayed from an idempotency record.
pub(crate) const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

pub(crate) type Shared = Arc<App>;

/// The node's routes; a request taking longer than `request_timeout` (a slow
/// body, say) is answered 408.
pub(crate) fn router(
    service: Shared,
    max_body_bytes: usize,
    request_timeout: Duration,
) -> impl HttpService {
    let (routes, _) = api_routes().split_for_parts();
    // Inside the router only what needs the matched route (the admission
    // check, so that a refusal is counted under its route): `Router::layer`
    // boxes the route again for every layer and clones that box on every
    // request, so everything else is the front around it (`shell/front.rs`).
    let routes = routes
        .fallback(not_found)
        .layer(AdmitLayer(service.clone()));
    let settings = front::Settings {
        metrics: service.metrics.clone(),
        request_timeout,
        max_body_bytes,
        ids: front::NextRequestId::new(service.engine.identity_prefix()),
    };
    // Served as it is: a router around it would match every request once
    // more only to pass it on.
    Front::new(routes.with_state(service), settings)
}

/// Every route, each with its operation in the OpenAPI document: each
/// handler's `#[utoipa::path]` gives both, one list, so the two cannot drift
/// apart.
fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        // A HEAD would run the GET handler and spend a token for a response
        // with no meme: it is refused instead (HEAD must be safe).
        .routes(routes!(memes::memes_seed, memes::head_memes_seed))
        .routes(routes!(memes::memes_v1, memes::head_memes_v1))
        .routes(routes!(balances::balance))
        .routes(routes!(history::own_history))
        .routes(routes!(history::own_usage))
        .routes(routes!(history::user_history))
        .routes(routes!(history::remove_user_data))
        .routes(routes!(history::user_usage))
        .routes(routes!(balances::update_token_balance))
        .routes(routes!(balances::user))
        .routes(routes!(balances::adjust))
        .routes(routes!(premium::put_subscription))
        .routes(routes!(premium::open_hold))
        .routes(routes!(premium::capture_hold))
        .routes(routes!(premium::release_hold))
        .routes(routes!(premium::billing_webhook))
        .routes(routes!(ai::job))
        .routes(routes!(images::image))
        .routes(routes!(operations::health))
        .routes(routes!(operations::ready))
        .routes(routes!(operations::metrics))
        .routes(routes!(operations::cluster))
        .routes(routes!(operations::openapi_json))
        .routes(routes!(operations::docs))
        .routes(routes!(operations::docs_asset))
}

/// A JSON answer from bytes already encoded: the OpenAPI document, made once,
/// and a curated meme, mostly rendered ahead (`shell/curated.rs`).
fn json_answer(body: impl Into<Body>) -> Response {
    let mut response = body.into().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The longest a spend waits for rights from another region, whatever the
/// `wait`, and how long it waits without one: the one place a request waits
/// on another region, so it stays short. Without it, a client whose balance
/// covers the call got a 402 whenever this region's share had just run out;
/// `wait=0` still asks for that answer at once.
const MAX_RIGHTS_WAIT_MS: u64 = 500;

/// How long a write waits for rights, given the client's `wait` (ms), if any.
fn rights_wait(asked_ms: Option<u64>) -> Duration {
    Duration::from_millis(
        asked_ms
            .unwrap_or(MAX_RIGHTS_WAIT_MS)
            .min(MAX_RIGHTS_WAIT_MS),
    )
}

/// Marks a response replayed from an idempotency record.
fn mark_replay(response: &mut Response, executed: &Answer) {
    if executed.replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
}

/// Any route not served here.
async fn not_found() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such route")
}
