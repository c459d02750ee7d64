//! The HTTP API: routes, request parsing, responses. The ledger's decisions are
//! the core's (the opt-in `wait` of `GET /memes` included: the region holds
//! the spend until rights arrive); what is decided here is HTTP's own (limits,
//! problem answers).

use crate::Position;
use crate::shell::app::App;
use crate::shell::auth::{AuthFailure, Principal, valid_user_id};
use crate::shell::engine::{Answer, Failure};
use crate::shell::limits::{Allowed, Denied};
use crate::shell::premium;
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::rfc3339;
use crate::shell::{ai, images};
use crate::{Command, IdempotencyKey, Refusal};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// The longest `Idempotency-Key` accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The longest `query` accepted, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 200;
/// Header carrying the caller's remaining balance on a memes response.
pub(crate) const BALANCE_HEADER: &str = "x-tokens-remaining";
/// Header set on a response replayed from an idempotency record.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

pub(crate) type Shared = Arc<App>;

/// The longest request target accepted (path and query), in bytes.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The node's routes; a request taking longer than `request_timeout` (a slow
/// body, say) is answered 408.
pub(crate) fn router(service: Shared, max_body_bytes: usize, request_timeout: Duration) -> Router {
    Router::new()
        // A HEAD would run the GET handler and spend a token for a response
        // with no meme: it is refused instead (HEAD must be safe).
        .route("/memes", get(memes).head(head_spends))
        .route("/v1/memes", get(memes).head(head_spends))
        .route("/v1/balance", get(balance))
        .route("/update-token-balance", post(update_token_balance))
        .route("/v1/users/{id}", get(user))
        .route("/v1/users/{id}/adjustments", post(adjust))
        .route(
            "/v1/users/{id}/subscription",
            put(premium::put_subscription),
        )
        .route("/v1/users/{id}/holds", post(premium::open_hold))
        .route(
            "/v1/users/{id}/holds/{job}/capture",
            post(premium::capture_hold),
        )
        .route(
            "/v1/users/{id}/holds/{job}/release",
            post(premium::release_hold),
        )
        .route("/v1/webhooks/billing", post(premium::billing_webhook))
        .route("/v1/jobs/{id}", get(ai::job))
        .route("/v1/images/{file}", get(images::image))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Inside `observe`, so a panic is answered, measured and logged like
        // any other 500.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(
            (service.clone(), request_timeout),
            observe,
        ))
        // A span per request carrying its id, so every log line a request
        // causes names it (the id a client quotes from a problem's `instance`).
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NextRequestId::new(
            service.engine.identity_prefix(),
        )))
        .with_state(service)
}

