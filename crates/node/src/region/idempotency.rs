//! Idempotency keys: whose key space a key lives in, what identifies the
//! request it came with, and the record of its outcome.
//!
//! The scoping and fingerprint rules are written once, here: the HTTP API and
//! the simulator both build keys with [`IdempotencyKey::meme_call`] and
//! [`IdempotencyKey::adjustment`], so the simulator tests the production rule.

use crate::catalog::Position;
use crate::region::command::Receipt;
use crate::region::units::{Millis, Seq};
use bincode::{Decode, Encode};
use ledger_crdt::RegionId;

/// Where an idempotency record lives: the key's scope and the client's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct RecordId {
    /// Whose key space: keys of different principals never collide. A user's
    /// calls are scoped to the user (`u:<user>`); operator adjustments share
    /// the operator's scope (`op`).
    pub scope: String,
    /// The client's key.
    pub key: String,
}

/// The scope of operator requests.
const OPERATOR_SCOPE: &str = "op";

/// An `Idempotency-Key` and what identifies the request it came with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// Where its record lives.
    pub id: RecordId,
    /// A canonical rendering of the request; a reuse with another is refused.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// A user's memes call. Position and query are the request: a retry must
    /// repeat them exactly (the position by its bits, so `1.0` and `1.00`
    /// match and nothing is lost to float formatting).
    pub fn meme_call(user: &str, key: String, position: Option<Position>, query: &str) -> Self {
        Self {
            id: RecordId {
                scope: format!("u:{user}"),
                key,
            },
            fingerprint: format!(
                "memes {:?} {:?}",
                position.map(|p| (p.lat.to_bits(), p.lon.to_bits())),
                query
            ),
        }
    }

    /// A subscriber's memes call that became an AI job: the same key space
    /// as [`IdempotencyKey::meme_call`], another kind of request (a key used
    /// for one is refused for the other).
    pub fn ai_meme(user: &str, key: String, position: Option<Position>, query: &str) -> Self {
        let mut k = Self::meme_call(user, key, position, query);
        k.fingerprint.insert_str(0, "ai-");
        k
    }

    /// An operator's adjustment of `user`'s balance by `amount`.
    pub fn adjustment(user: &str, amount: i64, key: String) -> Self {
        Self {
            id: RecordId {
                scope: OPERATOR_SCOPE.to_owned(),
                key,
            },
            fingerprint: format!("adjust {user:?} {amount}"),
        }
    }
}

/// The remembered outcome of a request that carried an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct IdempotencyRecord {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// What it answered.
    pub receipt: Receipt,
    /// When it was first executed.
    pub at: Millis,
    /// The region whose write made it.
    pub origin: RegionId,
    /// That region's sequence number of the write (set by the replica;
    /// [`Seq::ZERO`] in records stored before records knew their write).
    pub seq: Seq,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_keys_cannot_collide_with_another_or_with_the_operator() {
        let alice = IdempotencyKey::meme_call("alice", "k".into(), None, "cats");
        let bob = IdempotencyKey::meme_call("bob", "k".into(), None, "cats");
        let op = IdempotencyKey::adjustment("alice", 5, "k".into());
        assert_ne!(alice.id, bob.id);
        assert_ne!(alice.id, op.id);
        assert_eq!(
            op.id,
            IdempotencyKey::adjustment("bob", 5, "k".into()).id,
            "operator keys share one scope"
        );
    }

    #[test]
    fn a_fingerprint_tells_requests_apart_and_matches_a_true_retry() {
        let at = |lat, lon| Some(Position { lat, lon });
        let base = IdempotencyKey::meme_call("a", "k".into(), at(1.0, 2.0), "cats");
        let retry = IdempotencyKey::meme_call("a", "k".into(), at(1.0, 2.0), "cats");
        assert_eq!(base.fingerprint, retry.fingerprint);
        for other in [
            IdempotencyKey::meme_call("a", "k".into(), at(1.0, 2.5), "cats"),
            IdempotencyKey::meme_call("a", "k".into(), None, "cats"),
            IdempotencyKey::meme_call("a", "k".into(), at(1.0, 2.0), "dogs"),
        ] {
            assert_ne!(base.fingerprint, other.fingerprint);
        }
        assert_ne!(
            IdempotencyKey::adjustment("a", 5, "k".into()).fingerprint,
            IdempotencyKey::adjustment("a", -5, "k".into()).fingerprint
        );
    }
}
