//! The simulated network: per-link latency, loss, duplication, reordering and cuts.

use crate::rng::Rng;
use ledger_crdt::RegionId;
use std::collections::{BTreeMap, BTreeSet};

/// Fault rates of the network.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// One-way latency range, in ms (uniform; overlapping draws reorder messages).
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
}

/// A message on its way.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Sender.
    pub from: RegionId,
    /// Receiver.
    pub to: RegionId,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether this is a membership packet (else a replication message).
    pub gossip: bool,
}

/// Links and messages in flight, ordered by delivery time (ties by send order).
#[derive(Debug, Default)]
pub struct Network {
    queue: BTreeMap<(u64, u64), InFlight>,
    next_id: u64,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(RegionId, RegionId)>,
    /// Messages and bytes sent, for the quality figures.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl Network {
    /// Sends `bytes` at `now`, subject to the faults.
    pub fn send(&mut self, rng: &mut Rng, config: &NetworkConfig, now: u64, message: InFlight) {
        self.messages += 1;
        self.bytes += message.bytes.len() as u64;
        if self.cut.contains(&(message.from, message.to)) || rng.chance(config.loss) {
            return;
        }
        let copies = if rng.chance(config.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = now + rng.range(config.latency_ms.0, config.latency_ms.1);
            self.queue.insert((at, self.next_id), message.clone());
            self.next_id += 1;
        }
    }

    /// Everything due at or before `now`, in delivery order. A link cut while a
    /// message was in flight drops it on arrival.
    pub fn due(&mut self, now: u64) -> Vec<InFlight> {
        let later = self.queue.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.queue, later);
        due.into_values()
            .filter(|m| !self.cut.contains(&(m.from, m.to)))
            .collect()
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&mut self, from: RegionId, to: RegionId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Whether nothing is in flight.
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
    }
}
