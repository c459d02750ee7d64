//! The rebalancing policy: where each region's idle rights should go.
//!
//! AntidoteDB's bounded counter moves rights only after a spend has already failed.
//! This policy moves them *ahead* of demand: every region publishes how fast each
//! user spends there, every region computes the same demand-proportional targets, and
//! a region holding more than its target sends the surplus to regions that have
//! fallen below a low-water mark of theirs, before they run dry. Every live region
//! keeps a reserve whatever its demand (a few tokens, or a tenth of an even share
//! of a large balance), so a region that has not seen a user lately still serves
//! the user's next spend at once.
//!
//! It is a pure function of what one region knows, so the node and the simulator run
//! the very same code, and it is safe by construction: it only ever proposes
//! [`Op::Transfer`](crate::Op::Transfer)s, which the account still checks.

use crate::{Account, Genesis, RegionId};
use serde::{Deserialize, Serialize};

/// Tuning for [`plan_transfers`] and [`answer_request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceConfig {
    /// Tokens every live region keeps (when the balance allows) whatever the demand,
    /// so that if a user's usual region dies the others can still serve a little.
    pub failover_reserve: u64,
    /// Every live region also keeps this percentage of an even share of the
    /// user's rights, whatever the demand. Demand decays: a region that has not
    /// seen a user for a while reads as having none, and with the token reserve
    /// alone it gave away all but a few tokens of even a huge balance, so the
    /// user's next spends there waited a round trip for rights (321 spends in
    /// one 30 s SLA run of `benches/regions.rs`, whose users hold 10⁹ tokens).
    /// A small balance is unchanged: either reserve is at most a quarter of an
    /// even share, and 150 tokens over three regions give 5 either way.
    pub idle_share_percent: u64,
    /// A region is topped up once its rights fall below this percentage of its
    /// target. Lower values move rights less often; higher values keep more headroom.
    pub low_water_percent: u64,
    /// A region gives rights away only while it holds more than this percentage
    /// of its own target. With the low-water mark this is hysteresis on both
    /// sides: every transfer moves both parties toward their targets, so rights
    /// cannot circulate between regions whose views of demand differ a little.
    pub give_above_percent: u64,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        Self {
            failover_reserve: 5,
            idle_share_percent: 10,
            low_water_percent: 50,
            give_above_percent: 200,
        }
    }
}

/// A proposed transfer of rights from the planning region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The region that should receive the rights.
    pub to: RegionId,
    /// How many tokens' rights to move.
    pub amount: u64,
}

/// The transfers region `me` should make for one user.
///
/// `demand` gives every live region (the caller decides who is live) its recent
/// spend rate for this user, in any unit shared by all regions; a region listed
/// twice counts once, with its first rate. `me` is always taken as live. Rights
/// of regions not in `demand` are treated as stranded.
///
/// Targets: each live region gets the reserve (see [`RebalanceConfig`]), and the
/// rest of the live rights is split in proportion to demand. `me` sends only its
/// surplus over its own target, and only to regions below `low_water_percent` of
/// theirs; when several regions hold surplus, each sends its proportional part of
/// every deficit, so together they cover it without overshooting.
pub fn plan_transfers(
    account: &Account,
    genesis: &Genesis,
    me: RegionId,
    demand: &[(RegionId, u64)],
    config: &RebalanceConfig,
) -> Vec<Transfer> {
    // A few regions, so a sorted vector: this runs after every change to a
    // user, and maps per plan were most of what a merge cost.
    let mut live: Vec<Live> = demand
        .iter()
        .chain([&(me, 0)])
        .map(|&(region, rate)| Live {
            region,
            demand: rate.into(),
            rights: 0,
            target: 0,
        })
        .collect();
    live.sort_by_key(|l| l.region);
    live.dedup_by_key(|l| l.region);
    let total_demand: u128 = live.iter().map(|l| l.demand).sum();
    if total_demand == 0 {
        return Vec::new();
    }
    // Rights already on their way to a region count as its own: otherwise a holder
    // would send again before the first transfer is accepted, overshoot, and the
    // surplus would bounce back and forth.
    for l in &mut live {
        l.rights =
            u128::from(account.rights(genesis, l.region)) + u128::from(account.incoming(l.region));
    }
    let reserve = reserve_each(&live, config);
    set_targets(&mut live, total_demand, reserve);

    let Some(mine) = live.iter().find(|l| l.region == me) else {
        return Vec::new();
    };
    // I can only give what I hold now, not what is still coming to me.
    let mine_to_give = mine.surplus().min(account.rights(genesis, me).into());
    if mine_to_give == 0 || mine.rights * 100 <= mine.target * u128::from(config.give_above_percent)
    {
        return Vec::new();
    }
    let all_surplus: u128 = live.iter().map(Live::surplus).sum();

    let mut needy: Vec<(u128, RegionId)> = live
        .iter()
        .filter(|l| l.region != me)
        .filter(|l| {
            l.rights < l.target
                && (l.rights * 100 < l.target * u128::from(config.low_water_percent)
                    || l.rights < reserve)
        })
        .map(|l| (l.target - l.rights, l.region))
        .collect();
    // Largest deficit first; region id breaks ties so every replica plans alike.
    needy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

    let mut left = mine_to_give;
    let mut plan = Vec::new();
    for (deficit, to) in needy {
        // My proportional part of this deficit, rounded up so small deficits move.
        let part = (deficit * mine_to_give).div_ceil(all_surplus).min(left);
        if part == 0 {
            break;
        }
        left -= part;
        // `part` ≤ my rights, which are a u64.
        plan.push(Transfer {
            to,
            amount: u64::try_from(part).unwrap_or(u64::MAX),
        });
    }
    plan
}

