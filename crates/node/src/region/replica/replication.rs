//! Replication: our durable writes go to every live peer in batches; digests
//! and catch-ups repair whatever a batch missed.
//!
//! - Every write this region makes gets the next [`Seq`] of this region.
//! - **Only durable writes leave the region.** A version of our own entry is
//!   sent only after storage confirmed it, so whatever peers hold of us, a
//!   restarted us holds too. (Were it otherwise, a crash could make peers merge
//!   two different histories of our entry into a mixture with negative rights.)
//! - Durable writes go to every live peer in **batches** covering a range
//!   `(from, to]`, closed when the oldest is `batch_age_ms` old, or at once
//!   when they carry rights a peer asked for: spends may be waiting there.
//! - Each region keeps, per origin, a **watermark**: every write of that origin
//!   up to it is held here. **Anti-entropy**: every `anti_entropy_ms` a region
//!   sends its watermarks to the next peer, which answers with exactly the
//!   entries the asker lacks, *of every origin*. A peer cut off catches up with
//!   what it missed, a new region pulls everything, and A's writes reach C
//!   through B while A–C is cut. A catch-up leaves out what is likely still
//!   on its way to the asker ([`Horizon`]).
//!
//! This type decides what to send; the replica sends it.

use super::horizon::Horizon;
use super::state::Durable;
use crate::region::idempotency::RecordId;
use crate::region::message::{Covered, Item, Message, RecordItem};
use crate::region::units::{Millis, Seq};
use ledger_crdt::RegionId;
use std::collections::{BTreeMap, VecDeque};

/// Idempotency records per message: with keys and fingerprints of a few
/// hundred bytes, well under [`crate::region::message::MAX_MESSAGE_BYTES`].
pub(super) const RECORDS_PER_MESSAGE: usize = 1024;

/// At most this many write times are kept for lag reporting.
const WRITE_TIMES_KEPT: usize = 100_000;

/// How far one peer has caught up with our writes, from its latest digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLag {
    /// Our durable writes the peer has not confirmed holding.
    pub entries: u64,
    /// Age of the oldest of those writes, ms (0 if none).
    pub ms: u64,
}

/// The replication sub-state of a replica.
#[derive(Debug)]
pub(super) struct Replication {
    batch_age_ms: u64,
    batch_bytes: usize,
    anti_entropy_ms: u64,
    /// When the oldest durable-but-unsent write became durable.
    ready_since: Option<Millis>,
    /// The latest write a peer waits for (rights it asked for), until it is
    /// durable.
    awaited: Option<Seq>,
    /// Whether an awaited write is durable and not yet sent: the batch is
    /// due now.
    hurry: bool,
    /// Per peer: its watermark of us, from its latest digest.
    acked_by: BTreeMap<RegionId, Seq>,
    /// When each recent durable write of ours became durable.
    write_times: VecDeque<(Seq, Millis)>,
    /// Idempotency records made here, with the write that made them, not yet
    /// sent to peers.
    unsent_records: Vec<(Seq, RecordId)>,
    next_anti_entropy: Millis,
    anti_entropy_cursor: usize,
    /// What we held a grace ago: an origin of which an asker lacks only
    /// newer writes is left out of its answer.
    horizon: Horizon,
}

impl Replication {
    pub(super) fn new(
        batch_age_ms: u64,
        batch_bytes: usize,
        anti_entropy_ms: u64,
        catch_up_grace_ms: u64,
    ) -> Self {
        Self {
            batch_age_ms,
            batch_bytes,
            anti_entropy_ms,
            ready_since: None,
            awaited: None,
            hurry: false,
            acked_by: BTreeMap::new(),
            write_times: VecDeque::new(),
            unsent_records: Vec::new(),
            next_anti_entropy: Millis(0),
            anti_entropy_cursor: 0,
            horizon: Horizon::new(catch_up_grace_ms),
        }
    }

    /// Our write `seq` made the record `id`; it goes out with the write.
    pub(super) fn record_made(&mut self, seq: Seq, id: RecordId) {
        self.unsent_records.push((seq, id));
    }

