//! Idempotency records of one region: by key, and by the write that made them.
//!
//! A record is made by one write of one region (its origin and that region's
//! sequence number). Indexing records by that write lets anti-entropy send a
//! peer exactly the records of the writes it lacks, in the same ranges as the
//! entries, without scanning every record (there is one per keyed request for
//! a whole TTL).

use crate::region::idempotency::{IdempotencyRecord, RecordId};
use crate::region::units::{Millis, Seq};
use ledger_crdt::RegionId;
use std::collections::BTreeMap;

/// The records a region holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Records {
    by_id: BTreeMap<RecordId, IdempotencyRecord>,
    /// (origin, origin's sequence number) → the record that write made.
    by_write: BTreeMap<(RegionId, Seq), RecordId>,
}

impl Records {
    /// The record under `id`, if any.
    pub(crate) fn get(&self, id: &RecordId) -> Option<&IdempotencyRecord> {
        self.by_id.get(id)
    }

    /// Whether a record is held under `id`.
    pub(crate) fn contains(&self, id: &RecordId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Stores `record` under `id`, replacing any earlier one.
    pub(crate) fn insert(&mut self, id: RecordId, record: IdempotencyRecord) {
        let write = (record.origin, record.seq);
        if let Some(old) = self.by_id.insert(id.clone(), record) {
            let old_write = (old.origin, old.seq);
            if old_write != write && self.by_write.get(&old_write) == Some(&id) {
                self.by_write.remove(&old_write);
            }
        }
        // Sequence 0 marks a record stored before records knew their write:
        // it is never part of a catch-up range, so it is not indexed.
        if write.1 > Seq::ZERO {
            self.by_write.insert(write, id);
        }
    }

    /// Stores `record` unless one is held under `id` already: the first answer
    /// to a key stands. Returns whether it was stored.
    pub(crate) fn insert_if_absent(&mut self, id: RecordId, record: IdempotencyRecord) -> bool {
        if self.by_id.contains_key(&id) {
            return false;
        }
        self.insert(id, record);
        true
    }

    /// Forgets the record under `id`.
    pub(crate) fn remove(&mut self, id: &RecordId) {
        if let Some(old) = self.by_id.remove(id)
            && self.by_write.get(&(old.origin, old.seq)) == Some(id)
        {
            self.by_write.remove(&(old.origin, old.seq));
        }
    }

    /// Ids of records made at or before `now - ttl_ms`.
    pub(crate) fn expired(&self, now: Millis, ttl_ms: u64) -> Vec<RecordId> {
        self.by_id
            .iter()
            .filter(|(_, r)| now.since(r.at) >= ttl_ms)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets the records made at or before `now - ttl_ms`; returns their ids.
    pub(crate) fn expire(&mut self, now: Millis, ttl_ms: u64) -> Vec<RecordId> {
        let expired = self.expired(now, ttl_ms);
        for id in &expired {
            self.remove(id);
        }
        expired
    }

    /// Records made by `origin`'s writes in `(after, upto]`, in write order.
    pub(crate) fn of_writes(
        &self,
        origin: RegionId,
        after: Seq,
        upto: Seq,
    ) -> Vec<(Seq, &RecordId, &IdempotencyRecord)> {
        if after >= upto {
            // An empty range; `BTreeMap::range` panics when start > end.
            return Vec::new();
        }
        self.by_write
            .range((origin, after.next())..=(origin, upto))
            .filter_map(|(&(_, seq), id)| Some((seq, id, self.by_id.get(id)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::command::Receipt;

    fn record(origin: u16, seq: u64, at_ms: u64) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: "f".into(),
            receipt: Receipt {
                balance: 1,
                spendable_here: 1,
                calls: 1,
            },
            at: Millis(at_ms),
            origin: RegionId(origin),
            seq: Seq(seq),
        }
    }

    fn id(key: &str) -> RecordId {
        RecordId {
            scope: "u:alice".into(),
            key: key.into(),
        }
    }

    fn of_writes(records: &Records, origin: u16, after: u64, upto: u64) -> Vec<(u64, String)> {
        records
            .of_writes(RegionId(origin), Seq(after), Seq(upto))
            .into_iter()
            .map(|(s, id, _)| (s.0, id.key.clone()))
            .collect()
    }

    #[test]
    fn records_are_found_by_the_writes_that_made_them() {
        let mut records = Records::default();
        records.insert(id("a"), record(1, 3, 0));
        records.insert(id("b"), record(1, 5, 0));
        records.insert(id("c"), record(2, 4, 0));
        records.insert(id("legacy"), record(1, 0, 0));
        assert_eq!(
            of_writes(&records, 1, 0, 10),
            vec![(3, "a".to_owned()), (5, "b".to_owned())]
        );
        assert_eq!(of_writes(&records, 1, 3, 5), vec![(5, "b".to_owned())]);
        assert!(of_writes(&records, 1, 5, 5).is_empty());
        assert!(of_writes(&records, 1, 9, 2).is_empty(), "no panic");
        assert_eq!(of_writes(&records, 2, 0, 4), vec![(4, "c".to_owned())]);
        // The first answer stands; removal and expiry keep the index true.
        assert!(!records.insert_if_absent(id("a"), record(3, 9, 0)));
        records.remove(&id("a"));
        assert_eq!(of_writes(&records, 1, 0, 10), vec![(5, "b".to_owned())]);
        records.insert(id("b"), record(1, 7, 50));
        assert_eq!(of_writes(&records, 1, 0, 10), vec![(7, "b".to_owned())]);
        assert_eq!(records.expired(Millis(60), 20), vec![id("c"), id("legacy")]);
        assert!(!records.contains(&id("a")));
        for kept in ["b", "c", "legacy"] {
            assert!(records.contains(&id(kept)), "{kept}");
        }
    }
}
