//! How fast each user spends in each region, as this region observes it.
//!
//! Spends at this region are seen directly; spends elsewhere are seen as growth of
//! that region's `spent` counter in the deltas that arrive. Either way they feed an
//! exponentially decaying rate, so no region has to publish its demand separately:
//! the deltas it already sends are the demand signal.

use crate::region::units::Millis;
use ledger_crdt::RegionId;
use std::collections::HashMap;

/// Rates under this many thousandths of a token per second count as no demand.
const NO_DEMAND_MILLI: u64 = 10;

fn decayed(half_life_ms: u64, rate: Rate, now_ms: u64) -> f64 {
    let dt = now_ms.saturating_sub(rate.at_ms) as f64;
    rate.per_sec * 0.5f64.powf(dt / half_life_ms as f64)
}

/// Per (user, region) spend rate, decaying with a half-life.
#[derive(Debug, Default, Clone)]
pub(crate) struct Demand {
    half_life_ms: u64,
    rates: HashMap<(String, RegionId), Rate>,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Tokens per second, as of `at_ms`.
    per_sec: f64,
    at_ms: u64,
}

impl Demand {
    /// Rates that halve every `half_life_ms` without new spends.
    pub(crate) fn new(half_life_ms: u64) -> Self {
        Self {
            half_life_ms: half_life_ms.max(1),
            rates: HashMap::new(),
        }
    }

    fn decay(&self, rate: Rate, now_ms: u64) -> f64 {
        decayed(self.half_life_ms, rate, now_ms)
    }

    /// Forgets every rate that has decayed below the no-demand threshold: without
    /// this, every user who ever spent would keep an entry for the node's lifetime.
    pub(crate) fn prune(&mut self, now: Millis) {
        let now_ms = now.0;
        let half_life_ms = self.half_life_ms;
        self.rates
            .retain(|_, r| decayed(half_life_ms, *r, now_ms) * 1000.0 >= NO_DEMAND_MILLI as f64);
    }

    /// How many (user, region) rates are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether no rate is remembered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Records `amount` tokens spent by `user` at `region`.
    pub(crate) fn observe(&mut self, user: &str, region: RegionId, amount: u64, now: Millis) {
        let now_ms = now.0;
        if amount == 0 {
            return;
        }
        // An impulse of `amount` tokens spread over the half-life keeps the rate in
        // tokens per second for a steady spender.
        let impulse = amount as f64 * 1000.0 / self.half_life_ms as f64 * std::f64::consts::LN_2;
        let key = (user.to_owned(), region);
        let current = self.rates.get(&key).map_or(0.0, |r| self.decay(*r, now_ms));
        self.rates.insert(
            key,
            Rate {
                per_sec: current + impulse,
                at_ms: now_ms,
            },
        );
    }

    /// When a spend of `user` at `region` was last observed, if it still counts.
    pub(crate) fn last_seen(&self, user: &str, region: RegionId) -> Option<Millis> {
        self.rates
            .get(&(user.to_owned(), region))
            .map(|r| Millis(r.at_ms))
    }

    /// The current rate of `user` at `region`, in thousandths of a token per second
    /// (an integer, as the rebalancing policy wants).
    /// Rates under 0.01 tokens/s count as no demand, so a cluster at rest stays at
    /// rest instead of moving rights on vanishing differences.
    pub(crate) fn milli_rate(&self, user: &str, region: RegionId, now: Millis) -> u64 {
        let now_ms = now.0;
        let milli = self
            .rates
            .get(&(user.to_owned(), region))
            .map_or(0, |r| (self.decay(*r, now_ms) * 1000.0) as u64);
        if milli < NO_DEMAND_MILLI { 0 } else { milli }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_spender_shows_its_rate_and_it_decays() {
        let mut d = Demand::new(1_000);
        for t in 0..50 {
            d.observe("u", RegionId(2), 10, Millis(t * 100));
        }
        // 10 tokens every 100 ms is 100 tokens/s.
        let rate = d.milli_rate("u", RegionId(2), Millis(4_900));
        assert!((80_000..=120_000).contains(&rate), "{rate}");
        assert!(d.milli_rate("u", RegionId(2), Millis(14_900)) < rate / 500);
        assert_eq!(d.milli_rate("u", RegionId(1), Millis(4_900)), 0);
    }

    #[test]
    fn pruning_forgets_only_rates_that_no_longer_count() {
        let mut d = Demand::new(1_000);
        d.observe("idle", RegionId(1), 1, Millis(0));
        d.observe("busy", RegionId(1), 1, Millis(0));
        d.observe("busy", RegionId(1), 1, Millis(20_000));
        d.prune(Millis(20_000));
        assert_eq!(d.len(), 1);
        assert!(d.milli_rate("busy", RegionId(1), Millis(20_000)) > 0);
        d.prune(Millis(60_000));
        assert!(d.is_empty());
    }
}
