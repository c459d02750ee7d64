//! The ledger of one region: the state that survives a crash, the journal of
//! what is on its way to disk, and the rules that change them. Every change
//! to the state goes through here, so each lands in the next persist.

use super::config::Faults;
use super::journal::Journal;
use super::state::{Durable, HoldApplied};
use crate::region::command::Command;
use crate::region::holds::HoldId;
use crate::region::message::RecordItem;
use crate::region::rules::Rules;
use crate::region::units::{Millis, Seq};
use ledger_crdt::{Account, Op, RegionId};
use std::collections::BTreeSet;

/// The ledger sub-state of a replica.
#[derive(Debug)]
pub(super) struct Ledger {
    pub(super) rules: Rules,
    pub(super) state: Durable,
    pub(super) journal: Journal,
    /// Users whose account changed since the last drain, when tracked (the
    /// simulator checks exactly those accounts after every step).
    changed: Option<BTreeSet<String>>,
}

impl Ledger {
    pub(super) fn new(rules: Rules, state: Durable, track_changes: bool) -> Self {
        Self {
            rules,
            journal: Journal::new(state.last_written),
            state,
            changed: track_changes.then(BTreeSet::new),
        }
    }

    fn me(&self) -> RegionId {
        self.rules.config().region
    }

    /// `user` changed (for the simulator's checks).
    pub(super) fn touched(&mut self, user: &str) {
        if let Some(changed) = &mut self.changed {
            changed.insert(user.to_owned());
        }
    }

    /// Users changed since the last call.
    pub(super) fn drain_changed(&mut self) -> BTreeSet<String> {
        self.changed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Our entry for `user` changed to the one in `account` (stored, and passed
    /// in so the hot path does not unpack it again): a write of ours. Returns
    /// its sequence number.
    pub(super) fn write_own(&mut self, user: &str, account: &Account) -> Seq {
        let seq = self.state.last_written.next();
        self.state.last_written = seq;
        self.journal.wrote(seq, user, account.delta_of(self.me()));
        self.touched(user);
        seq
    }

    /// Sends up to `amount` tokens' rights of `user` to region `to`: never
    /// more than this region's rights minus its open holds for the user (held
    /// tokens stay until their job is captured or released). Returns what was
    /// sent.
    /// `ignore_holds` is the simulator's broken core that gives held rights away.
    pub(super) fn transfer(
        &mut self,
        user: &str,
        to: RegionId,
        amount: u64,
        ignore_holds: bool,
    ) -> Option<u64> {
        let mut account = self.state.account(user);
        let held = if ignore_holds {
            0
        } else {
            self.state.holds.held(user)
        };
        let free = account
            .rights(&self.rules.config().genesis, self.me())
            .saturating_sub(held);
        let amount = amount.min(free);
        if amount == 0 {
            return None;
        }
        let unsent = self.state.before_change(&account);
        self.rules
            .apply(&mut account, Op::Transfer { to, amount })
            .ok()?;
        self.state.set_account(user, unsent.as_ref(), &account);
        self.write_own(user, &account);
        Some(amount)
    }

    /// Applies a hold, capture or release (see [`Durable::apply_hold`]).
    pub(super) fn apply_hold(
        &mut self,
        id: &HoldId,
        command: &Command,
        now: Millis,
        ttl_ms: u64,
        faults: Faults,
    ) -> HoldApplied {
        let applied = self
            .state
            .apply_hold(&self.rules, id, command, now, ttl_ms, faults);
        if applied.changed {
            self.journal.hold_changed(id.clone());
        }
        applied
    }

    /// Releases the holds whose TTL passed, and forgets closed ones older
    /// than `keep_ms`.
    pub(super) fn expire_holds(&mut self, now: Millis, keep_ms: Option<u64>) {
        let mut changed = self.state.holds.expire(now);
        if let Some(keep) = keep_ms {
            changed.extend(self.state.holds.forget_stale(now, keep));
        }
        for id in changed {
            self.journal.hold_changed(id);
        }
    }

    /// Stores records from a peer; the first answer to a key stands, so a
    /// record we hold is never replaced.
    pub(super) fn take_peer_records(&mut self, records: Vec<RecordItem>) {
        for (id, record) in records {
            if self.state.records.insert_if_absent(id.clone(), record) {
                self.journal.record_changed(id);
            }
        }
    }

    /// Forgets idempotency records older than the TTL. Returns how many.
    pub(super) fn expire_records(&mut self, now: Millis) -> usize {
        let ttl = self.rules.config().idempotency_ttl_ms;
        let expired = self.state.records.expire(now, ttl);
        let count = expired.len();
        for id in expired {
            self.journal.record_changed(id);
        }
        count
    }
}
