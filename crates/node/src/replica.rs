//! One region's replicated ledger: a sans-IO state machine.
//!
//! Inputs: client commands, peer bytes, timer ticks, "storage is durable up to
//! ticket N", and membership changes, each with an explicit `now`. Outputs (drained
//! with [`Replica::poll_output`]): replies to clients and bytes for peers. The node
//! shell and the simulator drive this same code.
//!
//! # Replication
//!
//! - Every write this region makes (a spend, a credit, a transfer, accepting
//!   transfers) gets the next **sequence number** of this region.
//! - **Only durable writes leave the region.** A version of our own entry is sent
//!   only after storage confirmed it, so whatever peers hold of us, a restarted us
//!   holds too. (Were it otherwise, a crash could make peers merge two different
//!   histories of our entry into a mixture with negative rights.) Replies to clients
//!   wait for the same confirmation.
//! - Durable writes go to every live peer in **batches** covering a sequence range
//!   `(from, to]`, closed when the oldest is `batch_age_ms` old.
//! - Each region keeps, per origin, a **watermark**: every write of that origin up to
//!   it is held here. **Anti-entropy**: every `anti_entropy_ms` a region sends its
//!   watermarks to the next peer, which answers with exactly the entries the asker
//!   lacks, *of every origin*. A peer cut off catches up with what it missed, a new
//!   region pulls everything, and A's writes reach C through B while A–C is cut.
//!
//! # Escrow
//!
//! Spends check this region's rights (see `ledger_crdt`). Demand is observed from
//! spend growth, ours and in peers' deltas ([`crate::demand`]); after every change
//! to a user the pure [`ledger_crdt::plan_transfers`] policy decides whether this
//! region should send rights to where the user spends, *before* it runs dry there.
//! A spend refused for lack of local rights while rights exist elsewhere sends a
//! [`Message::RightsRequest`] at once.

use crate::core::{
    Command, Core, CoreConfig, IdempotencyKey, IdempotencyRecord, Receipt, Refusal, SpendPolicy,
};
use crate::demand::Demand;
use crate::membership::{MemberEvent, MemberView, Membership, MembershipConfig, NodeIdentity};
use crate::message::{Covered, Item, KeyState, Message};
use crate::packed::Packed;
use crate::records::Records;
use bincode::{Decode, Encode};
use ledger_crdt::{Account, Op, RebalanceConfig, RegionId, answer_request, plan_transfers};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// Tuning of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The ledger rules of this region.
    pub core: CoreConfig,
    /// Where this node's peer endpoint listens, as peers should reach it.
    pub addr: SocketAddr,
    /// This life of the node: its start time in ms (see [`NodeIdentity`]).
    pub generation: u64,
    /// Seeds the membership protocol's random choices.
    pub seed: u64,
    /// Timing of the membership protocol.
    pub membership: MembershipConfig,
    /// The rebalancing policy's tuning.
    pub rebalance: RebalanceConfig,
    /// A batch of deltas closes when its oldest write is this old.
    pub batch_age_ms: u64,
    /// A batch message holds at most about this many bytes.
    pub batch_bytes: usize,
    /// How often to send a digest to one peer.
    pub anti_entropy_ms: u64,
    /// Half-life of observed demand.
    pub demand_half_life_ms: u64,
    /// At most one rebalancing plan per user this often.
    pub rebalance_every_ms: u64,
    /// Proactive rebalancing for a user stops this long after the last spend
    /// of that user observed anywhere.
    pub rebalance_quiet_ms: u64,
    /// At most one rights request per user this often.
    pub rights_request_every_ms: u64,
    /// How long a region keeps rights for its own demand when asked for them.
    pub keep_horizon_ms: u64,
    /// After accepting a user's rights from a region, do not send that user's
    /// rights back there proactively for this long. Two regions whose (delayed)
    /// views of demand disagree would otherwise bounce rights forever. Explicit
    /// rights requests are not damped.
    pub bounce_cooldown_ms: u64,
    /// How long a keyed request at this region waits for peers to say whether
    /// they know its key (see [`Replica::client`]) before it runs anyway.
    pub key_query_ms: u64,
    /// A user whose latest known spend was served here within this long is a
    /// steady local customer: its keyed requests run without asking peers.
    pub local_customer_ms: u64,
    /// Record which users changed, for [`Replica::drain_changed`] (the
    /// simulator checks exactly those accounts after every step).
    pub track_changes: bool,
    /// Deliberate bugs, for proving the simulator's checker can fail.
    pub faults: Faults,
}

impl ReplicaConfig {
    /// Defaults around `core`.
    pub fn new(core: CoreConfig) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            generation: 0,
            seed: u64::from(core.region.0),
            membership: MembershipConfig::default(),
            core,
            rebalance: RebalanceConfig::default(),
            batch_age_ms: 10,
            batch_bytes: 64 * 1024,
            anti_entropy_ms: 200,
            demand_half_life_ms: 2_000,
            rebalance_every_ms: 50,
            rebalance_quiet_ms: 2_000,
            rights_request_every_ms: 100,
            keep_horizon_ms: 2_000,
            bounce_cooldown_ms: 1_000,
            key_query_ms: 300,
            local_customer_ms: 5_000,
            track_changes: false,
            faults: Faults::default(),
        }
    }
}

/// Deliberately broken behaviour; all off in production. Honoured only when built
/// with the `simulation` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Merge by adding instead of taking the maximum.
    pub additive_merge: bool,
    /// Reply to clients before storage confirmed the write.
    pub ack_before_flush: bool,
    /// Ignore stored idempotency records, so retries are charged again.
    pub forget_idempotency: bool,
}

/// Something the replica wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer client request `request`.
    Reply {
        /// The caller's request id.
        request: u64,
        /// The outcome.
        result: Result<Receipt, Refusal>,
        /// Whether this answers a retry from its idempotency record.
        replayed: bool,
    },
    /// Send `bytes` to peer `to`, reliably and in order (a QUIC stream).
    Send {
        /// The peer.
        to: RegionId,
        /// Where it listens.
        addr: SocketAddr,
        /// An encoded [`Message`].
        bytes: Vec<u8>,
    },
    /// Send a membership packet to `to`; loss is fine (a QUIC datagram).
    Gossip {
        /// The address.
        to: SocketAddr,
        /// A foca packet, at most [`crate::membership::MAX_GOSSIP_PACKET`] bytes.
        bytes: Vec<u8>,
    },
}

