//! A map of a few keys kept as one sorted vector.
//!
//! Every account holds an entry per region, and every entry a counter per peer
//! region: maps of one to a handful of keys, a million of them on one node. A
//! `BTreeMap` allocates a whole node (room for eleven pairs) for even one key,
//! which made an idle user cost kilobytes of RAM. A sorted `Vec` costs one
//! allocation of exactly what it holds, and lookups over a few keys are as fast.
//!
//! The bincode encoding is the same as `BTreeMap`'s (a length, then the pairs in
//! key order), so stored data and the wire format are unchanged. Decoding refuses
//! keys that are not strictly ascending: they can only come from a broken or
//! hostile peer, and accepting them would break the one-key-once invariant.

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map ordered by key, for maps that hold few keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallMap<K, V> {
    pairs: Vec<(K, V)>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        Self { pairs: Vec::new() }
    }
}

impl<K: Ord + Copy, V> SmallMap<K, V> {
    /// An empty map; allocates nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        self.pairs.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.pairs[i].1)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.pairs[i].1, value)),
            Err(i) => {
                self.pairs.insert(i, (key, value));
                None
            }
        }
    }

    /// The value at `key`, inserting `V::default()` first if there is none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.pairs.insert(i, (key, V::default()));
                i
            }
        };
        &mut self.pairs[i].1
    }

    /// Keeps only the pairs `keep` approves of.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.pairs.retain_mut(|(k, v)| keep(k, v));
    }

    /// Pairs in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.pairs.iter().map(|(k, v)| (k, v))
    }

    /// Pairs in ascending key order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.pairs.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Keys in ascending order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.pairs.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.pairs.iter().map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the map holds no key.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<'a, K: Ord + Copy, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.pairs.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Copy, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Encode, V: Encode> Encode for SmallMap<K, V> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        // A length as u64, exactly as bincode writes a map's or a slice's.
        (self.pairs.len() as u64).encode(encoder)?;
        for (k, v) in &self.pairs {
            k.encode(encoder)?;
            v.encode(encoder)?;
        }
        Ok(())
    }
}

impl<Context, K: Decode<Context> + Ord, V: Decode<Context>> Decode<Context> for SmallMap<K, V> {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = u64::decode(decoder)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
        // Counts the pairs against the decoder's size limit before allocating,
        // so a forged length cannot make us reserve gigabytes.
        decoder.claim_container_read::<(K, V)>(len)?;
        let mut pairs: Vec<(K, V)> = Vec::with_capacity(len);
        for _ in 0..len {
            decoder.unclaim_bytes_read(std::mem::size_of::<(K, V)>());
            let key = K::decode(decoder)?;
            let value = V::decode(decoder)?;
            if pairs.last().is_some_and(|(last, _)| *last >= key) {
                return Err(DecodeError::Other("map keys are not strictly ascending"));
            }
            pairs.push((key, value));
        }
        Ok(Self { pairs })
    }
}

impl<'de, Context, K: Decode<Context> + Ord, V: Decode<Context>> BorrowDecode<'de, Context>
    for SmallMap<K, V>
{
    fn borrow_decode<D: BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        Self::decode(decoder)
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.pairs.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Deserialize<'de> + Ord + Copy, V: Deserialize<'de>> Deserialize<'de>
    for SmallMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<K, V>::deserialize(deserializer)?;
        Ok(Self {
            pairs: map.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config() -> impl bincode::config::Config {
        bincode::config::standard().with_limit::<1024>()
    }

    #[test]
    fn behaves_like_a_btree_map_and_encodes_the_same() {
        // A fixed pseudo-random sequence of operations on both maps.
        let mut small = SmallMap::<u16, u64>::new();
        let mut btree = BTreeMap::<u16, u64>::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 9) as u16;
            match x % 4 {
                0 => assert_eq!(small.insert(key, x), btree.insert(key, x)),
                1 => *small.get_or_default(key) += 1,
                2 => small.retain(|k, _| *k != key),
                _ => assert_eq!(small.get(&key), btree.get(&key)),
            }
            match x % 4 {
                1 => *btree.entry(key).or_default() += 1,
                2 => btree.retain(|k, _| *k != key),
                _ => {}
            }
            let pairs: Vec<_> = small.iter().map(|(k, v)| (*k, *v)).collect();
            let expected: Vec<_> = btree.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(pairs, expected);
            let a = bincode::encode_to_vec(&small, config()).expect("encode");
            let b = bincode::encode_to_vec(&btree, config()).expect("encode");
            assert_eq!(a, b);
            let (back, _): (SmallMap<u16, u64>, usize) =
                bincode::decode_from_slice(&a, config()).expect("decode");
            assert_eq!(back, small);
        }
    }

    #[test]
    fn refuses_keys_out_of_order_and_forged_lengths() {
        // A Vec of pairs encodes like a map: two pairs, keys 5 then 3.
        let unordered =
            bincode::encode_to_vec(vec![(5u16, 1u64), (3, 1)], config()).expect("encode");
        let decoded: Result<(SmallMap<u16, u64>, usize), _> =
            bincode::decode_from_slice(&unordered, config());
        assert!(decoded.is_err());
        // A duplicate key.
        let duplicate =
            bincode::encode_to_vec(vec![(3u16, 1u64), (3, 2)], config()).expect("encode");
        let decoded: Result<(SmallMap<u16, u64>, usize), _> =
            bincode::decode_from_slice(&duplicate, config());
        assert!(decoded.is_err());
        // A length far beyond the limit is refused before any allocation.
        let forged = bincode::encode_to_vec(u64::MAX / 2, config()).expect("encode");
        let decoded: Result<(SmallMap<u16, u64>, usize), _> =
            bincode::decode_from_slice(&forged, config());
        assert!(decoded.is_err());
    }
}
