//! The wire and disk format: one version byte, then bincode 2.
//!
//! Everything decoded here may come from the network or a damaged disk, so decoding
//! is bounded by a byte limit (bincode refuses to allocate past it), rejects trailing
//! bytes, and never panics.

use crate::{Account, Error};
use bincode::enc::{EncoderImpl, write::SizeWriter};
use bincode::{Decode, Encode, config};

/// The format version written as the first byte of every encoding.
pub const WIRE_VERSION: u8 = 1;

/// The most bytes one encoded account may take. A 10-region account takes about
/// 200 bytes; this leaves room for hundreds of regions.
pub const MAX_ACCOUNT_BYTES: usize = 64 * 1024;

/// Encodes `value` behind the version byte.
pub fn encode<T: Encode + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    encode_into(&mut out, value)?;
    Ok(out)
}

/// Appends what [`encode`] would return to `out`, after whatever it holds (a
/// tag of the caller's, say).
///
/// The size is measured first and `out` grown once, to exactly what it
/// needs: bincode writes a byte or a varint at a time, and a buffer grown by
/// doubling from one byte was reallocated several times per value (in a
/// group commit, five of the seven reallocations a spend caused).
pub fn encode_into<T: Encode + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let mut sizer = EncoderImpl::new(SizeWriter::default(), config::standard());
    value
        .encode(&mut sizer)
        .map_err(|e| Error::Encode(e.to_string()))?;
    out.reserve_exact(1 + sizer.into_writer().bytes_written);
    out.push(WIRE_VERSION);
    bincode::encode_into_std_write(value, out, config::standard())
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(())
}

/// Decodes a value written by [`encode`], reading at most `LIMIT` bytes of payload.
pub fn decode<T: Decode<()>, const LIMIT: usize>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, payload) = bytes.split_first().ok_or(Error::Empty)?;
    if version != WIRE_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let config = config::standard().with_limit::<LIMIT>();
    let (value, read) =
        bincode::decode_from_slice(payload, config).map_err(|e| Error::Decode(e.to_string()))?;
    if read != payload.len() {
        return Err(Error::TrailingBytes(payload.len() - read));
    }
    Ok(value)
}

/// Appends `value` as [`encode_into`] would, but without the version byte:
/// for values laid end to end behind one version byte of the caller's, so
/// that a run of them can be joined to another by copying bytes.
pub fn encode_bare_into<T: Encode + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    bincode::encode_into_std_write(value, out, config::standard())
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(())
}

/// Decodes one value written by [`encode_bare_into`] from the front of
/// `bytes`, reading at most `LIMIT` bytes; returns it and how many bytes it
/// took (the rest may hold more values).
pub fn decode_bare_prefix<T: Decode<()>, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    let config = config::standard().with_limit::<LIMIT>();
    bincode::decode_from_slice(bytes, config).map_err(|e| Error::Decode(e.to_string()))
}

impl Account {
    /// The account's canonical encoding: equal accounts give equal bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        encode(self)
    }

    /// Decodes untrusted bytes into an account in canonical form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Account, Error> {
        let mut account: Account = decode::<Account, MAX_ACCOUNT_BYTES>(bytes)?;
        account.normalize();
        Ok(account)
    }

    /// Decodes untrusted bytes holding an account followed by `T`, as
    /// [`encode`] writes `(account, t)`: how a store keeps more beside an
    /// account in one value. The account comes back in canonical form.
    pub fn with_trailer_from_bytes<T: Decode<()>>(bytes: &[u8]) -> Result<(Account, T), Error> {
        let (mut account, trailer): (Account, T) =
            decode::<(Account, T), { 2 * MAX_ACCOUNT_BYTES + 16 }>(bytes)?;
        account.normalize();
        Ok((account, trailer))
    }
}