    /// A peer waits for our write `seq`: the batch that carries it leaves as
    /// soon as it is durable, not `batch_age_ms` later.
    pub(super) fn awaited(&mut self, seq: Seq) {
        self.awaited = Some(self.awaited.map_or(seq, |a| a.max(seq)));
    }

    /// Our writes up to `durable` became durable at `now`.
    pub(super) fn became_durable(&mut self, now: Millis, durable: Seq, sent_upto: Seq) {
        if self.awaited.is_some_and(|a| a <= durable) {
            self.awaited = None;
            self.hurry = durable > sent_upto;
        }
        self.write_times.push_back((durable, now));
        if self.write_times.len() > WRITE_TIMES_KEPT {
            self.write_times.pop_front();
        }
        if self.ready_since.is_none() && durable > sent_upto {
            self.ready_since = Some(now);
        }
    }

    /// Whether the open batch is old enough to send, or carries what a peer
    /// waits for.
    pub(super) fn batch_due(&self, now: Millis) -> bool {
        self.ready_since
            .is_some_and(|since| self.hurry || now.since(since) >= self.batch_age_ms)
    }

    /// When this sub-state next needs a tick.
    pub(super) fn next_deadline(&self) -> Millis {
        let age = if self.hurry { 0 } else { self.batch_age_ms };
        let batch = self.ready_since.map(|since| since.after(age));
        batch.map_or(self.next_anti_entropy, |b| b.min(self.next_anti_entropy))
    }

    /// Closes the batch: our writes in `(sent_upto, durable]` as messages of
    /// about `batch_bytes` each, every one covering its own range, for every
    /// live peer. Marks them sent.
    ///
    /// Without a live peer (`anyone_live` false) no message is built: nobody
    /// would receive it, and a peer that comes back catches up by
    /// anti-entropy, never from batches it missed. Building them cost a
    /// region on its own a look-up by name and a copy of the entry per write
    /// (6–8 µs of CPU per spend holding a million users, `benches/README.md`).
    pub(super) fn take_batch(
        &mut self,
        state: &mut Durable,
        durable: Seq,
        me: RegionId,
        anyone_live: bool,
    ) -> Vec<Message> {
        self.ready_since = None;
        self.hurry = false;
        let (from, to) = (state.sent_upto, durable);
        if to <= from {
            return Vec::new();
        }
        if !anyone_live {
            // What a batch built and dropped would leave behind.
            self.unsent_records.retain(|(seq, _)| *seq > to);
            state.sent_upto = to;
            return Vec::new();
        }
        let mut items = own_items(state, me, from, to);
        items.sort_by_key(|i| i.seq);
        let mut messages = Vec::new();
        let mut start = from;
        let mut chunk: Vec<Item> = Vec::new();
        let mut size = 0usize;
        for item in items {
            size += item.wire_cost();
            let seq = item.seq;
            chunk.push(item);
            if size >= self.batch_bytes {
                messages.push(deltas(start, seq, std::mem::take(&mut chunk), Vec::new()));
                start = seq;
                size = 0;
            }
        }
        // The records ride with the last message, which completes the range;
        // beyond a few thousand (under the message limit) in messages of their own.
        let mut records = self.take_records(state, to);
        let rest = records.split_off(records.len().min(RECORDS_PER_MESSAGE));
        messages.push(deltas(start, to, chunk, records));
        for more in rest.chunks(RECORDS_PER_MESSAGE) {
            messages.push(deltas(to, to, Vec::new(), more.to_vec()));
        }
        state.sent_upto = to;
        messages
    }

