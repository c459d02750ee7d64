//! What survives a crash ([`Durable`]), and what one flush writes of it
//! ([`Persist`]).

use super::config::Faults;
use super::held::HeldVersions;
use crate::region::command::{Command, Receipt, Refusal};
use crate::region::holds::{HoldId, HoldState, HoldStep, Holds};
use crate::region::idempotency::{IdempotencyRecord, RecordId};
use crate::region::message::Item;
use crate::region::packed::Packed;
use crate::region::records::Records;
use crate::region::rules::Rules;
use crate::region::statement::{StatementDrafts, StatementLine};
use crate::region::units::Millis;
use crate::region::units::Seq;
use bincode::{Decode, Encode};
use ledger_crdt::{Account, RegionId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The state as of the last confirmed flush, plus the writes made since (which
/// the [`super::journal::Journal`] tracks until they are durable).
///
/// A user's id is allocated once, by `accounts`, and shared by the indexes
/// below: at a million users each extra copy cost about 4 % of the memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Each user's account, with our own entry of it.
    pub(super) accounts: BTreeMap<Arc<str>, UserState>,
    /// Per other origin: every write up to here is held.
    pub(super) watermarks: BTreeMap<RegionId, Seq>,
    /// Our own last write.
    pub(super) last_written: Seq,
    /// Our own entries ([`UserState::own`]), indexed by the write that last
    /// changed each: batches and catch-ups read a range of writes,
    /// O(changes) whatever the users.
    pub(super) own_by_seq: BTreeMap<Seq, Arc<str>>,
    /// The versions held of other origins' entries ([`UserState::held`]),
    /// indexed by origin and version: catch-ups forward a range. A version
    /// names one write of its origin, and one write one user.
    pub(super) seqs_by_origin: BTreeMap<(RegionId, Seq), Arc<str>>,
    /// Our writes up to here have been sent in batches.
    pub(super) sent_upto: Seq,
    pub(super) records: Records,
    /// Holds for jobs, open and recently closed (region-local).
    pub(super) holds: Holds,
    /// Statement lines made since the last persist (not state: they go to
    /// disk with it, and are never read back by the core).
    pub(super) statement: StatementDrafts,
}

/// One user as memory holds them.
///
/// Our entry sits beside the account rather than in a map of its own: the
/// flush that makes a write durable finds both with one look-up by name, and
/// a second map keyed by name cost every user a second set of tree nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct UserState {
    /// The account as it stands, our writes not yet durable included.
    pub(super) account: Packed<Account>,
    /// Our own entry as of its last durable write, with that write: all we
    /// ever send of us. It lags `account` while a write of ours is pending;
    /// `None` if we never wrote the user.
    pub(super) own: Option<(Seq, Packed<Account>)>,
    /// The version held of each other origin's entry: a merge changes it
    /// with the account.
    pub(super) held: HeldVersions,
}

impl UserState {
    /// A user with `account`, never written by us nor merged.
    fn new(account: Packed<Account>) -> Self {
        Self {
            account,
            own: None,
            held: HeldVersions::default(),
        }
    }
}

/// What merging one peer's entry did.
pub(super) struct Merged {
    /// Tokens the entry's region spent that we had not seen.
    pub(super) spent: u64,
    /// The account after the merge (stored already).
    pub(super) account: Account,
    /// Whether rights sent to us were accepted with the merge (a write of
    /// ours).
    pub(super) accepted: bool,
}

/// What a hold command did.
pub(super) struct HoldApplied {
    /// Whether the hold changed (to be persisted).
    pub(super) changed: bool,
    pub(super) outcome: HoldOutcome,
}

/// What to answer for a hold command.
pub(super) enum HoldOutcome {
    /// Answer `receipt` once persisted; `replayed` when nothing new happened.
    Answer {
        receipt: Receipt,
        replayed: bool,
    },
    Refused(Refusal),
    /// Captured: `account` changed by the charge of `amount` (stored already;
    /// the caller records it as a write of ours).
    Captured {
        receipt: Receipt,
        account: Account,
        amount: u64,
    },
}

/// Tokens `region` has spent for the account.
pub(super) fn spent_at(account: &Account, region: RegionId) -> u64 {
    account.entry(region).map_or(0, |e| e.spent())
}

