//! A user's token account: the escrowed, replicated PN-counter.

use crate::{Error, Genesis, Op, RegionEntry, RegionId, SmallMap, Subscription};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// One user's tokens, as one replica knows them.
///
/// An account is a join-semilattice: [`Account::merge`] is commutative, associative
/// and idempotent. A *delta* is an account too, holding only what one operation
/// changed (see [`Delta`]), so deltas, whole states and forwarded mixtures of both
/// all merge the same way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Account {
    entries: SmallMap<RegionId, RegionEntry>,
}

/// A small account holding only what one operation changed: the writing region's
/// whole entry (never part of it, so no replica ever sees half of a version).
pub type Delta = Account;

impl Account {
    /// A user nobody has written yet: only the implicit welcome grant.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry written by `region`, if it wrote anything.
    pub fn entry(&self, region: RegionId) -> Option<&RegionEntry> {
        self.entries.get(&region)
    }

    /// Every region's entry.
    pub fn entries(&self) -> &SmallMap<RegionId, RegionEntry> {
        &self.entries
    }

    /// The premium subscription: the highest billing version any region wrote.
    pub fn subscription(&self) -> Option<Subscription> {
        self.entries
            .values()
            .filter_map(RegionEntry::subscription)
            .max()
    }

    /// Joins another replica's state or delta into this one. Returns whether
    /// anything changed, so callers know whether to persist and forward.
    pub fn merge(&mut self, other: &Account) -> bool {
        let mut changed = false;
        for (&region, theirs) in &other.entries {
            if theirs.is_empty() {
                continue;
            }
            changed |= self.entries.get_or_default(region).join(theirs);
        }
        changed
    }

    /// The delta that carries `region`'s entry as this replica knows it: what a
    /// region sends after writing, and what any replica forwards or resends.
    /// It carries only what `region` wrote, its subscription writes included,
    /// so whatever a replica forwards is a version its writer made (and made
    /// durable), never a write of ours that a crash may yet lose.
    pub fn delta_of(&self, region: RegionId) -> Delta {
        let mut delta = Delta::new();
        if let Some(entry) = self.entries.get(&region) {
            delta.entries.insert(region, entry.clone());
        }
        delta
    }

    /// Writes `subscription` at region `me`, if it is newer (by billing version)
    /// than the one held. Returns the delta to persist and replicate, or `None`
    /// if it changed nothing: a duplicate or older billing event.
    pub fn subscribe(&mut self, me: RegionId, subscription: Subscription) -> Option<Delta> {
        if Some(subscription) <= self.subscription() {
            return None;
        }
        self.entries.get_or_default(me).subscribe(subscription);
        Some(self.delta_of(me))
    }

    /// The rights of `region` as this replica sees them: tokens it may spend or give
    /// away without asking anyone.
    pub fn rights(&self, genesis: &Genesis, region: RegionId) -> u64 {
        clamp(self.rights_exact(genesis, region))
    }

    fn rights_exact(&self, genesis: &Genesis, region: RegionId) -> i128 {
        let share = genesis.share(region);
        match self.entries.get(&region) {
            Some(entry) => entry.rights_exact(share),
            None => i128::from(share),
        }
    }

    /// Rights sent to a region that it has not accepted yet, as far as this replica
    /// knows. They belong to nobody's rights for the moment but still to the balance.
    pub fn in_transit(&self) -> u128 {
        let mut total = 0u128;
        for (&from, entry) in &self.entries {
            for (&to, &sent) in entry.sent() {
                let accepted = self.entries.get(&to).map_or(0, |e| e.received_from(from));
                total += u128::from(sent.saturating_sub(accepted));
            }
        }
        total
    }

    /// Rights sent to `region` that it has not accepted yet, as far as this replica
    /// knows: they will be `region`'s, so planners count them as such.
    pub fn incoming(&self, region: RegionId) -> u64 {
        let accepted = |from: RegionId| {
            self.entries
                .get(&region)
                .map_or(0, |e| e.received_from(from))
        };
        self.entries
            .iter()
            .filter(|&(&from, _)| from != region)
            .map(|(&from, e)| e.sent_to(region).saturating_sub(accepted(from)))
            .fold(0u64, u64::saturating_add)
    }

