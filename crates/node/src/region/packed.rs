//! Values kept in memory as their bincode bytes.
//!
//! A node holds every user's account in memory: a million users on one node is
//! the scale target, at under 1 KiB each. As Rust values an account costs a
//! map node slot plus a heap allocation per region entry; packed, a one-region
//! account is a dozen bytes in one allocation. Each access decodes (tens of
//! nanoseconds), which the hot path can afford: it already copies the account to
//! change it and put it back.
//!
//! A packed value encodes as the value itself would (its bytes, verbatim), so
//! a flush hands the stored form to the disk without decoding and encoding
//! each changed account again on the group-commit thread.

use bincode::enc::Encoder;
use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use bincode::{Decode, Encode};
use std::marker::PhantomData;

/// A `V`, stored as bytes this type encoded itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed<V> {
    bytes: Box<[u8]>,
    _value: PhantomData<fn() -> V>,
}

/// bincode's standard configuration; no limit, because the bytes are ours.
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<V: Encode + Decode<()>> Packed<V> {
    /// Packs `value`.
    pub fn pack(value: &V) -> Self {
        // Encoding into a Vec fails only if an Encode impl fails, and ours
        // (derived, or SmallMap's) never do.
        let bytes = bincode::encode_to_vec(value, config()).expect("our types always encode");
        Self {
            bytes: bytes.into_boxed_slice(),
            _value: PhantomData,
        }
    }

    /// The value back.
    pub fn unpack(&self) -> V {
        match bincode::decode_from_slice(&self.bytes, config()) {
            Ok((value, _)) => value,
            // Only bytes `pack` wrote are ever held, so this cannot happen
            // short of memory corruption; better to stop than to guess.
            Err(e) => panic!("packed value does not decode: {e}"),
        }
    }
}

/// Exactly the bytes `V` encodes to, under the standard configuration that
/// [`Packed::pack`] and `ledger_crdt::wire` both use.
impl<V> Encode for Packed<V> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        encoder.writer().write(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_crdt::{Account, Genesis, Op, RegionId};

    #[test]
    fn an_account_packs_small_and_comes_back_equal() {
        let genesis = Genesis::new(150, [RegionId(1), RegionId(2)]).expect("genesis");
        let mut account = Account::new();
        account
            .apply(
                &genesis,
                RegionId(1),
                Op::Spend {
                    amount: 3,
                    call: true,
                },
            )
            .expect("spend");
        account
            .apply(
                &genesis,
                RegionId(1),
                Op::Transfer {
                    to: RegionId(2),
                    amount: 10,
                },
            )
            .expect("transfer");
        let packed = Packed::pack(&account);
        assert_eq!(packed.unpack(), account);
        assert!(packed.bytes.len() < 24, "{} bytes", packed.bytes.len());
        // What the disk gets from the packed form is what the value gives.
        use ledger_crdt::wire::encode;
        assert_eq!(
            encode(&packed).expect("encodes"),
            account.to_bytes().expect("encodes")
        );
        let seq = crate::Seq(300);
        assert_eq!(
            encode(&(seq, packed.clone())).expect("encodes"),
            encode(&(seq, account.clone())).expect("encodes")
        );
    }
}
