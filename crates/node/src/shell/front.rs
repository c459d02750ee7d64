//! What every request passes through before and after its route: its id
//! (on the answer, and on every log line written while it is served), the
//! body limit, the timeout, a panic caught, metrics, and an
//! error answer made a problem.
//!
//! One service ([`Front`]) instead of a stack of layers (tower-http's request
//! id, propagation, trace, timeout, catch-panic and body limit, axum's
//! `from_fn` and three `map_response`s): each layer moved the request and its
//! future again, boxed or cloned the service inside it, and some put an
//! extension on the request. Together they were about a fifth of what a
//! `/health` cost (`benches/instructions.sh`). axum's 2 MiB cap on a body
//! it reads is lifted here too, for requests that carry a body (see
//! [`Front`]'s `bodied`).

use crate::shell::limits::Allowed;
use crate::shell::metrics::Metrics;
use crate::shell::problem::{Problem, ProblemKind, set_rate_limit};
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The request-id header, which every answer carries.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The request being served on this task: its id, for log lines, and
    /// what is learned inside the router, for [`Front`] (outside it) to put
    /// on the answer and in the metrics.
    static SERVED: Served;
}

/// See [`SERVED`].
#[derive(Default)]
struct Served {
    /// The request's id, which [`with_request_id`] lends to the log lines
    /// written while it is served, until the front takes it back for the
    /// answer. A task-local, not a span: a span per request cost a spend
    /// about 3,500 instructions (6 %), for the rare request that logs.
    request_id: RefCell<Option<HeaderValue>>,
    /// The route template the router matched (none for the fallback).
    route: Cell<Option<MatchedPath>>,
    /// The per-user limit's state, once the caller is known.
    user_rate: Cell<Option<Allowed>>,
}

/// Calls `f` with the id of the request this task is serving, if it is
/// serving one (the log lines' formatter asks).
pub(crate) fn with_request_id(f: impl FnOnce(&str)) {
    let _ = SERVED.try_with(|served| {
        if let Ok(id) = served.request_id.try_borrow()
            && let Some(text) = id.as_ref().and_then(|v| v.to_str().ok())
        {
            f(text);
        }
    });
}

/// Notes the route the router matched, for the metrics (a no-op outside a
/// request).
pub(crate) fn note_route(path: &MatchedPath) {
    let _ = SERVED.try_with(|served| served.route.set(Some(path.clone())));
}

/// Notes the caller's per-user limit (none when it is off), whose headers
/// go on the answer (a no-op outside a request).
pub(crate) fn note_user_rate(allowed: Option<Allowed>) {
    let _ = SERVED.try_with(|served| served.user_rate.set(allowed));
}

/// What [`Front`] needs beside the request and the routes.
pub(crate) struct Settings {
    pub(crate) metrics: Arc<Metrics>,
    /// Longer than this (a slow body, a stuck handler) is answered 408.
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) ids: NextRequestId,
}

/// The service around the routes (`S`); see the module's documentation.
#[derive(Clone)]
pub(crate) struct Front<S> {
    /// The routes, for a request without a body.
    inner: S,
    /// The same routes for a request with a body, with axum's own 2 MiB cap
    /// on a body it reads turned off: the front's `--max-body-bytes` (up to
    /// 16 MiB) is the one limit. Only these: turning it off puts an
    /// extension on each request, an allocation a spend need not pay.
    bodied: <DefaultBodyLimit as tower::Layer<S>>::Service,
    settings: Arc<Settings>,
}

impl<S: Clone> Front<S> {
    pub(crate) fn new(inner: S, settings: Settings) -> Self {
        Self {
            bodied: tower::Layer::layer(&DefaultBodyLimit::disable(), inner.clone()),
            inner,
            settings: Arc::new(settings),
        }
    }
}

type Answered = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for Front<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answered;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        std::task::ready!(self.inner.poll_ready(cx))?;
        self.bodied.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Answered {
        let settings = self.settings.clone();
        // hyper knows a request without a body (no length, or zero).
        if request.body().size_hint().exact() == Some(0) {
            let inner = take_ready(&mut self.inner);
            Box::pin(async move { Ok(observe(&settings, request, inner).await) })
        } else {
            let bodied = take_ready(&mut self.bodied);
            Box::pin(async move { Ok(observe(&settings, request, bodied).await) })
        }
    }
}

/// The service in `slot`, polled ready, to serve one request; a fresh clone
/// takes its place and waits for the next.
fn take_ready<T: Clone>(slot: &mut T) -> T {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}