/// What must survive a crash: the state as of the last confirmed flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    accounts: BTreeMap<Box<str>, Packed<Account>>,
    /// For other origins: the sequence number of the version held, per user.
    seqs: BTreeMap<(RegionId, String), u64>,
    /// Per other origin: every write up to here is held.
    watermarks: BTreeMap<RegionId, u64>,
    /// Our own last sequence number.
    own_seq: u64,
    /// Our own entries as of their last durable write: all we ever send of us.
    own: BTreeMap<Box<str>, (u64, Packed<Account>)>,
    /// Our writes up to here have been sent in batches.
    sent_upto: u64,
    records: Records,
}

/// The scalars of the durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Meta {
    /// Our last write's sequence number.
    pub own_seq: u64,
    /// Our writes up to here were sent.
    pub sent_upto: u64,
    /// Per other origin: every write up to here is held.
    pub watermarks: Vec<(RegionId, u64)>,
}

/// What one flush writes: the changed parts of [`Durable`], as of `ticket`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// Everything up to this write ticket is included.
    pub ticket: u64,
    /// Which [`Replica::prepare_persist`] made it (they are numbered from 1);
    /// hand it back to [`Replica::flushed`].
    pub number: u64,
    /// Changed accounts.
    pub accounts: Vec<(String, Account)>,
    /// Changed versions held of other origins' entries.
    pub seqs: Vec<((RegionId, String), u64)>,
    /// Our own entries as of their last durable write.
    pub own: Vec<(String, (u64, Account))>,
    /// Changed idempotency records; `None` deletes.
    pub records: Vec<((String, String), Option<IdempotencyRecord>)>,
    /// The scalars.
    pub meta: Meta,
}

impl Persist {
    /// Whether the persist carries no key at all (only scalars).
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.seqs.is_empty()
            && self.own.is_empty()
            && self.records.is_empty()
    }
}

impl Durable {
    /// Applies one flush's changes: how the simulator's disk and the node's
    /// startup (which loads everything as one big persist) build the state.
    pub fn apply(&mut self, persist: &Persist) {
        for (user, account) in &persist.accounts {
            self.accounts
                .insert(user.as_str().into(), Packed::pack(account));
        }
        for (key, seq) in &persist.seqs {
            self.seqs.insert(key.clone(), *seq);
        }
        for (user, (seq, own)) in &persist.own {
            self.own
                .insert(user.as_str().into(), (*seq, Packed::pack(own)));
        }
        for (key, record) in &persist.records {
            match record {
                Some(r) => self.records.insert(key.clone(), r.clone()),
                None => self.records.remove(key),
            }
        }
        self.own_seq = persist.meta.own_seq;
        self.sent_upto = persist.meta.sent_upto;
        self.watermarks = persist.meta.watermarks.iter().copied().collect();
    }

    /// The accounts this state holds, by value.
    pub fn into_accounts(self) -> BTreeMap<String, Account> {
        unpack_all(&self.accounts)
    }

    fn account(&self, user: &str) -> Account {
        self.accounts
            .get(user)
            .map(Packed::unpack)
            .unwrap_or_default()
    }

    fn set_account(&mut self, user: &str, account: &Account) {
        self.accounts.insert(user.into(), Packed::pack(account));
    }
}

/// How far one peer has caught up with our writes, from its latest digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLag {
    /// Our durable writes the peer has not confirmed holding.
    pub entries: u64,
    /// Age of the oldest of those writes, ms (0 if none).
    pub ms: u64,
}

/// Counters of escrow traffic since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EscrowStats {
    /// Transfers of rights this region made (rebalancing, answers, leaving).
    pub transfers: u64,
    /// Tokens of rights those transfers moved.
    pub tokens_moved: u64,
    /// Rights requests this region sent after refusing a spend.
    pub rights_requests: u64,
}

/// Keys changed since the state was last persisted.
#[derive(Debug, Default)]
struct Dirty {
    users: BTreeSet<String>,
    seqs: BTreeSet<(RegionId, String)>,
    records: BTreeSet<(String, String)>,
}

/// One region's replicated ledger.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    core: Core,
    state: Durable,
    /// Our writes not yet durable: (seq, user, our entry at that write).
    pending: Vec<(u64, String, Account)>,
    /// Replies waiting for their write to be durable.
    awaiting: Vec<(u64, u64, Receipt, Option<IdempotencyKey>)>,
    durable_seq: u64,
    /// When the oldest durable-but-unsent write became durable.
    ready_since: Option<u64>,
    /// Who is up, and where they listen.
    membership: Membership,
    /// Left the membership after a graceful leave drained.
    left: bool,
    demand: Demand,
    last_rebalance: BTreeMap<String, u64>,
    last_request: BTreeMap<String, u64>,
    /// When we last accepted rights for a user from a region.
    accepted_at: BTreeMap<(String, RegionId), u64>,
    next_anti_entropy: u64,
    next_prune: u64,
    anti_entropy_cursor: usize,
    leaving: bool,
    outbox: VecDeque<Output>,
    /// Users whose account changed since [`Replica::drain_changed`]; recorded
    /// only with [`ReplicaConfig::track_changes`], so nothing accumulates when
    /// no one drains it.
    changed: BTreeSet<String>,
    /// What changed since the last [`Replica::prepare_persist`].
    dirty: Dirty,
    /// When each recent durable write of ours became durable: (seq, ms).
    write_times: VecDeque<(u64, u64)>,
    /// Idempotency records made here, with the write that made them, not yet
    /// sent to peers.
    unsent_records: Vec<(u64, (String, String))>,
    /// Keyed requests waiting for peers to say whether they know the key.
    asking: Vec<Asking>,
    /// How many persists were prepared.
    prepared: u64,
    /// Replays waiting for the flush of persist number `.0`: (number, request,
    /// receipt). A record may have arrived from a peer a moment ago and not be
    /// durable here yet; answering from it before it is would let a crash
    /// forget it, and the next retry here be charged again.
    replays: Vec<(u64, u64, Receipt)>,
    /// The last flush failed; new writes are refused until one succeeds.
    storage_failing: bool,
    /// Per peer: its watermark of us, from its latest digest.
    acked_by: BTreeMap<RegionId, u64>,
    stats: EscrowStats,
}

