//! Writes on their way to disk: which of our writes are not durable yet, which
//! keys changed since the last persist, and how persists are numbered.
//!
//! This is the raft-rs `Ready` / `on_persist_ready(number)` pattern:
//! [`Journal::prepare`] plans the next persist from what changed; the shell
//! writes and flushes it; [`Journal::flushed`] says which of our writes became
//! durable with it, and only those may leave the region.

use super::state::{AccountWrite, Durable, Persist};
use crate::hashing::{Map, Set};
use crate::region::holds::HoldId;
use crate::region::idempotency::RecordId;
use crate::region::packed::Packed;
use crate::region::units::Seq;
use ledger_crdt::Account;
use std::collections::BTreeSet;

/// One of our writes not yet durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PendingWrite {
    pub(super) seq: Seq,
    pub(super) user: String,
    /// Our whole entry for the user as of this write, packed once here for
    /// both the flush that writes it and the promotion after it.
    pub(super) entry: Packed<Account>,
}

/// Keys changed since the state was last persisted.
///
/// Users are held unordered, and sorted once per persist, which then lists
/// its keys in order as before: every merge and spend marks its user, and a
/// walk down an ordered set of names cost a merge about 1,000 instructions
/// (`benches/peer_instructions.sh`).
#[derive(Debug, Default)]
struct Dirty {
    /// Users whose account, own entry or version held of another origin's
    /// entry changed: all three are one stored value.
    users: Set<String>,
    records: BTreeSet<RecordId>,
    holds: BTreeSet<HoldId>,
}

impl Dirty {
    /// Marks `user` changed. A busy user changes many times between two
    /// flushes: look before copying the name.
    fn mark_user(&mut self, user: &str) {
        if !self.users.contains(user) {
            self.users.insert(user.to_owned());
        }
    }
}

/// Writes on their way to disk.
#[derive(Debug)]
pub(super) struct Journal {
    pending: Vec<PendingWrite>,
    /// Every write of ours up to here is durable.
    durable: Seq,
    dirty: Dirty,
    /// How many persists were prepared.
    prepared: u64,
    /// The last flush failed; new writes are refused until one succeeds.
    storage_failing: bool,
}

impl Journal {
    /// A journal for a state that is durable up to `durable`.
    pub(super) fn new(durable: Seq) -> Self {
        Self {
            pending: Vec::new(),
            durable,
            dirty: Dirty::default(),
            prepared: 0,
            storage_failing: false,
        }
    }

    /// Every write of ours up to here is durable.
    pub(super) fn durable(&self) -> Seq {
        self.durable
    }

    /// Whether the last flush failed.
    pub(super) fn storage_failing(&self) -> bool {
        self.storage_failing
    }

    /// Whether every write of ours is durable.
    pub(super) fn all_durable(&self) -> bool {
        self.pending.is_empty()
    }

    /// The number the next prepared persist will carry: everything in memory
    /// now is in it at the latest.
    pub(super) fn next_number(&self) -> u64 {
        self.prepared + 1
    }

    /// The user's latest write of ours not yet durable.
    pub(super) fn latest_pending(&self, user: &str) -> Option<Seq> {
        self.pending
            .iter()
            .rev()
            .find(|w| w.user == user)
            .map(|w| w.seq)
    }

    /// We wrote our entry for `user` (the account is changed too).
    pub(super) fn wrote(&mut self, seq: Seq, user: &str, entry: Account) {
        self.pending.push(PendingWrite {
            seq,
            user: user.to_owned(),
            entry: Packed::pack(&entry),
        });
        self.dirty.mark_user(user);
    }

    /// `user`'s account, and the version held of another origin's entry,
    /// changed by a merge.
    pub(super) fn merged(&mut self, user: &str) {
        self.dirty.mark_user(user);
    }

    /// The record under `id` was stored or removed.
    pub(super) fn record_changed(&mut self, id: RecordId) {
        self.dirty.records.insert(id);
    }

    /// The hold `id` was opened, closed or forgotten.
    pub(super) fn hold_changed(&mut self, id: HoldId) {
        self.dirty.holds.insert(id);
    }

    /// Everything changed since the last call, as of our latest write.
    pub(super) fn prepare(&mut self, state: &Durable) -> Persist {
        // Writes not yet flushed become durable with this persist: promote them
        // on disk now, exactly as `flushed` will in memory (the latest write
        // of a user wins). Borrowed, not cloned: each entry is copied once,
        // into the persist. `wrote` marks a pending write's user dirty (and
        // `failed` again), so marking adds none; it keeps an entry from going
        // unwritten if not.
        let mut latest: Map<&str, &PendingWrite> =
            Map::with_capacity_and_hasher(self.pending.len(), Default::default());
        for w in &self.pending {
            latest.insert(w.user.as_str(), w);
            self.dirty.mark_user(&w.user);
        }
        let dirty = std::mem::take(&mut self.dirty);
        let accounts = sorted(dirty.users)
            .into_iter()
            .filter_map(|user| {
                let stored = state.accounts.get(user.as_str());
                let own = match latest.get(user.as_str()) {
                    Some(w) => Some((w.seq, w.entry.clone())),
                    None => stored.and_then(|u| u.own.clone()),
                };
                // Every user we wrote has an account; were one missing, an
                // empty one keeps our entry from being dropped.
                let account = match (stored, &own) {
                    (Some(u), _) => u.account.clone(),
                    (None, Some(_)) => Packed::pack(&Account::default()),
                    (None, None) => return None,
                };
                let held = stored.map_or_else(Vec::new, |u| u.held.iter().collect());
                Some((user, AccountWrite { account, own, held }))
            })
            .collect();
        self.prepared += 1;
        Persist {
            upto: state.last_written,
            number: self.prepared,
            accounts,
            records: dirty
                .records
                .into_iter()
                .map(|id| {
                    let record = state.records.get(&id).cloned();
                    (id, record)
                })
                .collect(),
            holds: dirty
                .holds
                .into_iter()
                .map(|id| {
                    let hold = state.holds.get(&id).cloned();
                    (id, hold)
                })
                .collect(),
            // The replica adds the statement's lines (they are not journal
            // state: they are taken, not marked dirty).
            statement: Vec::new(),
            meta: state.meta(),
        }
    }

    /// Storage could not make `persist` durable: everything it carried is
    /// marked changed again, so the next persist writes it (at its current
    /// value), and new writes are refused until a flush succeeds.
    pub(super) fn failed(&mut self, persist: Persist) {
        self.storage_failing = true;
        for (user, _) in persist.accounts {
            self.dirty.users.insert(user);
        }
        for (id, _) in persist.records {
            self.dirty.records.insert(id);
        }
        for (id, _) in persist.holds {
            self.dirty.holds.insert(id);
        }
    }

    /// A flush succeeded, making every write up to `upto` durable (never past
    /// `last_written`). Returns the writes that became durable with it, in
    /// order; `None` if it moved nothing.
    pub(super) fn flushed(&mut self, upto: Seq, last_written: Seq) -> Option<Vec<PendingWrite>> {
        self.storage_failing = false;
        let upto = upto.min(last_written);
        if upto <= self.durable {
            return None;
        }
        self.durable = upto;
        Some(self.pending.extract_if(.., |w| w.seq <= upto).collect())
    }
}

/// A dirty set's names, in order.
fn sorted(names: Set<String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_unstable();
    names
}