/// Request ids: this node's region and start, then a counter, so an id names
/// one request across regions and restarts. A client's own `x-request-id` is
/// kept.
#[derive(Clone)]
struct NextRequestId {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl NextRequestId {
    fn new(prefix: String) -> Self {
        Self {
            prefix: prefix.into(),
            next: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// The span of one request: method, path and request id (set by the layer
/// outside this one). The query is left out: it is the client's search text.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
}

/// A handler panicked: a 500 problem instead of a dropped connection.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "a request handler panicked");
    Problem::new(
        ProblemKind::Internal,
        "the server hit a bug; the request may or may not have taken effect: retry with \
         the same Idempotency-Key to find out without being charged twice",
    )
    .into_response()
}

tokio::task_local! {
    /// The per-user limit's state of the request being served, set by
    /// [`client`] and put on the answer by [`observe`].
    static USER_RATE: std::cell::Cell<Option<Allowed>>;
}

/// A 429 with `Retry-After` and the `RateLimit-*` headers.
fn rate_limited(denied: Denied, detail: &str) -> Problem {
    Problem::new(ProblemKind::RateLimited, detail)
        .retry_after(denied.retry_after_secs)
        .with_rate_limit(denied.limit, denied.retry_after_secs)
}

/// Refuses callers over their IP's rate limit (before any authentication),
/// oversized request targets and headers, bounds the request's time,
/// records metrics, and turns any error response that is not yet a problem (a
/// 405 or 413 from the framework) into one.
async fn observe(
    State((service, request_timeout)): State<(Shared, Duration)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let limited = ip.and_then(|ip| service.limits.ip(ip).err());
    let mut response = match (limited, oversized(&request)) {
        (Some(denied), _) => {
            service.metrics.refusal("rate_limited_ip");
            rate_limited(denied, "too many requests from this address").into_response()
        }
        (None, Some(problem)) => problem.into_response(),
        (None, None) => match tokio::time::timeout(
            request_timeout,
            USER_RATE.scope(std::cell::Cell::new(None), async {
                let mut response = next.run(request).await;
                if let Some(allowed) = USER_RATE.with(std::cell::Cell::get) {
                    let h = response.headers_mut();
                    h.insert("ratelimit-limit", HeaderValue::from(allowed.limit));
                    h.insert("ratelimit-remaining", HeaderValue::from(allowed.remaining));
                    h.insert("ratelimit-reset", HeaderValue::from(1u32));
                }
                response
            }),
        )
        .await
        {
            Ok(response) => response,
            Err(_) => Problem::new(
                ProblemKind::RequestTimeout,
                format!("the request took longer than {request_timeout:?}"),
            )
            .into_response(),
        },
    };
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if status.as_u16() >= 400 && !is_problem {
        let kind = match status {
            StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::NOT_FOUND => ProblemKind::NotFound,
            s if s.is_server_error() => ProblemKind::Internal,
            _ => ProblemKind::InvalidRequest,
        };
        let detail = status.canonical_reason().unwrap_or("error").to_owned();
        response = Problem::new(kind, detail).into_response();
    }
    if status.as_u16() >= 400
        && let Some(id) = &request_id
    {
        response = with_instance(response, id).await;
        if status.is_server_error() {
            tracing::warn!(request_id = %id, %route, status = status.as_u16(), "answered with a server error");
        }
    }
    service
        .metrics
        .observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Sets a problem's `instance` to the request's id (RFC 9457): what a client
/// quotes, and what the node's logs carry.
async fn with_instance(response: Response, request_id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut problem: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    problem["instance"] = serde_json::Value::String(format!("/requests/{request_id}"));
    let body = serde_json::to_vec(&problem).map_or(Body::from(bytes), Body::from);
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// A problem if the request's target or headers are larger than we accept.
fn oversized(request: &Request) -> Option<Problem> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return Some(Problem::new(
            ProblemKind::UriTooLong,
            format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Some(Problem::new(
            ProblemKind::HeadersTooLarge,
            format!("the headers are {headers} bytes; at most {MAX_HEADER_BYTES} are accepted"),
        ));
    }
    None
}

async fn head_spends() -> Response {
    let mut response = Problem::new(
        ProblemKind::MethodNotAllowed,
        "HEAD is not served here: a GET spends tokens, and a HEAD must never spend",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

async fn not_found() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such route")
}

fn principal(service: &App, headers: &HeaderMap) -> Result<Principal, Problem> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    service.auth.identify(authorization).map_err(|failure| {
        let detail = match failure {
            AuthFailure::Missing => "missing Authorization: Bearer header",
            AuthFailure::Invalid(why) => why,
        };
        Problem::new(ProblemKind::Unauthenticated, detail)
    })
}

/// The calling client's user id, admitted by the per-user rate limit.
pub(crate) fn client(service: &App, headers: &HeaderMap) -> Result<String, Problem> {
    match principal(service, headers)? {
        Principal::User(user) => match service.limits.user(&user) {
            Ok(allowed) => {
                // For `observe`, which puts it on the answer.
                let _ = USER_RATE.try_with(|slot| slot.set(allowed));
                Ok(user)
            }
            Err(denied) => {
                service.metrics.refusal("rate_limited");
                Err(rate_limited(denied, "too many requests for this user"))
            }
        },
        Principal::Operator => Err(Problem::new(
            ProblemKind::Forbidden,
            "the operator credential is not a user; use a client token",
        )),
    }
}

pub(crate) fn operator(service: &App, headers: &HeaderMap) -> Result<(), Problem> {
    match principal(service, headers)? {
        Principal::Operator => Ok(()),
        Principal::User(_) => Err(Problem::new(
            ProblemKind::Forbidden,
            "this route needs the operator credential",
        )),
    }
}

/// The request's `Idempotency-Key`, if it sent one; the core scopes it and
/// fingerprints the request ([`IdempotencyKey`]).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::InvalidRequest,
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

pub(crate) fn failure(service: &App, failure: Failure) -> Problem {
    let (reason, problem) = match failure {
        Failure::Refused(Refusal::InsufficientTokens { balance }) => (
            "insufficient_tokens",
            Problem::new(
                ProblemKind::InsufficientTokens,
                format!("the balance is {balance} tokens"),
            )
            .with_balance(balance),
        ),
        Failure::Refused(Refusal::TokensInOtherRegion { here, elsewhere }) => (
            "tokens_in_other_region",
            Problem::new(
                ProblemKind::TokensInOtherRegion,
                format!(
                    "{here} tokens are held here and {elsewhere} in other regions; retry shortly"
                ),
            )
            .with_balance(here.saturating_add(elsewhere))
            .retry_after(1),
        ),
        Failure::Refused(Refusal::KeyInUse) => (
            "idempotency_key_in_use",
            Problem::new(
                ProblemKind::IdempotencyKeyInUse,
                "a request with this Idempotency-Key is still in progress; retry shortly",
            )
            .retry_after(1),
        ),
        Failure::Refused(Refusal::KeyReused) => (
            "idempotency_key_reused",
            Problem::new(
                ProblemKind::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request",
            ),
        ),
        Failure::Refused(Refusal::Overflow) => (
            "overflow",
            Problem::new(
                ProblemKind::InvalidBody,
                "the amount would overflow the balance",
            ),
        ),
        Failure::Refused(Refusal::StorageFailing) => (
            "storage",
            Problem::new(
                ProblemKind::Unavailable,
                "storage is failing; the request was refused and nothing changed",
            )
            .retry_after(1),
        ),
        Failure::Refused(Refusal::ZeroAmount) => (
            "zero_amount",
            Problem::new(ProblemKind::InvalidBody, "amount must not be zero"),
        ),
        Failure::Refused(Refusal::UnknownHold) => (
            "hold_not_found",
            Problem::new(ProblemKind::HoldNotFound, "no hold is known for this job"),
        ),
        Failure::Refused(Refusal::HoldReleased) => (
            "hold_released",
            Problem::new(
                ProblemKind::HoldConflict,
                "the hold was released (failed, cancelled or expired) and cannot be captured",
            ),
        ),
        Failure::Refused(Refusal::HoldCaptured) => (
            "hold_captured",
            Problem::new(
                ProblemKind::HoldConflict,
                "the hold was captured and cannot be released",
            ),
        ),
        Failure::Refused(Refusal::HoldMismatch) => (
            "hold_mismatch",
            Problem::new(
                ProblemKind::HoldConflict,
                "a hold for this job exists with another amount",
            ),
        ),
        // Storage failures are logged once by the group commit, not once per
        // request: a failing disk must not also flood the log.
        Failure::NotAcknowledged => (
            "storage",
            Problem::new(
                ProblemKind::Unavailable,
                "the write could not be made durable in time and is not acknowledged; \
                 it takes effect only if storage recovers, so retry with the same \
                 Idempotency-Key to learn the outcome without being charged twice",
            )
            .retry_after(1),
        ),
    };
    service.metrics.refusal(reason);
    problem
}

/// The meme answered to a client, with its balance after the charge.
#[derive(Serialize)]
struct MemeResponse<'a> {
    id: u32,
    title: &'a str,
    image: &'a str,
    source: &'a str,
    /// `curated` for the built-in catalog.
    kind: &'static str,
    balance: u64,
    spendable_here: u64,
}

/// The query of `GET /memes`, validated.
pub(crate) struct MemeQuery {
    pub(crate) position: Option<Position>,
    pub(crate) query: String,
    /// How long the client lets us wait for rights held in another region.
    pub(crate) rights_wait: Duration,
    /// How long a subscriber lets us make the AI meme before a 202.
    pub(crate) ai_budget: Duration,
    /// `fallback=curated`: a full AI queue gives a curated meme at the
    /// normal price instead of a 503.
    pub(crate) fallback_curated: bool,
}

/// The longest `wait` a client may ask for, ms.
const MAX_WAIT_MS: u64 = 10_000;
/// The longest a spend waits for rights from another region, whatever the
/// `wait`: the one place a request waits on another region, so it stays
/// short and opt-in.
const MAX_RIGHTS_WAIT_MS: u64 = 500;
/// How long an AI meme is waited for without a `wait`, ms.
const DEFAULT_AI_WAIT_MS: u64 = 5_000;

fn parse_meme_query(pairs: Vec<(String, String)>) -> Result<MemeQuery, Problem> {
    let bad = |detail: String| Problem::new(ProblemKind::InvalidRequest, detail);
    let (mut lat, mut lon, mut query, mut wait, mut fallback) = (None, None, None, None, None);
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "lat" => &mut lat,
            "lon" => &mut lon,
            "query" => &mut query,
            "wait" => &mut wait,
            "fallback" => &mut fallback,
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{}`",
                    truncate(other)
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(bad(format!("query parameter `{name}` given twice")));
        }
    }
    let coordinate = |name: &str, value: String, limit: f64| -> Result<f64, Problem> {
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{name}` must be a number")))?;
        if !v.is_finite() || v.abs() > limit {
            return Err(bad(format!("`{name}` must be finite and within ±{limit}")));
        }
        Ok(v)
    };
    let position = match (lat, lon) {
        (Some(lat), Some(lon)) => Some(Position {
            lat: coordinate("lat", lat, 90.0)?,
            lon: coordinate("lon", lon, 180.0)?,
        }),
        (None, None) => None,
        _ => {
            return Err(bad(
                "`lat` and `lon` go together: give both or neither".into()
            ));
        }
    };
    let wait = match wait {
        None => None,
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms <= MAX_WAIT_MS => Some(ms),
            _ => {
                return Err(bad(format!(
                    "`wait` must be whole milliseconds from 0 to {MAX_WAIT_MS}"
                )));
            }
        },
    };
    let fallback_curated = match fallback.as_deref() {
        None => false,
        Some("curated") => true,
        Some(_) => return Err(bad("`fallback` can only be `curated`".into())),
    };
    let query = query.unwrap_or_default();
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(bad(format!(
            "`query` is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(MemeQuery {
        position,
        query,
        rights_wait: Duration::from_millis(wait.unwrap_or(0).min(MAX_RIGHTS_WAIT_MS)),
        ai_budget: Duration::from_millis(wait.unwrap_or(DEFAULT_AI_WAIT_MS)),
        fallback_curated,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

async fn memes(
    State(service): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Problem> {
    let user = client(&service, &headers)?;
    let Query(pairs) =
        query.map_err(|_| Problem::new(ProblemKind::InvalidRequest, "malformed query string"))?;
    let request = parse_meme_query(pairs)?;
    let raw_key = idempotency_key(&headers)?;
    let curated_key =
        |k: &str| IdempotencyKey::meme_call(&user, k.to_owned(), request.position, &request.query);
    // The tier is read under the charge's own lock: `None` means premium.
    let curated = service
        .engine
        .curated_call(
            &user,
            raw_key.as_deref().map(curated_key),
            request.rights_wait,
        )
        .await
        .map_err(|f| failure(&service, f))?;
    let executed = match curated {
        Some(executed) => executed,
        None => match ai::ai_meme(&service, &user, &request, raw_key.as_deref()).await {
            Err(p) if p.kind() == ProblemKind::AiBusy && request.fallback_curated => {
                // A full AI queue, and the client asked for a curated meme.
                let key = raw_key.as_deref().map(curated_key);
                service
                    .engine
                    .execute(&user, Command::ChargeCall, key, request.rights_wait)
                    .await
                    .map_err(|f| failure(&service, f))?
            }
            answer => return answer,
        },
    };
    let meme = service.catalog.choose(&request.query, request.position);
    let body = MemeResponse {
        id: meme.id,
        title: &meme.title,
        image: service.images.curated_url(meme.id),
        source: &meme.source,
        kind: "curated",
        balance: executed.receipt.balance,
        spendable_here: executed.receipt.spendable_here,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(BALANCE_HEADER, HeaderValue::from(executed.receipt.balance));
    mark_replay(&mut response, &executed);
    Ok(response)
}

fn mark_replay(response: &mut Response, executed: &Answer) {
    if executed.replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
}

/// A user's standing, for `GET /v1/balance` and `GET /v1/users/{id}`.
#[derive(Serialize)]
struct Standing {
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

async fn balance(
    State(service): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Standing>, Problem> {
    let user = client(&service, &headers)?;
    standing(&service, user).await
}

pub(crate) fn path_user(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(id) =
        path.map_err(|_| Problem::new(ProblemKind::InvalidRequest, "malformed user id"))?;
    if valid_user_id(&id) {
        Ok(id)
    } else {
        Err(Problem::new(
            ProblemKind::InvalidRequest,
            "user id must be 1 to 128 characters, no control characters",
        ))
    }
}

async fn user(
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
                truncate(&user)
            ),
        ));
    }
    standing(&service, user).await
}

pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(t)| t).map_err(|rejection| {
        let kind = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::InvalidBody,
            _ => ProblemKind::InvalidRequest,
        };
        Problem::new(kind, rejection.body_text())
    })
}

/// The seed API's balance update: `{"user_id", "amount"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTokenBalance {
    user_id: String,
    amount: i64,
}

/// The seed API's answer.
#[derive(Serialize)]
struct UpdateTokenBalanceResponse {
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
    service
        .engine
        .execute(user, Command::Adjust(amount), key, Duration::ZERO)
        .await
        .map_err(|f| failure(service, f))
}

async fn update_token_balance(
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjustment {
    amount: i64,
}

#[derive(Serialize)]
struct AdjustmentResponse {
    user_id: String,
    amount: i64,
    balance: u64,
    spendable_here: u64,
}

async fn adjust(
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

/// One region, as `GET /v1/cluster` shows it.
#[derive(Serialize)]
struct ClusterMember {
    region: u16,
    addr: String,
    state: &'static str,
    since_ms: u64,
    /// Replication lag of this peer behind our writes (peers that are up).
    lag_entries: Option<u64>,
    lag_ms: Option<u64>,
}

#[derive(Serialize)]
struct ClusterBody {
    region: u16,
    addr: String,
    generation: u64,
    members: Vec<ClusterMember>,
    transfers: u64,
    tokens_moved: u64,
    rights_requests: u64,
}

/// `GET /v1/cluster`: members, their state and replication lag. Operator only.
async fn cluster(
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
    }))
}

