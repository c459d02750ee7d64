//! Escrow: moving rights to where a user spends, before it runs dry there.
//!
//! Spends check this region's rights (see `ledger_crdt`). Demand is observed
//! from spend growth, ours and in peers' deltas ([`Demand`]); after every
//! change to a user the pure [`plan_transfers`] policy decides whether this
//! region should send rights to where the user spends. A spend refused for
//! lack of local rights while rights exist elsewhere asks the holders at once
//! ([`Escrow::rights_request`]).
//!
//! Every method here decides; the replica applies the transfers and sends the
//! messages.

use super::config::ReplicaConfig;
use super::throttle::Throttle;
use crate::region::demand::Demand;
use crate::region::rules::SpendPolicy;
use crate::region::units::Millis;
use ledger_crdt::{
    Account, Genesis, RebalanceConfig, RegionId, Transfer, answer_request, plan_transfers,
};
use std::collections::BTreeMap;

/// Counters of escrow traffic since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EscrowStats {
    /// Transfers of rights this region made (rebalancing, answers, leaving).
    pub transfers: u64,
    /// Tokens of rights those transfers moved.
    pub tokens_moved: u64,
    /// Rights requests this region sent after refusing a spend.
    pub rights_requests: u64,
    /// Times a spend refused here for lack of rights was held to wait for
    /// them (again, if rights came and were not enough).
    pub rights_waits: u64,
}

/// The escrow sub-state of a replica.
#[derive(Debug)]
pub(super) struct Escrow {
    me: RegionId,
    genesis: Genesis,
    /// Whether rights move at all (the naive baseline and broken cores do not).
    moves_rights: bool,
    rebalance: RebalanceConfig,
    keep_horizon_ms: u64,
    bounce_cooldown_ms: u64,
    rebalance_quiet_ms: u64,
    local_customer_ms: u64,
    demand: Demand,
    rebalances: Throttle,
    requests: Throttle,
    /// When we last accepted rights for a user from a region.
    accepted_at: BTreeMap<(String, RegionId), Millis>,
    stats: EscrowStats,
}

impl Escrow {
    pub(super) fn new(config: &ReplicaConfig) -> Self {
        Self {
            me: config.rules.region,
            genesis: config.rules.genesis.clone(),
            moves_rights: config.rules.policy == SpendPolicy::Escrow,
            rebalance: config.rebalance.clone(),
            keep_horizon_ms: config.keep_horizon_ms,
            bounce_cooldown_ms: config.bounce_cooldown_ms,
            rebalance_quiet_ms: config.rebalance_quiet_ms,
            local_customer_ms: config.local_customer_ms,
            demand: Demand::new(config.demand_half_life_ms),
            rebalances: Throttle::new(config.rebalance_every_ms),
            requests: Throttle::new(config.rights_request_every_ms),
            accepted_at: BTreeMap::new(),
            stats: EscrowStats::default(),
        }
    }

    /// Counters since start.
    pub(super) fn stats(&self) -> EscrowStats {
        self.stats
    }

    /// A spend was held to wait for rights.
    pub(super) fn spend_waits(&mut self) {
        self.stats.rights_waits += 1;
    }

    /// `user` spent `amount` at `region`.
    pub(super) fn observe(&mut self, user: &str, region: RegionId, amount: u64, now: Millis) {
        self.demand.observe(user, region, amount, now);
    }

    /// We accepted rights for `user` sent by `from`.
    pub(super) fn accepted_from(&mut self, user: &str, from: RegionId, now: Millis) {
        self.accepted_at.insert((user.to_owned(), from), now);
    }

    /// We made a transfer of `amount` tokens' rights.
    pub(super) fn transferred(&mut self, amount: u64) {
        self.stats.transfers += 1;
        self.stats.tokens_moved += amount;
    }

    /// Whether this region served `user`'s latest spend it knows of, within
    /// `local_customer_ms`: a steady local customer.
    pub(super) fn served_last(&self, user: &str, live: &[RegionId], now: Millis) -> bool {
        let user_demand = self.demand.of(user, now);
        let Some(here) = user_demand.last_seen(self.me) else {
            return false;
        };
        now.since(here) < self.local_customer_ms
            && live
                .iter()
                .all(|&r| user_demand.last_seen(r).is_none_or(|t| t <= here))
    }

