//! How fast each user spends in each region, as this region observes it.
//!
//! Spends at this region are seen directly; spends elsewhere are seen as growth of
//! that region's `spent` counter in the deltas that arrive. Either way they feed an
//! exponentially decaying rate, so no region has to publish its demand separately:
//! the deltas it already sends are the demand signal.

use crate::region::by_user::ByUser;
use crate::region::units::Millis;
use ledger_crdt::RegionId;

/// Rates under this many thousandths of a token per second count as no demand.
const NO_DEMAND_MILLI: u64 = 10;

/// Per (user, region) spend rate, decaying with a half-life.
///
/// A rate under [`NO_DEMAND_MILLI`] counts as none everywhere (it reads as
/// absent, and a new spend starts from zero), so when [`Demand::prune`]
/// forgets it changes no decision: the simulator's runs do not depend on it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Demand {
    half_life_ms: u64,
    /// Per user, the regions seen spending (a few).
    rates: ByUser<Vec<(RegionId, Rate)>>,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Tokens per second, as of `at_ms`.
    per_sec: f64,
    at_ms: u64,
}

impl Rate {
    /// Tokens per second at `now_ms`, if it still counts as demand.
    fn at(self, half_life_ms: u64, now_ms: u64) -> Option<f64> {
        let dt = now_ms.saturating_sub(self.at_ms) as f64;
        let rate = self.per_sec * 0.5f64.powf(dt / half_life_ms as f64);
        (rate * 1000.0 >= NO_DEMAND_MILLI as f64).then_some(rate)
    }
}

impl Demand {
    /// Rates that halve every `half_life_ms` without new spends.
    pub(crate) fn new(half_life_ms: u64) -> Self {
        Self {
            half_life_ms: half_life_ms.max(1),
            rates: ByUser::default(),
        }
    }

    /// Forgets, in one slice of the users, every rate that has decayed below
    /// the no-demand threshold: without this, every user who ever spent would
    /// keep an entry for the node's lifetime. A full pass takes
    /// [`crate::region::by_user::SLICES`] calls.
    pub(crate) fn prune(&mut self, now: Millis) {
        let half_life_ms = self.half_life_ms;
        self.rates.sweep(|rates| {
            rates.retain(|(_, rate)| rate.at(half_life_ms, now.0).is_some());
            !rates.is_empty()
        });
    }

    /// How many users have a rate remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether no rate is remembered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rates.len() == 0
    }

    /// Records `amount` tokens spent by `user` at `region`.
    pub(crate) fn observe(&mut self, user: &str, region: RegionId, amount: u64, now: Millis) {
        if amount == 0 {
            return;
        }
        let half_life_ms = self.half_life_ms;
        // An impulse of `amount` tokens spread over the half-life keeps the rate in
        // tokens per second for a steady spender.
        let impulse = amount as f64 * 1000.0 / half_life_ms as f64 * std::f64::consts::LN_2;
        let rates = self.rates.entry(user, Vec::new);
        let fresh = Rate {
            per_sec: impulse,
            at_ms: now.0,
        };
        match rates.iter_mut().find(|(r, _)| *r == region) {
            Some((_, rate)) => {
                let current = rate.at(half_life_ms, now.0).unwrap_or(0.0);
                *rate = Rate {
                    per_sec: current + impulse,
                    ..fresh
                };
            }
            None => rates.push((region, fresh)),
        }
    }

    /// `user`'s demand as of `now`, looked up once for any number of regions:
    /// a plan reads every live region's, and each look-up hashed the name.
    pub(crate) fn of(&self, user: &str, now: Millis) -> UserDemand<'_> {
        UserDemand {
            rates: self.rates.get(user).map_or(&[], Vec::as_slice),
            half_life_ms: self.half_life_ms,
            now_ms: now.0,
        }
    }

    /// The current rate of `user` at `region`, in thousandths of a token per
    /// second (see [`UserDemand::seen`]).
    pub(crate) fn milli_rate(&self, user: &str, region: RegionId, now: Millis) -> u64 {
        self.of(user, now).milli_rate(region)
    }
}

/// One user's demand at every region, as of one moment ([`Demand::of`]).
pub(crate) struct UserDemand<'a> {
    rates: &'a [(RegionId, Rate)],
    half_life_ms: u64,
    now_ms: u64,
}

impl UserDemand<'_> {
    /// When a spend at `region` was last observed and the rate now, in
    /// thousandths of a token per second (an integer, as the rebalancing
    /// policy wants); `None` if it no longer counts. Rates under 0.01
    /// tokens/s count as no demand, so a cluster at rest stays at rest
    /// instead of moving rights on vanishing differences.
    pub(crate) fn seen(&self, region: RegionId) -> Option<(Millis, u64)> {
        let &(_, rate) = self.rates.iter().find(|(r, _)| *r == region)?;
        let now = rate.at(self.half_life_ms, self.now_ms)?;
        Some((Millis(rate.at_ms), (now * 1000.0) as u64))
    }

    /// When a spend at `region` was last observed, if it still counts.
    pub(crate) fn last_seen(&self, region: RegionId) -> Option<Millis> {
        self.seen(region).map(|(at, _)| at)
    }

    /// The rate at `region` now, in thousandths of a token per second; 0 if
    /// it no longer counts.
    pub(crate) fn milli_rate(&self, region: RegionId) -> u64 {
        self.seen(region).map_or(0, |(_, rate)| rate)
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
        let full_pass = |d: &mut Demand, at: u64| {
            for _ in 0..crate::region::by_user::SLICES {
                d.prune(Millis(at));
            }
        };
        // Already gone for every reader before any pruning.
        assert_eq!(d.of("idle", Millis(20_000)).last_seen(RegionId(1)), None);
        assert_eq!(
            d.of("busy", Millis(20_000)).last_seen(RegionId(1)),
            Some(Millis(20_000))
        );
        full_pass(&mut d, 20_000);
        assert_eq!(d.len(), 1);
        assert!(d.milli_rate("busy", RegionId(1), Millis(20_000)) > 0);
        full_pass(&mut d, 60_000);
        assert!(d.is_empty());
    }
}
