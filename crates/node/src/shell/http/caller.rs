//! Who is calling, and with which retry key: the credential (a client's or
//! the operator's), the per-user rate limit, `Idempotency-Key`, a path's
//! user id and a JSON body, each refused with a problem naming what is wrong.

use crate::shell::app::App;
use crate::shell::auth::{AuthFailure, Principal, valid_user_id};
use crate::shell::front;
use crate::shell::limits::Denied;
use crate::shell::problem::{Problem, ProblemKind};
use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Header carrying the client's retry key, as a `HeaderName`: a `&str` name
/// is parsed again on every look-up.
const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// A 429 with `Retry-After` and the `RateLimit-*` headers.
pub(super) fn rate_limited(denied: Denied, detail: &str) -> Problem {
    Problem::new(ProblemKind::RateLimited, detail)
        .retry_after(denied.retry_after_secs)
        .with_rate_limit(denied.limit, denied.retry_after_secs)
}

/// The credential on the request, verified.
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

/// The operator, or a problem: operator routes take no client token.
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
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
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

/// The user id in the route's path, checked as a client token's `sub` is.
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

/// A JSON body, or the problem axum's rejection means (too large, not JSON,
/// the wrong fields).
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