/// The scalars of the durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Meta {
    /// Our last write.
    pub last_written: Seq,
    /// Our writes up to here were sent.
    pub sent_upto: Seq,
    /// Per other origin: every write up to here is held.
    pub watermarks: Vec<(RegionId, Seq)>,
}

/// What one flush writes: the changed parts of [`Durable`], up to one write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// Every write of ours up to this one is included.
    pub upto: Seq,
    /// Which [`crate::Replica::prepare_persist`] made it (they are numbered
    /// from 1); hand it back to [`crate::Replica::handle_flushed`].
    pub number: u64,
    /// Changed accounts, each with our own entry of the user and the
    /// versions held of other origins' entries.
    pub accounts: Vec<(String, AccountWrite)>,
    /// Changed idempotency records; `None` deletes.
    pub records: Vec<(RecordId, Option<IdempotencyRecord>)>,
    /// Changed holds; `None` deletes.
    pub holds: Vec<(HoldId, Option<HoldState>)>,
    /// New statement lines, oldest first (appended, never rewritten).
    pub statement: Vec<StatementLine>,
    /// The scalars.
    pub meta: Meta,
}

/// One user's account as a flush writes it: with our own entry of the user,
/// so that a spend changes one stored value, not two, and with the versions
/// held of other origins' entries, so that a merge changes one, not two.
///
/// A merge changes the account and the version held of its origin's entry
/// together, so both are always in the same persist: carrying the versions
/// in the account's value saved the merging region a sled insert per merged
/// user at each checkpoint (`benches/peer_instructions.sh`).
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct AccountWrite {
    /// The account, packed as memory holds it (it encodes as the account would).
    pub account: Packed<Account>,
    /// Our own entry as of its last durable write (this flush's, if it
    /// carries one), with its sequence; `None` if we never wrote the user.
    pub own: Option<(Seq, Packed<Account>)>,
    /// Every other origin's entry of the user held: its version, by origin.
    pub held: Vec<(RegionId, Seq)>,
}

impl Persist {
    /// Whether the persist carries no key at all (only scalars).
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.records.is_empty()
            && self.holds.is_empty()
            && self.statement.is_empty()
    }
}

impl Durable {
    /// Applies one flush's changes: how the simulator's disk and the node's
    /// startup (which loads everything as one big persist) build the state.
    pub fn apply(&mut self, persist: &Persist) {
        for (user, write) in &persist.accounts {
            self.put_account(user, write.account.clone());
            match &write.own {
                Some((seq, own)) => self.set_own(user, *seq, own.clone()),
                // The store keeps the two in one value, so an account written
                // without our entry loses it there; here too, so that the
                // simulator's disk is what the node's would be.
                None => self.remove_own(user),
            }
            for (origin, seq) in &write.held {
                self.raise_seq(*origin, user, *seq);
            }
        }
        for (id, record) in &persist.records {
            match record {
                Some(r) => self.records.insert(id.clone(), r.clone()),
                None => self.records.remove(id),
            }
        }
        for (id, hold) in &persist.holds {
            self.holds.set(id.clone(), hold.clone());
        }
        self.last_written = persist.meta.last_written;
        self.sent_upto = persist.meta.sent_upto;
        self.watermarks = persist.meta.watermarks.iter().copied().collect();
    }

    /// `user`'s account as this state holds it, if it holds one.
    pub fn account_of(&self, user: &str) -> Option<Account> {
        self.accounts.get(user).map(|u| u.account.unpack())
    }

    /// The accounts this state holds, by value.
    pub fn into_accounts(self) -> BTreeMap<String, Account> {
        self.all_accounts()
    }

    pub(super) fn all_accounts(&self) -> BTreeMap<String, Account> {
        self.accounts
            .iter()
            .map(|(user, u)| (user.to_string(), u.account.unpack()))
            .collect()
    }

    /// The user's account; an empty one for a user never seen.
    pub(super) fn account(&self, user: &str) -> Account {
        self.account_of(user).unwrap_or_default()
    }

    /// A copy of `account` as it is before a change, if the statement will
    /// diff against it (see [`Durable::set_account`]).
    pub(super) fn before_change(&self, account: &Account) -> Option<Account> {
        self.statement.is_on().then(|| account.clone())
    }

