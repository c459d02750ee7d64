//! Subscription state for the premium "Memes AI" tier.
//!
//! A subscription is not a counter: it is a value that is set and later replaced, so
//! it replicates as a last-writer-wins register rather than as grow-only entries.

use crate::RegionId;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// When and where a register value was written. Later stamps win; the region breaks
/// ties between regions whose clocks agree to the millisecond.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
pub struct Stamp {
    /// The writer's clock, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The writing region.
    pub region: RegionId,
}

/// A user's premium subscription, as last written by any region.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
pub struct Subscription {
    /// Which write this is.
    pub stamp: Stamp,
    /// The subscription covers requests before this instant (ms since the Unix epoch);
    /// 0 means no subscription.
    pub memes_ai_until_ms: u64,
}

impl Subscription {
    /// Last-writer-wins join. Ordering by the whole value (stamp first) keeps the
    /// join deterministic even for two different writes with the same stamp.
    pub(crate) fn join(mine: &mut Option<Subscription>, theirs: Option<Subscription>) -> bool {
        if theirs > *mine {
            *mine = theirs;
            true
        } else {
            false
        }
    }
}
