//! Statements over HTTP: a user's history (newest first, cursor-paginated),
//! usage by UTC day, and an operator's removal of a user's statement and
//! personal data. The lines themselves are [`crate::shell::statements`]'.

use crate::shell::engine::now_ms;
use crate::shell::http::{Shared, client, failure, operator, path_user};
use crate::shell::problem::{Problem, ProblemKind};
use crate::shell::query;
use crate::shell::rfc3339;
use crate::shell::statements::DayUsage;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// Lines per page, unless the client asks for fewer.
const DEFAULT_LIMIT: u64 = 50;
/// The most lines one page shows.
const MAX_LIMIT: u64 = 500;
/// Days of usage, unless the client asks for another number.
const DEFAULT_DAYS: u64 = 30;
/// The most days of usage one answer covers.
const MAX_DAYS: u64 = 400;

/// A page of a statement, as documented; [`page_asked`] reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only documents the parameters.
pub(crate) struct PageQuery {
    /// `next_cursor` of the previous page; none for the newest lines.
    #[param(pattern = "^[0-9]{1,20}$")]
    cursor: Option<String>,
    /// Lines on this page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// How many days of usage, as documented; [`days_asked`] reads it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only documents the parameters.
pub(crate) struct UsageQuery {
    /// Days up to and including today (UTC), 1 to 400 (default 30).
    #[param(minimum = 1, maximum = 400)]
    days: Option<u64>,
}

/// The cursor and the number of lines a history query asks for (no query:
/// the newest page).
fn page_asked(raw: Option<&str>) -> Result<(Option<u64>, usize), Problem> {
    let [cursor, limit] = query::named(raw.unwrap_or_default(), ["cursor", "limit"])?;
    let cursor = cursor
        .map(|c| c.parse::<u64>())
        .transpose()
        .map_err(|_| bad("`cursor` must be a `next_cursor` from a previous page"))?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(l) => query::whole_in("limit", &l, 1..=MAX_LIMIT, "a whole number")?,
    };
    // At most `MAX_LIMIT`, so it fits.
    Ok((cursor, usize::try_from(limit).unwrap_or(usize::MAX)))
}

/// The days a usage query asks for (no query: the last 30).
fn days_asked(raw: Option<&str>) -> Result<u64, Problem> {
    let [days] = query::named(raw.unwrap_or_default(), ["days"])?;
    match days {
        None => Ok(DEFAULT_DAYS),
        Some(d) => query::whole_in("days", &d, 1..=MAX_DAYS, "a whole number"),
    }
}

fn bad(detail: &str) -> Problem {
    Problem::new(ProblemKind::InvalidRequest, detail)
}

/// One line of a statement.
#[derive(Serialize, ToSchema)]
pub(crate) struct LineBody {
    /// Its id (also a cursor).
    id: String,
    /// When this region made or learnt of it (RFC 3339).
    at: String,
    /// The region where it happened.
    region: u16,
    /// `spend`, `credit`, `debit`, `hold`, `capture` or `release`.
    kind: &'static str,
    /// The change to the balance (negative for charges).
    amount: i64,
    /// Memes-API calls it covers.
    calls: u64,
    /// Tokens a hold set aside or a release set free.
    held: u64,
    /// The balance after it, as this region saw it.
    balance_after: u64,
    /// The request's Idempotency-Key, or the job (only at the region that
    /// served it).
    reference: Option<String>,
}

/// A page of a user's statement.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryBody {
    user_id: String,
    /// The balance now.
    balance: u64,
    /// The balance before the oldest line kept: the welcome grant plus what
    /// older lines (compacted by retention) added up to. This plus every
    /// line's amount is the balance the newest line ends at.
    opening_balance: u64,
    /// Newest first.
    lines: Vec<LineBody>,
    /// Pass as `cursor` for older lines; absent on the last page.
    next_cursor: Option<String>,
}

/// A day's usage.
#[derive(Serialize, ToSchema)]
pub(crate) struct DayBody {
    /// The UTC day, `YYYY-MM-DD`.
    day: String,
    calls: u64,
    /// Tokens charged (spends and captured holds).
    tokens_spent: u64,
    tokens_credited: u64,
    tokens_debited: u64,
}

/// Usage by UTC day.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageBody {
    user_id: String,
    /// Newest first; days with nothing are left out.
    days: Vec<DayBody>,
}

/// What a removal did.
#[derive(Serialize, ToSchema)]
pub(crate) struct RemovedBody {
    user_id: String,
    /// Statement lines removed (their total is carried into the opening
    /// balance).
    lines_removed: usize,
    /// Finished AI jobs removed (their queries and memes).
    jobs_removed: usize,
    /// Where the statement now starts: today's balance.
    opening_balance: u64,
}

const P: &str = "application/problem+json";

/// The caller's statement: every change of their balance, newest first.
#[utoipa::path(get, path = "/v1/balance/history", tag = "balance",
    security(("client" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the statement", body = HistoryBody),
        (status = 400, description = "`invalid-request`: a bad cursor or limit, or a parameter unknown or given twice", content_type = P, body = Object),
        (status = 401, description = "`unauthenticated`", content_type = P, body = Object),
        (status = 503, description = "`unavailable`: storage is failing", content_type = P, body = Object),
    ))]
