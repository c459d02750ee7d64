//! One region's grow-only counters within an account.

use crate::{RegionId, SmallMap, Subscription};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Everything one region has ever done to one account, as grow-only counters.
///
/// Only the region that owns the entry writes it, and every field only grows, so two
/// copies of the same entry merge by pointwise maximum: the merge of two versions the
/// owner wrote is simply the later one. Replicas never see a mixture of versions,
/// which is what keeps every replica's view of the owner's rights ≥ 0.
///
/// Zero values are never stored, so equal entries encode to equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct RegionEntry {
    credited: u64,
    spent: u64,
    calls: u64,
    sent: SmallMap<RegionId, u64>,
    received: SmallMap<RegionId, u64>,
    /// The highest billing event this region wrote. A register inside the
    /// entry, so a subscription write travels exactly as the region's other
    /// writes do: with the entry's own versions, never with another region's.
    subscription: Option<Subscription>,
}

impl RegionEntry {
    /// Tokens credited at this region: top-ups and refunds.
    pub fn credited(&self) -> u64 {
        self.credited
    }

    /// Tokens spent at this region, including operator debits.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Memes-API calls served at this region.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Rights this region has ever transferred to `to`.
    pub fn sent_to(&self, to: RegionId) -> u64 {
        self.sent.get(&to).copied().unwrap_or(0)
    }

    /// Rights this region has accepted from `from` so far.
    pub fn received_from(&self, from: RegionId) -> u64 {
        self.received.get(&from).copied().unwrap_or(0)
    }

    /// Every transfer out of this region, by destination.
    pub fn sent(&self) -> &SmallMap<RegionId, u64> {
        &self.sent
    }

    /// Every transfer accepted by this region, by source.
    pub fn received(&self) -> &SmallMap<RegionId, u64> {
        &self.received
    }

    /// The highest subscription (by billing version) this region wrote.
    pub fn subscription(&self) -> Option<Subscription> {
        self.subscription
    }

    /// Whether the entry holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.credited == 0
            && self.spent == 0
            && self.calls == 0
            && self.sent.is_empty()
            && self.received.is_empty()
            && self.subscription.is_none()
    }

    /// Tokens that flowed into the region: its genesis share, credits and accepted
    /// transfers. Summed in `u128` so no combination of `u64` counters overflows.
    pub(crate) fn inflow(&self, genesis_share: u64) -> u128 {
        u128::from(genesis_share)
            + u128::from(self.credited)
            + self.received.values().map(|&v| u128::from(v)).sum::<u128>()
    }

    /// Tokens that flowed out of the region: spends and transfers sent.
    pub(crate) fn outflow(&self) -> u128 {
        u128::from(self.spent) + self.sent.values().map(|&v| u128::from(v)).sum::<u128>()
    }

    /// The region's rights, exactly; negative only if an invariant was broken.
    pub(crate) fn rights_exact(&self, genesis_share: u64) -> i128 {
        // Both sides are sums of at most a few thousand u64s, far below i128::MAX.
        self.inflow(genesis_share) as i128 - self.outflow() as i128
    }

    /// Pointwise maximum (the subscription by billing version). Returns
    /// whether anything grew.
    pub(crate) fn join(&mut self, other: &RegionEntry) -> bool {
        let mut grew = raise(&mut self.credited, other.credited);
        grew |= raise(&mut self.spent, other.spent);
        grew |= raise(&mut self.calls, other.calls);
        grew |= join_map(&mut self.sent, &other.sent);
        grew |= join_map(&mut self.received, &other.received);
        grew |= Subscription::join(&mut self.subscription, other.subscription);
        grew
    }

    /// Writes `subscription` if it is newer than the one this region wrote.
    pub(crate) fn subscribe(&mut self, subscription: Subscription) -> bool {
        Subscription::join(&mut self.subscription, Some(subscription))
    }

    /// Drops zero values, so that decoded entries compare and encode canonically.
    pub(crate) fn normalize(&mut self, owner: RegionId) {
        self.sent.retain(|&to, v| *v > 0 && to != owner);
        self.received.retain(|&from, v| *v > 0 && from != owner);
    }

    /// Simulation only: the broken, additive "merge".
    #[cfg(feature = "simulation")]
    pub(crate) fn add_all(&mut self, other: &RegionEntry) {
        self.credited = self.credited.saturating_add(other.credited);
        self.spent = self.spent.saturating_add(other.spent);
        self.calls = self.calls.saturating_add(other.calls);
        for (&k, &v) in &other.sent {
            let e = self.sent.get_or_default(k);
            *e = e.saturating_add(v);
        }
        for (&k, &v) in &other.received {
            let e = self.received.get_or_default(k);
            *e = e.saturating_add(v);
        }
        Subscription::join(&mut self.subscription, other.subscription);
    }

    /// Simulation only: the broken register, which takes whatever arrives.
    #[cfg(feature = "simulation")]
    pub(crate) fn set_subscription(&mut self, subscription: Option<Subscription>) {
        self.subscription = subscription;
    }

    pub(crate) fn add_credit(&mut self, amount: u64) -> Option<()> {
        self.credited = self.credited.checked_add(amount)?;
        Some(())
    }

    /// Adds a spend and, for a memes-API call, one call. Checked, all or nothing.
    pub(crate) fn add_spend(&mut self, amount: u64, call: bool) -> Option<()> {
        let spent = self.spent.checked_add(amount)?;
        let calls = self.calls.checked_add(u64::from(call))?;
        self.spent = spent;
        self.calls = calls;
        Some(())
    }

    pub(crate) fn add_sent(&mut self, to: RegionId, amount: u64) -> Option<()> {
        let total = self.sent_to(to).checked_add(amount)?;
        self.sent.insert(to, total);
        Some(())
    }

    /// Raises the accepted total from `from` to `total`. Returns whether it grew.
    pub(crate) fn accept_from(&mut self, from: RegionId, total: u64) -> bool {
        if total > self.received_from(from) {
            self.received.insert(from, total);
            true
        } else {
            false
        }
    }
}

fn raise(mine: &mut u64, theirs: u64) -> bool {
    if theirs > *mine {
        *mine = theirs;
        true
    } else {
        false
    }
}

fn join_map(mine: &mut SmallMap<RegionId, u64>, theirs: &SmallMap<RegionId, u64>) -> bool {
    let mut grew = false;
    for (&k, &v) in theirs {
        if v > 0 {
            grew |= raise(mine.get_or_default(k), v);
        }
    }
    grew
}
