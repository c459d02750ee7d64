//! What a client asks of a region, and what it is answered.

use crate::region::holds::HoldId;
use crate::region::idempotency::IdempotencyKey;
use crate::region::units::{Millis, RequestId};
use bincode::{Decode, Encode};
use serde::Serialize;

/// What a request asks the ledger to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Charge one memes-API call.
    ChargeCall,
    /// An operator's balance adjustment: positive credits, negative debits.
    Adjust(i64),
    /// The billing system's word on the premium tier: subscribed until
    /// `until` (a past instant cancels), as of billing version `version`.
    Subscribe {
        /// The billing event's version; the highest wins everywhere.
        version: u64,
        /// The end of the subscription.
        until: Millis,
    },
    /// Set `amount` tokens aside for `job` (see [`crate::Holds`]).
    Hold {
        /// The job, unique per user.
        job: String,
        /// Tokens to hold.
        amount: u64,
    },
    /// The job delivered: charge its hold, once.
    Capture {
        /// The job.
        job: String,
    },
    /// The job failed or was cancelled: drop its hold, charging nothing.
    Release {
        /// The job.
        job: String,
    },
}

/// One client request, as the shell hands it to [`crate::Replica::handle_client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The shell's id for it; its [`crate::Reply`] carries it back.
    pub id: RequestId,
    /// Whose account.
    pub user: String,
    /// What to do.
    pub command: Command,
    /// Its idempotency key, if the client sent one.
    pub key: Option<IdempotencyKey>,
    /// How long the client lets the region wait for rights held by other
    /// regions (ms; 0 answers a shortfall here at once). The region has asked
    /// for rights the moment it refused; a waiting request runs again when
    /// rights arrive for its user, and is refused at the deadline. With no
    /// live region holding rights, it is refused at once.
    pub wait_for_rights_ms: u64,
}

impl ClientRequest {
    /// A request that does not wait for rights.
    pub fn new(id: RequestId, user: &str, command: Command, key: Option<IdempotencyKey>) -> Self {
        Self {
            id,
            user: user.to_owned(),
            command,
            key,
            wait_for_rights_ms: 0,
        }
    }
}

impl ClientRequest {
    /// The hold a hold, capture or release is about.
    pub fn hold_id(&self) -> Option<HoldId> {
        let (Command::Hold { job, .. } | Command::Capture { job } | Command::Release { job }) =
            &self.command
        else {
            return None;
        };
        Some(HoldId {
            user: self.user.clone(),
            job: job.clone(),
        })
    }
}

/// What the caller's account looks like after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Receipt {
    /// The balance, as this region sees it.
    pub balance: u64,
    /// What this region can spend for the user right now.
    pub spendable_here: u64,
    /// Memes-API calls served for the user, all regions.
    pub calls: u64,
}

/// Why a request was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The balance does not cover the amount.
    InsufficientTokens {
        /// The balance this region sees.
        balance: u64,
    },
    /// The balance covers it but the rights are held by other regions.
    TokensInOtherRegion {
        /// Rights here.
        here: u64,
        /// Tokens elsewhere.
        elsewhere: u64,
    },
    /// The key is being used by a request that has not finished.
    KeyInUse,
    /// The key was already used for a different request.
    KeyReused,
    /// The amount would overflow the account.
    Overflow,
    /// A zero adjustment.
    ZeroAmount,
    /// Storage is failing: the last flush failed and no write is accepted
    /// until one succeeds.
    StorageFailing,
    /// No hold is known for this job (never made, or forgotten after the TTL).
    UnknownHold,
    /// The hold was released (failed, cancelled or expired): it cannot be
    /// captured.
    HoldReleased,
    /// The hold was captured: it cannot be released.
    HoldCaptured,
    /// A hold exists for this job with another amount.
    HoldMismatch,
}

/// A user's standing at one region: the receipt, the premium tier, and what
/// is held here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Balance, spendable here (net of holds), calls.
    pub receipt: Receipt,
    /// The end of the premium subscription, if one is known (it may be past).
    pub memes_ai_until: Option<Millis>,
    /// Whether the premium tier covers a request now.
    pub memes_ai: bool,
    /// Tokens held here for jobs in progress.
    pub held: u64,
}
