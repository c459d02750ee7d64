//! Client tokens this node has already verified, so that a client's next
//! call skips the signature check and the JSON: a few µs of every spend.
//!
//! Only a token that passed every check is kept, under its exact bytes, so
//! a hit is the same credential again: nothing is accepted that verification
//! would refuse, except that the expiry is checked here against what the
//! token said. The map is bounded, in tokens and in each token's length; when
//! full it starts over, which costs one verification per client.

use crate::hashing::Map;
use std::sync::{Mutex, PoisonError};

/// Tokens kept at most: about 3 MiB of typical 200-byte tokens.
const CAPACITY: usize = 16 * 1024;

/// Longer tokens are verified every time, so the map holds at most 16 MiB of
/// them.
const MAX_TOKEN_BYTES: usize = 1024;

/// A verified token's subject and until when it may be used.
#[derive(Clone, Debug)]
struct Verified {
    sub: String,
    /// `exp` plus the leeway, seconds since the Unix epoch.
    usable_until: u64,
}

/// What the cache says of a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Verified before and still usable: the user.
    User(String),
    /// Verified before, and expired since.
    Expired,
    /// Not seen (or forgotten): verify it.
    Unknown,
}

/// Verified client tokens, by their bytes.
#[derive(Debug)]
pub(crate) struct VerifiedTokens {
    tokens: Mutex<Map<Box<[u8]>, Verified>>,
    capacity: usize,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl VerifiedTokens {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            tokens: Mutex::new(Map::default()),
            capacity,
        }
    }

    /// What is known of `token` at `now` (seconds since the Unix epoch).
    pub(crate) fn lookup(&self, token: &[u8], now: u64) -> Lookup {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(token) {
            Some(v) if now <= v.usable_until => Lookup::User(v.sub.clone()),
            Some(_) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// Keeps `token`, just verified for `sub`, usable until `usable_until`.
    pub(crate) fn insert(&self, token: &[u8], sub: &str, usable_until: u64) {
        if token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= self.capacity {
            tokens.clear();
        }
        tokens.insert(
            token.into(),
            Verified {
                sub: sub.to_owned(),
                usable_until,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_until_it_expires() {
        let cache = VerifiedTokens::default();
        assert_eq!(cache.lookup(b"token", 100), Lookup::Unknown);
        cache.insert(b"token", "alice", 150);
        assert_eq!(cache.lookup(b"token", 150), Lookup::User("alice".into()));
        assert_eq!(cache.lookup(b"token", 151), Lookup::Expired);
        assert_eq!(cache.lookup(b"tokeN", 100), Lookup::Unknown);
        assert_eq!(cache.lookup(b"toke", 100), Lookup::Unknown);
    }

    #[test]
    fn a_long_token_is_not_kept() {
        let cache = VerifiedTokens::default();
        let long = vec![b'x'; MAX_TOKEN_BYTES + 1];
        cache.insert(&long, "alice", 150);
        assert_eq!(cache.lookup(&long, 100), Lookup::Unknown);
        cache.insert(&long[1..], "alice", 150);
        assert_eq!(cache.lookup(&long[1..], 100), Lookup::User("alice".into()));
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let cache = VerifiedTokens::with_capacity(8);
        for i in 0..100u32 {
            cache.insert(&i.to_be_bytes(), "u", 10);
            assert!(cache.len() <= 8);
        }
        assert_eq!(
            cache.lookup(&99u32.to_be_bytes(), 0),
            Lookup::User("u".into())
        );
    }
}
