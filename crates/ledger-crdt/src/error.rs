//! The crate's one error type.

use crate::RegionId;

/// Everything that can go wrong at this crate's boundary.
///
/// Refusals (`Insufficient*`, `Overflow`, `ZeroAmount`, `TransferToSelf`) leave the
/// account unchanged. Decoding errors mean the bytes were rejected whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// This region's own rights do not cover the amount, but the cluster as this
    /// replica sees it holds enough: ask peers to transfer rights here.
    #[error("not enough tokens held in this region: {here} here, {elsewhere} elsewhere")]
    InsufficientHere {
        /// Rights this region can spend right now.
        here: u64,
        /// Tokens this replica believes are held by (or travelling to) other regions.
        elsewhere: u64,
    },
    /// Even the whole balance this replica knows of does not cover the amount.
    #[error("not enough tokens anywhere: balance is {balance}")]
    InsufficientAnywhere {
        /// The balance as seen from this replica.
        balance: u64,
    },
    /// The operation would push a counter or the balance past `u64::MAX`.
    #[error("amount overflows the account")]
    Overflow,
    /// A credit, transfer or debit of zero tokens carries no meaning.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// A region cannot transfer rights to itself.
    #[error("a region cannot transfer rights to itself")]
    TransferToSelf,
    /// A welcome grant with no genesis region to hold it.
    #[error("a non-zero welcome grant needs at least one genesis region")]
    GenesisWithoutRegions,
    /// A replica's view shows a region with negative rights. Never happens unless a
    /// replica skipped the rights check or merged something that is not a join.
    #[error("invariant violated: region {region} has rights {rights}")]
    NegativeRights {
        /// The region whose rights went negative.
        region: RegionId,
        /// Its rights, exactly.
        rights: i128,
    },
    /// Bytes from the wire began with a version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// Bytes from the wire were empty.
    #[error("empty message")]
    Empty,
    /// Bytes from the wire did not decode (truncated, malformed or over the size limit).
    #[error("malformed message: {0}")]
    Decode(String),
    /// Bytes from the wire decoded but left bytes over.
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    /// A value could not be encoded (only over the size limit).
    #[error("could not encode: {0}")]
    Encode(String),
}
