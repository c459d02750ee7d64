//! The HTTP API: routes, request parsing, responses. The ledger's decisions are
//! the core's (the wait of `GET /memes` for rights included: the region holds
//! the spend until rights arrive); what is decided here is HTTP's own (limits,
//! problem answers).

use crate::Position;
use crate::shell::ai::JobBody;
use crate::shell::app::App;
use crate::shell::auth::{AuthFailure, Principal, valid_user_id};
use crate::shell::engine::{Answer, Failure};
use crate::shell::front::{self, Front};
use crate::shell::limits::Denied;
use crate::shell::listener::HttpService;
use crate::shell::premium;
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::rfc3339;
use crate::shell::{ai, history, images, openapi, query};
use crate::{Command, IdempotencyKey, Refusal};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest `Idempotency-Key` accepted.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The longest `query` accepted, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 200;
// Header names as `HeaderName`s: a `&str` name is parsed again on every
// insert or look-up.
/// Header carrying the caller's remaining balance on a memes response.
pub(crate) const BALANCE_HEADER: HeaderName = HeaderName::from_static("x-tokens-remaining");
/// Header set on a response replayed from an idempotency record.
pub(crate) const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Header carrying the client's retry key.
const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

pub(crate) type Shared = Arc<App>;

/// The longest request target accepted (path and query), in bytes.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

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

/// Adds [`Admit`]: the only layer inside the router, so that every other one
/// can sit outside it.
#[derive(Clone)]
struct AdmitLayer(Shared);

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            service: self.0.clone(),
            inner,
        }
    }
}

/// Notes the matched route for the front (its metrics), and refuses a request
/// over its address's rate limit (before any authentication) or with an
/// oversized target or headers, without running its handler.
#[derive(Clone)]
struct Admit<S> {
    service: Shared,
    inner: S,
}

/// A refusal, ready, or the route's own future: no box.
type Admitted<F> =
    futures_util::future::Either<std::future::Ready<Result<Response, Infallible>>, F>;

impl<S> tower::Service<Request> for Admit<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Admitted<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Admitted<S::Future> {
        if let Some(path) = request.extensions().get::<MatchedPath>() {
            front::note_route(path);
        }
        match refusal(&self.service, &request) {
            Some(refused) => futures_util::future::Either::Left(std::future::ready(Ok(refused))),
            None => futures_util::future::Either::Right(self.inner.call(request)),
        }
    }
}

/// Why `request` is refused before its handler runs, if it is.
fn refusal(service: &App, request: &Request) -> Option<Response> {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(denied) = ip.and_then(|ip| service.limits.ip(ip).err()) {
        service.metrics.refusal("rate_limited_ip");
        return Some(rate_limited(denied, "too many requests from this address").into_response());
    }
    oversized(request).map(IntoResponse::into_response)
}

/// Every route, each with its operation in the OpenAPI document: each
/// handler's `#[utoipa::path]` gives both, one list, so the two cannot drift
/// apart.
fn api_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        // A HEAD would run the GET handler and spend a token for a response
        // with no meme: it is refused instead (HEAD must be safe).
        .routes(routes!(memes_seed, head_memes_seed))
        .routes(routes!(memes_v1, head_memes_v1))
        .routes(routes!(balance))
        .routes(routes!(history::own_history))
        .routes(routes!(history::own_usage))
        .routes(routes!(history::user_history))
        .routes(routes!(history::remove_user_data))
        .routes(routes!(history::user_usage))
        .routes(routes!(update_token_balance))
        .routes(routes!(user))
        .routes(routes!(adjust))
        .routes(routes!(premium::put_subscription))
        .routes(routes!(premium::open_hold))
        .routes(routes!(premium::capture_hold))
        .routes(routes!(premium::release_hold))
        .routes(routes!(premium::billing_webhook))
        .routes(routes!(ai::job))
        .routes(routes!(images::image))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(cluster))
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        .routes(routes!(docs_asset))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    // Made on first use, from the same routes the router serves.
    static DOCUMENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        let (_, api) = api_routes().split_for_parts();
        serde_json::to_vec(&openapi::document(api)).unwrap_or_default()
    });
    json_answer(bytes::Bytes::from_static(document))
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

/// The API's docs (Swagger UI, served from the binary: no network needed).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)))]
async fn docs() -> Response {
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
async fn docs_asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "swagger-ui-bundle.js" | "swagger-ui.css" => openapi::docs_asset(&asset),
        _ => Problem::new(ProblemKind::NotFound, "no such docs asset").into_response(),
    }
}

