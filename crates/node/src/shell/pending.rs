//! Statement writes that a group commit logged but left out of sled until
//! the next checkpoint, which merges each user's chunks of many commits into
//! few keys (see [`crate::shell::statements::merge_pending`]).
//!
//! Why: with one sled key per user and commit, sled's inserts of new keys
//! (and the leaf splits they cause) were the largest single cost of the
//! three-region run, about a sixth of its CPU. Merged, a user active in every
//! commit of a second costs one key for that second.
//!
//! Reads lay these writes over sled's (see [`Pending::lay_over`]): a key held
//! here wins over the same key in sled. That keeps a read exact while a
//! checkpoint writes merged chunks: each merged chunk is stored under the key
//! of the first chunk it holds, so until the checkpoint drops its chunks from
//! here, the per-commit chunks hide the merged ones.
//!
//! Only the `l` and `L` keys come here (statement chunks and the notes of
//! when they were made); a removal goes to sled as always and drops the key
//! here too.

use crate::shell::keys;
use crate::shell::store::KeyValue;
use std::collections::BTreeMap;
use std::collections::btree_map::Range;
use std::ops::Bound;
use std::sync::Arc;

/// The first bytes of the keys held here: statement notes and chunks.
const PREFIXES: [u8; 2] = [keys::STATEMENT_NOTE, keys::STATEMENT_CHUNK];

/// At most this many bytes wait here: past it, a group commit writes its
/// statement lines to sled itself, as before merging (a checkpoint interval
/// may be an hour, and a failing disk stops checkpoints).
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// Logged statement writes not yet in sled.
#[derive(Default)]
pub(crate) struct Pending {
    /// Written by group commits since the running checkpoint (if any) began.
    fresh: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of keys and values put in `fresh` (removals do not count: once
    /// full, it stays full until a checkpoint begins, so a user's chunks that
    /// went to sled never fall between chunks merged into one).
    fresh_bytes: usize,
    /// What the running checkpoint writes to sled, merged; it drops them
    /// once sled holds them durably.
    merging: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Pending {
    /// Whether `key` waits here rather than going to sled with its commit:
    /// a statement chunk or note.
    pub(crate) fn takes(key: &[u8]) -> bool {
        key.first().is_some_and(|p| PREFIXES.contains(p))
    }

    /// Whether a read from `start` (inclusive) to `end` (exclusive) could
    /// meet a key held here. Others skip the lock: a long scan under it
    /// would hold group commits up.
    pub(crate) fn may_hold(start: &[u8], end: &[u8]) -> bool {
        PREFIXES
            .iter()
            .any(|&p| start < &[p + 1][..] && end > &[p][..])
    }

    /// Whether another commit's writes fit; if not, they go to sled.
    pub(crate) fn has_room(&self) -> bool {
        self.fresh_bytes < MAX_PENDING_BYTES
    }

    /// Holds `key`'s new value until the next checkpoint.
    pub(crate) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.fresh_bytes += key.len() + value.len();
        self.fresh.insert(key, value);
    }

    /// Drops `key` (a removal that went to sled). A key the running
    /// checkpoint merges must not be removed: the caller holds checkpoints
    /// off (see [`crate::shell::store::Store::hold_checkpoints`]).
    pub(crate) fn remove(&mut self, key: &[u8]) {
        self.fresh.remove(key);
        debug_assert!(
            !self.merging.contains_key(key),
            "a removal during a checkpoint"
        );
    }

    /// Starts a checkpoint: everything held so far is what it merges.
    pub(crate) fn begin_merge(&mut self) -> Arc<BTreeMap<Vec<u8>, Vec<u8>>> {
        debug_assert!(self.merging.is_empty(), "one checkpoint at a time");
        self.fresh_bytes = 0;
        self.merging = Arc::new(std::mem::take(&mut self.fresh));
        self.merging.clone()
    }

    /// Ends a checkpoint: sled holds what it merged, durably.
    pub(crate) fn end_merge(&mut self) {
        self.merging = Arc::default();
    }

    /// Forgets everything: the log's recovery wrote it all to sled.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The value held for `key`, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.fresh.get(key).or_else(|| self.merging.get(key))
    }

