//! Whether a client request may run here now, before the rules see it: a
//! leaving region spends nothing, a failing disk takes no new write, and a key
//! in flight makes its retry wait. Pure: it reads the sub-states and decides.

use super::gate::ReplyGate;
use super::journal::Journal;
use super::state::Durable;
use crate::region::command::{ClientRequest, Refusal};
use crate::region::idempotency::IdempotencyRecord;
use crate::region::rules::Rules;

/// The decision.
pub(super) enum Admission {
    /// Refuse at once; nothing changes.
    Refuse(Refusal),
    /// Run it, with the idempotency record held under its key, if any.
    Run(Option<IdempotencyRecord>),
}

/// What the replica is doing that bears on admission.
pub(super) struct Situation<'a> {
    pub(super) leaving: bool,
    /// The simulator's broken core that ignores records.
    pub(super) forget_records: bool,
    pub(super) rules: &'a Rules,
    pub(super) state: &'a Durable,
    pub(super) journal: &'a Journal,
    pub(super) gate: &'a ReplyGate,
}

impl Situation<'_> {
    /// Decides on `request`.
    pub(super) fn admit(&self, request: &ClientRequest) -> Admission {
        if self.leaving {
            // Every right here is on its way to the peers.
            let account = self.state.account(&request.user);
            let elsewhere = self.rules.receipt(&account, 0).balance;
            return Admission::Refuse(Refusal::TokensInOtherRegion { here: 0, elsewhere });
        }
        let stored = request
            .key
            .as_ref()
            .filter(|_| !self.forget_records)
            .and_then(|k| self.state.records.get(&k.id).cloned());
        if self.journal.storage_failing() && stored.is_none() {
            // A replay needs no write; anything else would.
            return Admission::Refuse(Refusal::StorageFailing);
        }
        if request
            .key
            .as_ref()
            .is_some_and(|k| self.gate.in_flight(&k.id))
        {
            return Admission::Refuse(Refusal::KeyInUse);
        }
        Admission::Run(stored)
    }
}
