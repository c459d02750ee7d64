//! `GET /memes` (and `/v1/memes`): the query, the charge, and the meme; a
//! subscriber's AI meme is `shell/ai.rs`'s.

use super::caller::{client, idempotency_key};
use super::failures::failure;
use super::{BALANCE_HEADER, Shared, json_answer, mark_replay, rights_wait};
use crate::Position;
use crate::shell::ai::{self, JobBody};
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::query;
use crate::{Command, IdempotencyKey};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The longest `query` accepted, in characters.
const MAX_QUERY_CHARS: usize = 200;

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
        pub(super) async fn $get(state: State<Shared>, call: Request) -> Result<Response, Problem> {
            memes(state, call).await
        }

        /// Refused: a GET spends tokens, and a HEAD must never spend.
        #[utoipa::path(head, path = $path, tag = "memes",
            responses((status = 405, description = "`method-not-allowed`, with `Allow: GET`", content_type = "application/problem+json", body = Object)))]
        pub(super) async fn $head() -> Response {
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
pub(super) struct MemesParams {
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
pub(super) enum MemeAnswer {
    Curated(MemeResponse<'static>),
    Ai(ai::AiMemeBody),
}

/// The paths `memes_routes!` serves a spend at (below).
const SPEND_PATHS: [&str; 2] = ["/memes", "/v1/memes"];

fn head_spends() -> Response {
    get_only("HEAD is not served here: a GET spends tokens, and a HEAD must never spend")
}

/// A 405 naming GET alone, for any other method but HEAD (which
/// [`head_spends`] answers) at a spend route: the router's own 405 there
/// names HEAD as allowed, for its HEAD route.
pub(super) fn only_get(route: &str, method: &Method) -> Option<Response> {
    (method != Method::GET && method != Method::HEAD && SPEND_PATHS.contains(&route))
        .then(|| get_only(&format!("{method} is not served here, only GET")))
}

fn get_only(detail: &str) -> Response {
    let mut response = Problem::new(ProblemKind::MethodNotAllowed, detail).into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
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
/// How long an AI meme is waited for without a `wait`, ms.
const DEFAULT_AI_WAIT_MS: u64 = 5_000;

/// The query of `GET /memes`, checked: unknown or repeated parameters, and
/// values out of range, are refused by name.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spend_paths_are_the_routes_that_refuse_head() {
        // `SPEND_PATHS` repeats the literals `memes_routes!` is given: a spend
        // route added without it would name HEAD in its 405s again.
        let (_, api) = super::super::api_routes().split_for_parts();
        let mut refusing_head: Vec<&str> = api
            .paths
            .paths
            .iter()
            .filter(|(_, item)| item.head.is_some())
            .map(|(path, _)| path.as_str())
            .collect();
        refusing_head.sort_unstable();
        assert_eq!(refusing_head, SPEND_PATHS);
    }
}
