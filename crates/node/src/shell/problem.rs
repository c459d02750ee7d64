//! RFC 9457 problem responses with stable `type`s.
//!
//! Every error the API returns is `application/problem+json`. The `type` is a stable
//! identifier clients may branch on; `detail` is for humans and never carries
//! internals (paths, stack traces, storage errors).

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

// `HeaderName`s, not `&str`s: a `&str` name is parsed again on every insert.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Puts the caller's rate limit on an answer (the IETF `RateLimit` header
/// fields draft): on every answer to a client, and on its 429s.
pub(crate) fn set_rate_limit(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: u64) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(reset));
}

/// The kinds of problem the API reports. Each has one stable `type` and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    /// 400: a malformed query or request.
    InvalidRequest,
    /// 401: missing, malformed, expired or wrongly signed credentials.
    Unauthenticated,
    /// 402: the balance does not cover the cost.
    InsufficientTokens,
    /// 402: the balance covers it, but the tokens are held by another region.
    TokensInOtherRegion,
    /// 403: authenticated, but not allowed to do this.
    Forbidden,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route exists, not with that method.
    MethodNotAllowed,
    /// 409: a request with the same idempotency key is still being processed.
    IdempotencyKeyInUse,
    /// 413: the request body is too large.
    PayloadTooLarge,
    /// 422: the body is well-formed JSON but not a valid request.
    InvalidBody,
    /// 422: an idempotency key was reused for a different request.
    IdempotencyKeyReused,
    /// 429: too many requests for this user right now.
    RateLimited,
    /// 500: a bug; the detail says nothing more.
    Internal,
    /// 503: storage could not make the write durable; nothing was acknowledged.
    Unavailable,
    /// 404: the user was never seen by this region.
    UserNotFound,
    /// 408: the request took longer than the server allows.
    RequestTimeout,
    /// 414: the request target is longer than the node accepts.
    UriTooLong,
    /// 431: the request's headers are larger than the node accepts.
    HeadersTooLarge,
    /// 404: no hold is known for this job.
    HoldNotFound,
    /// 409: the hold is closed (captured or released) or has another amount.
    HoldConflict,
    /// 401: a billing webhook whose signature is missing, wrong or stale.
    BadSignature,
    /// 503: the AI job queue is full; nothing was held or charged.
    AiBusy,
    /// 502: the AI meme could not be made; its hold was released, nothing charged.
    AiFailed,
    /// 404: no AI job of this user has this id.
    JobNotFound,
    /// 404: no image has this name.
    ImageNotFound,
    /// 409: the key's AI job belongs to another region.
    JobInAnotherRegion,
}

impl ProblemKind {
    /// Every kind, for the OpenAPI document (`position` below keeps the list
    /// complete: a new kind does not compile until it is placed here).
    pub(crate) const ALL: [ProblemKind; 26] = {
        use ProblemKind::*;
        [
            InvalidRequest,
            Unauthenticated,
            InsufficientTokens,
            TokensInOtherRegion,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            IdempotencyKeyInUse,
            PayloadTooLarge,
            InvalidBody,
            IdempotencyKeyReused,
            RateLimited,
            Internal,
            Unavailable,
            UserNotFound,
            RequestTimeout,
            UriTooLong,
            HeadersTooLarge,
            HoldNotFound,
            HoldConflict,
            BadSignature,
            AiBusy,
            AiFailed,
            JobNotFound,
            ImageNotFound,
            JobInAnotherRegion,
        ]
    };

    /// This kind's index in [`ProblemKind::ALL`]; exhaustive on purpose.
    #[cfg(test)]
    fn position(self) -> usize {
        use ProblemKind::*;
        match self {
            InvalidRequest => 0,
            Unauthenticated => 1,
            InsufficientTokens => 2,
            TokensInOtherRegion => 3,
            Forbidden => 4,
            NotFound => 5,
            MethodNotAllowed => 6,
            IdempotencyKeyInUse => 7,
            PayloadTooLarge => 8,
            InvalidBody => 9,
            IdempotencyKeyReused => 10,
            RateLimited => 11,
            Internal => 12,
            Unavailable => 13,
            UserNotFound => 14,
            RequestTimeout => 15,
            UriTooLong => 16,
            HeadersTooLarge => 17,
            HoldNotFound => 18,
            HoldConflict => 19,
            BadSignature => 20,
            AiBusy => 21,
            AiFailed => 22,
            JobNotFound => 23,
            ImageNotFound => 24,
            JobInAnotherRegion => 25,
        }
    }

