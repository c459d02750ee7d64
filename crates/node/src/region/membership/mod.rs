//! Who is in the cluster: SWIM membership (foca), as a sans-IO state machine.
//!
//! foca does the protocol: probes, indirect probes, suspicion, dissemination.
//! This module gives it an identity ([`NodeIdentity`]), a wire codec with size
//! limits ([`WireCodec`]), a timer queue driven by an explicit `now`, and turns
//! its notifications into "region up at this address" / "region down" events
//! for the [`crate::Replica`]. Packets leave through
//! [`Membership::poll_send`]; the shell carries them in QUIC datagrams, the
//! simulator through its network.

use crate::region::units::Millis;
use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PeriodicParams, Timer,
};
use ledger_crdt::RegionId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// The largest membership packet. A QUIC datagram must fit one UDP packet of at
/// least 1200 bytes with QUIC's own overhead; foca's default of 1400 would not.
pub const MAX_GOSSIP_PACKET: usize = 1178;

mod codec;
mod identity;
#[cfg(test)]
mod tests;

pub use codec::WireCodec;
pub use identity::NodeIdentity;

/// A region placeholder for announcing to a seed whose region is not yet known:
/// foca accepts an announce addressed to any identity at its address.
const UNKNOWN_REGION: RegionId = RegionId(0);

/// Timing of the membership protocol.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// How often each member probes one other.
    pub probe_period_ms: u64,
    /// How long to wait for a direct probe's answer before asking others.
    pub probe_rtt_ms: u64,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down_ms: u64,
    /// How often to gossip recent updates to a few members.
    pub gossip_ms: u64,
    /// How often to re-announce to members we think are down, so a healed
    /// partition rejoins without waiting for a restart.
    pub announce_to_down_ms: u64,
}

impl Default for MembershipConfig {
    /// Tuned for regions tens to a few hundred ms apart: a dead region is
    /// noticed within about 5 s, a healed partition rejoins within about 1 s.
    fn default() -> Self {
        Self {
            probe_period_ms: 1_000,
            probe_rtt_ms: 400,
            suspect_to_down_ms: 3_000,
            gossip_ms: 200,
            announce_to_down_ms: 1_000,
        }
    }
}

impl MembershipConfig {
    fn foca(&self) -> Config {
        let mut config = Config::simple();
        config.probe_period = Duration::from_millis(self.probe_period_ms);
        config.probe_rtt = Duration::from_millis(self.probe_rtt_ms);
        config.suspect_to_down_after = Duration::from_millis(self.suspect_to_down_ms);
        config.max_packet_size = NonZeroUsize::new(MAX_GOSSIP_PACKET).unwrap_or(NonZeroUsize::MIN);
        config.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
        // Tell a member we consider down that it is, so it renews at once.
        config.notify_down_members = true;
        // Forget a down identity after a while, bounding memory.
        config.remove_down_after = Some(Duration::from_secs(15 * 60));
        let every = |ms: u64, n: usize| {
            Some(PeriodicParams {
                frequency: Duration::from_millis(ms),
                num_members: NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
            })
        };
        config.periodic_gossip = every(self.gossip_ms, 3);
        config.periodic_announce = every(30_000, 1);
        config.periodic_announce_to_down_members = every(self.announce_to_down_ms, 2);
        config
    }
}

/// A change in who is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// The region is up (joined, came back, or restarted) at this address.
    Up(RegionId, SocketAddr),
    /// The region is considered down.
    Down(RegionId),
}

/// What this node knows of one other region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The latest identity seen for the region.
    pub identity: NodeIdentity,
    /// Whether it is up.
    pub up: bool,
    /// When it last changed state, ms.
    pub since_ms: u64,
}

/// SWIM membership of one node.
pub struct Membership {
    me: RegionId,
    foca: Foca<NodeIdentity, WireCodec, StdRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<NodeIdentity>,
    /// Pending foca timers by due time (ties by submission order).
    timers: BTreeMap<(u64, u64), Timer<NodeIdentity>>,
    next_timer: u64,
    regions: BTreeMap<RegionId, MemberView>,
    events: VecDeque<MemberEvent>,
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    left: bool,
    /// Whether a live member knows our current identity (foca's `Active`).
    active: bool,
    /// Where to (re-)announce while not active.
    seeds: Vec<SocketAddr>,
    rejoin_ms: u64,
    next_rejoin: u64,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// A node that knows no one yet. `seed` seeds foca's randomness (member
    /// choice), so the simulator replays it.
    pub fn new(identity: NodeIdentity, config: &MembershipConfig, seed: u64) -> Self {
        Self {
            me: identity.region,
            foca: Foca::new(
                identity,
                config.foca(),
                StdRng::seed_from_u64(seed),
                WireCodec,
            ),
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
            regions: BTreeMap::new(),
            events: VecDeque::new(),
            sends: VecDeque::new(),
            left: false,
            active: false,
            seeds: Vec::new(),
            rejoin_ms: config.announce_to_down_ms,
            next_rejoin: 0,
        }
    }