    /// The transfers to make for `user` now, by the rebalancing policy.
    ///
    /// Proactive moves need fresh evidence of spending. Each region plans from
    /// its own view of demand elsewhere, and those views disagree (a region cut
    /// off learns of old spends by catch-up and sees them as new demand):
    /// without this, rights for a user nobody spends for went round in cycles
    /// (A → B → C → A) until every rate decayed, and the cluster never went
    /// quiet (the simulator's soak found it, about 4 runs in 10,000). Explicit
    /// rights requests still answer any later need.
    /// `account` is the user's account as it stands (the caller changed it
    /// just now, so it holds it decoded).
    pub(super) fn plan(
        &mut self,
        user: &str,
        live: &[RegionId],
        now: Millis,
        account: &Account,
    ) -> Vec<Transfer> {
        if !self.moves_rights {
            return Vec::new();
        }
        // One look-up of the user for every region's demand and last spend.
        let user_demand = self.demand.of(user, now);
        let mut freshest = None;
        let demand: Vec<(RegionId, u64)> = live
            .iter()
            .copied()
            .chain([self.me])
            .map(|r| {
                let seen = user_demand.seen(r);
                freshest = freshest.max(seen.map(|(at, _)| at));
                (r, seen.map_or(0, |(_, rate)| rate))
            })
            .collect();
        if freshest.is_none_or(|t| now.since(t) >= self.rebalance_quiet_ms) {
            return Vec::new();
        }
        if !self.rebalances.allow(user, now) {
            return Vec::new();
        }
        let mut plan = plan_transfers(account, &self.genesis, self.me, &demand, &self.rebalance);
        // Rights just accepted from a region are not sent straight back: two
        // regions whose delayed views of demand disagree would bounce them.
        plan.retain(|t| {
            self.accepted_at
                .get(&(user.to_owned(), t.to))
                .is_none_or(|&at| now.since(at) >= self.bounce_cooldown_ms)
        });
        plan
    }

    /// After a spend of `user` was refused here for lack of rights: whether
    /// to ask `holders` (the live regions holding some, [`Escrow::live_holders`])
    /// for rights, at most once per user every `rights_request_every_ms`.
    pub(super) fn rights_request(&mut self, user: &str, holders: &[RegionId], now: Millis) -> bool {
        if !self.moves_rights || !self.requests.allow(user, now) || holders.is_empty() {
            return false;
        }
        self.stats.rights_requests += 1;
        true
    }

    /// The live regions holding some of the rights in `account`: the only
    /// ones a spend refused here can get rights from before a partition heals.
    pub(super) fn live_holders(&self, live: &[RegionId], account: &Account) -> Vec<RegionId> {
        if !self.moves_rights {
            return Vec::new();
        }
        live.iter()
            .copied()
            .filter(|&r| account.rights(&self.genesis, r) > 0)
            .collect()
    }

    /// How much of `user`'s rights to give a region that asked for `amount`:
    /// what our own demand needs over the horizon is kept.
    pub(super) fn answer(
        &self,
        user: &str,
        account: &Account,
        amount: u64,
        now: Millis,
    ) -> Option<u64> {
        if !self.moves_rights {
            return None;
        }
        let keep = self.demand.milli_rate(user, self.me, now) * self.keep_horizon_ms / 1_000_000;
        answer_request(
            account,
            &self.genesis,
            self.me,
            amount,
            keep,
            &self.rebalance,
        )
    }

    /// Where `user`'s rights go when this region leaves: the busiest live peer
    /// for the user, lowest id among equals; `None` when no peer is live.
    pub(super) fn heir(&self, user: &str, live: &[RegionId], now: Millis) -> Option<RegionId> {
        let user_demand = self.demand.of(user, now);
        live.iter()
            .copied()
            .max_by_key(|&r| (user_demand.milli_rate(r), std::cmp::Reverse(r)))
    }

    /// Forgets, in one slice of the users, per-user timing state that can no
    /// longer change a decision, so memory follows the users active in the
    /// last seconds, not every user ever. A slice at a time, so that no
    /// single call holds the replica for long (see [`crate::region::by_user`]).
    pub(super) fn sweep(&mut self, now: Millis) {
        self.demand.prune(now);
        self.rebalances.prune(now);
        self.requests.prune(now);
    }

    /// Forgets rights acceptances older than the bounce cooldown (one per
    /// transfer received, far fewer than users).
    pub(super) fn prune(&mut self, now: Millis) {
        let cooldown = self.bounce_cooldown_ms;
        self.accepted_at.retain(|_, &mut t| now.since(t) < cooldown);
    }
}