    /// The stable `type` URI reference and the HTTP status.
    pub(crate) fn type_and_status(self) -> (&'static str, StatusCode) {
        use ProblemKind::*;
        match self {
            InvalidRequest => ("/problems/invalid-request", StatusCode::BAD_REQUEST),
            Unauthenticated => ("/problems/unauthenticated", StatusCode::UNAUTHORIZED),
            InsufficientTokens => (
                "/problems/insufficient-tokens",
                StatusCode::PAYMENT_REQUIRED,
            ),
            TokensInOtherRegion => (
                "/problems/tokens-in-other-region",
                StatusCode::PAYMENT_REQUIRED,
            ),
            Forbidden => ("/problems/forbidden", StatusCode::FORBIDDEN),
            NotFound => ("/problems/not-found", StatusCode::NOT_FOUND),
            MethodNotAllowed => (
                "/problems/method-not-allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            IdempotencyKeyInUse => ("/problems/idempotency-key-in-use", StatusCode::CONFLICT),
            PayloadTooLarge => ("/problems/payload-too-large", StatusCode::PAYLOAD_TOO_LARGE),
            InvalidBody => ("/problems/invalid-body", StatusCode::UNPROCESSABLE_ENTITY),
            IdempotencyKeyReused => (
                "/problems/idempotency-key-reused",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            RateLimited => ("/problems/rate-limited", StatusCode::TOO_MANY_REQUESTS),
            Internal => ("/problems/internal", StatusCode::INTERNAL_SERVER_ERROR),
            Unavailable => ("/problems/unavailable", StatusCode::SERVICE_UNAVAILABLE),
            UserNotFound => ("/problems/user-not-found", StatusCode::NOT_FOUND),
            RequestTimeout => ("/problems/request-timeout", StatusCode::REQUEST_TIMEOUT),
            UriTooLong => ("/problems/uri-too-long", StatusCode::URI_TOO_LONG),
            HeadersTooLarge => (
                "/problems/headers-too-large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            HoldNotFound => ("/problems/hold-not-found", StatusCode::NOT_FOUND),
            HoldConflict => ("/problems/hold-conflict", StatusCode::CONFLICT),
            BadSignature => ("/problems/bad-signature", StatusCode::UNAUTHORIZED),
            AiBusy => ("/problems/ai-busy", StatusCode::SERVICE_UNAVAILABLE),
            AiFailed => ("/problems/ai-failed", StatusCode::BAD_GATEWAY),
            JobNotFound => ("/problems/job-not-found", StatusCode::NOT_FOUND),
            ImageNotFound => ("/problems/image-not-found", StatusCode::NOT_FOUND),
            JobInAnotherRegion => ("/problems/job-in-another-region", StatusCode::CONFLICT),
        }
    }

    /// A short human title, the same for every problem of this kind.
    pub(crate) fn title(self) -> &'static str {
        use ProblemKind::*;
        match self {
            InvalidRequest => "Invalid request",
            Unauthenticated => "Authentication required",
            InsufficientTokens => "Insufficient tokens",
            TokensInOtherRegion => "Tokens are held in another region",
            Forbidden => "Forbidden",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            IdempotencyKeyInUse => "Idempotency key in use",
            PayloadTooLarge => "Payload too large",
            InvalidBody => "Invalid body",
            IdempotencyKeyReused => "Idempotency key reused",
            RateLimited => "Too many requests",
            Internal => "Internal error",
            Unavailable => "Service unavailable",
            UserNotFound => "User not found",
            RequestTimeout => "Request timeout",
            UriTooLong => "URI too long",
            HeadersTooLarge => "Request headers too large",
            HoldNotFound => "Hold not found",
            HoldConflict => "Hold conflict",
            BadSignature => "Bad webhook signature",
            AiBusy => "AI memes are busy",
            AiFailed => "The AI meme could not be made",
            JobNotFound => "Job not found",
            ImageNotFound => "Image not found",
            JobInAnotherRegion => "The job is in another region",
        }
    }
}

/// A problem response: kind, human detail, and optional extra fields.
#[derive(Debug)]
pub(crate) struct Problem {
    kind: ProblemKind,
    detail: String,
    balance: Option<u64>,
    retry_after_secs: Option<u64>,
    /// `RateLimit-Limit` and `RateLimit-Reset`, for 429s.
    rate_limit: Option<(u32, u64)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with a human-readable `detail`.
    pub(crate) fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            balance: None,
            retry_after_secs: None,
            rate_limit: None,
        }
    }

    /// Adds `RateLimit-Limit: limit`, `RateLimit-Remaining: 0` and
    /// `RateLimit-Reset: reset_secs`.
    pub(crate) fn with_rate_limit(mut self, limit: u32, reset_secs: u64) -> Self {
        self.rate_limit = Some((limit, reset_secs));
        self
    }

    /// The problem's kind.
    pub(crate) fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// What it says to the client.
    #[cfg(test)]
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    /// Adds the caller's balance, for 402s.
    pub(crate) fn with_balance(mut self, balance: u64) -> Self {
        self.balance = Some(balance);
        self
    }

    /// Adds a `Retry-After` header.
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn body(&self) -> Vec<u8> {
        let (kind, status) = self.kind.type_and_status();
        let body = Body {
            kind,
            title: self.kind.title(),
            status: status.as_u16(),
            detail: &self.detail,
            balance: self.balance,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The problem as raw HTTP/1.1 response bytes that close the connection,
    /// for answers written below axum (see [`crate::shell::listener`]).
    pub(crate) fn to_http1_closing(&self) -> Vec<u8> {
        let (_, status) = self.kind.type_and_status();
        let body = self.body();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after_secs {
            head.push_str(&format!("retry-after: {secs}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (_, status) = self.kind.type_and_status();
        let mut response = (status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some((limit, reset)) = self.rate_limit {
            set_rate_limit(headers, limit, 0, reset);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::ProblemKind;

    #[test]
    fn all_lists_every_kind_once_with_a_distinct_type() {
        for (i, kind) in ProblemKind::ALL.iter().enumerate() {
            assert_eq!(kind.position(), i, "{kind:?}");
        }
        let mut types: Vec<_> = ProblemKind::ALL
            .iter()
            .map(|k| k.type_and_status().0)
            .collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), ProblemKind::ALL.len());
    }
}
