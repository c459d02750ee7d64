//! The other regions: who is up (from the membership), and the queue of bytes
//! for them.

use super::output::Transmit;
use crate::region::membership::{MemberEvent, MemberView, Membership, NodeIdentity};
use crate::region::message::Message;
use crate::region::units::Millis;
use ledger_crdt::RegionId;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// The peers sub-state of a replica.
#[derive(Debug)]
pub(super) struct Peers {
    membership: Membership,
    /// The peers that are up, as of the membership's last change.
    live: Vec<RegionId>,
    transmits: VecDeque<Transmit>,
}

impl Peers {
    pub(super) fn new(membership: Membership) -> Self {
        Self {
            membership,
            live: Vec::new(),
            transmits: VecDeque::new(),
        }
    }

    /// The peers that are up.
    pub(super) fn live(&self) -> &[RegionId] {
        &self.live
    }

    /// Every other region seen, and whether it is up.
    pub(super) fn regions(&self) -> &BTreeMap<RegionId, MemberView> {
        self.membership.regions()
    }

    /// Our current membership identity.
    pub(super) fn identity(&self) -> NodeIdentity {
        self.membership.identity()
    }

    /// The membership, for an input; call [`Peers::membership_moved`] after.
    pub(super) fn membership(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// When the membership next needs a tick.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.membership.next_deadline()
    }

    /// After a membership input: queues its packets, refreshes who is up, and
    /// returns the regions that came up.
    pub(super) fn membership_moved(&mut self) -> Vec<RegionId> {
        self.live = self
            .membership
            .regions()
            .iter()
            .filter(|(_, v)| v.up)
            .map(|(&r, _)| r)
            .collect();
        while let Some((to, bytes)) = self.membership.poll_send() {
            self.transmits.push_back(Transmit::Gossip { to, bytes });
        }
        let mut up = Vec::new();
        while let Some(event) = self.membership.poll_event() {
            if let MemberEvent::Up(region, _) = event {
                up.push(region);
            }
        }
        up
    }

    /// Sends `message` to `to` if it is up; others catch up later by
    /// anti-entropy.
    pub(super) fn send(&mut self, to: RegionId, message: &Message) {
        self.broadcast(&[to], message);
    }

    /// Sends `message` to each of `peers` that is up, encoded once.
    pub(super) fn broadcast(&mut self, peers: &[RegionId], message: &Message) {
        let mut bytes = None;
        for &to in peers {
            let Some(view) = self.membership.regions().get(&to).filter(|v| v.up) else {
                continue;
            };
            if bytes.is_none() {
                match message.encode() {
                    Ok(encoded) => bytes = Some(encoded),
                    Err(_) => return,
                }
            }
            let Some(bytes) = bytes.clone() else { return };
            let addr: SocketAddr = view.identity.addr;
            self.transmits.push_back(Transmit::Replication {
                to,
                addr,
                bytes,
                kind: message.kind(),
            });
        }
    }

    /// Sends `message` to every live peer.
    pub(super) fn broadcast_live(&mut self, message: &Message) {
        let live = std::mem::take(&mut self.live);
        self.broadcast(&live, message);
        self.live = live;
    }

    /// The next bytes for the network.
    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}
