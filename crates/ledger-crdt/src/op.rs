//! The local operations a region can apply to an account.

use crate::RegionId;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// One local operation, applied by the region that runs it.
///
/// Operations are plain data so that the node can log them, idempotency records can
/// remember them and the simulator can generate them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum Op {
    /// Adds tokens at this region (a top-up or a refund). Always succeeds unless it
    /// would overflow.
    Credit {
        /// Tokens to add; must be > 0.
        amount: u64,
    },
    /// Spends tokens from this region's rights. An operator's negative balance
    /// adjustment is a spend with `call: false`.
    Spend {
        /// Tokens to spend. May be 0 only for a free memes-API call.
        amount: u64,
        /// Whether this spend pays for one memes-API call (counted per region).
        call: bool,
    },
    /// Moves rights from this region to another, ahead of that region's demand.
    Transfer {
        /// The region receiving the rights.
        to: RegionId,
        /// Tokens whose rights move; must be > 0.
        amount: u64,
    },
}