/// A keyed client request held back until peers say whether they know its key.
#[derive(Debug)]
struct Asking {
    request: u64,
    user: String,
    command: Command,
    key: IdempotencyKey,
    /// Peers that have not answered yet.
    waiting_on: BTreeSet<RegionId>,
    /// When it runs anyway.
    deadline: u64,
}

/// Idempotency records per message: with keys and fingerprints of a few
/// hundred bytes, well under [`crate::message::MAX_MESSAGE_BYTES`].
const RECORDS_PER_MESSAGE: usize = 1024;

/// How often per-user timing state is pruned.
const PRUNE_EVERY_MS: u64 = 10_000;

/// At most this many write times are kept for lag reporting.
const WRITE_TIMES_KEPT: usize = 100_000;

impl Replica {
    /// A replica starting from nothing.
    pub fn new(config: ReplicaConfig) -> Self {
        Self::restore(config, Durable::default())
    }

    /// A replica restarting from what survived.
    pub fn restore(config: ReplicaConfig, state: Durable) -> Self {
        let demand = Demand::new(config.demand_half_life_ms);
        let identity = NodeIdentity {
            region: config.core.region,
            addr: config.addr,
            generation: config.generation,
        };
        let membership = Membership::new(identity, &config.membership, config.seed);
        Self {
            core: Core::new(config.core.clone()),
            durable_seq: state.own_seq,
            state,
            config,
            pending: Vec::new(),
            awaiting: Vec::new(),
            ready_since: None,
            membership,
            left: false,
            demand,
            last_rebalance: BTreeMap::new(),
            last_request: BTreeMap::new(),
            accepted_at: BTreeMap::new(),
            next_anti_entropy: 0,
            next_prune: 0,
            anti_entropy_cursor: 0,
            leaving: false,
            outbox: VecDeque::new(),
            changed: BTreeSet::new(),
            dirty: Dirty::default(),
            write_times: VecDeque::new(),
            unsent_records: Vec::new(),
            asking: Vec::new(),
            prepared: 0,
            replays: Vec::new(),
            storage_failing: false,
            acked_by: BTreeMap::new(),
            stats: EscrowStats::default(),
        }
    }

    fn me(&self) -> RegionId {
        self.config.core.region
    }

    /// What a flush must write now: everything changed since the last call, as of
    /// ticket [`Replica::written`]. The shell writes it, makes it durable, then
    /// calls [`Replica::flushed`] with [`Persist::ticket`]; only then do replies
    /// and our new entries leave the region.
    pub fn prepare_persist(&mut self) -> Persist {
        let dirty = std::mem::take(&mut self.dirty);
        let mut own: BTreeMap<String, (u64, Account)> = BTreeMap::new();
        for user in &dirty.users {
            if let Some((seq, entry)) = self.state.own.get(user.as_str()) {
                own.insert(user.clone(), (*seq, entry.unpack()));
            }
        }
        // Writes not yet flushed become durable with this persist: promote them
        // on disk now, exactly as `flushed` will in memory.
        for (seq, user, delta) in &self.pending {
            own.insert(user.clone(), (*seq, delta.clone()));
        }
        self.prepared += 1;
        Persist {
            ticket: self.state.own_seq,
            number: self.prepared,
            accounts: dirty
                .users
                .iter()
                .filter_map(|u| Some((u.clone(), self.state.accounts.get(u.as_str())?.unpack())))
                .collect(),
            seqs: dirty
                .seqs
                .into_iter()
                .filter_map(|k| {
                    let seq = *self.state.seqs.get(&k)?;
                    Some((k, seq))
                })
                .collect(),
            own: own.into_iter().collect(),
            records: dirty
                .records
                .into_iter()
                .map(|k| {
                    let record = self.state.records.get(&k).cloned();
                    (k, record)
                })
                .collect(),
            meta: Meta {
                own_seq: self.state.own_seq,
                sent_upto: self.state.sent_upto,
                watermarks: self
                    .state
                    .watermarks
                    .iter()
                    .map(|(&r, &w)| (r, w))
                    .collect(),
            },
        }
    }

    /// Storage could not make `persist` durable. Everything it carried is marked
    /// changed again, so the next [`Replica::prepare_persist`] writes it (at its
    /// current value); until a flush succeeds, new writes are refused
    /// ([`Refusal::StorageFailing`]), so a failing disk is answered at once
    /// instead of piling up writes whose outcome nobody could know.
    pub fn flush_failed(&mut self, persist: Persist) {
        self.storage_failing = true;
        for (user, _) in persist.accounts {
            self.dirty.users.insert(user);
        }
        for (user, _) in persist.own {
            self.dirty.users.insert(user);
        }
        for (key, _) in persist.seqs {
            self.dirty.seqs.insert(key);
        }
        for (id, _) in persist.records {
            self.dirty.records.insert(id);
        }
    }

    /// Whether anything waits for a flush that no new write would trigger: a
    /// replay waiting for its record to be durable here. The shell flushes
    /// when [`Replica::written`] moves or this says so.
    pub fn needs_flush(&self) -> bool {
        !self.replays.is_empty()
    }

    /// Forgets idempotency records older than the TTL. Returns how many.
    pub fn expire_records(&mut self, now: u64) -> usize {
        let ttl = self.config.core.idempotency_ttl_ms;
        let expired = self.state.records.expired(now, ttl);
        for key in &expired {
            self.state.records.remove(key);
            self.dirty.records.insert(key.clone());
        }
        expired.len()
    }

    /// Our last write's ticket: a flush covering it makes everything so far durable.
    pub fn written(&self) -> u64 {
        self.state.own_seq
    }

