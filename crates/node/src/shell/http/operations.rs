//! The operations routes: liveness, readiness, metrics, the cluster's view,
//! and the API's own document and docs page.

use super::caller::operator;
use super::{Shared, json_answer};
use crate::shell::openapi;
use crate::shell::problem::{Problem, ProblemKind};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    // Made on first use, from the same routes the router serves.
    static DOCUMENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        let (_, api) = super::api_routes().split_for_parts();
        serde_json::to_vec(&openapi::document(api)).unwrap_or_default()
    });
    json_answer(bytes::Bytes::from_static(document))
}

/// The API's docs (Swagger UI, served from the binary: no network needed).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)))]
pub(super) async fn docs() -> Response {
    openapi::docs_asset("")
}

/// The docs page's script and style sheet.
#[utoipa::path(get, path = "/docs/{asset}", tag = "operations",
    params(("asset" = String, Path, description = "Which asset", pattern = "^(swagger-ui-bundle\\.js|swagger-ui\\.css)$")),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such asset", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn docs_asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "swagger-ui-bundle.js" | "swagger-ui.css" => openapi::docs_asset(&asset),
        _ => Problem::new(ProblemKind::NotFound, "no such docs asset").into_response(),
    }
}

/// One region, as `GET /v1/cluster` shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct ClusterMember {
    region: u16,
    addr: String,
    state: &'static str,
    since_ms: u64,
    /// Replication lag of this peer behind our writes (peers that are up).
    lag_entries: Option<u64>,
    lag_ms: Option<u64>,
}

/// This region, its peers and the rights it moved.
#[derive(Serialize, ToSchema)]
pub(super) struct ClusterBody {
    region: u16,
    addr: String,
    generation: u64,
    members: Vec<ClusterMember>,
    transfers: u64,
    tokens_moved: u64,
    rights_requests: u64,
    /// Times a spend was held here to wait for rights.
    rights_waits: u64,
    /// Spends waiting here for rights now (at most 10,000; past that, a
    /// spend is refused at once).
    waiting_for_rights: usize,
}

/// The cluster as this region sees it: members, their state, replication
/// lag, and rights moved.
#[utoipa::path(get, path = "/v1/cluster", tag = "operator",
    security(("operator" = [])),
    responses(
        (status = 200, description = "Members and lag", body = ClusterBody),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 403, description = "`forbidden`", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn cluster(
    State(service): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<ClusterBody>, Problem> {
    operator(&service, &headers)?;
    let view = service.engine.cluster();
    let members = view
        .members
        .iter()
        .map(|(region, m)| {
            let lag = view.lag.get(region);
            ClusterMember {
                region: region.0,
                addr: m.identity.addr.to_string(),
                state: if m.up { "up" } else { "down" },
                since_ms: m.since_ms,
                lag_entries: lag.map(|l| l.entries),
                lag_ms: lag.map(|l| l.ms),
            }
        })
        .collect();
    Ok(Json(ClusterBody {
        region: view.identity.region.0,
        addr: view.identity.addr.to_string(),
        generation: view.identity.generation,
        members,
        transfers: view.escrow.transfers,
        tokens_moved: view.escrow.tokens_moved,
        rights_requests: view.escrow.rights_requests,
        rights_waits: view.escrow.rights_waits,
        waiting_for_rights: view.waiting_for_rights,
    }))
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok`.
    status: &'static str,
    /// `alive`.
    commit_thread: &'static str,
    /// How long ago the group-commit thread last went round.
    commit_beat_ms_ago: u64,
    /// `ok` or `failing` (see `/ready`).
    storage: &'static str,
}

/// `GET /ready`'s answer.
#[derive(Serialize, ToSchema)]
pub(super) struct Ready {
    /// `ready`.
    status: &'static str,
}

/// Liveness: the process serves HTTP and its group-commit thread is going
/// round. Storage being full is readiness (`/ready`), not liveness.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 503, description = "`unavailable`: the group-commit thread is stuck", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn health(State(service): State<Shared>) -> Response {
    let beat_ms = u64::try_from(service.engine.commit_beat_age().as_millis()).unwrap_or(u64::MAX);
    if service.engine.commit_thread_alive() {
        Json(Health {
            status: "ok",
            commit_thread: "alive",
            commit_beat_ms_ago: beat_ms,
            storage: if service.engine.storage_failing() {
                "failing"
            } else {
                "ok"
            },
        })
        .into_response()
    } else {
        Problem::new(
            ProblemKind::Unavailable,
            format!("the group-commit thread has not run for {beat_ms} ms"),
        )
        .into_response()
    }
}

/// Readiness: storage takes writes.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
pub(super) async fn ready(State(service): State<Shared>) -> Result<Json<Ready>, Problem> {
    if service.engine.ready() {
        Ok(Json(Ready { status: "ready" }))
    } else {
        Err(Problem::new(
            ProblemKind::Unavailable,
            "storage is failing: writes are refused until it recovers",
        )
        .retry_after(1))
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(service): State<Shared>) -> Response {
    let holds = service.engine.open_holds();
    let gauges = crate::shell::metrics::AiGauges {
        queue_depth: service.jobs.queue_depth(),
        open_holds: holds.len(),
        held_tokens: holds.iter().map(|(_, amount)| amount).sum(),
    };
    let text = service.metrics.render(
        &service.engine.cluster(),
        &gauges,
        service.engine.open_connections(),
    );
    let mut response = Body::from(text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