/// One live region, as a plan sees it.
struct Live {
    region: RegionId,
    demand: u128,
    /// What it holds, and what is on its way to it.
    rights: u128,
    target: u128,
}

impl Live {
    fn surplus(&self) -> u128 {
        self.rights.saturating_sub(self.target)
    }
}

/// How much region `me` sends to a region that asked for `wanted` tokens' rights
/// after refusing a spend. `me` keeps the failover reserve plus `keep` (what it
/// expects to spend itself soon) and gives the requester at least what it asked for,
/// or half of what it can spare if that is more, so the next spends there succeed
/// without asking again. `None` if it can spare nothing.
pub fn answer_request(
    account: &Account,
    genesis: &Genesis,
    me: RegionId,
    wanted: u64,
    keep: u64,
    config: &RebalanceConfig,
) -> Option<u64> {
    let rights = account.rights(genesis, me);
    let keep = keep.saturating_add(config.failover_reserve).min(rights);
    let spare = rights - keep;
    let give = wanted.max(spare / 2).min(spare);
    (give > 0).then_some(give)
}

/// The reserve each live region keeps whatever the demand: the failover
/// reserve or the idle share of an even share, whichever is more, but never
/// more than a quarter of an even share, so that a small balance still flows
/// to where the user spends instead of sitting in reserves.
fn reserve_each(live: &[Live], config: &RebalanceConfig) -> u128 {
    let total: u128 = live.iter().map(|l| l.rights).sum();
    // `live` always holds at least `me`.
    let n = live.len().max(1) as u128;
    let idle_share = total / n * u128::from(config.idle_share_percent) / 100;
    u128::from(config.failover_reserve)
        .max(idle_share)
        .min(total / (4 * n))
}