    /// Every account this replica knows.
    pub fn accounts(&self) -> BTreeMap<String, Account> {
        unpack_all(&self.state.accounts)
    }

    /// One user's account as this replica knows it, if it knows the user.
    pub fn account(&self, user: &str) -> Option<Account> {
        self.state.accounts.get(user).map(Packed::unpack)
    }

    /// Whether this replica holds an account for `user`.
    pub fn knows(&self, user: &str) -> bool {
        self.state.accounts.contains_key(user)
    }

    /// Users whose account changed since the last call.
    pub fn drain_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }

    /// Joins the cluster through these seed addresses (any member will do).
    /// Harmless to repeat; the shell repeats it until a peer is up.
    pub fn join(&mut self, now: u64, seeds: &[SocketAddr]) {
        self.membership.join(now, seeds);
        self.pump_membership();
    }

    /// A membership packet from the network.
    pub fn gossip(&mut self, now: u64, bytes: &[u8]) {
        self.membership.handle_data(now, bytes);
        self.pump_membership();
    }

    /// Every other region this node has seen, and whether it is up.
    pub fn members(&self) -> &BTreeMap<RegionId, MemberView> {
        self.membership.regions()
    }

    /// Whether a graceful leave has finished: rights handed over, everything
    /// sent, and the membership told.
    pub fn left(&self) -> bool {
        self.left
    }

    /// Replication lag of each peer that is up, at `now`.
    pub fn lag(&self, now: u64) -> BTreeMap<RegionId, PeerLag> {
        self.peers()
            .map(|peer| {
                let mark = self.acked_by.get(&peer).copied().unwrap_or(0);
                let entries = self.durable_seq.saturating_sub(mark);
                // Write times are in seq order: the oldest write the peer lacks.
                let first = self.write_times.partition_point(|(seq, _)| *seq <= mark);
                let ms = match self.write_times.get(first) {
                    Some((_, at)) if entries > 0 => now.saturating_sub(*at),
                    _ => 0,
                };
                (peer, PeerLag { entries, ms })
            })
            .collect()
    }

    /// Peers that are up, by the membership.
    fn peers(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.membership
            .regions()
            .iter()
            .filter(|(_, v)| v.up)
            .map(|(&r, _)| r)
    }

    /// Escrow counters since start.
    pub fn stats(&self) -> EscrowStats {
        self.stats
    }

    /// This node's current membership identity.
    pub fn identity(&self) -> NodeIdentity {
        self.membership.identity()
    }

    fn pump_membership(&mut self) {
        while let Some((to, bytes)) = self.membership.poll_send() {
            self.outbox.push_back(Output::Gossip { to, bytes });
        }
        while let Some(event) = self.membership.poll_event() {
            // Catch up with a peer that comes up at once (a new node pulls its
            // snapshot this way) rather than at its anti-entropy turn.
            if let MemberEvent::Up(region, _) = event
                && !self.leaving
            {
                let digest = self.digest();
                self.send(region, &digest);
            }
        }
    }

    fn digest(&self) -> Message {
        let mut watermarks: Vec<(RegionId, u64)> = self
            .state
            .watermarks
            .iter()
            .map(|(&r, &w)| (r, w))
            .collect();
        watermarks.push((self.me(), self.durable_seq));
        Message::Digest { watermarks }
    }

    /// A client command. The reply comes out of [`Replica::poll_output`], after
    /// the write is durable.
    ///
    /// A keyed request whose key this region has no record of may be a retry
    /// that failed over from another region before that region's deltas (and
    /// the record with them) arrived. Unless this region served the user's
    /// latest spend it knows of, within [`ReplicaConfig::local_customer_ms`]
    /// (a steady local customer), the live peers are asked first
    /// ([`Message::RecordQuery`]): a peer holding the record has it replayed
    /// here, one still executing it has the retry told to wait (409), and when
    /// all say they do not know it, or [`ReplicaConfig::key_query_ms`] passes
    /// (a partition, a region down), the request runs. Requests without a key
    /// never wait; keyed ones wait for the slowest peer's answer (bounded), and
    /// only when the user is not a steady local customer.
    pub fn client(
        &mut self,
        now: u64,
        request: u64,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
    ) {
        if let Some(k) = &key
            && !self.leaving
            && !self.faults().forget_idempotency
            && !self
                .state
                .records
                .contains(&(k.scope.clone(), k.key.clone()))
        {
            if self
                .asking
                .iter()
                .any(|a| a.key.scope == k.scope && a.key.key == k.key)
            {
                self.reply(request, Err(Refusal::KeyInUse));
                return;
            }
            let local_customer = self.served_last(user, now);
            let peers: BTreeSet<RegionId> = self.peers().collect();
            if !local_customer && !peers.is_empty() {
                let query = Message::RecordQuery {
                    scope: k.scope.clone(),
                    key: k.key.clone(),
                };
                for &peer in &peers {
                    self.send(peer, &query);
                }
                self.asking.push(Asking {
                    request,
                    user: user.to_owned(),
                    command,
                    key: k.clone(),
                    waiting_on: peers,
                    deadline: now + self.config.key_query_ms,
                });
                return;
            }
        }
        self.execute(now, request, user, command, key);
    }

    /// Runs a client command here, now.
    fn execute(
        &mut self,
        now: u64,
        request: u64,
        user: &str,
        command: Command,
        key: Option<IdempotencyKey>,
    ) {
        if self.leaving {
            let balance = self.receipt(user).balance;
            self.reply(
                request,
                Err(Refusal::TokensInOtherRegion {
                    here: 0,
                    elsewhere: balance,
                }),
            );
            return;
        }
        let forget = self.faults().forget_idempotency;
        let stored = key.as_ref().filter(|_| !forget).and_then(|k| {
            self.state
                .records
                .get(&(k.scope.clone(), k.key.clone()))
                .cloned()
        });
        if self.storage_failing && stored.is_none() {
            // A replay needs no write; anything else would.
            self.reply(request, Err(Refusal::StorageFailing));
            return;
        }

        let mut account = self.state.account(user);
        let spent_before = self.spent_at(&account, self.me());
        match self
            .core
            .execute(&mut account, command, key.as_ref(), stored, now)
        {
            Err(refusal) => {
                if let Refusal::TokensInOtherRegion { .. } = refusal {
                    let wanted = match command {
                        Command::ChargeCall => self.config.core.meme_cost,
                        Command::Adjust(a) => a.unsigned_abs(),
                    };
                    self.ask_for_rights(user, wanted, now);
                }
                self.reply(request, Err(refusal));
            }
            Ok(done) if done.replayed => {
                if self.faults().ack_before_flush {
                    self.outbox.push_back(Output::Reply {
                        request,
                        result: Ok(done.receipt),
                        replayed: true,
                    });
                } else {
                    // Everything the replica holds now, the record included, is
                    // in the next persist at the latest.
                    self.replays
                        .push((self.prepared + 1, request, done.receipt));
                }
            }
            Ok(done) => {
                let spent = self.spent_at(&account, self.me()) - spent_before;
                self.state.set_account(user, &account);
                let record = done
                    .record
                    .zip(key.as_ref())
                    .map(|(record, k)| ((k.scope.clone(), k.key.clone()), record));
                let seq = self.write_own(user, &account);
                if let Some((id, mut record)) = record {
                    record.seq = seq;
                    self.dirty.records.insert(id.clone());
                    self.state.records.insert(id.clone(), record);
                    self.unsent_records.push((seq, id));
                }
                self.demand.observe(user, self.me(), spent, now);
                if self.faults().ack_before_flush {
                    self.reply(request, Ok(done.receipt));
                    if let Some(k) = &key {
                        self.core.finish(k);
                    }
                } else {
                    self.awaiting.push((seq, request, done.receipt, key));
                }
                self.rebalance(user, now);
            }
        }
    }

    /// The user's standing as this replica sees it.
    pub fn receipt(&self, user: &str) -> Receipt {
        let account = self.state.account(user);
        self.core.receipt(&account)
    }

    /// The user's standing, and the write ticket that must be durable before it
    /// may be shown: the user's latest write of ours not yet durable, or 0.
    /// (What peers replicated to us needs no wait: they hold it durably.)
    pub fn receipt_durable_at(&self, user: &str) -> (Receipt, u64) {
        let ticket = self
            .pending
            .iter()
            .rev()
            .find(|(_, u, _)| u == user)
            .map_or(0, |(seq, ..)| *seq);
        (self.receipt(user), ticket)
    }

    /// Storage made persist number `number` durable, and with it every write
    /// up to `ticket` (an empty persist counts: nothing was left to write).
    pub fn flushed(&mut self, now: u64, ticket: u64, number: u64) {
        self.storage_failing = false;
        if self.replays.iter().any(|(n, ..)| *n <= number) {
            let (done, later): (Vec<_>, Vec<_>) =
                self.replays.drain(..).partition(|(n, ..)| *n <= number);
            self.replays = later;
            for (_, request, receipt) in done {
                self.outbox.push_back(Output::Reply {
                    request,
                    result: Ok(receipt),
                    replayed: true,
                });
            }
        }
        let ticket = ticket.min(self.state.own_seq);
        if ticket <= self.durable_seq {
            return;
        }
        self.durable_seq = ticket;
        self.write_times.push_back((ticket, now));
        if self.write_times.len() > WRITE_TIMES_KEPT {
            self.write_times.pop_front();
        }
        let (done, later): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(seq, ..)| *seq <= ticket);
        self.pending = later;
        for (seq, user, delta) in done {
            self.state
                .own
                .insert(user.into_boxed_str(), (seq, Packed::pack(&delta)));
        }
        if self.ready_since.is_none() && self.durable_seq > self.state.sent_upto {
            self.ready_since = Some(now);
        }
        let (done, later): (Vec<_>, Vec<_>) = self
            .awaiting
            .drain(..)
            .partition(|(seq, ..)| *seq <= ticket);
        self.awaiting = later;
        for (_, request, receipt, key) in done {
            if let Some(k) = &key {
                self.core.finish(k);
            }
            self.reply(request, Ok(receipt));
        }
    }

    /// Time passes: close batches, run anti-entropy.
    pub fn tick(&mut self, now: u64) {
        if !self.asking.is_empty() {
            self.run_overdue_asks(now);
        }
        if let Some(since) = self.ready_since
            && now.saturating_sub(since) >= self.config.batch_age_ms
        {
            self.send_batch();
        }
        if now >= self.next_anti_entropy {
            self.next_anti_entropy = now + self.config.anti_entropy_ms;
            let peers: Vec<RegionId> = self.peers().collect();
            if !peers.is_empty() {
                let to = peers[self.anti_entropy_cursor % peers.len()];
                self.anti_entropy_cursor = self.anti_entropy_cursor.wrapping_add(1);
                let digest = self.digest();
                self.send(to, &digest);
            }
        }
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY_MS;
            self.prune(now);
        }
        self.membership.tick(now);
        // A graceful leave ends by telling the membership, once every handed-over
        // right has been made durable and sent.
        if self.leaving && !self.left && self.drained() {
            self.membership.leave(now);
            self.left = true;
        }
        self.pump_membership();
    }

    /// Forgets per-user timing state that can no longer change a decision, so
    /// memory follows the users active in the last seconds, not every user ever.
    fn prune(&mut self, now: u64) {
        self.demand.prune(now);
        let config = &self.config;
        let recent = |since: u64, window: u64| now.saturating_sub(since) < window;
        self.last_rebalance
            .retain(|_, &mut t| recent(t, config.rebalance_every_ms));
        self.last_request
            .retain(|_, &mut t| recent(t, config.rights_request_every_ms));
        self.accepted_at
            .retain(|_, &mut t| recent(t, config.bounce_cooldown_ms));
    }

    /// Leave gracefully: hand every right this region holds to live peers, so
    /// nothing is stranded. Keep ticking and flushing until [`Replica::drained`].
    pub fn leave(&mut self, now: u64) {
        self.leaving = true;
        let me = self.me();
        let users: Vec<String> = self.state.accounts.keys().map(|u| u.to_string()).collect();
        for user in users {
            let Some(account) = self.account(&user) else {
                continue;
            };
            let rights = account.rights(&self.config.core.genesis, me);
            // The busiest live peer for this user, lowest id among equals.
            let Some(to) = self
                .peers()
                .max_by_key(|&r| (self.demand.milli_rate(&user, r, now), std::cmp::Reverse(r)))
            else {
                return;
            };
            if rights > 0 {
                self.transfer(&user, to, rights);
            }
        }
    }

    /// Whether everything written has been made durable and sent.
    pub fn drained(&self) -> bool {
        self.pending.is_empty() && self.state.sent_upto >= self.state.own_seq
    }

    /// Bytes from a peer.
    pub fn peer(&mut self, now: u64, from: RegionId, bytes: &[u8]) {
        // Undecodable bytes are dropped: anti-entropy resends whatever mattered.
        let Ok(message) = Message::decode(bytes) else {
            return;
        };
        match message {
            Message::Deltas {
                from_seq,
                to_seq,
                items,
                records,
            } => {
                self.take_peer_records(records);
                for item in items.into_iter().filter(|i| i.origin == from) {
                    self.merge_item(item, now);
                }
                let w = self.state.watermarks.entry(from).or_insert(0);
                if from_seq <= *w {
                    *w = (*w).max(to_seq);
                }
            }
            Message::Digest { watermarks } => {
                let me = self.me();
                if let Some(&(_, mark)) = watermarks.iter().find(|(r, _)| *r == me) {
                    self.acked_by.insert(from, mark);
                    // Forget write times every peer has confirmed.
                    let lowest = self
                        .peers()
                        .map(|p| self.acked_by.get(&p).copied().unwrap_or(0))
                        .min()
                        .unwrap_or(mark);
                    while self
                        .write_times
                        .front()
                        .is_some_and(|(seq, _)| *seq <= lowest)
                    {
                        self.write_times.pop_front();
                    }
                }
                self.answer_digest(from, &watermarks)
            }
            Message::CatchUp {
                items,
                covered,
                records,
            } => {
                self.take_peer_records(records);
                for item in items {
                    self.merge_item(item, now);
                }
                for c in covered {
                    if c.origin != self.me() {
                        // Contiguous with what we hold, or it says nothing: the
                        // answer may be to a digest we sent before a crash
                        // (found by the simulator's soak, seed 306992).
                        let w = self.state.watermarks.entry(c.origin).or_insert(0);
                        if c.after <= *w {
                            *w = (*w).max(c.upto);
                        }
                    }
                }
            }
            Message::RecordQuery { scope, key } => {
                let id = (scope, key);
                let known = match self.state.records.get(&id) {
                    Some(_) if self.core.in_flight(&id.0, &id.1) => KeyState::InFlight,
                    Some(record) => KeyState::Held(record.clone()),
                    None => KeyState::Unknown,
                };
                let (scope, key) = id;
                self.send(from, &Message::RecordAnswer { scope, key, known });
            }
            Message::RecordAnswer { scope, key, known } => {
                self.key_answered(now, from, scope, key, known)
            }
            Message::RightsRequest { user, amount } => {
                self.answer_rights_request(from, &user, amount, now)
            }
        }
    }

    /// A peer said what it knows of a key a held-back request carries.
    fn key_answered(
        &mut self,
        now: u64,
        from: RegionId,
        scope: String,
        key: String,
        known: KeyState,
    ) {
        let Some(at) = self
            .asking
            .iter()
            .position(|a| a.key.scope == scope && a.key.key == key)
        else {
            return;
        };
        match known {
            KeyState::Held(record) => {
                let asking = self.asking.swap_remove(at);
                self.take_peer_records(vec![(scope, key, record)]);
                // Now answered from the record: a replay, or a refusal if the
                // key was used for another request.
                self.execute(
                    now,
                    asking.request,
                    &asking.user,
                    asking.command,
                    Some(asking.key),
                );
            }
            KeyState::InFlight => {
                let asking = self.asking.swap_remove(at);
                self.reply(asking.request, Err(Refusal::KeyInUse));
            }
            KeyState::Unknown => {
                self.asking[at].waiting_on.remove(&from);
                if self.asking[at].waiting_on.is_empty() {
                    let asking = self.asking.swap_remove(at);
                    self.execute(
                        now,
                        asking.request,
                        &asking.user,
                        asking.command,
                        Some(asking.key),
                    );
                }
            }
        }
    }

    /// Whether this region served `user`'s latest spend it knows of, within
    /// [`ReplicaConfig::local_customer_ms`].
    fn served_last(&self, user: &str, now: u64) -> bool {
        let Some(here) = self.demand.last_seen(user, self.me()) else {
            return false;
        };
        now.saturating_sub(here) < self.config.local_customer_ms
            && self
                .peers()
                .all(|r| self.demand.last_seen(user, r).is_none_or(|t| t <= here))
    }

    /// Held-back requests whose peers did not all answer in time run now.
    fn run_overdue_asks(&mut self, now: u64) {
        let (due, waiting): (Vec<Asking>, Vec<Asking>) = std::mem::take(&mut self.asking)
            .into_iter()
            .partition(|a| a.deadline <= now);
        self.asking = waiting;
        for a in due {
            self.execute(now, a.request, &a.user, a.command, Some(a.key));
        }
    }

    /// Stores records from a peer; the first answer to a key stands, so a
    /// record we hold is never replaced.
    fn take_peer_records(&mut self, records: Vec<(String, String, IdempotencyRecord)>) {
        for (scope, key, record) in records {
            let id = (scope, key);
            if self.state.records.insert_if_absent(id.clone(), record) {
                self.dirty.records.insert(id);
            }
        }
    }

    fn faults(&self) -> Faults {
        if cfg!(feature = "simulation") {
            self.config.faults
        } else {
            Faults::default()
        }
    }

    fn reply(&mut self, request: u64, result: Result<Receipt, Refusal>) {
        self.outbox.push_back(Output::Reply {
            request,
            result,
            replayed: false,
        });
    }

    fn send(&mut self, to: RegionId, message: &Message) {
        // Only members that are up are sent to; others catch up later by
        // anti-entropy.
        if let Some(view) = self.membership.regions().get(&to)
            && view.up
            && let Ok(bytes) = message.encode()
        {
            let addr = view.identity.addr;
            self.outbox.push_back(Output::Send { to, addr, bytes });
        }
    }

    fn spent_at(&self, account: &Account, region: RegionId) -> u64 {
        account.entry(region).map_or(0, |e| e.spent())
    }

    /// Records that our entry for `user` changed to the one in `account` (just
    /// stored; passed in so the hot path does not unpack it again); returns the
    /// write's ticket.
    fn write_own(&mut self, user: &str, account: &Account) -> u64 {
        self.state.own_seq += 1;
        let delta = account.delta_of(self.me());
        self.pending
            .push((self.state.own_seq, user.to_owned(), delta));
        if self.config.track_changes {
            self.changed.insert(user.to_owned());
        }
        self.dirty.users.insert(user.to_owned());
        self.state.own_seq
    }

    fn transfer(&mut self, user: &str, to: RegionId, amount: u64) -> bool {
        let mut account = self.state.account(user);
        if self
            .core
            .apply(&mut account, Op::Transfer { to, amount })
            .is_err()
        {
            return false;
        }
        self.state.set_account(user, &account);
        self.write_own(user, &account);
        self.stats.transfers += 1;
        self.stats.tokens_moved += amount;
        true
    }

    fn merge_item(&mut self, item: Item, now: u64) {
        let me = self.me();
        // Peers hold only durable versions of our entry, which we hold too.
        if item.origin == me {
            return;
        }
        let additive = self.faults().additive_merge;
        let mut account = self.state.account(&item.user);
        let account = &mut account;
        let before = account.entry(item.origin).map_or(0, |e| e.spent());
        if additive {
            #[cfg(feature = "simulation")]
            account.merge_additive(&item.delta);
        } else {
            account.merge(&item.delta);
        }
        let after = account.entry(item.origin).map_or(0, |e| e.spent());
        if self.config.track_changes {
            self.changed.insert(item.user.clone());
        }
        self.dirty.users.insert(item.user.clone());
        self.dirty.seqs.insert((item.origin, item.user.clone()));
        let accepted = account.accept_transfers(me).is_some();
        self.state.set_account(&item.user, account);
        let seq = self
            .state
            .seqs
            .entry((item.origin, item.user.clone()))
            .or_insert(0);
        *seq = (*seq).max(item.seq);
        self.demand
            .observe(&item.user, item.origin, after.saturating_sub(before), now);
        if accepted {
            self.accepted_at
                .insert((item.user.clone(), item.origin), now);
            self.write_own(&item.user, account);
        }
        self.rebalance(&item.user, now);
    }

    fn send_batch(&mut self) {
        self.ready_since = None;
        let (from, to) = (self.state.sent_upto, self.durable_seq);
        if to <= from {
            return;
        }
        let mut items: Vec<Item> = self
            .state
            .own
            .iter()
            .filter(|(_, (seq, _))| *seq > from && *seq <= to)
            .map(|(user, (seq, delta))| Item {
                origin: self.me(),
                seq: *seq,
                user: user.to_string(),
                delta: delta.unpack(),
            })
            .collect();
        items.sort_by_key(|i| i.seq);
        // Split into messages of about `batch_bytes`, each covering its own range.
        let mut start = from;
        let mut chunk: Vec<Item> = Vec::new();
        let mut size = 0usize;
        let peers: Vec<RegionId> = self.peers().collect();
        let flush = |replica: &mut Replica,
                     start: u64,
                     end: u64,
                     chunk: Vec<Item>,
                     records: Vec<(String, String, IdempotencyRecord)>| {
            let message = Message::Deltas {
                from_seq: start,
                to_seq: end,
                items: chunk,
                records,
            };
            for &peer in &peers {
                replica.send(peer, &message);
            }
        };
        for item in items {
            size += item.user.len() + 64;
            let seq = item.seq;
            chunk.push(item);
            if size >= self.config.batch_bytes {
                flush(self, start, seq, std::mem::take(&mut chunk), Vec::new());
                start = seq;
                size = 0;
            }
        }
        // The records ride with the last message, which completes the range;
        // beyond a few thousand (under the message limit) in messages of their own.
        let mut records = self.take_records(to);
        let rest = records.split_off(records.len().min(RECORDS_PER_MESSAGE));
        flush(self, start, to, chunk, records);
        for more in rest.chunks(RECORDS_PER_MESSAGE) {
            flush(self, to, to, Vec::new(), more.to_vec());
        }
        self.state.sent_upto = to;
    }

    /// The idempotency records of our writes up to `durable`, not sent before.
    fn take_records(&mut self, durable: u64) -> Vec<(String, String, IdempotencyRecord)> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent_records)
            .into_iter()
            .partition(|(seq, _)| *seq <= durable);
        self.unsent_records = later;
        ready
            .into_iter()
            .filter_map(|(_, id)| {
                let record = self.state.records.get(&id)?.clone();
                Some((id.0, id.1, record))
            })
            .collect()
    }

    fn answer_digest(&mut self, asker: RegionId, theirs: &[(RegionId, u64)]) {
        let theirs: BTreeMap<RegionId, u64> = theirs.iter().copied().collect();
        let me = self.me();
        let mut items = Vec::new();
        let mut covered = Vec::new();
        let budget = self.config.batch_bytes;
        let mut size = 0usize;
        // Our own durable entries.
        let known = theirs.get(&me).copied().unwrap_or(0);
        if self.durable_seq > known {
            let mut mine: Vec<Item> = self
                .state
                .own
                .iter()
                .filter(|(_, (seq, _))| *seq > known)
                .map(|(user, (seq, delta))| Item {
                    origin: me,
                    seq: *seq,
                    user: user.to_string(),
                    delta: delta.unpack(),
                })
                .collect();
            mine.sort_by_key(|i| i.seq);
            let upto = take_within(&mut mine, budget, &mut size).unwrap_or(self.durable_seq);
            items.extend(mine);
            covered.push(Covered {
                origin: me,
                after: known,
                upto: upto.min(self.durable_seq),
            });
        }
        // Everything we hold of third regions (forwarding).
        let origins: Vec<(RegionId, u64)> = self
            .state
            .watermarks
            .iter()
            .map(|(&r, &w)| (r, w))
            .collect();
        for (origin, mark) in origins {
            if origin == asker || origin == me {
                continue;
            }
            let known = theirs.get(&origin).copied().unwrap_or(0);
            let mut found: Vec<Item> = self
                .state
                .seqs
                .range((origin, String::new())..)
                .take_while(|((o, _), _)| *o == origin)
                .filter(|(_, seq)| **seq > known)
                .map(|((_, user), &seq)| Item {
                    origin,
                    seq,
                    user: user.clone(),
                    delta: self.state.account(user).delta_of(origin),
                })
                .collect();
            if found.is_empty() && mark <= known {
                continue;
            }
            found.sort_by_key(|i| i.seq);
            let upto = take_within(&mut found, budget, &mut size).unwrap_or(mark);
            items.extend(found);
            covered.push(Covered {
                origin,
                after: known,
                upto: upto.min(mark),
            });
        }
        let records = self.records_for(&mut covered);
        if !items.is_empty() || !covered.is_empty() {
            self.send(
                asker,
                &Message::CatchUp {
                    items,
                    covered,
                    records,
                },
            );
        }
    }

    /// The idempotency records of the writes a catch-up covers: for each origin,
    /// those made by its writes the asker lacks, up to what is covered. Past
    /// [`RECORDS_PER_MESSAGE`] the covered range is cut short before the first
    /// record left out, so the asker asks again for the rest.
    fn records_for(&self, covered: &mut [Covered]) -> Vec<(String, String, IdempotencyRecord)> {
        let mut out = Vec::new();
        for c in covered.iter_mut() {
            for (seq, (scope, key), record) in
                self.state.records.of_writes(c.origin, c.after, c.upto)
            {
                if out.len() >= RECORDS_PER_MESSAGE {
                    c.upto = seq - 1;
                    break;
                }
                out.push((scope.clone(), key.clone(), record.clone()));
            }
        }
        out
    }

    fn answer_rights_request(&mut self, asker: RegionId, user: &str, amount: u64, now: u64) {
        if self.config.core.policy != SpendPolicy::Escrow || self.leaving {
            return;
        }
        // Keep what our own demand needs over the horizon; give the asker the rest
        // it wants (the policy decides how much).
        let keep =
            self.demand.milli_rate(user, self.me(), now) * self.config.keep_horizon_ms / 1_000_000;
        let account = self.state.account(user);
        let give = answer_request(
            &account,
            &self.config.core.genesis,
            self.me(),
            amount,
            keep,
            &self.config.rebalance,
        );
        if let Some(give) = give {
            self.transfer(user, asker, give);
        }
    }

    fn ask_for_rights(&mut self, user: &str, amount: u64, now: u64) {
        if self.config.core.policy != SpendPolicy::Escrow {
            return;
        }
        let last = self.last_request.get(user).copied();
        if last.is_some_and(|t| now.saturating_sub(t) < self.config.rights_request_every_ms) {
            return;
        }
        self.last_request.insert(user.to_owned(), now);
        let account = self.state.account(user);
        let holders: Vec<RegionId> = self
            .peers()
            .filter(|&r| account.rights(&self.config.core.genesis, r) > 0)
            .collect();
        let message = Message::RightsRequest {
            user: user.to_owned(),
            amount,
        };
        if !holders.is_empty() {
            self.stats.rights_requests += 1;
        }
        for to in holders {
            self.send(to, &message);
        }
    }

    fn rebalance(&mut self, user: &str, now: u64) {
        if self.config.core.policy != SpendPolicy::Escrow || self.leaving {
            return;
        }
        // Proactive moves need fresh evidence of spending. Each region plans
        // from its own view of demand elsewhere, and those views disagree (a
        // region cut off learns of old spends by catch-up and sees them as new
        // demand): without this, rights for a user nobody spends for went round
        // in cycles (A → B → C → A) until every rate decayed, and the cluster
        // never went quiet (the simulator's soak found it, about 4 runs in
        // 10,000). Explicit rights requests still answer any later need.
        let freshest = self
            .peers()
            .chain([self.me()])
            .filter_map(|r| self.demand.last_seen(user, r))
            .max();
        if freshest.is_none_or(|t| now.saturating_sub(t) >= self.config.rebalance_quiet_ms) {
            return;
        }
        let last = self.last_rebalance.get(user).copied();
        if last.is_some_and(|t| now.saturating_sub(t) < self.config.rebalance_every_ms) {
            return;
        }
        self.last_rebalance.insert(user.to_owned(), now);
        let me = self.me();
        let demand: BTreeMap<RegionId, u64> = self
            .peers()
            .chain([me])
            .map(|r| (r, self.demand.milli_rate(user, r, now)))
            .collect();
        let account = self.state.account(user);
        let plan = plan_transfers(
            &account,
            &self.config.core.genesis,
            me,
            &demand,
            &self.config.rebalance,
        );
        for t in plan {
            let bounced = self
                .accepted_at
                .get(&(user.to_owned(), t.to))
                .is_some_and(|&at| now.saturating_sub(at) < self.config.bounce_cooldown_ms);
            if !bounced {
                self.transfer(user, t.to, t.amount);
            }
        }
    }
}

/// Keeps the longest prefix of `items` (sorted by seq) within `budget` bytes in
/// total; returns the last kept seq if anything was cut.
fn take_within(items: &mut Vec<Item>, budget: usize, size: &mut usize) -> Option<u64> {
    let mut keep = 0;
    for item in items.iter() {
        let cost = item.user.len() + 64;
        if *size + cost > budget && keep > 0 {
            break;
        }
        *size += cost;
        keep += 1;
    }
    if keep < items.len() {
        items.truncate(keep);
        items.last().map(|i| i.seq)
    } else {
        None
    }
}

fn unpack_all(packed: &BTreeMap<Box<str>, Packed<Account>>) -> BTreeMap<String, Account> {
    packed
        .iter()
        .map(|(user, account)| (user.to_string(), account.unpack()))
        .collect()
}
