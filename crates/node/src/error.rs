//! The crate's one error type.

/// Everything that can fail in the node outside of a client's request being refused.
///
/// Client-facing refusals are [`crate::Refusal`]s and become problem responses;
/// these are the failures of the node itself: configuration, storage, startup.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration does not make sense (a bad key, an empty genesis, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// sled could not read, write or flush.
    #[cfg(feature = "shell")]
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// Stored bytes did not decode: the data directory is damaged or from an
    /// incompatible version.
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] ledger_crdt::Error),
    /// The store panicked during a flush; treated as a failed flush.
    #[error("the store panicked during a flush")]
    StorePanicked,
    /// A group commit failed, so the writes it covered were not acknowledged.
    #[error("flush failed; the write was not made durable")]
    FlushFailed,
    /// Bytes from a peer did not decode (or a packet to a peer did not fit).
    #[error("peer bytes: {0}")]
    PeerBytes(String),
    /// The cluster transport (QUIC, TLS, certificates) failed.
    #[error("cluster transport: {0}")]
    Transport(String),
    /// Binding or serving the HTTP listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