/// A 429 with `Retry-After` and the `RateLimit-*` headers.
fn rate_limited(denied: Denied, detail: &str) -> Problem {
    Problem::new(ProblemKind::RateLimited, detail)
        .retry_after(denied.retry_after_secs)
        .with_rate_limit(denied.limit, denied.retry_after_secs)
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

/// The same route at the seed API's path and at `/v1`: one operation each in
/// the document, one handler.
macro_rules! memes_routes {
    ($get:ident, $head:ident, $path:literal) => {
        /// A meme for the caller, charged to their balance. Standard users get a
        /// curated meme for one token. Memes AI subscribers get an AI-made meme,
        /// charged (`--ai-meme-cost`) only once delivered: 200 with the meme, or
        /// 202 with its job if it takes longer than `wait`. Retry with the same
        /// `Idempotency-Key` and nothing is charged twice, in any region.
        #[utoipa::path(get, path = $path, tag = "memes",
            security(("client" = [])),
            params(
                MemesParams,
                ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]+$",
                    description = "Makes a retry safe: the same key answers the first outcome and charges once (at most 255 characters)"),
            ),
            responses(
                (status = 200, description = "The meme, charged", body = MemeAnswer, headers(
                    ("X-Tokens-Remaining" = u64, description = "The caller's balance after the charge"),
                    ("Idempotent-Replayed" = String, description = "`true` when this is a retry's replay"),
                    ("RateLimit-Limit" = u32, description = "Requests per second allowed for this user here"),
                    ("RateLimit-Remaining" = u32, description = "Requests left this second"),
                    ("RateLimit-Reset" = u32, description = "Seconds until the limit refills"),
                )),
                (status = 202, description = "An AI meme being made (subscribers): poll its `Location`; nothing is charged until it is delivered", body = JobBody, headers(
                    ("Location" = String, description = "`/v1/jobs/{id}`"),
                    ("Retry-After" = u64, description = "Seconds before asking again"),
                )),
                (status = 400, description = "A malformed query: `invalid-request`", content_type = "application/problem+json", body = Object),
                (status = 401, description = "No valid client token: `unauthenticated`", content_type = "application/problem+json", body = Object),
                (status = 402, description = "`insufficient-tokens`, or `tokens-in-other-region` (the balance covers it, but this region's share did not, and no rights came from the live regions holding them within `wait`, at most 500 ms)", content_type = "application/problem+json", body = Object),
                (status = 409, description = "`idempotency-key-in-use` (the first attempt still runs) or `job-in-another-region`", content_type = "application/problem+json", body = Object),
                (status = 422, description = "`idempotency-key-reused` for another request", content_type = "application/problem+json", body = Object),
                (status = 502, description = "`ai-failed`: the AI meme could not be made; nothing was charged", content_type = "application/problem+json", body = Object),
                (status = 503, description = "`ai-busy` (queue full, nothing held) or `unavailable` (storage)", content_type = "application/problem+json", body = Object),
            ))]
        async fn $get(state: State<Shared>, call: Request) -> Result<Response, Problem> {
            memes(state, call).await
        }

        /// Refused: a GET spends tokens, and a HEAD must never spend.
        #[utoipa::path(head, path = $path, tag = "memes",
            responses((status = 405, description = "`method-not-allowed`, with `Allow: GET`", content_type = "application/problem+json", body = Object)))]
        async fn $head() -> Response {
            head_spends()
        }
    };
}

memes_routes!(memes_seed, head_memes_seed, "/memes");
memes_routes!(memes_v1, head_memes_v1, "/v1/memes");

/// `GET /memes`'s query, as documented; [`parse_meme_query`] reads it (and
/// refuses unknown or repeated parameters).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only documents the parameters.
struct MemesParams {
    /// Latitude, with `lon`: picks the memes of the caller's locale.
    #[param(minimum = -90.0, maximum = 90.0)]
    lat: Option<f64>,
    /// Longitude, with `lat`.
    #[param(minimum = -180.0, maximum = 180.0)]
    lon: Option<f64>,
    /// What the meme should be about, at most 200 characters.
    #[param(max_length = 200)]
    query: Option<String>,
    /// Milliseconds the caller lets the region wait: for rights held by
    /// another region (at most 500 are used, the default; 0 answers a 402 at
    /// once), or for an AI meme before a 202 (default 5000).
    #[param(minimum = 0, maximum = 10000)]
    wait: Option<u64>,
    /// `curated`: when the AI queue is full, a curated meme at the normal
    /// price instead of a 503.
    #[param(pattern = "^curated$")]
    fallback: Option<String>,
}