/// Names the request (its `x-request-id`, the client's or a new one, on the
/// answer and on every log line it leads to), then [`answer`]s it.
async fn observe<S>(settings: &Settings, request: Request, inner: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let request_id = match request.headers().get(X_REQUEST_ID) {
        Some(theirs) => Some(theirs.clone()),
        None => settings.ids.next(),
    };
    let (mut response, request_id) = answer(settings, request, inner, request_id).await;
    if let Some(id) = request_id {
        response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
    }
    response
}

/// Serves the request, puts the per-user rate limit's headers on the answer,
/// records metrics (under the route the router matched), logs a server
/// error, and turns any error answer that is not yet a problem (a 405, 408
/// or 413 from the framework) into one that names its request. Gives the
/// request's id back with the answer.
async fn answer<S>(
    settings: &Settings,
    request: Request,
    inner: S,
    request_id: Option<HeaderValue>,
) -> (Response, Option<HeaderValue>)
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let started = Instant::now();
    let served = Served {
        request_id: RefCell::new(request_id),
        ..Served::default()
    };
    let (mut response, route, request_id) = SERVED
        .scope(served, async {
            let mut response = guarded(settings, request, inner).await;
            let (user_rate, route, request_id) =
                SERVED.with(|s| (s.user_rate.get(), s.route.take(), s.request_id.take()));
            if let Some(allowed) = user_rate {
                set_rate_limit(response.headers_mut(), allowed.limit, allowed.remaining, 1);
            }
            (response, route, request_id)
        })
        .await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id_text = request_id.as_ref().and_then(|v| v.to_str().ok());
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if status.as_u16() >= 400 && !is_problem {
        response = as_problem(settings, response);
    }
    if status.as_u16() >= 400
        && let Some(id) = id_text
    {
        response = with_instance(response, id).await;
        if status.is_server_error() {
            tracing::warn!(request_id = %id, %route, status = status.as_u16(), "answered with a server error");
        }
    }
    let took = started.elapsed();
    settings
        .metrics
        .observe_request(route, response.status().as_u16(), took);
    tracing::debug!(request_id = %id_text.unwrap_or("-"), %route, status = response.status().as_u16(), took_us = took.as_micros(), "answered");
    (response, request_id)
}

/// Runs the routes on `request` within the body limit and the timeout,
/// answering a panic with a 500.
async fn guarded<S>(settings: &Settings, request: Request, mut inner: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let request = match limit_body(request, settings.max_body_bytes) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    // `call` inside the guard too: a route may panic before its future.
    let served = AssertUnwindSafe(async move { inner.call(request).await }).catch_unwind();
    match tokio::time::timeout(settings.request_timeout, served).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(never))) => match never {},
        Ok(Err(panic)) => panicked(panic),
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// Refuses a body declared larger than `max` before reading a byte (413),
/// and caps one of unknown length, which then fails as it is read. A body
/// of known length hyper delivers no longer than declared; one that is
/// absent needs no cap, nor the box a cap would cost.
fn limit_body(request: Request, max: usize) -> Result<Request, StatusCode> {
    let upper = request.body().size_hint().upper();
    match upper {
        Some(n) if n <= max as u64 => Ok(request),
        Some(_) => Err(StatusCode::PAYLOAD_TOO_LARGE),
        None => Ok(request.map(|body| Body::new(http_body_util::Limited::new(body, max)))),
    }
}

