//! What a request meets once its route is matched and before its handler
//! runs: its route noted for the metrics, then the per-address rate limit and
//! the limits on the target's and headers' sizes, and the methods a spend
//! route serves.

use super::Shared;
use super::caller::rate_limited;
use super::memes;
use crate::shell::app::App;
use crate::shell::front;
use crate::shell::problem::{Problem, ProblemKind};
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::net::SocketAddr;

/// The longest request target accepted (path and query), in bytes.
const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Adds [`Admit`]: the only layer inside the router, so that every other one
/// can sit outside it.
#[derive(Clone)]
pub(super) struct AdmitLayer(pub(super) Shared);

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
/// over its address's rate limit (before any authentication), with an
/// oversized target or headers, or with a method a spend route does not
/// serve, without running its handler.
#[derive(Clone)]
pub(super) struct Admit<S> {
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
        let route = request.extensions().get::<MatchedPath>();
        if let Some(route) = route {
            front::note_route(route);
        }
        let refused = refusal(&self.service, &request)
            .or_else(|| route.and_then(|route| memes::only_get(route.as_str(), request.method())));
        match refused {
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
