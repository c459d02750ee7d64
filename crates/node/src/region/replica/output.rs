//! What a replica hands the shell: replies to clients and bytes for peers, in
//! separate queues ([`crate::Replica::poll_reply`],
//! [`crate::Replica::poll_transmit`]), since they go to different places.

use crate::region::command::{Receipt, Refusal};
use crate::region::units::RequestId;
use ledger_crdt::RegionId;
use std::net::SocketAddr;

/// The answer to a client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's id.
    pub request: RequestId,
    /// The outcome.
    pub result: Result<Receipt, Refusal>,
    /// Whether this answers a retry from its idempotency record.
    pub replayed: bool,
}

/// Bytes for the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A replication message for peer `to`, to be sent reliably and in order
    /// (a QUIC stream).
    Replication {
        /// The peer.
        to: RegionId,
        /// Where it listens.
        addr: SocketAddr,
        /// An encoded [`crate::Message`].
        bytes: Vec<u8>,
        /// Its [`crate::Message::kind`].
        kind: &'static str,
    },
    /// A membership packet; loss is fine (a QUIC datagram).
    Gossip {
        /// The address.
        to: SocketAddr,
        /// A foca packet, at most [`crate::MAX_GOSSIP_PACKET`] bytes.
        bytes: Vec<u8>,
    },
}

impl Transmit {
    /// Where it goes.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Transmit::Replication { addr, .. } => *addr,
            Transmit::Gossip { to, .. } => *to,
        }
    }
}