/// Sets each live region's target: `reserve`, plus the rest in proportion to
/// demand. Rounding leftovers go to the busiest region (lowest id among equals).
fn set_targets(live: &mut [Live], total_demand: u128, reserve: u128) {
    let total: u128 = live.iter().map(|l| l.rights).sum();
    let distributable = total - reserve * live.len() as u128;
    for l in live.iter_mut() {
        l.target = reserve + distributable * l.demand / total_demand;
    }
    let assigned: u128 = live.iter().map(|l| l.target).sum();
    let busiest = live
        .iter_mut()
        .max_by(|a, b| a.demand.cmp(&b.demand).then(b.region.cmp(&a.region)));
    if let Some(l) = busiest {
        l.target += total - assigned;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn setup() -> (Genesis, Account) {
        let genesis = Genesis::new(150, [RegionId(1), RegionId(2), RegionId(3)]).expect("genesis");
        (genesis, Account::new())
    }

    #[test]
    fn idle_regions_send_rights_to_the_busy_one_before_it_runs_dry() {
        let (g, account) = setup();
        let demand = [(RegionId(1), 0), (RegionId(2), 10), (RegionId(3), 0)];
        let config = RebalanceConfig::default();
        // Region 2 holds 50 of 150 yet does all the spending: 1 and 3 each keep the
        // reserve of 5 and send the other 45 to region 2.
        let plan = plan_transfers(&account, &g, RegionId(1), &demand, &config);
        assert_eq!(
            plan,
            vec![Transfer {
                to: RegionId(2),
                amount: 45
            }]
        );
        let plan = plan_transfers(&account, &g, RegionId(3), &demand, &config);
        assert_eq!(
            plan,
            vec![Transfer {
                to: RegionId(2),
                amount: 45
            }]
        );
        assert!(plan_transfers(&account, &g, RegionId(2), &demand, &config).is_empty());
    }

    #[test]
    fn a_large_balance_keeps_an_idle_share_in_every_live_region() {
        let g = Genesis::new(3_000_000, [RegionId(1), RegionId(2), RegionId(3)]).expect("genesis");
        let account = Account::new();
        let demand = [(RegionId(1), 0), (RegionId(2), 10), (RegionId(3), 0)];
        // 10 % of an even share (1,000,000) stays in each idle region; with
        // the token reserve alone, 999,995 would leave each.
        let plan = plan_transfers(
            &account,
            &g,
            RegionId(1),
            &demand,
            &RebalanceConfig::default(),
        );
        assert_eq!(
            plan,
            vec![Transfer {
                to: RegionId(2),
                amount: 900_000
            }]
        );
        let config = RebalanceConfig {
            idle_share_percent: 0,
            ..RebalanceConfig::default()
        };
        let plan = plan_transfers(&account, &g, RegionId(1), &demand, &config);
        assert_eq!(plan[0].amount, 999_995);
    }

    #[test]
    fn rights_in_transit_are_not_sent_twice() {
        let (g, mut account) = setup();
        let demand = [(RegionId(1), 0), (RegionId(2), 10), (RegionId(3), 0)];
        let config = RebalanceConfig::default();
        for t in plan_transfers(&account, &g, RegionId(1), &demand, &config) {
            let op = crate::Op::Transfer {
                to: t.to,
                amount: t.amount,
            };
            account.apply(&g, RegionId(1), op).expect("covered");
        }
        // Region 2 has not accepted yet; region 1 must not send again.
        assert!(plan_transfers(&account, &g, RegionId(1), &demand, &config).is_empty());
        // With 45 on the way, region 2 holds 95 of its target 140: above the
        // low-water mark, so region 3 waits too.
        assert!(plan_transfers(&account, &g, RegionId(3), &demand, &config).is_empty());
    }

    #[test]
    fn no_demand_moves_nothing_and_balanced_regions_stay_put() {
        let (g, account) = setup();
        let config = RebalanceConfig::default();
        let idle = [(RegionId(1), 0), (RegionId(2), 0)];
        assert!(plan_transfers(&account, &g, RegionId(1), &idle, &config).is_empty());
        let even = [(RegionId(1), 3), (RegionId(2), 3), (RegionId(3), 3)];
        for r in 1..=3 {
            assert!(plan_transfers(&account, &g, RegionId(r), &even, &config).is_empty());
        }
    }

    #[test]
    fn answering_a_request_keeps_the_reserve() {
        let (g, account) = setup();
        let config = RebalanceConfig::default();
        assert_eq!(
            answer_request(&account, &g, RegionId(1), 10, 0, &config),
            Some(22)
        );
        assert_eq!(
            answer_request(&account, &g, RegionId(1), 100, 0, &config),
            Some(45)
        );
        assert_eq!(
            answer_request(&account, &g, RegionId(1), 10, 45, &config),
            None
        );
        assert_eq!(
            answer_request(&account, &g, RegionId(7), 10, 0, &config),
            None
        );
    }

    /// The policy as it was written with maps, before rows: what
    /// [`plan_transfers`] must still decide.
    fn reference_plan(
        account: &Account,
        genesis: &Genesis,
        me: RegionId,
        demand: &BTreeMap<RegionId, u64>,
        config: &RebalanceConfig,
    ) -> Vec<Transfer> {
        let mut live: BTreeMap<RegionId, u128> =
            demand.iter().map(|(&r, &d)| (r, d.into())).collect();
        live.entry(me).or_insert(0);
        let total_demand: u128 = live.values().sum();
        if total_demand == 0 {
            return Vec::new();
        }
        let rights: BTreeMap<RegionId, u128> = live
            .keys()
            .map(|&r| {
                let have = u128::from(account.rights(genesis, r)) + u128::from(account.incoming(r));
                (r, have)
            })
            .collect();
        let total: u128 = rights.values().sum();
        let n = rights.len().max(1) as u128;
        let idle_share = total / n * u128::from(config.idle_share_percent) / 100;
        let reserve = u128::from(config.failover_reserve)
            .max(idle_share)
            .min(total / (4 * n));
        let distributable = total - reserve * rights.len() as u128;
        let mut targets: BTreeMap<RegionId, u128> = live
            .iter()
            .map(|(&r, &d)| (r, reserve + distributable * d / total_demand))
            .collect();
        let assigned: u128 = targets.values().sum();
        let busiest = live
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(&r, _)| r);
        if let Some(t) = busiest.and_then(|r| targets.get_mut(&r)) {
            *t += total - assigned;
        }
        let surplus = |r: &RegionId| rights[r].saturating_sub(targets[r]);
        let mine = surplus(&me).min(account.rights(genesis, me).into());
        if mine == 0 || rights[&me] * 100 <= targets[&me] * u128::from(config.give_above_percent) {
            return Vec::new();
        }
        let all_surplus: u128 = live.keys().map(surplus).sum();
        let mut needy: Vec<(u128, RegionId)> = live
            .keys()
            .filter(|&&r| r != me)
            .filter(|&r| {
                let (have, want) = (rights[r], targets[r]);
                have < want
                    && (have * 100 < want * u128::from(config.low_water_percent) || have < reserve)
            })
            .map(|&r| (targets[&r] - rights[&r], r))
            .collect();
        needy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut left = mine;
        let mut plan = Vec::new();
        for (deficit, to) in needy {
            let part = (deficit * mine).div_ceil(all_surplus).min(left);
            if part == 0 {
                break;
            }
            left -= part;
            plan.push(Transfer {
                to,
                amount: u64::try_from(part).unwrap_or(u64::MAX),
            });
        }
        plan
    }

    proptest::proptest! {
        /// Rows decide exactly what the maps decided: any balance, rights
        /// moved about (some still in transit), any live regions and demand,
        /// any planner and tuning.
        #[test]
        fn rows_plan_what_the_maps_planned(
            balance in 0u64..2_000,
            regions in 1u16..=5,
            moves in proptest::collection::vec((1u16..=5, 1u16..=6, 1u64..400, proptest::bool::ANY), 0..12),
            demand in proptest::collection::btree_map(1u16..=6, 0u64..50, 0..6),
            me in 1u16..=6,
            reserve in 0u64..20,
            idle in 0u64..40,
            low in 1u64..100,
            give in 100u64..300,
        ) {
            let genesis = Genesis::new(balance, (1..=regions).map(RegionId)).expect("genesis");
            // Each region's view differs; one account, with moves from
            // several regions applied, some accepted, is enough here.
            let mut account = Account::new();
            for (from, to, amount, accept) in moves {
                let op = crate::Op::Transfer { to: RegionId(to), amount };
                if account.apply(&genesis, RegionId(from), op).is_ok() && accept {
                    let _ = account.accept_transfers(RegionId(to));
                }
            }
            let demand: BTreeMap<RegionId, u64> =
                demand.into_iter().map(|(r, d)| (RegionId(r), d)).collect();
            let rows: Vec<(RegionId, u64)> = demand.iter().map(|(&r, &d)| (r, d)).collect();
            let config = RebalanceConfig {
                failover_reserve: reserve,
                idle_share_percent: idle,
                low_water_percent: low,
                give_above_percent: give,
            };
            let me = RegionId(me);
            proptest::prop_assert_eq!(
                plan_transfers(&account, &genesis, me, &rows, &config),
                reference_plan(&account, &genesis, me, &demand, &config)
            );
        }
    }
}