    /// The keys and values held from `start` (inclusive) to `end`
    /// (exclusive), in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
        if start >= end {
            return Vec::new();
        }
        // Their keys never meet: a line's id is never used twice.
        let mut out: Vec<KeyValue> = between(&self.fresh, start, end)
            .chain(between(&self.merging, start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Lays what is held from `start` to `end` over `from_sled` (the same
    /// range read from sled, in key order, the last first with `backwards`),
    /// and keeps the first `limit`. A key held here wins.
    pub(crate) fn lay_over(
        &self,
        from_sled: Vec<KeyValue>,
        start: &[u8],
        end: &[u8],
        backwards: bool,
        limit: usize,
    ) -> Vec<KeyValue> {
        let mut held = self.range(start, end);
        if held.is_empty() {
            return from_sled;
        }
        if backwards {
            held.reverse();
        }
        let before = |a: &[u8], b: &[u8]| if backwards { a > b } else { a < b };
        let mut out = Vec::with_capacity(limit.min(from_sled.len() + held.len()));
        let mut sled = from_sled.into_iter().peekable();
        let mut held = held.into_iter().peekable();
        while out.len() < limit {
            let next = match (sled.peek(), held.peek()) {
                (Some(s), Some(h)) if s.0 == h.0 => {
                    sled.next();
                    held.next()
                }
                (Some(s), Some(h)) if before(&s.0, &h.0) => sled.next(),
                (Some(_), Some(_)) | (None, Some(_)) => held.next(),
                (Some(_), None) => sled.next(),
                (None, None) => None,
            };
            match next {
                Some(kv) => out.push(kv),
                None => break,
            }
        }
        out
    }
}

/// The keys and values of `map` from `start` (inclusive) to `end`
/// (exclusive); `start` must not be after `end`.
pub(crate) fn between<'a>(
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
) -> Range<'a, Vec<u8>, Vec<u8>> {
    map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn held_keys_win_and_interleave_in_key_order_both_ways() {
        let mut pending = Pending::default();
        pending.insert(b"lb".to_vec(), b"held".to_vec());
        pending.insert(b"ld".to_vec(), b"held".to_vec());
        let merging = pending.begin_merge();
        assert_eq!(merging.len(), 2);
        pending.insert(b"le".to_vec(), b"fresh".to_vec());
        let sled = vec![kv("la", "sled"), kv("lb", "sled"), kv("lc", "sled")];
        let forward = pending.lay_over(sled.clone(), b"l", b"m", false, 10);
        assert_eq!(
            forward,
            vec![
                kv("la", "sled"),
                kv("lb", "held"),
                kv("lc", "sled"),
                kv("ld", "held"),
                kv("le", "fresh"),
            ]
        );
        let mut back_sled = sled;
        back_sled.reverse();
        let back = pending.lay_over(back_sled, b"l", b"m", true, 3);
        assert_eq!(
            back,
            vec![kv("le", "fresh"), kv("ld", "held"), kv("lc", "sled")]
        );
        // Outside the range nothing held shows.
        assert_eq!(
            pending.lay_over(Vec::new(), b"la", b"lc", false, 10),
            vec![kv("lb", "held")]
        );
        pending.end_merge();
        assert_eq!(pending.get(b"lb"), None);
        assert_eq!(pending.get(b"le").map(Vec::as_slice), Some(&b"fresh"[..]));
    }

    #[test]
    fn room_runs_out_at_the_cap_and_comes_back_only_with_a_checkpoint() {
        let mut pending = Pending::default();
        let mut id = 0u64;
        while pending.has_room() {
            id += 1;
            pending.insert(id.to_be_bytes().to_vec(), vec![0; 64 * 1024]);
        }
        assert!(id > 200, "about 16 MiB");
        pending.remove(&1u64.to_be_bytes());
        assert!(!pending.has_room(), "full until a checkpoint begins");
        pending.begin_merge();
        assert!(pending.has_room());
        assert!(Pending::takes(b"l u") && Pending::takes(b"L") && !Pending::takes(b"a"));
        assert!(Pending::may_hold(b"l", b"m") && Pending::may_hold(b"a", b"z"));
        assert!(Pending::may_hold(b"Lx", b"Ly") && Pending::may_hold(b"lu\0", b"lu\x01"));
        assert!(!Pending::may_hold(b"j", b"k") && !Pending::may_hold(b"m", b"n"));
        assert!(!Pending::may_hold(b"G", b"H") && !Pending::may_hold(b"M", b"l"));
    }
}