pub(crate) async fn own_history(
    State(service): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<HistoryBody>, Problem> {
    let user = client(&service, &headers)?;
    history(&service, user, query).await
}

/// A user's statement, as this region holds it.
#[utoipa::path(get, path = "/v1/users/{id}/history", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id"), PageQuery),
    responses(
        (status = 200, description = "A page of the statement", body = HistoryBody),
        (status = 400, description = "`invalid-request`", content_type = P, body = Object),
        (status = 401, description = "`unauthenticated`", content_type = P, body = Object),
        (status = 403, description = "`forbidden`", content_type = P, body = Object),
        (status = 503, description = "`unavailable`", content_type = P, body = Object),
    ))]
pub(crate) async fn user_history(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<HistoryBody>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    history(&service, user, query).await
}

/// The caller's calls and tokens per UTC day.
#[utoipa::path(get, path = "/v1/balance/usage", tag = "balance",
    security(("client" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "Usage by day", body = UsageBody),
        (status = 400, description = "`invalid-request`", content_type = P, body = Object),
        (status = 401, description = "`unauthenticated`", content_type = P, body = Object),
        (status = 503, description = "`unavailable`", content_type = P, body = Object),
    ))]
pub(crate) async fn own_usage(
    State(service): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageBody>, Problem> {
    let user = client(&service, &headers)?;
    usage(&service, user, query).await
}

/// A user's calls and tokens per UTC day.
#[utoipa::path(get, path = "/v1/users/{id}/usage", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id"), UsageQuery),
    responses(
        (status = 200, description = "Usage by day", body = UsageBody),
        (status = 400, description = "`invalid-request`", content_type = P, body = Object),
        (status = 401, description = "`unauthenticated`", content_type = P, body = Object),
        (status = 403, description = "`forbidden`", content_type = P, body = Object),
        (status = 503, description = "`unavailable`", content_type = P, body = Object),
    ))]
pub(crate) async fn user_usage(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageBody>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    usage(&service, user, query).await
}

/// Removes a user's statement lines in this region (carrying their total
/// into the opening balance, so the statement still adds up) and their
/// finished AI jobs. The ledger's counters stay: they are what every
/// region's balance is made of, and hold no personal data beyond the user
/// id. Run it in every region. An action, not a DELETE: the statement
/// stays (empty, opening at today's balance).
#[utoipa::path(post, path = "/v1/users/{id}/erase", tag = "operator",
    security(("operator" = [])),
    params(("id" = String, Path, description = "The user id")),
    responses(
        (status = 200, description = "Removed", body = RemovedBody),
        (status = 400, description = "`invalid-request`", content_type = P, body = Object),
        (status = 401, description = "`unauthenticated`", content_type = P, body = Object),
        (status = 403, description = "`forbidden`", content_type = P, body = Object),
        (status = 503, description = "`unavailable`", content_type = P, body = Object),
    ))]
pub(crate) async fn remove_user_data(
    State(service): State<Shared>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RemovedBody>, Problem> {
    operator(&service, &headers)?;
    let user = path_user(path)?;
    let who = user.clone();
    let lines_removed = service
        .statements
        .run(move |s| s.remove_lines(&who))
        .await
        .map_err(storage)?;
    let jobs_removed = service.jobs.forget_user(&user).await.map_err(storage)?;
    let who = user.clone();
    let opening_balance = service
        .statements
        .run(move |s| s.opening(&who))
        .await
        .map_err(storage)?;
    tracing::info!(%user, lines_removed, jobs_removed, "removed a user's statement and jobs");
    Ok(Json(RemovedBody {
        user_id: user,
        lines_removed,
        jobs_removed,
        opening_balance,
    }))
}

async fn history(
    service: &Shared,
    user: String,
    query: Option<String>,
) -> Result<Json<HistoryBody>, Problem> {
    let (cursor, limit) = page_asked(query.as_deref())?;
    let standing = service
        .engine
        .standing(&user)
        .await
        .map_err(|f| failure(service, f))?;
    let who = user.clone();
    let (page, opening) = service
        .statements
        .run(move |s| Ok((s.page(&who, cursor, limit)?, s.opening(&who)?)))
        .await
        .map_err(storage)?;
    let lines = page
        .lines
        .into_iter()
        .map(|(id, line)| LineBody {
            id: id.to_string(),
            at: rfc3339::format(line.at.0),
            region: line.region.0,
            kind: line.kind.as_str(),
            amount: line.amount,
            calls: line.calls,
            held: line.held,
            balance_after: line.balance_after,
            reference: line.reference,
        })
        .collect();
    Ok(Json(HistoryBody {
        user_id: user,
        balance: standing.receipt.balance,
        opening_balance: opening,
        lines,
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

async fn usage(
    service: &Shared,
    user: String,
    query: Option<String>,
) -> Result<Json<UsageBody>, Problem> {
    let days = days_asked(query.as_deref())?;
    let who = user.clone();
    let found: Vec<DayUsage> = service
        .statements
        .run(move |s| s.usage(&who, days, now_ms()))
        .await
        .map_err(storage)?;
    let days = found
        .into_iter()
        .map(|d| DayBody {
            day: rfc3339::format(d.day * 24 * 3600 * 1000)
                .get(..10)
                .unwrap_or_default()
                .to_owned(),
            calls: d.calls,
            tokens_spent: d.spent,
            tokens_credited: d.credited,
            tokens_debited: d.debited,
        })
        .collect();
    Ok(Json(UsageBody {
        user_id: user,
        days,
    }))
}

fn storage(e: crate::NodeError) -> Problem {
    tracing::warn!(error = %e, "statement storage failed");
    Problem::new(
        ProblemKind::Unavailable,
        "storage is failing; retry shortly",
    )
    .retry_after(1)
}