    /// Stores `user`'s account, which was `before` until the change (taken by
    /// [`Durable::before_change`]); every change of an account passes here
    /// (or through [`Durable::merge`], which does the same inside the user's
    /// slot), so the statement sees every change of a balance. It diffs against the
    /// caller's copy: decoding the stored account again cost a spend about
    /// 1,000 instructions more. `before` is `None` only while the statement
    /// is off.
    pub(super) fn set_account(&mut self, user: &str, before: Option<&Account>, account: &Account) {
        debug_assert_eq!(before.is_some(), self.statement.is_on());
        self.put_account(user, Packed::pack(account));
        if let Some(before) = before {
            self.statement.changed(user, before, account);
        }
    }

    /// Stores `account` under `user`, allocating the id only for a new user.
    fn put_account(&mut self, user: &str, account: Packed<Account>) {
        match self.accounts.get_mut(user) {
            Some(slot) => slot.account = account,
            None => {
                self.accounts.insert(user.into(), UserState::new(account));
            }
        }
    }

    /// Runs `change` on `user`'s slot, made with an empty account if it has
    /// none, with one look-up by name. We only ever write or hold versions of
    /// users whose account is stored already; were one missing, the empty
    /// account keeps the entry or version from being lost.
    fn change_slot<R>(&mut self, user: &str, change: impl FnOnce(&mut UserState) -> R) -> R {
        match self.accounts.get_mut(user) {
            Some(slot) => change(slot),
            None => {
                let mut slot = UserState::new(Packed::pack(&Account::default()));
                let result = change(&mut slot);
                self.accounts.insert(user.into(), slot);
                result
            }
        }
    }

    /// `user`'s id, shared: the one an index entry just removed held
    /// (`replaced`), so that moving an entry along its index costs no look-up
    /// by name; else the account's.
    fn shared_id(&self, user: &str, replaced: Option<Arc<str>>) -> Arc<str> {
        replaced
            .or_else(|| self.accounts.get_key_value(user).map(|(id, _)| id.clone()))
            .unwrap_or_else(|| user.into())
    }

    /// Our writes that became durable: the versions of our entries we may send.
    pub(super) fn promote(&mut self, writes: Vec<super::journal::PendingWrite>) {
        for w in writes {
            self.set_own(&w.user, w.seq, w.entry);
        }
    }

    /// Our entry for `user` as of our write `seq`, indexed.
    fn set_own(&mut self, user: &str, seq: Seq, entry: Packed<Account>) {
        let old = self.change_slot(user, |slot| slot.own.replace((seq, entry)));
        let replaced = old.and_then(|(old, _)| self.own_by_seq.remove(&old));
        let id = self.shared_id(user, replaced);
        self.own_by_seq.insert(seq, id);
    }

    /// Forgets our entry for `user`, and its index.
    fn remove_own(&mut self, user: &str) {
        let old = self.accounts.get_mut(user).and_then(|u| u.own.take());
        if let Some((old, _)) = old {
            self.own_by_seq.remove(&old);
        }
    }

    /// Our entry for `user` as of its last durable write, with that write.
    pub(super) fn own_of(&self, user: &str) -> Option<&(Seq, Packed<Account>)> {
        self.accounts.get(user)?.own.as_ref()
    }

    /// The version `seq` of `origin`'s entry for `user` is held, indexed,
    /// unless a later one is held already (versions only grow: a persist
    /// never lists an older one than the state holds).
    fn raise_seq(&mut self, origin: RegionId, user: &str, seq: Seq) {
        let raised = self.change_slot(user, |slot| slot.held.raise(origin, seq));
        self.index_held(user, origin, seq, raised);
    }

    /// Moves `user`'s entry in the index of versions held to version `seq`
    /// of `origin`'s, as [`HeldVersions::raise`] reported (`raised`).
    fn index_held(&mut self, user: &str, origin: RegionId, seq: Seq, raised: Option<Option<Seq>>) {
        let Some(old) = raised else {
            return;
        };
        let replaced = old.and_then(|old| self.seqs_by_origin.remove(&(origin, old)));
        let id = self.shared_id(user, replaced);
        self.seqs_by_origin.insert((origin, seq), id);
    }

