//! Subscription state for the premium "Memes AI" tier.
//!
//! A subscription is not a counter: it is a value that is set and later replaced, so
//! it replicates as a register. Each region's entry holds the highest one that region
//! wrote, so a write travels with that region's versions like its other writes, and
//! the account's subscription is the highest over its entries. Writes are ordered
//! by the **billing event's version**, never by a region's clock: a cancel with a
//! higher version wins over an older upgrade however late it arrives, and however
//! the clocks of the regions that wrote them disagree.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// A user's premium subscription, as of the highest billing version seen.
///
/// The field order is the join order: version first, then (for two writes that
/// claim the same version, which a sane billing system never sends) the later end,
/// so the join is deterministic whatever arrives.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
pub struct Subscription {
    /// The billing system's version of this state; higher wins.
    pub version: u64,
    /// The subscription covers requests before this instant (ms since the Unix
    /// epoch); a past instant (0 included) means no subscription.
    pub memes_ai_until_ms: u64,
}

impl Subscription {
    /// Whether the subscription covers a request at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        now_ms < self.memes_ai_until_ms
    }

    /// The join: the higher of the two. Returns whether `mine` changed.
    pub(crate) fn join(mine: &mut Option<Subscription>, theirs: Option<Subscription>) -> bool {
        if theirs > *mine {
            *mine = theirs;
            true
        } else {
            false
        }
    }
}
