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
//! here too. Chunks are held by user, then id, and notes as numbers, not in
//! one ordered map of whole keys (see [`Held`]).

use crate::hashing::Map;
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
    fresh: Held,
    /// Bytes of keys and values put in `fresh` (removals do not count: once
    /// full, it stays full until a checkpoint begins, so a user's chunks that
    /// went to sled never fall between chunks merged into one).
    fresh_bytes: usize,
    /// What the running checkpoint writes to sled, merged; it drops them
    /// once sled holds them durably.
    merging: Arc<Held>,
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
            self.merging.get(key).is_none(),
            "a removal during a checkpoint"
        );
    }

    /// Starts a checkpoint: everything held so far is what it merges.
    pub(crate) fn begin_merge(&mut self) -> Arc<Held> {
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
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        // Their keys never meet: a line's id is never used twice.
        self.fresh.range_into(start, end, &mut out);
        self.merging.range_into(start, end, &mut out);
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

/// Statement chunks and notes held here, kept for how they are used: a
/// group commit puts one chunk per user, a read asks for one user's.
///
/// Why not one ordered map of whole keys: its inserts compared long keys
/// that share their first bytes about twenty times each, about 3,400
/// instructions a spend (4.5 %, `benches/instructions.sh`). Here a chunk
/// costs a hash of its user and, as ids only grow, a push.
#[derive(Default)]
pub(crate) struct Held {
    /// Chunks by their key's user part (`l`, the user, `0x00`), each user's
    /// in order of id (the rest of the key).
    chunks: Map<Box<[u8]>, UserChunks>,
    /// Notes (one per group commit) by their key as a number (see
    /// [`note_number`]): compared as integers, not as bytes by `memcmp`,
    /// which cost a note about 1,000 instructions.
    notes: BTreeMap<u128, Vec<u8>>,
    /// Any key shaped like neither.
    others: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.notes.is_empty() && self.others.is_empty()
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if let Some(n) = note_number(&key) {
            self.notes.insert(n, value);
            return;
        }
        let Some((user, id)) = chunk_parts(&key) else {
            self.others.insert(key, value);
            return;
        };
        if let Some(own) = self.chunks.get_mut(user) {
            // Ids come from sled's generator and only grow: a push, unless
            // a key comes twice.
            match own.last() {
                Some(&(last, _)) if last >= id => {
                    match own.binary_search_by_key(&id, |&(i, _)| i) {
                        Ok(at) => own[at].1 = value,
                        Err(at) => own.insert(at, (id, value)),
                    }
                }
                _ => own.push((id, value)),
            }
            return;
        }
        self.chunks.insert(user.into(), vec![(id, value)]);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(n) = note_number(key) {
            self.notes.remove(&n);
            return;
        }
        let Some((user, id)) = chunk_parts(key) else {
            self.others.remove(key);
            return;
        };
        if let Some(own) = self.chunks.get_mut(user)
            && let Ok(at) = own.binary_search_by_key(&id, |&(i, _)| i)
        {
            own.remove(at);
            if own.is_empty() {
                self.chunks.remove(user);
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        if let Some(n) = note_number(key) {
            return self.notes.get(&n);
        }
        let Some((user, id)) = chunk_parts(key) else {
            return self.others.get(key);
        };
        let own = self.chunks.get(user)?;
        let at = own.binary_search_by_key(&id, |&(i, _)| i).ok()?;
        Some(&own[at].1)
    }

    /// Adds the keys and values held from `start` (inclusive) to `end`
    /// (exclusive) to `out`, in no particular order.
    fn range_into(&self, start: &[u8], end: &[u8], out: &mut Vec<KeyValue>) {
        out.extend(
            self.others_between(start, end)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if let Some(between) = note_bounds(start, end) {
            out.extend(
                self.notes
                    .range(between)
                    .map(|(n, v)| (note_key(*n), v.clone())),
            );
        }
        match (chunk_parts(start), chunk_parts(end)) {
            // One user's chunks (a statement page): only theirs can lie
            // between, since two users' parts differ before either ends.
            (Some((user, from)), Some((same, to))) if user == same => {
                if let Some(own) = self.chunks.get(user) {
                    let first = own.partition_point(|&(i, _)| i < from);
                    let past = own.partition_point(|&(i, _)| i < to).max(first);
                    out.extend(
                        own[first..past]
                            .iter()
                            .map(|(id, v)| (chunk_key(user, *id), v.clone())),
                    );
                }
            }
            _ => {
                for (user, own) in &self.chunks {
                    for (id, v) in own {
                        let key = chunk_key(user, *id);
                        if start <= &key[..] && &key[..] < end {
                            out.push((key, v.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Every chunk, in key order: by user part, then id (a user part's only
    /// NUL is its last byte, so two users' parts differ before either ends,
    /// and the id never decides between users).
    pub(crate) fn chunks_in_order(&self) -> impl Iterator<Item = (Vec<u8>, &Vec<u8>)> {
        let mut users: Vec<(&Box<[u8]>, &UserChunks)> = self.chunks.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        users
            .into_iter()
            .flat_map(|(user, own)| own.iter().map(move |(id, v)| (chunk_key(user, *id), v)))
    }

    /// The statement chunks held whose keys are not shaped like a chunk's
    /// (none are written so), in key order.
    pub(crate) fn odd_chunks(&self) -> Range<'_, Vec<u8>, Vec<u8>> {
        let (chunks, past_chunks) = keys::all_of(keys::STATEMENT_CHUNK);
        self.others_between(&chunks, &past_chunks)
    }

    /// The greatest note key held: the newest commit's (notes' keys begin
    /// with their time).
    pub(crate) fn newest_note(&self) -> Option<Vec<u8>> {
        let (notes, past_notes) = keys::all_of(keys::STATEMENT_NOTE);
        let odd = self.others_between(&notes, &past_notes).next_back();
        let shaped = self.notes.last_key_value().map(|(n, _)| note_key(*n));
        match (shaped, odd) {
            (Some(shaped), Some((odd, _))) => Some(shaped.max(odd.clone())),
            (shaped, odd) => shaped.or_else(|| odd.map(|(k, _)| k.clone())),
        }
    }

    /// The keys shaped like neither a chunk's nor a note's, from `start`
    /// (inclusive) to `end` (exclusive), in key order.
    fn others_between<'a>(&'a self, start: &[u8], end: &[u8]) -> Range<'a, Vec<u8>, Vec<u8>> {
        // An empty range where `end` is not after `start` (which the map
        // would refuse).
        let end = end.max(start);
        self.others
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
    }
}

/// One user's chunks held: each first line's id and the chunk, by id.
type UserChunks = Vec<(u64, Vec<u8>)>;

/// A chunk key's user part and id, if `key` is shaped like one: `l`, a user
/// without a NUL, `0x00`, then eight bytes.
fn chunk_parts(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.first() != Some(&keys::STATEMENT_CHUNK) {
        return None;
    }
    let (user, id) = keys::split_statement_chunk(key)?;
    let (&last, name) = user.split_last()?;
    (last == 0 && !name.contains(&0)).then_some((user, id))
}

/// A chunk's key from its parts.
fn chunk_key(user: &[u8], id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.len() + 8);
    key.extend_from_slice(user);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A note key (`L`, then sixteen bytes: its time and first line's id) as
/// a number, big-endian, so that numbers order as the keys do.
fn note_number(key: &[u8]) -> Option<u128> {
    match key.split_first() {
        Some((&keys::STATEMENT_NOTE, rest)) => Some(u128::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// A note's key from its number.
fn note_key(number: u128) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(keys::STATEMENT_NOTE);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The numbers of the note keys from `start` (inclusive) to `end`
/// (exclusive), as bounds; `None` if no note key lies between.
fn note_bounds(start: &[u8], end: &[u8]) -> Option<(Bound<u128>, Bound<u128>)> {
    // A bound's bytes after `L`, as a number: a shorter one is padded with
    // zeros (a note key beginning with it is after it), a longer one cut (a
    // note key it begins with is before it).
    let number = |rest: &[u8]| {
        let mut bytes = [0u8; 16];
        let n = rest.len().min(16);
        bytes[..n].copy_from_slice(&rest[..n]);
        (u128::from_be_bytes(bytes), rest.len() > 16)
    };
    let lower = match start.split_first() {
        Some((&p, _)) if p > keys::STATEMENT_NOTE => return None,
        Some((&keys::STATEMENT_NOTE, rest)) => match number(rest) {
            (n, true) => Bound::Excluded(n),
            (n, false) => Bound::Included(n),
        },
        _ => Bound::Unbounded,
    };
    let upper = match end.split_first() {
        None => return None,
        Some((&p, _)) if p < keys::STATEMENT_NOTE => return None,
        Some((&keys::STATEMENT_NOTE, rest)) => match number(rest) {
            (n, true) => Bound::Included(n),
            (n, false) => Bound::Excluded(n),
        },
        _ => Bound::Unbounded,
    };
    // The map refuses a range that ends before it starts.
    let (from, to) = match (lower, upper) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            (a, b)
        }
        _ => return Some((lower, upper)),
    };
    let empty = from > to
        || (from == to && !matches!((lower, upper), (Bound::Included(_), Bound::Included(_))));
    (!empty).then_some((lower, upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys and values of `map` from `start` to `end`.
    fn between<'a>(
        map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
        start: &[u8],
        end: &[u8],
    ) -> Range<'a, Vec<u8>, Vec<u8>> {
        map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn held_keys_win_and_interleave_in_key_order_both_ways() {
        let mut pending = Pending::default();
        pending.insert(b"lb".to_vec(), b"held".to_vec());
        pending.insert(b"ld".to_vec(), b"held".to_vec());
        let merging = pending.begin_merge();
        assert_eq!(merging.others.len(), 2);
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

    /// The keys the property below writes and reads between: chunks of
    /// users that prefix one another, notes, and keys of neither shape (a
    /// user with a NUL too many, a short note) that must be held apart yet
    /// read back the same.
    fn some_key(shape: usize, a: u64, b: u64) -> Vec<u8> {
        let users = ["", "a", "ab", "b", "a\0b"];
        match shape {
            0..5 => keys::statement_chunk(users[shape], b),
            5 => keys::made(keys::STATEMENT_NOTE, a, &b.to_be_bytes()),
            _ => keys::made(keys::STATEMENT_NOTE, a, &[b as u8]),
        }
    }

    /// Bounds a read may use besides whole keys: cut keys, a key and more,
    /// whole prefixes.
    fn some_bound(shape: usize, a: u64, b: u64, cut: usize) -> Vec<u8> {
        match cut {
            0 => some_key(shape, a, b),
            1 => {
                let k = some_key(shape, a, b);
                k[..k.len().saturating_sub(3)].to_vec()
            }
            2 => [some_key(shape, a, b), vec![0]].concat(),
            3 => keys::made(keys::STATEMENT_NOTE, a, &[]),
            _ => vec![[keys::STATEMENT_NOTE, keys::STATEMENT_CHUNK, b'M', b'A'][shape % 4]],
        }
    }

    proptest::proptest! {
        /// Held by shape (a chunk by user and id, a note as a number), the
        /// keys read back exactly as one ordered map of whole keys would
        /// hold them: each key, any range, and the chunks in order.
        #[test]
        fn held_keys_read_back_as_an_ordered_map_would(
            writes in proptest::collection::vec(
                (0usize..7, 0u64..4, 0u64..40, proptest::bool::ANY, 0u8..255), 0..80),
            reads in proptest::collection::vec(
                ((0usize..7, 0u64..5, 0u64..45, 0usize..5), (0usize..7, 0u64..5, 0u64..45, 0usize..5)),
                1..20),
        ) {
            let mut held = Held::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (shape, a, b, remove, byte) in writes {
                let key = some_key(shape, a, b);
                if remove {
                    held.remove(&key);
                    model.remove(&key);
                } else {
                    held.insert(key.clone(), vec![byte]);
                    model.insert(key, vec![byte]);
                }
            }
            for (key, value) in &model {
                proptest::prop_assert_eq!(held.get(key), Some(value));
            }
            for ((s1, a1, b1, c1), (s2, a2, b2, c2)) in reads {
                let (start, end) = (some_bound(s1, a1, b1, c1), some_bound(s2, a2, b2, c2));
                let mut got = Vec::new();
                held.range_into(&start, &end, &mut got);
                got.sort_unstable();
                let want: Vec<KeyValue> = if start < end {
                    between(&model, &start, &end)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                proptest::prop_assert_eq!(got, want, "{:?}..{:?}", start, end);
            }
            let chunks: Vec<Vec<u8>> = held.chunks_in_order().map(|(k, _)| k).collect();
            proptest::prop_assert!(chunks.windows(2).all(|w| w[0] < w[1]), "in key order");
            let (notes, past_notes) = keys::all_of(keys::STATEMENT_NOTE);
            proptest::prop_assert_eq!(
                held.newest_note(),
                between(&model, &notes, &past_notes).next_back().map(|(k, _)| k.clone())
            );
            let mut all: Vec<Vec<u8>> = chunks
                .into_iter()
                .chain(held.notes.keys().map(|n| note_key(*n)))
                .chain(held.others.keys().cloned())
                .collect();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
        }
    }
}