    /// Merges `item` (another region's entry) into its user's account, and
    /// accepts any rights it sends to `me`. `faults` are the simulator's broken
    /// merges.
    pub(super) fn merge(&mut self, item: &Item, me: RegionId, faults: Faults) -> Merged {
        // One look-up by name: the account and the version held change in
        // the user's one slot.
        let statement_on = self.statement.is_on();
        let (account, unmerged, spent, accepted, raised) = self.change_slot(&item.user, |slot| {
            let mut account = slot.account.unpack();
            let unmerged = statement_on.then(|| account.clone());
            let before = spent_at(&account, item.origin);
            if faults.additive_merge {
                #[cfg(feature = "simulation")]
                account.merge_additive(&item.delta);
            } else {
                account.merge(&item.delta);
            }
            if faults.subscription_by_arrival {
                #[cfg(feature = "simulation")]
                account.take_subscription_by_arrival(&item.delta);
            }
            let spent = spent_at(&account, item.origin).saturating_sub(before);
            let accepted = account.accept_transfers(me).is_some();
            slot.account = Packed::pack(&account);
            let raised = slot.held.raise(item.origin, item.seq);
            (account, unmerged, spent, accepted, raised)
        });
        self.index_held(&item.user, item.origin, item.seq, raised);
        // As `set_account` does; a broken core forgets other regions' lines.
        if let Some(unmerged) = unmerged
            && !faults.statement_own_only
        {
            self.statement.changed(&item.user, &unmerged, &account);
        }
        Merged {
            spent,
            account,
            accepted,
        }
    }

    /// Applies a hold, capture or release of hold `id` under `rules`; an
    /// opened hold expires `ttl_ms` after `now`. `faults` are the simulator's
    /// broken cores (a repeated capture charged again, holds that never expire).
    pub(super) fn apply_hold(
        &mut self,
        rules: &Rules,
        id: &HoldId,
        command: &Command,
        now: Millis,
        ttl_ms: u64,
        faults: Faults,
    ) -> HoldApplied {
        let mut account = self.account(&id.user);
        let held = self.holds.held(&id.user);
        let answer = |receipt, replayed| HoldOutcome::Answer { receipt, replayed };
        let step_now = if faults.keep_expired_holds {
            Millis(0)
        } else {
            now
        };
        let mut step = self.holds.step(id, command, step_now);
        let capture_twice = faults.capture_twice && matches!(command, Command::Capture { .. });
        if let (true, Some(HoldState::Captured { amount, .. })) =
            (capture_twice, self.holds.get(id))
        {
            step = HoldStep::Capture(*amount);
        }
        let (changed, outcome) = match step {
            HoldStep::Refuse(refusal) => (false, HoldOutcome::Refused(refusal)),
            HoldStep::Again(receipt) => {
                let replayed = receipt.is_some();
                let receipt = receipt.unwrap_or_else(|| rules.receipt(&account, held));
                (false, answer(receipt, replayed))
            }
            HoldStep::Open(amount) => match rules.check_free(&account, amount, held) {
                Err(refusal) => (false, HoldOutcome::Refused(refusal)),
                Ok(()) => {
                    let expires = now.after(ttl_ms);
                    self.holds
                        .set(id.clone(), Some(HoldState::Open { amount, expires }));
                    (true, answer(rules.receipt(&account, held + amount), false))
                }
            },
            HoldStep::Release => {
                self.holds
                    .set(id.clone(), Some(HoldState::Released { at: now }));
                let receipt = rules.receipt(&account, self.holds.held(&id.user));
                (true, answer(receipt, false))
            }
            HoldStep::Capture(amount) => {
                let uncaptured = self.before_change(&account);
                match rules.capture(&mut account, amount, held.saturating_sub(amount)) {
                    Err(refusal) => (false, HoldOutcome::Refused(refusal)),
                    Ok(receipt) => {
                        self.set_account(&id.user, uncaptured.as_ref(), &account);
                        let captured = HoldState::Captured {
                            amount,
                            receipt,
                            at: now,
                        };
                        self.holds.set(id.clone(), Some(captured));
                        let outcome = HoldOutcome::Captured {
                            receipt,
                            account,
                            amount,
                        };
                        (true, outcome)
                    }
                }
            }
        };
        HoldApplied { changed, outcome }
    }

    /// The scalars, as they stand.
    pub(super) fn meta(&self) -> Meta {
        Meta {
            last_written: self.last_written,
            sent_upto: self.sent_upto,
            watermarks: self.watermarks.iter().map(|(&r, &w)| (r, w)).collect(),
        }
    }
}