/// Liveness: the process serves HTTP and its group-commit thread is going
/// round. Storage being full is readiness (`/ready`), not liveness.
async fn health(State(service): State<Shared>) -> Response {
    let beat_ms = u64::try_from(service.engine.commit_beat_age().as_millis()).unwrap_or(u64::MAX);
    if service.engine.commit_thread_alive() {
        Json(serde_json::json!({
            "status": "ok",
            "commit_thread": "alive",
            "commit_beat_ms_ago": beat_ms,
            "storage": if service.engine.storage_failing() { "failing" } else { "ok" },
        }))
        .into_response()
    } else {
        Problem::new(
            ProblemKind::Unavailable,
            format!("the group-commit thread has not run for {beat_ms} ms"),
        )
        .into_response()
    }
}

async fn ready(State(service): State<Shared>) -> Result<Json<serde_json::Value>, Problem> {
    if service.engine.ready() {
        Ok(Json(serde_json::json!({ "status": "ready" })))
    } else {
        Err(Problem::new(
            ProblemKind::Unavailable,
            "storage is failing: writes are refused until it recovers",
        )
        .retry_after(1))
    }
}

async fn metrics(State(service): State<Shared>) -> Response {
    let holds = service.engine.open_holds();
    let gauges = crate::shell::metrics::AiGauges {
        queue_depth: service.jobs.queue_depth(),
        open_holds: holds.len(),
        held_tokens: holds.iter().map(|(_, amount)| amount).sum(),
    };
    let text = service.metrics.render(&service.engine.cluster(), &gauges);
    let mut response = Body::from(text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