    /// The user's balance as this replica sees it: all regions' rights plus rights in
    /// transit. Once every delta is delivered it equals welcome grant + credits −
    /// spends, exactly.
    pub fn balance(&self, genesis: &Genesis) -> u64 {
        clamp(self.balance_exact(genesis))
    }

    fn balance_exact(&self, genesis: &Genesis) -> i128 {
        let regions = self.regions(genesis);
        let rights: i128 = regions.iter().map(|&r| self.rights_exact(genesis, r)).sum();
        // in_transit is a sum of u64s over at most regions² pairs; it fits in i128.
        rights + self.in_transit() as i128
    }

    /// Every region that holds or ever held rights: genesis regions and writers.
    pub fn regions(&self, genesis: &Genesis) -> Vec<RegionId> {
        let genesis = genesis.regions();
        let mut regions = Vec::with_capacity(genesis.len() + self.entries.len());
        regions.extend_from_slice(genesis);
        regions.extend(self.entries.keys().copied());
        regions.sort_unstable();
        regions.dedup();
        regions
    }

    /// Tokens credited at all regions.
    pub fn credited(&self) -> u128 {
        self.entries
            .values()
            .map(|e| u128::from(e.credited()))
            .sum()
    }

    /// Tokens spent at all regions.
    pub fn spent(&self) -> u128 {
        self.entries.values().map(|e| u128::from(e.spent())).sum()
    }

    /// Memes-API calls served at all regions.
    pub fn calls(&self) -> u64 {
        self.entries
            .values()
            .fold(0u64, |acc, e| acc.saturating_add(e.calls()))
    }

    /// Applies a local operation at region `me` and returns the delta to persist and
    /// replicate. A refused operation changes nothing.
    pub fn apply(&mut self, genesis: &Genesis, me: RegionId, op: Op) -> Result<Delta, Error> {
        let mut entry = self.entries.get(&me).cloned().unwrap_or_default();
        match op {
            Op::Credit { amount } => {
                if amount == 0 {
                    return Err(Error::ZeroAmount);
                }
                let balance = self.balance_exact(genesis).max(0);
                if balance + i128::from(amount) > i128::from(u64::MAX) {
                    return Err(Error::Overflow);
                }
                entry.add_credit(amount).ok_or(Error::Overflow)?;
            }
            Op::Spend { amount, call } => {
                if amount == 0 && !call {
                    return Err(Error::ZeroAmount);
                }
                self.check_covered(genesis, me, amount)?;
                entry.add_spend(amount, call).ok_or(Error::Overflow)?;
            }
            Op::Transfer { to, amount } => {
                if amount == 0 {
                    return Err(Error::ZeroAmount);
                }
                if to == me {
                    return Err(Error::TransferToSelf);
                }
                self.check_covered(genesis, me, amount)?;
                entry.add_sent(to, amount).ok_or(Error::Overflow)?;
            }
        }
        self.entries.insert(me, entry);
        Ok(self.delta_of(me))
    }

    /// The escrow rule: `me` may only give away what its own rights cover.
    fn check_covered(&self, genesis: &Genesis, me: RegionId, amount: u64) -> Result<(), Error> {
        let here = self.rights(genesis, me);
        if here >= amount {
            return Ok(());
        }
        let balance = self.balance(genesis);
        if balance >= amount {
            Err(Error::InsufficientHere {
                here,
                elsewhere: balance - here,
            })
        } else {
            Err(Error::InsufficientAnywhere { balance })
        }
    }

