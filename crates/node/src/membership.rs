//! Who is in the cluster: SWIM membership (foca), as a sans-IO state machine.
//!
//! foca does the protocol: probes, indirect probes, suspicion, dissemination.
//! This module gives it an identity ([`NodeIdentity`]), a wire codec with size
//! limits ([`WireCodec`]), a timer queue driven by an explicit `now`, and turns
//! its notifications into "region up at this address" / "region down" events
//! for the [`crate::replica::Replica`]. Packets leave through
//! [`Membership::poll_send`]; the shell carries them in QUIC datagrams, the
//! simulator through its network.

use crate::NodeError;
use bincode::{Decode, Encode};
use bytes::{Buf, BufMut};
use foca::{
    AccumulatingRuntime, Config, Foca, Header, Incarnation, Member, Message, NoCustomBroadcast,
    OwnedNotification, PeriodicParams, State, Timer,
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
    pub fn join(&mut self, now: u64, seeds: &[SocketAddr]) {
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
    pub fn handle_data(&mut self, now: u64, bytes: &[u8]) {
        if self.left {
            return;
        }
        if self.foca.handle_data(bytes, &mut self.runtime).is_err() {
            tracing::debug!(len = bytes.len(), "dropped a bad membership packet");
        }
        self.collect(now);
    }

    /// Time passes: fire due protocol timers; re-announce if alone.
    pub fn tick(&mut self, now: u64) {
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
    pub fn leave(&mut self, now: u64) {
        if !self.left {
            let _ = self.foca.leave_cluster(&mut self.runtime);
            self.collect(now);
            self.left = true;
        }
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

/// Bounds on decoding one membership item.
const CODEC: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_GOSSIP_PACKET>,
> = bincode::config::standard().with_limit::<MAX_GOSSIP_PACKET>();

/// foca's wire format in bincode, through mirror types (foca's own are not
/// bincode types).
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

#[derive(Encode, Decode)]
enum WireMessage {
    Ping(u8),
    Ack(u8),
    PingReq { target: NodeIdentity, probe: u8 },
    IndirectPing { origin: NodeIdentity, probe: u8 },
    IndirectAck { target: NodeIdentity, probe: u8 },
    ForwardedAck { origin: NodeIdentity, probe: u8 },
    Announce,
    Feed,
    Gossip,
    Broadcast,
    TurnUndead,
}

#[derive(Encode, Decode)]
struct WireHeader {
    src: NodeIdentity,
    src_incarnation: Incarnation,
    dst: NodeIdentity,
    message: WireMessage,
}

#[derive(Encode, Decode)]
struct WireMember {
    id: NodeIdentity,
    incarnation: Incarnation,
    /// 0 alive, 1 suspect, 2 down.
    state: u8,
}

fn put(item: &impl Encode, mut buf: impl BufMut) -> Result<(), NodeError> {
    let bytes =
        bincode::encode_to_vec(item, CODEC).map_err(|e| NodeError::PeerBytes(e.to_string()))?;
    // foca requires that a full buffer is left untouched.
    if buf.remaining_mut() < bytes.len() {
        return Err(NodeError::PeerBytes("membership packet full".into()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: Decode<()>>(mut buf: impl Buf) -> Result<T, NodeError> {
    let (item, used) = bincode::decode_from_slice(buf.chunk(), CODEC)
        .map_err(|e| NodeError::PeerBytes(e.to_string()))?;
    buf.advance(used);
    Ok(item)
}

impl foca::Codec<NodeIdentity> for WireCodec {
    type Error = NodeError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), NodeError> {
        let message = match header.message {
            Message::Ping(p) => WireMessage::Ping(p),
            Message::Ack(p) => WireMessage::Ack(p),
            Message::PingReq {
                target,
                probe_number,
            } => WireMessage::PingReq {
                target,
                probe: probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => WireMessage::IndirectPing {
                origin,
                probe: probe_number,
            },
            Message::IndirectAck {
                target,
                probe_number,
            } => WireMessage::IndirectAck {
                target,
                probe: probe_number,
            },
            Message::ForwardedAck {
                origin,
                probe_number,
            } => WireMessage::ForwardedAck {
                origin,
                probe: probe_number,
            },
            Message::Announce => WireMessage::Announce,
            Message::Feed => WireMessage::Feed,
            Message::Gossip => WireMessage::Gossip,
            Message::Broadcast => WireMessage::Broadcast,
            Message::TurnUndead => WireMessage::TurnUndead,
        };
        let wire = WireHeader {
            src: header.src,
            src_incarnation: header.src_incarnation,
            dst: header.dst,
            message,
        };
        put(&wire, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, NodeError> {
        let wire: WireHeader = take(buf)?;
        let message = match wire.message {
            WireMessage::Ping(p) => Message::Ping(p),
            WireMessage::Ack(p) => Message::Ack(p),
            WireMessage::PingReq { target, probe } => Message::PingReq {
                target,
                probe_number: probe,
            },
            WireMessage::IndirectPing { origin, probe } => Message::IndirectPing {
                origin,
                probe_number: probe,
            },
            WireMessage::IndirectAck { target, probe } => Message::IndirectAck {
                target,
                probe_number: probe,
            },
            WireMessage::ForwardedAck { origin, probe } => Message::ForwardedAck {
                origin,
                probe_number: probe,
            },
            WireMessage::Announce => Message::Announce,
            WireMessage::Feed => Message::Feed,
            WireMessage::Gossip => Message::Gossip,
            WireMessage::Broadcast => Message::Broadcast,
            WireMessage::TurnUndead => Message::TurnUndead,
        };
        Ok(Header {
            src: wire.src,
            src_incarnation: wire.src_incarnation,
            dst: wire.dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), NodeError> {
        let state = match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        };
        let wire = WireMember {
            id: *member.id(),
            incarnation: member.incarnation(),
            state,
        };
        put(&wire, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, NodeError> {
        let wire: WireMember = take(buf)?;
        let state = match wire.state {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            _ => {
                return Err(NodeError::PeerBytes("bad member state".into()));
            }
        };
        Ok(Member::new(wire.id, wire.incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(region: u16) -> Membership {
        let identity = NodeIdentity {
            region: RegionId(region),
            addr: SocketAddr::from(([10, 0, 0, region as u8], 7000)),
            generation: 1,
        };
        Membership::new(identity, &MembershipConfig::default(), u64::from(region))
    }

    /// Delivers every queued packet between `nodes` (addressed by address) until
    /// quiet, ticking time forward by 10 ms per round.
    fn run(nodes: &mut [Membership], now: &mut u64, until: u64, cut: &[(usize, usize)]) {
        while *now < until {
            for i in 0..nodes.len() {
                nodes[i].tick(*now);
                while let Some((to, bytes)) = nodes[i].poll_send() {
                    if let Some(j) = nodes.iter().position(|n| n.identity().addr == to)
                        && !cut.contains(&(i, j))
                        && !cut.contains(&(j, i))
                    {
                        nodes[j].handle_data(*now, &bytes);
                    }
                }
            }
            *now += 10;
        }
    }

    fn up(node: &Membership) -> Vec<u16> {
        node.regions()
            .iter()
            .filter(|(_, v)| v.up)
            .map(|(r, _)| r.0)
            .collect()
    }

    #[test]
    fn joins_through_one_seed_detects_a_death_and_rejoins_after_a_cut() {
        let mut nodes: Vec<Membership> = (1..=3).map(node).collect();
        let mut now = 0;
        let seed = nodes[0].identity().addr;
        nodes[1].join(now, &[seed]);
        nodes[2].join(now, &[seed]);
        run(&mut nodes, &mut now, 2_000, &[]);
        assert_eq!(up(&nodes[0]), vec![2, 3]);
        assert_eq!(up(&nodes[2]), vec![1, 2], "learned region 2 by gossip");

        // Cut node 3 off: the others declare it down.
        let cut = [(0, 2), (1, 2)];
        run(&mut nodes, &mut now, 12_000, &cut);
        assert_eq!(up(&nodes[0]), vec![2]);
        assert_eq!(up(&nodes[2]), Vec::<u16>::new());

        // Heal: everyone is up again, by renewal and announces to down members.
        run(&mut nodes, &mut now, 16_000, &[]);
        for n in &nodes {
            assert_eq!(up(n).len(), 2, "{:?}", n.regions());
        }
    }

    #[test]
    fn two_groups_that_formed_apart_merge_once_the_cut_heals() {
        // Four regions, every one given every other as a seed, but {1, 2} and
        // {3, 4} cannot reach each other while they join: each pair forms a
        // cluster that has never heard of the other (the simulator's soak found
        // this as a split brain that never healed).
        let mut nodes: Vec<Membership> = (1..=4).map(node).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.identity().addr).collect();
        let mut now = 0;
        for (i, n) in nodes.iter_mut().enumerate() {
            let seeds: Vec<SocketAddr> = addrs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, a)| *a)
                .collect();
            n.join(now, &seeds);
        }
        let cut = [(0, 2), (0, 3), (1, 2), (1, 3)];
        run(&mut nodes, &mut now, 5_000, &cut);
        assert_eq!(up(&nodes[0]), vec![2]);
        assert_eq!(up(&nodes[2]), vec![4]);
        assert!(
            !nodes[0].regions().contains_key(&RegionId(3)),
            "never heard of 3"
        );

        // Heal: within a few seconds everyone sees everyone.
        run(&mut nodes, &mut now, 9_000, &[]);
        for n in &nodes {
            assert_eq!(up(n).len(), 3, "{:?}", n.regions());
        }
    }

    #[test]
    fn graceful_leave_is_seen_as_down() {
        let mut nodes: Vec<Membership> = (1..=2).map(node).collect();
        let mut now = 0;
        let seed = nodes[0].identity().addr;
        nodes[1].join(now, &[seed]);
        run(&mut nodes, &mut now, 1_000, &[]);
        assert_eq!(up(&nodes[0]), vec![2]);
        nodes[1].leave(now);
        run(&mut nodes, &mut now, 1_500, &[]);
        assert_eq!(up(&nodes[0]), Vec::<u16>::new());
    }

    #[test]
    fn hostile_bytes_are_dropped() {
        let mut n = node(1);
        for len in [0usize, 1, 7, 64, 2_000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            n.handle_data(0, &junk);
        }
        assert!(n.regions().is_empty());
    }
}