/// What `GET /memes` answers with 200: a curated meme or an AI one.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only documents the answer's shapes.
enum MemeAnswer {
    Curated(MemeResponse<'static>),
    Ai(ai::AiMemeBody),
}

fn head_spends() -> Response {
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
                // For the front, which puts it on the answer.
                front::note_user_rate(allowed);
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
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        // Tabs pass `to_str`; the documented form is printable ASCII only.
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| (0x20..=0x7e).contains(&b))
        })
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
/// Rendered by [`crate::shell::curated::CuratedBodies`], mostly ahead.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemeResponse<'a> {
    pub(crate) id: u32,
    pub(crate) title: &'a str,
    pub(crate) image: &'a str,
    pub(crate) source: &'a str,
    /// `curated` for the built-in catalog.
    pub(crate) kind: &'static str,
    pub(crate) balance: u64,
    pub(crate) spendable_here: u64,
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
/// `wait`, and how long it waits without one: the one place a request waits
/// on another region, so it stays short. Without it, a client whose balance
/// covers the call got a 402 whenever this region's share had just run out;
/// `wait=0` still asks for that answer at once.
const MAX_RIGHTS_WAIT_MS: u64 = 500;
/// How long an AI meme is waited for without a `wait`, ms.
const DEFAULT_AI_WAIT_MS: u64 = 5_000;

/// How long a write waits for rights, given the client's `wait` (ms), if any.
fn rights_wait(asked_ms: Option<u64>) -> Duration {
    Duration::from_millis(
        asked_ms
            .unwrap_or(MAX_RIGHTS_WAIT_MS)
            .min(MAX_RIGHTS_WAIT_MS),
    )
}

fn parse_meme_query(raw: &str) -> Result<MemeQuery, Problem> {
    let bad = |detail: String| Problem::new(ProblemKind::InvalidRequest, detail);
    let [lat, lon, query, wait, fallback] =
        query::named(raw, ["lat", "lon", "query", "wait", "fallback"])?;
    let coordinate = |name: &str, value: Cow<'_, str>, limit: f64| -> Result<f64, Problem> {
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
    let wait = wait
        .map(|ms| query::whole_in("wait", &ms, 0..=MAX_WAIT_MS, "whole milliseconds"))
        .transpose()?;
    let fallback_curated = match fallback.as_deref() {
        None => false,
        Some("curated") => true,
        Some(_) => return Err(bad("`fallback` can only be `curated`".into())),
    };
    let query = query.unwrap_or_default().into_owned();
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(bad(format!(
            "`query` is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    Ok(MemeQuery {
        position,
        query,
        rights_wait: rights_wait(wait),
        ai_budget: Duration::from_millis(wait.unwrap_or(DEFAULT_AI_WAIT_MS)),
        fallback_curated,
    })
}

async fn memes(State(service): State<Shared>, call: Request) -> Result<Response, Problem> {
    // The call's own headers and query, read in place: the `HeaderMap` and
    // `Query` extractors would copy every header and allocate every
    // parameter, on the path every spend takes.
    let headers = call.headers();
    let user = client(&service, headers)?;
    let query = call.uri().query().unwrap_or_default();
    let request = parse_meme_query(query)?;
    let raw_key = idempotency_key(headers)?;
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
    let body = service
        .curated
        .body(meme, service.images.curated_url(meme.id), &executed.receipt);
    let mut response = json_answer(body);
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
#[derive(Serialize, ToSchema)]
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

/// The caller's own standing. A user this region never saw has the welcome
/// grant.
#[utoipa::path(get, path = "/v1/balance", tag = "balance",
    security(("client" = [])),
    responses(
        (status = 200, description = "The caller's balance, calls and tier", body = Standing),
        (status = 401, description = "`unauthenticated`", content_type = "application/problem+json", body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = "application/problem+json", body = Object),
    ))]
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
                query::truncate(&user)
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTokenBalance {
    user_id: String,
    amount: i64,
}

/// The seed API's answer.
#[derive(Serialize, ToSchema)]
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Adjustment {
    amount: i64,
}

/// An adjustment, applied.
#[derive(Serialize, ToSchema)]
struct AdjustmentResponse {
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
#[derive(Serialize, ToSchema)]
struct ClusterMember {
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
struct ClusterBody {
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
        rights_waits: view.escrow.rights_waits,
        waiting_for_rights: view.waiting_for_rights,
    }))
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
struct Health {
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
struct Ready {
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
async fn health(State(service): State<Shared>) -> Response {
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
async fn ready(State(service): State<Shared>) -> Result<Json<Ready>, Problem> {
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
async fn metrics(State(service): State<Shared>) -> Response {
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