    /// Region `me` accepts every transfer addressed to it that this replica has seen,
    /// turning rights in transit into its own. Returns the delta to persist and
    /// replicate, or `None` if there was nothing new. Call it after merging.
    pub fn accept_transfers(&mut self, me: RegionId) -> Option<Delta> {
        let incoming: Vec<(RegionId, u64)> = self
            .entries
            .iter()
            .filter(|&(&from, _)| from != me)
            .filter_map(|(&from, e)| Some((from, *e.sent().get(&me)?)))
            .collect();
        let mut entry = self.entries.get(&me).cloned().unwrap_or_default();
        let mut grew = false;
        for (from, total) in incoming {
            grew |= entry.accept_from(from, total);
        }
        if !grew {
            return None;
        }
        // Only a non-empty entry is ever stored, so equal states stay equal.
        self.entries.insert(me, entry);
        Some(self.delta_of(me))
    }

    /// Simulation only: applies `op` at `me` checking nothing but overflow. This is
    /// the naive "local writes, async replication" counter of seed 000 when the
    /// caller checks the balance view instead of rights, and a broken replica when
    /// it checks nothing at all.
    #[cfg(feature = "simulation")]
    pub fn apply_unchecked(&mut self, me: RegionId, op: Op) -> Result<Delta, Error> {
        let mut entry = self.entries.get(&me).cloned().unwrap_or_default();
        let done = match op {
            Op::Credit { amount } => entry.add_credit(amount),
            Op::Spend { amount, call } => entry.add_spend(amount, call),
            Op::Transfer { to, amount } => entry.add_sent(to, amount),
        };
        done.ok_or(Error::Overflow)?;
        self.entries.insert(me, entry);
        Ok(self.delta_of(me))
    }

    /// Simulation only: a broken merge that adds counters instead of taking the
    /// maximum, so duplicated deltas count twice.
    #[cfg(feature = "simulation")]
    pub fn merge_additive(&mut self, other: &Account) {
        for (&region, theirs) in &other.entries {
            self.entries.get_or_default(region).add_all(theirs);
        }
    }

    /// Simulation only: a broken register that takes whatever subscription
    /// arrives last instead of the highest billing version.
    #[cfg(feature = "simulation")]
    pub fn take_subscription_by_arrival(&mut self, other: &Account) {
        if other.subscription().is_none() {
            return;
        }
        for (region, entry) in self.entries.iter_mut() {
            let arrived = other.entry(*region).and_then(RegionEntry::subscription);
            entry.set_subscription(arrived);
        }
    }

    /// Checks the ledger's safety invariant on this replica's view: no region's
    /// rights, and so no balance, is below zero.
    pub fn check_invariants(&self, genesis: &Genesis) -> Result<(), Error> {
        for region in self.regions(genesis) {
            let rights = self.rights_exact(genesis, region);
            if rights < 0 {
                return Err(Error::NegativeRights { region, rights });
            }
        }
        Ok(())
    }

    /// Drops zero values and empty entries after decoding untrusted bytes, so that
    /// equal states always encode to equal bytes.
    pub(crate) fn normalize(&mut self) {
        for (&owner, entry) in self.entries.iter_mut() {
            entry.normalize(owner);
        }
        self.entries.retain(|_, e| !e.is_empty());
    }
}

