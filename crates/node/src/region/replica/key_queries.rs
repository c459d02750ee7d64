//! Keyed requests held back until peers say whether they know the key.
//!
//! A keyed request whose key this region has no record of may be a retry that
//! failed over from another region before that region's deltas (and the record
//! with them) arrived. Unless the user is a steady local customer, the live
//! peers are asked first ([`crate::Message::RecordQuery`]): a peer holding the
//! record has it replayed here, one still executing it has the retry told to
//! wait (409), and when all say they do not know it, or `key_query_ms` passes
//! (a partition, a region down), the request runs.

use crate::region::command::ClientRequest;
use crate::region::idempotency::RecordId;
use crate::region::message::KeyState;
use crate::region::units::{Millis, RequestId};
use ledger_crdt::RegionId;
use std::collections::BTreeSet;

/// A held-back request.
#[derive(Debug)]
struct KeyQuery {
    request: ClientRequest,
    id: RecordId,
    /// Peers that have not answered yet.
    waiting_on: BTreeSet<RegionId>,
    /// When it runs anyway.
    deadline: Millis,
}

/// What a peer's answer settles.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// Run the request now (from the record the answer carried, if any).
    Run(ClientRequest),
    /// Another region is executing the key: the retry must wait.
    KeyInUse(RequestId),
}

/// The requests held back, by key.
#[derive(Debug, Default)]
pub(super) struct KeyQueries {
    asking: Vec<KeyQuery>,
}

impl KeyQueries {
    /// Whether a request with this key is held back already.
    pub(super) fn asking(&self, id: &RecordId) -> bool {
        self.asking.iter().any(|q| &q.id == id)
    }

    /// Holds `request` (keyed with `id`) until every peer in `peers` answered,
    /// or `deadline`.
    pub(super) fn hold(
        &mut self,
        request: ClientRequest,
        id: RecordId,
        peers: BTreeSet<RegionId>,
        deadline: Millis,
    ) {
        self.asking.push(KeyQuery {
            request,
            id,
            waiting_on: peers,
            deadline,
        });
    }

    /// `from` said what it knows of key `id`.
    pub(super) fn answered(
        &mut self,
        from: RegionId,
        id: &RecordId,
        known: &KeyState,
    ) -> Option<Settled> {
        let at = self.asking.iter().position(|q| &q.id == id)?;
        match known {
            KeyState::Held(_) => Some(Settled::Run(self.asking.swap_remove(at).request)),
            KeyState::InFlight => Some(Settled::KeyInUse(self.asking.swap_remove(at).request.id)),
            KeyState::Unknown => {
                self.asking[at].waiting_on.remove(&from);
                self.asking[at]
                    .waiting_on
                    .is_empty()
                    .then(|| Settled::Run(self.asking.swap_remove(at).request))
            }
        }
    }

    /// Requests whose peers did not all answer by now: they run.
    pub(super) fn overdue(&mut self, now: Millis) -> Vec<ClientRequest> {
        if self.asking.is_empty() {
            return Vec::new();
        }
        let (due, waiting): (Vec<KeyQuery>, Vec<KeyQuery>) = std::mem::take(&mut self.asking)
            .into_iter()
            .partition(|q| q.deadline <= now);
        self.asking = waiting;
        due.into_iter().map(|q| q.request).collect()
    }

    /// The earliest deadline, if any request is held.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.asking.iter().map(|q| q.deadline).min()
    }
}