    /// The idempotency records of our writes up to `durable`, not sent before.
    fn take_records(&mut self, state: &Durable, durable: Seq) -> Vec<RecordItem> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent_records)
            .into_iter()
            .partition(|(seq, _)| *seq <= durable);
        self.unsent_records = later;
        ready
            .into_iter()
            .filter_map(|(_, id)| {
                let record = state.records.get(&id)?.clone();
                Some((id, record))
            })
            .collect()
    }

    /// Notes what `state` holds at `now`, for later catch-ups' cutoffs; and
    /// opens a batch for durable writes never sent, as after a restart (a
    /// catch-up leaves them to the batch).
    pub(super) fn note_held(&mut self, now: Millis, state: &Durable, durable: Seq, me: RegionId) {
        if self.ready_since.is_none() && durable > state.sent_upto {
            self.ready_since = Some(now);
        }
        self.horizon.note(now, state, me);
    }

    /// The peer to send a digest to, when one is due: the live peers in turn.
    pub(super) fn digest_due(&mut self, now: Millis, peers: &[RegionId]) -> Option<RegionId> {
        if now < self.next_anti_entropy {
            return None;
        }
        self.next_anti_entropy = now.after(self.anti_entropy_ms);
        if peers.is_empty() {
            return None;
        }
        let to = peers[self.anti_entropy_cursor % peers.len()];
        self.anti_entropy_cursor = self.anti_entropy_cursor.wrapping_add(1);
        Some(to)
    }

    /// "Of each origin, I hold every write up to here."
    pub(super) fn digest(state: &Durable, durable: Seq, me: RegionId) -> Message {
        let mut watermarks: Vec<(RegionId, Seq)> =
            state.watermarks.iter().map(|(&r, &w)| (r, w)).collect();
        watermarks.push((me, durable));
        Message::Digest { watermarks }
    }

    /// A peer's digest says it holds our writes up to `mark`; `live` are the
    /// peers that are up.
    pub(super) fn peer_holds(&mut self, peer: RegionId, mark: Seq, live: &[RegionId]) {
        self.acked_by.insert(peer, mark);
        // Forget write times every peer has confirmed.
        let lowest = live
            .iter()
            .map(|p| self.acked_by.get(p).copied().unwrap_or_default())
            .min()
            .unwrap_or(mark);
        while self
            .write_times
            .front()
            .is_some_and(|(seq, _)| *seq <= lowest)
        {
            self.write_times.pop_front();
        }
    }

    /// Replication lag of each live peer, at `now`.
    pub(super) fn lag(
        &self,
        now: Millis,
        durable: Seq,
        live: &[RegionId],
    ) -> BTreeMap<RegionId, PeerLag> {
        live.iter()
            .map(|&peer| {
                let mark = self.acked_by.get(&peer).copied().unwrap_or_default();
                let entries = durable.writes_since(mark);
                // Write times are in seq order: the oldest write the peer lacks.
                let first = self.write_times.partition_point(|(seq, _)| *seq <= mark);
                let ms = match self.write_times.get(first) {
                    Some((_, at)) if entries > 0 => now.since(*at),
                    _ => 0,
                };
                (peer, PeerLag { entries, ms })
            })
            .collect()
    }

    /// The answer at `now` to `asker`'s digest `theirs`: every entry it
    /// lacks, of every origin but its own, within about `batch_bytes`;
    /// `None` if it lacks nothing, or of each origin only what is likely on
    /// its way ([`Horizon`]).
    pub(super) fn catch_up(
        &self,
        now: Millis,
        state: &Durable,
        durable: Seq,
        me: RegionId,
        asker: RegionId,
        theirs: &[(RegionId, Seq)],
    ) -> Option<Message> {
        let theirs: BTreeMap<RegionId, Seq> = theirs.iter().copied().collect();
        let mut items = Vec::new();
        let mut covered = Vec::new();
        let mut size = 0usize;
        // Our own durable entries.
        let known = theirs.get(&me).copied().unwrap_or_default();
        if durable > known && !self.horizon.only_in_flight(now, me, known) {
            let mut mine = own_items(state, me, known, Seq(u64::MAX));
            mine.sort_by_key(|i| i.seq);
            let upto = take_within(&mut mine, self.batch_bytes, &mut size).unwrap_or(durable);
            items.extend(mine);
            covered.push(Covered {
                origin: me,
                after: known,
                upto: upto.min(durable),
            });
        }
        // Everything we hold of third regions (forwarding).
        for (&origin, &mark) in &state.watermarks {
            if origin == asker || origin == me {
                continue;
            }
            let known = theirs.get(&origin).copied().unwrap_or_default();
            if self.horizon.only_in_flight(now, origin, known) {
                continue;
            }
            let mut found: Vec<Item> = state
                .seqs_by_origin
                .range((origin, known.next())..=(origin, Seq(u64::MAX)))
                .map(|(&(_, seq), user)| Item {
                    origin,
                    seq,
                    user: user.to_string(),
                    delta: state.account(user).delta_of(origin),
                })
                .collect();
            if found.is_empty() && mark <= known {
                continue;
            }
            found.sort_by_key(|i| i.seq);
            let upto = take_within(&mut found, self.batch_bytes, &mut size).unwrap_or(mark);
            items.extend(found);
            covered.push(Covered {
                origin,
                after: known,
                upto: upto.min(mark),
            });
        }
        let records = records_for(state, &mut covered);
        (!items.is_empty() || !covered.is_empty()).then_some(Message::CatchUp {
            items,
            covered,
            records,
        })
    }

    /// `from`'s deltas for `(from_seq, to_seq]` arrived (and were merged):
    /// the watermark moves if the range is contiguous with what we hold.
    pub(super) fn received_range(state: &mut Durable, from: RegionId, from_seq: Seq, to_seq: Seq) {
        let w = state.watermarks.entry(from).or_default();
        if from_seq <= *w {
            *w = (*w).max(to_seq);
        }
    }

    /// A catch-up covered `c` (its entries were merged).
    pub(super) fn received_cover(state: &mut Durable, me: RegionId, c: Covered) {
        if c.origin != me {
            // Contiguous with what we hold, or it says nothing: the answer may
            // be to a digest we sent before a crash (found by the simulator's
            // soak, seed 306992).
            Self::received_range(state, c.origin, c.after, c.upto);
        }
    }
}

