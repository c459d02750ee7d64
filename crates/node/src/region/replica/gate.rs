//! Reply gating: no client hears of a write before it is durable.
//!
//! A reply to a write waits for the flush that covers the write; a replay
//! (answered from an idempotency record) waits for the next flush, because the
//! record may have arrived from a peer a moment ago and not be durable here
//! yet: answering from it before it is would let a crash forget it, and the
//! next retry here be charged again. A key whose request is executed but not
//! yet answered is **in flight**: a concurrent retry is told to wait.

use super::output::Reply;
use crate::hashing::Set;
use crate::region::command::Receipt;
use crate::region::idempotency::{IdempotencyRecord, RecordId};
use crate::region::message::KeyState;
use crate::region::units::{RequestId, Seq};

/// A reply waiting for its write to be durable.
#[derive(Debug)]
struct HeldReply {
    seq: Seq,
    request: RequestId,
    receipt: Receipt,
    key: Option<RecordId>,
}

/// A reply waiting for the flush of persist `number`: a replay, or the
/// answer to a change that is not a write of ours (a hold opened or closed).
#[derive(Debug)]
struct HeldReplay {
    number: u64,
    request: RequestId,
    receipt: Receipt,
    replayed: bool,
}

/// Replies held until storage says they may go.
#[derive(Debug, Default)]
pub(super) struct ReplyGate {
    held: Vec<HeldReply>,
    replays: Vec<HeldReplay>,
    in_flight: Set<RecordId>,
}

impl ReplyGate {
    /// Holds the reply to a write with sequence number `seq`; its key (if any)
    /// is in flight until then.
    pub(super) fn hold(
        &mut self,
        seq: Seq,
        request: RequestId,
        receipt: Receipt,
        key: Option<RecordId>,
    ) {
        if let Some(id) = &key {
            self.in_flight.insert(id.clone());
        }
        self.held.push(HeldReply {
            seq,
            request,
            receipt,
            key,
        });
    }

    /// Holds a reply until persist `number` is durable.
    pub(super) fn hold_until_persisted(
        &mut self,
        number: u64,
        request: RequestId,
        receipt: Receipt,
        replayed: bool,
    ) {
        self.replays.push(HeldReplay {
            number,
            request,
            receipt,
            replayed,
        });
    }

    /// Whether a request with this key was executed and is not yet answered.
    pub(super) fn in_flight(&self, id: &RecordId) -> bool {
        self.in_flight.contains(id)
    }

    /// What this region can tell a peer of key `id`, whose record (if held)
    /// is `record`.
    pub(super) fn key_state(&self, id: &RecordId, record: Option<&IdempotencyRecord>) -> KeyState {
        match record {
            Some(_) if self.in_flight(id) => KeyState::InFlight,
            Some(record) => KeyState::Held(record.clone()),
            None => KeyState::Unknown,
        }
    }

    /// Whether a replay waits for a flush (one that no new write may trigger).
    pub(super) fn replays_waiting(&self) -> bool {
        !self.replays.is_empty()
    }

    /// Persist `number` is durable: the replays waiting for it (or an earlier
    /// one) go.
    pub(super) fn release_replays(&mut self, number: u64) -> Vec<Reply> {
        if !self.replays.iter().any(|r| r.number <= number) {
            return Vec::new();
        }
        let (done, later): (Vec<_>, Vec<_>) =
            self.replays.drain(..).partition(|r| r.number <= number);
        self.replays = later;
        done.into_iter()
            .map(|r| Reply {
                request: r.request,
                result: Ok(r.receipt),
                replayed: r.replayed,
            })
            .collect()
    }

    /// Our writes up to `durable` are durable: their replies go, and their
    /// keys are no longer in flight.
    pub(super) fn release_durable(&mut self, durable: Seq) -> Vec<Reply> {
        // In place: the replies still held keep their buffer, and no second
        // list is built only to be swapped in.
        let in_flight = &mut self.in_flight;
        self.held
            .extract_if(.., |h| h.seq <= durable)
            .map(|h| {
                if let Some(id) = &h.key {
                    in_flight.remove(id);
                }
                Reply {
                    request: h.request,
                    result: Ok(h.receipt),
                    replayed: false,
                }
            })
            .collect()
    }
}
