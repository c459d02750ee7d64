//! Holds: the first phase of a two-phase charge, as TigerBeetle's pending
//! transfers are. A hold sets aside part of this region's rights for a job (an
//! AI meme being generated); **capture** turns it into the spend once the job
//! delivered, exactly once; **release** (failure, cancel, or the hold's TTL)
//! charges nothing.
//!
//! Holds are region-local, like rights, so the CRDT does not change: what a
//! region may spend or give away is its rights minus its open holds. A closed
//! hold is remembered (captured with its receipt, or released) for the
//! idempotency TTL, so a repeated capture replays instead of charging again.

use crate::region::command::{Command, Receipt, Refusal};
use crate::region::units::Millis;
use bincode::{Decode, Encode};
use std::collections::{BTreeMap, BTreeSet};

/// Which hold: the user's account and the job it pays for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct HoldId {
    /// Whose tokens.
    pub user: String,
    /// The job's id, unique per user.
    pub job: String,
}

/// Where a hold stands.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum HoldState {
    /// Tokens set aside, until captured, released, or `expires`.
    Open {
        /// Tokens held.
        amount: u64,
        /// When it is released if nothing else happened.
        expires: Millis,
    },
    /// Charged: the job delivered. `receipt` is what the capture answered.
    Captured {
        /// Tokens charged.
        amount: u64,
        /// The capture's answer, replayed to a repeated capture.
        receipt: Receipt,
        /// When.
        at: Millis,
    },
    /// Not charged: failed, cancelled or expired.
    Released {
        /// When.
        at: Millis,
    },
}

/// What a hold command comes to, given the holds a region keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldStep {
    /// Open a hold of `amount` (if this region's free rights cover it).
    Open(u64),
    /// Charge the open hold of `amount`.
    Capture(u64),
    /// Drop the open hold, charging nothing.
    Release,
    /// Nothing to change: the same hold is open already, or the same close
    /// happened already. Answer from the state (a replay when `Some`).
    Again(Option<Receipt>),
    /// Refuse.
    Refuse(Refusal),
}

/// The holds a region keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    by_id: BTreeMap<HoldId, HoldState>,
    /// Open holds per user, kept in step with `by_id`: the spend path asks
    /// "how much is held for this user?" on every call.
    held: BTreeMap<String, u64>,
    /// Open holds by expiry, so a tick finds the expired ones without a scan.
    expiries: BTreeSet<(Millis, HoldId)>,
}

impl Holds {
    /// Tokens of `user` held open here.
    pub fn held(&self, user: &str) -> u64 {
        if self.held.is_empty() {
            return 0;
        }
        self.held.get(user).copied().unwrap_or(0)
    }

    /// The hold `id`, if it is known.
    pub fn get(&self, id: &HoldId) -> Option<&HoldState> {
        self.by_id.get(id)
    }

    /// Sets hold `id` to `state` (`None` forgets it).
    pub fn set(&mut self, id: HoldId, state: Option<HoldState>) {
        let old = match state {
            Some(state) => {
                if let HoldState::Open { amount, expires } = state {
                    *self.held.entry(id.user.clone()).or_insert(0) += amount;
                    self.expiries.insert((expires, id.clone()));
                }
                self.by_id.insert(id.clone(), state)
            }
            None => self.by_id.remove(&id),
        };
        if let Some(HoldState::Open { amount, expires }) = old {
            self.expiries.remove(&(expires, id.clone()));
            if let Some(total) = self.held.get_mut(&id.user) {
                *total = total.saturating_sub(amount);
                if *total == 0 {
                    self.held.remove(&id.user);
                }
            }
        }
    }