/// An error answer from the framework (no route, wrong method, timeout, a
/// body over the limit), as a problem.
fn as_problem(settings: &Settings, response: Response) -> Response {
    let status = response.status();
    let kind = match status {
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
        StatusCode::NOT_FOUND => ProblemKind::NotFound,
        StatusCode::REQUEST_TIMEOUT => ProblemKind::RequestTimeout,
        s if s.is_server_error() => ProblemKind::Internal,
        _ => ProblemKind::InvalidRequest,
    };
    let detail = match kind {
        ProblemKind::RequestTimeout => {
            format!(
                "the request took longer than {:?}",
                settings.request_timeout
            )
        }
        ProblemKind::PayloadTooLarge => format!(
            "the body is larger than the {} bytes accepted",
            settings.max_body_bytes
        ),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    // The router sets `Allow` on a 405 (RFC 9110 §15.5.6), outside any of
    // its routes' layers: it must survive the rewrite.
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut problem = Problem::new(kind, detail).into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
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

/// A route panicked: a 500 problem instead of a dropped connection.
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

/// Request ids: this node's region and start, then a counter, so an id names
/// one request across regions and restarts. A client's own `x-request-id` is
/// kept.
pub(crate) struct NextRequestId {
    prefix: Box<[u8]>,
    next: AtomicU64,
}

impl NextRequestId {
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            prefix: prefix.into_bytes().into_boxed_slice(),
            next: AtomicU64::new(0),
        }
    }

    /// The next id, `<prefix>-<counter in hex>`. Written by hand: `format!`
    /// cost a request about 1,100 instructions (`benches/instructions.sh`).
    fn next(&self) -> Option<HeaderValue> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut digits = [0u8; 16];
        let mut from = digits.len();
        loop {
            from -= 1;
            digits[from] = HEX[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let mut id = Vec::with_capacity(self.prefix.len() + 1 + digits.len() - from);
        id.extend_from_slice(&self.prefix);
        id.push(b'-');
        id.extend_from_slice(&digits[from..]);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A front around `route`, with a short timeout.
    fn front<S: Clone>(route: S) -> Front<S> {
        let settings = Settings {
            metrics: Arc::new(Metrics::default()),
            request_timeout: Duration::from_millis(200),
            max_body_bytes: 1024,
            ids: NextRequestId::new("r9-1".into()),
        };
        Front::new(route, settings)
    }

    /// The status, the problem's type and `instance`, and the id header.
    async fn ask<S>(front: &mut Front<S>, body: Body) -> (u16, serde_json::Value, String)
    where
        S: tower::Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        use tower::{Service, ServiceExt};
        let request = Request::builder()
            .method("POST")
            .uri("/x")
            .body(body)
            .expect("a request");
        let Ok(response) = front.ready().await.expect("ready").call(request).await;
        let status = response.status().as_u16();
        let id = response.headers()[X_REQUEST_ID]
            .to_str()
            .expect("ascii")
            .to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("a body");
        let problem = serde_json::from_slice(&bytes).unwrap_or_default();
        (status, problem, id)
    }

    #[tokio::test]
    async fn a_route_that_panics_or_hangs_is_answered_with_a_problem_naming_the_request() {
        let mut panics = front(tower::service_fn(|_: Request| async {
            if true {
                panic!("a bug");
            }
            Ok::<Response, Infallible>(StatusCode::OK.into_response())
        }));
        let (status, problem, id) = ask(&mut panics, Body::empty()).await;
        assert_eq!(status, 500);
        assert_eq!(problem["type"], ProblemKind::Internal.type_and_status().0);
        assert_eq!(problem["instance"], format!("/requests/{id}"));
        assert_eq!(id, "r9-1-0");

        let mut hangs = front(tower::service_fn(|_: Request| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<Response, Infallible>(StatusCode::OK.into_response())
        }));
        let (status, problem, _) = ask(&mut hangs, Body::empty()).await;
        assert_eq!(status, 408);
        assert_eq!(
            problem["type"],
            ProblemKind::RequestTimeout.type_and_status().0
        );
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_cut_at_the_limit_as_it_is_read() {
        let mut reads = front(tower::service_fn(|request: Request| async move {
            let read = axum::body::to_bytes(request.into_body(), usize::MAX).await;
            Ok::<Response, Infallible>(match read {
                Ok(bytes) => bytes.len().to_string().into_response(),
                Err(_) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            })
        }));
        let chunks = |n: usize| {
            Body::from_stream(futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, Infallible>(vec![b'x'; 100])),
            ))
        };
        assert_eq!(ask(&mut reads, chunks(10)).await.0, 200);
        let (status, problem, _) = ask(&mut reads, chunks(11)).await;
        assert_eq!(status, 413);
        assert_eq!(
            problem["type"],
            ProblemKind::PayloadTooLarge.type_and_status().0
        );
    }

    #[test]
    fn ids_count_in_hex_after_the_prefix() {
        let ids = NextRequestId::new("r1-2a".into());
        let first: Vec<String> = (0..18)
            .map(|_| {
                ids.next()
                    .expect("an id")
                    .to_str()
                    .expect("ascii")
                    .to_owned()
            })
            .collect();
        assert_eq!(first[0], "r1-2a-0");
        assert_eq!(first[10], "r1-2a-a");
        assert_eq!(first[17], "r1-2a-11");
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.next().expect("an id"), "r1-2a-ffffffffffffffff");
    }
}
