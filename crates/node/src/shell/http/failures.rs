//! The core's refusals and storage failures as problems, each with its stable
//! `type` and the reason it is counted under in the metrics.

use crate::Refusal;
use crate::shell::app::App;
use crate::shell::engine::Failure;
use crate::shell::problem::{Problem, ProblemKind};

/// The problem answering `failure`, counted as a refusal by its reason.
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