fn clamp(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis() -> Genesis {
        Genesis::new(150, [RegionId(1), RegionId(2), RegionId(3)]).expect("valid genesis")
    }

    #[test]
    fn welcome_grant_is_split_once_across_genesis_regions() {
        let g = genesis();
        let account = Account::new();
        assert_eq!(account.balance(&g), 150);
        let shares: Vec<u64> = g.regions().iter().map(|&r| account.rights(&g, r)).collect();
        assert_eq!(shares, vec![50, 50, 50]);
        assert_eq!(account.rights(&g, RegionId(9)), 0);
    }

    #[test]
    fn spend_beyond_local_rights_says_where_tokens_are() {
        let g = genesis();
        let mut account = Account::new();
        let err = account.apply(
            &g,
            RegionId(1),
            Op::Spend {
                amount: 60,
                call: true,
            },
        );
        assert_eq!(
            err,
            Err(Error::InsufficientHere {
                here: 50,
                elsewhere: 100
            })
        );
        let err = account.apply(
            &g,
            RegionId(1),
            Op::Spend {
                amount: 151,
                call: true,
            },
        );
        assert_eq!(err, Err(Error::InsufficientAnywhere { balance: 150 }));
        assert_eq!(account, Account::new(), "a refusal changes nothing");
    }

    #[test]
    fn transfer_moves_rights_once_accepted() {
        let g = genesis();
        let mut a = Account::new();
        let delta = a.apply(
            &g,
            RegionId(1),
            Op::Transfer {
                to: RegionId(2),
                amount: 30,
            },
        );
        let delta = delta.expect("covered by rights");
        assert_eq!(a.rights(&g, RegionId(1)), 20);
        let mut b = Account::new();
        b.merge(&delta);
        assert_eq!(b.rights(&g, RegionId(2)), 50, "not accepted yet");
        assert_eq!(b.balance(&g), 150, "in transit still counts");
        assert!(b.accept_transfers(RegionId(2)).is_some());
        assert_eq!(b.rights(&g, RegionId(2)), 80);
        assert_eq!(b.balance(&g), 150);
        assert!(
            b.accept_transfers(RegionId(2)).is_none(),
            "accepting is idempotent"
        );
    }

    #[test]
    fn checker_catches_a_spend_that_skipped_the_rights_check() {
        let g = genesis();
        let mut account = Account::new();
        // What a broken replica would write: a spend its rights do not cover.
        let mut entry = RegionEntry::default();
        entry.add_spend(51, true).expect("no overflow");
        account.entries.insert(RegionId(1), entry);
        assert_eq!(
            account.check_invariants(&g),
            Err(Error::NegativeRights {
                region: RegionId(1),
                rights: -1
            })
        );
    }

    #[test]
    fn credit_refuses_to_overflow() {
        let g = genesis();
        let mut account = Account::new();
        let err = account.apply(&g, RegionId(1), Op::Credit { amount: u64::MAX });
        assert_eq!(err, Err(Error::Overflow));
        let fits = u64::MAX - 150;
        assert!(
            account
                .apply(&g, RegionId(1), Op::Credit { amount: fits })
                .is_ok()
        );
        assert_eq!(account.balance(&g), u64::MAX);
        let err = account.apply(&g, RegionId(2), Op::Credit { amount: 1 });
        assert_eq!(err, Err(Error::Overflow));
    }
    /// Found by the simulator's soak (seed 613462): the subscription rode in
    /// every delta, so a replica forwarding another region's entry also
    /// forwarded its own subscription write before that write was durable. A
    /// crash then lost it at its writer, and no region's entry carried it any
    /// more, so anti-entropy never brought it to the regions that lacked it.
    #[test]
    fn a_subscription_travels_only_in_the_delta_of_the_region_that_wrote_it() {
        let g = genesis();
        let (r1, r2) = (RegionId(1), RegionId(2));
        let mut at_r1 = Account::new();
        at_r1
            .apply(
                &g,
                r2,
                Op::Spend {
                    amount: 1,
                    call: true,
                },
            )
            .expect("spend");
        let upgrade = Subscription {
            version: 1,
            memes_ai_until_ms: 1_000,
        };
        let written = at_r1.subscribe(r1, upgrade).expect("newer");
        assert_eq!(written.subscription(), Some(upgrade));
        assert_eq!(at_r1.delta_of(r2).subscription(), None);

        let mut elsewhere = Account::new();
        elsewhere.merge(&at_r1.delta_of(r2));
        assert_eq!(elsewhere.subscription(), None);
        elsewhere.merge(&written);
        assert_eq!(elsewhere.subscription(), Some(upgrade));
        // An older event at another region changes nothing there.
        let stale = Subscription {
            version: 0,
            memes_ai_until_ms: 5_000,
        };
        assert_eq!(elsewhere.subscribe(r2, stale), None);
        assert_eq!(elsewhere.subscription(), Some(upgrade));
    }
}