fn deltas(from_seq: Seq, to_seq: Seq, items: Vec<Item>, records: Vec<RecordItem>) -> Message {
    Message::Deltas {
        from_seq,
        to_seq,
        items,
        records,
    }
}

/// Our own durable entries written in `(after, upto]`, in order: a range of
/// the index, so O(changes).
fn own_items(state: &Durable, me: RegionId, after: Seq, upto: Seq) -> Vec<Item> {
    if upto <= after {
        return Vec::new();
    }
    state
        .own_by_seq
        .range(after.next()..=upto)
        .filter_map(|(_, user)| {
            let (seq, delta) = state.own_of(user)?;
            Some(Item {
                origin: me,
                seq: *seq,
                user: user.to_string(),
                delta: delta.unpack(),
            })
        })
        .collect()
}

/// The idempotency records of the writes a catch-up covers: for each origin,
/// those made by its writes the asker lacks, up to what is covered. Past
/// [`RECORDS_PER_MESSAGE`] the covered range is cut short before the first
/// record left out, so the asker asks again for the rest.
fn records_for(state: &Durable, covered: &mut [Covered]) -> Vec<RecordItem> {
    let mut out = Vec::new();
    for c in covered.iter_mut() {
        for (seq, id, record) in state.records.of_writes(c.origin, c.after, c.upto) {
            if out.len() >= RECORDS_PER_MESSAGE {
                c.upto = Seq(seq.0 - 1);
                break;
            }
            out.push((id.clone(), record.clone()));
        }
    }
    out
}

/// Keeps the longest prefix of `items` (sorted by seq) within `budget` bytes in
/// total; returns the last kept seq if anything was cut.
fn take_within(items: &mut Vec<Item>, budget: usize, size: &mut usize) -> Option<Seq> {
    let mut keep = 0;
    for item in items.iter() {
        let cost = item.wire_cost();
        if *size + cost > budget && keep > 0 {
            break;
        }
        *size += cost;
        keep += 1;
    }
    if keep < items.len() {
        items.truncate(keep);
        items.last().map(|i| i.seq)
    } else {
        None
    }
}
