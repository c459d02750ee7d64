//! Who a member is: its region, its address, and which life of it.

use bincode::{Decode, Encode};
use ledger_crdt::RegionId;
use std::net::SocketAddr;

/// A member of the cluster: which region, where it listens, and which life of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct NodeIdentity {
    /// The region this node serves.
    pub region: RegionId,
    /// Where its QUIC endpoint listens (gossip and replication).
    pub addr: SocketAddr,
    /// Grows with every start (the start time in ms) and every renewal, so a
    /// restarted or renewed node wins over its older self at the same address.
    pub generation: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down (a false positive, or a partition): come back at once.
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}