    /// What `command` (a hold, capture or release) does to hold `id` at
    /// `now`. An open hold past its expiry counts as released even before a
    /// tick has released it: the TTL is exact, whenever the tick comes.
    pub fn step(&self, id: &HoldId, command: &Command, now: Millis) -> HoldStep {
        let expired = HoldState::Released { at: now };
        let state = match self.by_id.get(id) {
            Some(HoldState::Open { expires, .. }) if *expires <= now => Some(&expired),
            other => other,
        };
        match (command, state) {
            (Command::ChargeCall | Command::Adjust(_) | Command::Subscribe { .. }, _) => {
                HoldStep::Refuse(Refusal::UnknownHold)
            }
            (Command::Hold { amount: 0, .. }, _) => HoldStep::Refuse(Refusal::ZeroAmount),
            (Command::Hold { amount, .. }, None) => HoldStep::Open(*amount),
            (Command::Hold { amount, .. }, Some(HoldState::Open { amount: open, .. })) => {
                if amount == open {
                    HoldStep::Again(None)
                } else {
                    HoldStep::Refuse(Refusal::HoldMismatch)
                }
            }
            (Command::Capture { .. }, Some(HoldState::Open { amount, .. })) => {
                HoldStep::Capture(*amount)
            }
            (Command::Capture { .. }, Some(HoldState::Captured { receipt, .. })) => {
                HoldStep::Again(Some(*receipt))
            }
            (Command::Release { .. }, Some(HoldState::Open { .. })) => HoldStep::Release,
            // Released by its TTL just now: releasing it again is what happened.
            (Command::Release { .. }, Some(HoldState::Released { .. })) if self.is_open(id) => {
                HoldStep::Release
            }
            (Command::Release { .. }, Some(HoldState::Released { .. })) => HoldStep::Again(None),
            (_, Some(HoldState::Released { .. })) => HoldStep::Refuse(Refusal::HoldReleased),
            (_, Some(HoldState::Captured { .. })) => HoldStep::Refuse(Refusal::HoldCaptured),
            (_, None) => HoldStep::Refuse(Refusal::UnknownHold),
        }
    }

    fn is_open(&self, id: &HoldId) -> bool {
        matches!(self.by_id.get(id), Some(HoldState::Open { .. }))
    }

    /// Open holds whose TTL passed by `now`.
    pub fn expired(&self, now: Millis) -> Vec<HoldId> {
        self.expiries
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Releases the open holds whose TTL passed by `now`; returns their ids.
    pub fn expire(&mut self, now: Millis) -> Vec<HoldId> {
        let expired = self.expired(now);
        for id in &expired {
            self.set(id.clone(), Some(HoldState::Released { at: now }));
        }
        expired
    }

    /// Forgets closed holds older than `keep_ms`; returns their ids.
    pub fn forget_stale(&mut self, now: Millis, keep_ms: u64) -> Vec<HoldId> {
        let stale = self.stale(now, keep_ms);
        for id in &stale {
            self.set(id.clone(), None);
        }
        stale
    }

    /// Closed holds older than `keep_ms`: forgotten (a capture of one is then
    /// an unknown job, as after any idempotency TTL).
    pub fn stale(&self, now: Millis, keep_ms: u64) -> Vec<HoldId> {
        self.by_id
            .iter()
            .filter(|(_, s)| match s {
                HoldState::Open { .. } => false,
                HoldState::Captured { at, .. } | HoldState::Released { at } => {
                    now.since(*at) >= keep_ms
                }
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every open hold, for the checker and for restart reports.
    pub fn open(&self) -> impl Iterator<Item = (&HoldId, u64)> {
        self.by_id.iter().filter_map(|(id, s)| match s {
            HoldState::Open { amount, .. } => Some((id, *amount)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, job: &str) -> HoldId {
        HoldId {
            user: user.into(),
            job: job.into(),
        }
    }

    fn open(amount: u64, expires: u64) -> Option<HoldState> {
        Some(HoldState::Open {
            amount,
            expires: Millis(expires),
        })
    }

    #[test]
    fn the_held_total_follows_open_holds_only() {
        let mut holds = Holds::default();
        holds.set(id("a", "1"), open(5, 100));
        holds.set(id("a", "2"), open(3, 200));
        holds.set(id("b", "1"), open(7, 100));
        assert_eq!(
            (holds.held("a"), holds.held("b"), holds.held("c")),
            (8, 7, 0)
        );
        holds.set(id("a", "1"), Some(HoldState::Released { at: Millis(50) }));
        assert_eq!(holds.held("a"), 3);
        assert_eq!(holds.expired(Millis(150)), vec![id("b", "1")]);
        holds.set(id("b", "1"), None);
        assert_eq!(holds.held("b"), 0);
        assert_eq!(holds.stale(Millis(100), 40), vec![id("a", "1")]);
        assert_eq!(holds.open().count(), 1);
    }
}