    /// Asks each seed address to let us in. [`Membership::tick`] repeats this
    /// every `announce_to_down_ms`: to every seed while no live member knows
    /// our current identity (the announces were lost, every peer went down, or
    /// we renewed our identity and told only members that are in fact dead),
    /// and otherwise to each seed that is not a live member. The second case is
    /// what merges two groups that formed apart (a partition at join time) and
    /// never heard of each other: SWIM only probes and re-announces to members
    /// it knows, so without it they would stay two clusters for good.
    pub fn join(&mut self, now: Millis, seeds: &[SocketAddr]) {
        let now = now.0;
        self.seeds = seeds.to_vec();
        self.announce_to_seeds(now);
    }

    fn announce_to_seeds(&mut self, now: u64) {
        self.next_rejoin = now.saturating_add(self.rejoin_ms);
        let live: Vec<SocketAddr> = if self.active {
            self.regions
                .values()
                .filter(|v| v.up)
                .map(|v| v.identity.addr)
                .collect()
        } else {
            Vec::new()
        };
        let missing: Vec<SocketAddr> = self
            .seeds
            .iter()
            .copied()
            .filter(|addr| !live.contains(addr))
            .collect();
        for addr in missing {
            let seed = NodeIdentity {
                region: UNKNOWN_REGION,
                addr,
                generation: 0,
            };
            if addr != self.foca.identity().addr {
                // An error here is "announce to ourselves": nothing to do.
                let _ = self.foca.announce(seed, &mut self.runtime);
            }
        }
        self.collect(now);
    }

    /// A packet from the network. Bad packets are dropped: foca bounds their
    /// size and the codec their contents.
    pub fn handle_data(&mut self, now: Millis, bytes: &[u8]) {
        let now = now.0;
        if self.left {
            return;
        }
        if self.foca.handle_data(bytes, &mut self.runtime).is_err() {
            tracing::debug!(len = bytes.len(), "dropped a bad membership packet");
        }
        self.collect(now);
    }

    /// Time passes: fire due protocol timers; re-announce if alone.
    pub fn tick(&mut self, now: Millis) {
        let now = now.0;
        if !self.left && !self.seeds.is_empty() && now >= self.next_rejoin {
            self.announce_to_seeds(now);
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if !self.left {
                let _ = self.foca.handle_timer(timer, &mut self.runtime);
            }
            self.collect(now);
        }
    }

    /// Leaves the cluster: tells peers, then ignores everything.
    pub fn leave(&mut self, now: Millis) {
        let now = now.0;
        if !self.left {
            let _ = self.foca.leave_cluster(&mut self.runtime);
            self.collect(now);
            self.left = true;
        }
    }

    /// When [`Membership::tick`] is next needed: the first protocol timer, or
    /// the next announce to seeds.
    pub fn next_deadline(&self) -> Option<Millis> {
        let timer = self.timers.keys().next().map(|&(due, _)| due);
        let announce = (!self.left && !self.seeds.is_empty()).then_some(self.next_rejoin);
        timer.into_iter().chain(announce).min().map(Millis)
    }

    /// The next packet to send: (address, bytes).
    pub fn poll_send(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.sends.pop_front()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// Every other region seen so far.
    pub fn regions(&self) -> &BTreeMap<RegionId, MemberView> {
        &self.regions
    }

    /// Our own current identity (it changes when we renew).
    pub fn identity(&self) -> NodeIdentity {
        *self.foca.identity()
    }

    /// Moves what foca produced into our queues.
    fn collect(&mut self, now: u64) {
        while let Some((to, bytes)) = self.runtime.to_send() {
            self.sends.push_back((to.addr, bytes.to_vec()));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let due = now.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            self.timers.insert((due, self.next_timer), timer);
            self.next_timer += 1;
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => self.up(now, id),
                OwnedNotification::Rename(_, id) => {
                    // A newer life of a member; if it is active, MemberUp follows.
                    if let Some(view) = self.regions.get_mut(&id.region)
                        && id.generation >= view.identity.generation
                    {
                        view.identity = id;
                    }
                }
                OwnedNotification::MemberDown(id) => self.down(now, id),
                OwnedNotification::Active => self.active = true,
                OwnedNotification::Idle
                | OwnedNotification::Defunct
                | OwnedNotification::Rejoin(_) => self.active = false,
            }
        }
    }

    fn up(&mut self, now: u64, id: NodeIdentity) {
        if id.region == self.me || id.region == UNKNOWN_REGION {
            return;
        }
        let view = self.regions.entry(id.region).or_insert(MemberView {
            identity: id,
            up: false,
            since_ms: now,
        });
        if id.generation < view.identity.generation {
            return;
        }
        let moved = view.identity.addr != id.addr;
        view.identity = id;
        if !view.up || moved {
            view.up = true;
            view.since_ms = now;
            self.events.push_back(MemberEvent::Up(id.region, id.addr));
        }
    }

    fn down(&mut self, now: u64, id: NodeIdentity) {
        // Only the region's latest life going down takes the region down.
        if let Some(view) = self.regions.get_mut(&id.region)
            && view.identity == id
            && view.up
        {
            view.up = false;
            view.since_ms = now;
            self.events.push_back(MemberEvent::Down(id.region));
        }
    }
}
