//! What a replica shows: accounts, standings, and the cluster as it sees it.

use super::{EscrowStats, PeerLag, Replica};
use crate::region::command::{Receipt, Standing};
use crate::region::holds::HoldId;
use crate::region::membership::{MemberView, NodeIdentity};
use crate::region::units::{Millis, Seq};
use ledger_crdt::{Account, RegionId};
use std::collections::BTreeMap;

/// A snapshot of the cluster as one node sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node's identity.
    pub identity: NodeIdentity,
    /// Every other region seen.
    pub members: BTreeMap<RegionId, MemberView>,
    /// Replication lag of peers that are up.
    pub lag: BTreeMap<RegionId, PeerLag>,
    /// Escrow counters.
    pub escrow: EscrowStats,
    /// Spends waiting here for rights now.
    pub waiting_for_rights: usize,
    /// When the snapshot was taken.
    pub now: Millis,
}

impl Replica {
    /// Every account this replica knows.
    pub fn accounts(&self) -> BTreeMap<String, Account> {
        self.ledger.state.all_accounts()
    }

    /// One user's account as this replica knows it, if it knows the user.
    pub fn account(&self, user: &str) -> Option<Account> {
        self.ledger.state.account_of(user)
    }

    /// Whether this replica holds an account for `user`, or tokens held for
    /// one of its jobs.
    pub fn knows(&self, user: &str) -> bool {
        self.ledger.state.accounts.contains_key(user) || self.ledger.state.holds.held(user) > 0
    }

    /// The user's receipt as this replica sees it (spendable net of holds).
    pub fn receipt(&self, user: &str) -> Receipt {
        self.ledger.rules.receipt(
            &self.ledger.state.account(user),
            self.ledger.state.holds.held(user),
        )
    }

    /// The user's standing at `now`: receipt, premium tier, tokens held here.
    pub fn standing(&self, user: &str, now: Millis) -> Standing {
        let account = self.ledger.state.account(user);
        let held = self.ledger.state.holds.held(user);
        let subscription = account.subscription();
        Standing {
            receipt: self.ledger.rules.receipt(&account, held),
            memes_ai_until: subscription.map(|s| Millis(s.memes_ai_until_ms)),
            memes_ai: subscription.is_some_and(|s| s.active_at(now.0)),
            held,
        }
    }

    /// Whether the premium tier covers `user` at `now`: the account is in
    /// memory, so this costs no I/O and no lock beyond the caller's.
    pub fn memes_ai(&self, user: &str, now: Millis) -> bool {
        self.ledger
            .state
            .account_of(user)
            .and_then(|a| a.subscription())
            .is_some_and(|s| s.active_at(now.0))
    }

    /// Every open hold here (restart recovery of AI jobs, metrics).
    pub fn open_hold_ids(&self) -> Vec<(HoldId, u64)> {
        self.ledger
            .state
            .holds
            .open()
            .map(|(id, amount)| (id.clone(), amount))
            .collect()
    }

    /// The user's standing, and the write that must be durable before it may
    /// be shown: the user's latest write of ours not yet durable, or
    /// [`Seq::ZERO`]. (What peers replicated to us needs no wait: they hold it
    /// durably.)
    pub fn standing_durable_at(&self, user: &str, now: Millis) -> (Standing, Seq) {
        let seq = self.ledger.journal.latest_pending(user).unwrap_or_default();
        (self.standing(user, now), seq)
    }

    /// Every other region this node has seen, and whether it is up.
    pub fn members(&self) -> &BTreeMap<RegionId, MemberView> {
        self.peers.regions()
    }

    /// This node's current membership identity.
    pub fn identity(&self) -> NodeIdentity {
        self.peers.identity()
    }

    /// Whether a graceful leave has finished: rights handed over, everything
    /// sent, and the membership told.
    pub fn left(&self) -> bool {
        self.departure == super::Departure::Left
    }

    /// Escrow counters since start.
    pub fn stats(&self) -> EscrowStats {
        self.escrow.stats()
    }

    /// Replication lag of each peer that is up, at `now`.
    pub fn lag(&self, now: Millis) -> BTreeMap<RegionId, PeerLag> {
        self.replication
            .lag(now, self.ledger.journal.durable(), self.peers.live())
    }

    /// The cluster as this node sees it, at `now`.
    pub fn cluster_view(&self, now: Millis) -> ClusterView {
        ClusterView {
            identity: self.identity(),
            members: self.members().clone(),
            lag: self.lag(now),
            escrow: self.stats(),
            waiting_for_rights: self.rights_waits.len(),
            now,
        }
    }
}
