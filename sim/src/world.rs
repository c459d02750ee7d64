//! One simulated run: regions running the real [`Replica`] core, a seeded network,
//! clients, faults, and the checker, stepped one simulated millisecond at a time.

use crate::checker::{Kind, Truth, Violation, exact_balance};
use crate::network::{InFlight, Network, NetworkConfig};
use crate::rng::{Rng, Zipf};
use ledger_crdt::{Account, Genesis, RegionId};
use maas_node::{
    ClientRequest, Command, Durable, Faults, IdempotencyKey, Millis, Persist, Receipt, Refusal,
    Replica, ReplicaConfig, Reply, RequestId, RulesConfig, Seq, SpendPolicy, Transmit,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The spend policy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Escrowed rights (production).
    Escrow,
    /// Plain async-replicated counters checking the local view (seed 000).
    Naive,
}

/// A deliberately broken core, to prove the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Spends skip the rights check.
    SkipRightsCheck,
    /// Merge adds instead of taking the maximum.
    AdditiveMerge,
    /// Replies before the write is flushed.
    AckBeforeFlush,
    /// Ignores stored idempotency records.
    ForgetIdempotency,
    /// Charges a repeated capture of a hold again.
    CaptureTwice,
    /// Gives away rights that open holds set aside.
    GiveAwayHeld,
    /// Never releases a hold at its TTL.
    KeepExpiredHolds,
    /// Takes the subscription that arrives last, not the highest version.
    SubscriptionByArrival,
    /// Makes statement lines for its own writes only, none for merges.
    StatementOwnOnly,
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: everything else random follows from it.
    pub seed: u64,
    /// Spend policy.
    pub policy: Policy,
    /// A broken core, or none.
    pub broken: Option<Broken>,
    /// Simulated ms with faults and load.
    pub fault_ms: u64,
    /// Simulated ms allowed for convergence after the faults stop.
    pub settle_ms: u64,
    /// Distinct users.
    pub users: usize,
    /// How many regions start, instead of the seed's choice of 3 to 5.
    pub regions: Option<usize>,
}

impl SimConfig {
    /// The defaults for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            policy: Policy::Escrow,
            broken: None,
            fault_ms: 6_000,
            settle_ms: 8_000,
            users: 24,
            regions: None,
        }
    }
}

/// How long after convergence the cluster must have stopped writing.
const QUIET_AFTER_MS: u64 = 3_000;

/// The figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
    /// Regions at the start.
    pub regions: usize,
    /// Spends acknowledged.
    pub acked_spends: u64,
    /// Spends refused.
    pub refused_spends: u64,
    /// Spends refused although the cluster as a whole held enough (escrow's cost).
    pub refused_with_enough: u64,
    /// Tokens spent beyond what users had, after convergence.
    pub overspend: u128,
    /// Simulated ms from the end of faults to convergence.
    pub converge_ms: Option<u64>,
    /// Mean simulated ms from a "tokens elsewhere" refusal to the next success.
    pub rebalance_ms: Option<f64>,
    /// Peer messages sent.
    pub messages: u64,
    /// Peer bytes sent.
    pub bytes: u64,
    /// Hash of everything every region output, in order.
    pub trace_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Paused { until: u64 },
    Crashed { until: u64 },
    Waiting { join_at: u64 },
    Leaving,
    Gone,
}

struct Region {
    id: RegionId,
    replica: Option<Replica>,
    disk: Durable,
    state: State,
    skew: i64,
    held: Vec<InFlight>,
    /// Its disk fails every flush until this simulated ms (a full disk).
    disk_fails_until: u64,
    /// What the statement lines on its disk add up to, per user.
    statement: BTreeMap<String, i128>,
}

struct Pending {
    key: String,
    region: RegionId,
    user: String,
    spend: Option<u64>,
    deadline: u64,
}

/// A simulation run.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    regions: Vec<Region>,
    genesis: Genesis,
    meme_cost: u64,
    /// Group commit interval of every region, ms.
    flush_every: u64,
    net: Network,
    net_cfg: NetworkConfig,
    zipf: Zipf,
    homes: Vec<usize>,
    truth: Truth,
    /// The command behind each key, so a retry sends the very same request.
    commands: BTreeMap<String, Command>,
    pending: BTreeMap<u64, Pending>,
    next_request: u64,
    waiting_since: BTreeMap<(String, RegionId), u64>,
    rebalance_samples: Vec<u64>,
    report: Report,
    trace: u64,
    /// Violations found while collecting outputs, reported at the end of the step.
    violations: Vec<Violation>,
    /// Once quiet: each region's last write ticket, which must not move again.
    quiet_marks: Option<Vec<Option<Seq>>>,
    /// Jobs by id, until their close is sent.
    jobs: BTreeMap<String, Job>,
    /// Jobs whose release was acknowledged, by region (holds are
    /// region-local): never to be charged there.
    released: BTreeSet<(String, RegionId)>,
    /// When each job's hold was first acknowledged, by region: a capture sent
    /// there a whole TTL later must find it expired.
    hold_acked: BTreeMap<(String, RegionId), u64>,
    /// Billing events sent, per user, and the last version used.
    billing: BTreeMap<String, (u64, Vec<BillingEvent>)>,
}

const TIMEOUT_MS: u64 = 1_000;

/// How long an open hold lives in the simulated regions.
const HOLD_TTL_MS: u64 = 1_000;

/// An AI meme being made: paid by a hold, captured or released later.
struct Job {
    user: String,
    region: usize,
    amount: u64,
    close_at: u64,
    /// The hold was acknowledged.
    opened: bool,
}

/// One billing event sent: (version, until, key, region).
type BillingEvent = (u64, u64, String, RegionId);

impl World {
    /// Sets up a run.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        // Drawn either way, so that every later draw of the seed is the same.
        let drawn = rng.range(3, 5) as usize;
        let n = cfg.regions.unwrap_or(drawn);
        let genesis =
            Genesis::new(rng.range(20, 150), (1..=n as u16).map(RegionId)).expect("genesis");
        let meme_cost = rng.range(1, 3);
        let flush_every = rng.range(1, 8);
        let net_cfg = NetworkConfig {
            latency_ms: (rng.range(5, 20), rng.range(40, 150)),
            loss: rng.unit() * 0.05,
            duplicate: rng.unit() * 0.05,
        };
        // One region may join mid-run.
        let joiner = rng.chance(0.3).then(|| rng.range(500, cfg.fault_ms / 2));
        let mut regions = Vec::new();
        for i in 0..n + usize::from(joiner.is_some()) {
            let id = RegionId(i as u16 + 1);
            let state = match joiner {
                Some(at) if i == n => State::Waiting { join_at: at },
                _ => State::Up,
            };
            let skew = rng.range(0, 400) as i64 - 200;
            regions.push(Region {
                id,
                replica: None,
                disk: Durable::default(),
                state,
                skew,
                held: Vec::new(),
                disk_fails_until: 0,
                statement: BTreeMap::new(),
            });
        }
        let homes = (0..cfg.users).map(|_| rng.index(n)).collect();
        let zipf = Zipf::new(cfg.users, 1.1);
        let mut world = Self {
            report: Report {
                regions: n,
                ..Report::default()
            },
            cfg,
            rng,
            now: 0,
            regions,
            genesis,
            meme_cost,
            flush_every,
            net: Network::default(),
            net_cfg,
            zipf,
            homes,
            truth: Truth::default(),
            commands: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 0,
            waiting_since: BTreeMap::new(),
            rebalance_samples: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            quiet_marks: None,
            jobs: BTreeMap::new(),
            released: BTreeSet::new(),
            hold_acked: BTreeMap::new(),
            billing: BTreeMap::new(),
        };
        for i in 0..world.regions.len() {
            if world.regions[i].state == State::Up {
                world.start(i);
            }
        }
        world
    }

    fn replica_config(&self, region: RegionId) -> ReplicaConfig {
        let policy = match (self.cfg.policy, self.cfg.broken) {
            (_, Some(Broken::SkipRightsCheck)) => SpendPolicy::SkipRightsCheck,
            (Policy::Naive, _) => SpendPolicy::NaiveLocalView,
            (Policy::Escrow, _) => SpendPolicy::Escrow,
        };
        let mut config = ReplicaConfig::new(RulesConfig {
            region,
            genesis: self.genesis.clone(),
            meme_cost: self.meme_cost,
            idempotency_ttl_ms: 24 * 3_600_000,
            policy,
        });
        config.track_changes = true;
        config.faults = Faults {
            additive_merge: self.cfg.broken == Some(Broken::AdditiveMerge),
            ack_before_flush: self.cfg.broken == Some(Broken::AckBeforeFlush),
            forget_idempotency: self.cfg.broken == Some(Broken::ForgetIdempotency),
            capture_twice: self.cfg.broken == Some(Broken::CaptureTwice),
            give_away_held: self.cfg.broken == Some(Broken::GiveAwayHeld),
            keep_expired_holds: self.cfg.broken == Some(Broken::KeepExpiredHolds),
            subscription_by_arrival: self.cfg.broken == Some(Broken::SubscriptionByArrival),
            statement_own_only: self.cfg.broken == Some(Broken::StatementOwnOnly),
        };
        // Short, so jobs nobody closes expire within a run.
        config.hold_ttl_ms = HOLD_TTL_MS;
        config
    }

    /// Starts (or restarts) region `i` from its disk. It joins through every
    /// other region's address, as a node started with all of them in `--join`;
    /// who is up is then the membership protocol's business, not the world's.
    fn start(&mut self, i: usize) {
        let id = self.regions[i].id;
        let now = self.local_now(i);
        let mut config = self.replica_config(id);
        config.addr = address_of(id);
        // A new life wins over the old one at the same address.
        config.generation = now + 1;
        config.seed = self.rng.next_u64();
        let mut replica = Replica::restore(config, self.regions[i].disk.clone());
        let seeds: Vec<SocketAddr> = self
            .regions
            .iter()
            .filter(|r| r.id != id)
            .map(|r| address_of(r.id))
            .collect();
        replica.join(Millis(now), &seeds);
        self.regions[i].replica = Some(replica);
        self.regions[i].state = State::Up;
        self.drain(i);
    }

    /// Stops region `i` without telling anyone: peers find out by probing.
    fn stop(&mut self, i: usize, state: State) {
        self.regions[i].replica = None;
        self.regions[i].state = state;
        self.regions[i].held.clear();
    }

    fn local_now(&self, i: usize) -> u64 {
        self.now.saturating_add_signed(self.regions[i].skew)
    }

    /// Runs to the end; the report says what was seen.
    pub fn run(mut self) -> Report {
        let end = self.cfg.fault_ms + self.cfg.settle_ms;
        while self.now < end {
            if let Err(v) = self.step() {
                self.report.violation = Some(v);
                break;
            }
            if self.now > self.cfg.fault_ms && self.report.converge_ms.is_some() {
                break;
            }
            self.now += 1;
        }
        if self.report.violation.is_none()
            && let Err(v) = self.finish()
        {
            self.report.violation = Some(v);
        }
        self.report.messages = self.net.messages;
        self.report.bytes = self.net.bytes;
        self.report.trace_hash = self.trace;
        if !self.rebalance_samples.is_empty() {
            let sum: u64 = self.rebalance_samples.iter().sum();
            self.report.rebalance_ms = Some(sum as f64 / self.rebalance_samples.len() as f64);
        }
        self.report
    }

    fn step(&mut self) -> Result<(), Violation> {
        let faulty = self.now < self.cfg.fault_ms;
        if faulty {
            self.inject_faults()?;
        } else if self.now == self.cfg.fault_ms {
            self.heal()?;
        }
        self.wake_regions()?;
        for message in self.net.due(self.now) {
            self.deliver(message);
        }
        if faulty {
            self.clients();
            self.close_jobs();
        }
        for i in 0..self.regions.len() {
            if self.regions[i].replica.is_none()
                || matches!(self.regions[i].state, State::Paused { .. })
            {
                continue;
            }
            let now = self.local_now(i);
            let flush = self.now.is_multiple_of(self.flush_every);
            let region = &mut self.regions[i];
            let disk_fails = self.now < region.disk_fails_until;
            if let Some(replica) = region.replica.as_mut() {
                if flush {
                    // Group commit: everything written so far reaches the disk.
                    // The same order as the node: write, make durable, then release.
                    let persist = replica.prepare_persist();
                    if disk_fails {
                        // Nothing reaches the disk; the node's shell does the same.
                        replica.handle_flush_failed(persist);
                    } else {
                        region.disk.apply(&persist);
                        replica.handle_flushed(Millis(now), persist.upto, persist.number);
                        let grant = self.genesis.grant();
                        let sums = &mut region.statement;
                        if let Err(detail) =
                            statement_adds_up(region.id, &region.disk, sums, &persist, grant)
                        {
                            self.violations.push(Violation {
                                at_ms: self.now,
                                invariant: "statement",
                                detail,
                            });
                        }
                    }
                }
                replica.handle_tick(Millis(now));
            }
            self.drain(i);
            self.check_region(i)?;
            if self.regions[i].state == State::Leaving
                && self.regions[i].replica.as_ref().is_some_and(Replica::left)
            {
                self.stop(i, State::Gone);
            }
        }
        self.timeouts();
        if let Some(v) = self.violations.pop() {
            return Err(v);
        }
        if !faulty
            && self.now.is_multiple_of(10)
            && self.report.converge_ms.is_none()
            && self.pending.is_empty()
            && self.converged()
        {
            self.report.converge_ms = Some(self.now - self.cfg.fault_ms);
        }
        self.check_quiet()
    }

    /// Quiescence: [`QUIET_AFTER_MS`] after the cluster converged (no client
    /// has spent since the faults stopped), no region writes again. Rights that
    /// go round in cycles, or any other endless rebalancing, break it at once,
    /// where convergence alone notices only when it never finds a quiet moment.
    fn check_quiet(&mut self) -> Result<(), Violation> {
        let Some(converged) = self.report.converge_ms else {
            return Ok(());
        };
        if self.now < self.cfg.fault_ms + converged + QUIET_AFTER_MS {
            return Ok(());
        }
        let tickets: Vec<Option<Seq>> = self
            .regions
            .iter()
            .map(|r| {
                r.replica
                    .as_ref()
                    .filter(|_| r.state == State::Up)
                    .map(Replica::last_written)
            })
            .collect();
        let Some(marks) = &self.quiet_marks else {
            self.quiet_marks = Some(tickets);
            return Ok(());
        };
        for (i, (mark, now)) in marks.iter().zip(&tickets).enumerate() {
            if let (Some(mark), Some(now)) = (mark, now)
                && now != mark
            {
                return Err(Violation {
                    at_ms: self.now,
                    invariant: "quiescence",
                    detail: format!(
                        "{} wrote again (last write {mark} → {now}) after the cluster had converged and gone quiet",
                        self.regions[i].id
                    ),
                });
            }
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), Violation> {
        if !self.rng.chance(1.0 / 250.0) {
            return Ok(());
        }
        let live: Vec<usize> = (0..self.regions.len())
            .filter(|&i| self.regions[i].state == State::Up)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let ids: Vec<RegionId> = self.regions.iter().map(|r| r.id).collect();
        match self.rng.index(10) {
            // Symmetric partition into two sides.
            0 | 1 => {
                let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(0.5)).collect();
                for (a, &x) in ids.iter().enumerate() {
                    for (b, &y) in ids.iter().enumerate() {
                        if side[a] != side[b] {
                            self.net.cut(x, y);
                        }
                    }
                }
            }
            // Asymmetric: one direction of one link.
            2 => {
                let (a, b) = (self.rng.index(ids.len()), self.rng.index(ids.len()));
                self.net.cut(ids[a], ids[b]);
            }
            // Non-transitive: one link both ways.
            3 => {
                let (a, b) = (self.rng.index(ids.len()), self.rng.index(ids.len()));
                self.net.cut(ids[a], ids[b]);
                self.net.cut(ids[b], ids[a]);
            }
            4 => self.net.heal(),
            // Crash and restart later.
            5 => {
                let i = live[self.rng.index(live.len())];
                let until = self.now + self.rng.range(100, 1_500);
                self.stop(i, State::Crashed { until });
            }
            // Pause.
            6 => {
                let i = live[self.rng.index(live.len())];
                let until = self.now + self.rng.range(50, 800);
                self.regions[i].state = State::Paused { until };
            }
            // Leave gracefully, if the network is whole and enough remain.
            7 => {
                if live.len() > 2 && !self.net.partitioned() && self.rng.chance(0.3) {
                    let i = live[self.rng.index(live.len())];
                    let now = self.local_now(i);
                    if let Some(replica) = self.regions[i].replica.as_mut() {
                        replica.leave(Millis(now));
                    }
                    self.regions[i].state = State::Leaving;
                    self.drain(i);
                }
            }
            // Its disk fails (fills up) for a while: flushes fail, writes are
            // refused, nothing waiting is acknowledged.
            8 => {
                let i = live[self.rng.index(live.len())];
                self.regions[i].disk_fails_until = self.now + self.rng.range(50, 1_000);
            }
            // Die for good (its disk stays for the final accounting).
            _ => {
                if live.len() > 2 && self.rng.chance(0.2) {
                    let i = live[self.rng.index(live.len())];
                    self.stop(i, State::Gone);
                }
            }
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), Violation> {
        self.net.heal();
        for region in &mut self.regions {
            region.disk_fails_until = 0;
        }
        for i in 0..self.regions.len() {
            match self.regions[i].state {
                State::Crashed { .. } => self.restart(i)?,
                State::Paused { .. } => self.unpause(i),
                _ => {}
            }
        }
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Result<(), Violation> {
        self.start(i);
        let id = self.regions[i].id;
        if let Some(replica) = self.regions[i].replica.as_ref() {
            self.truth
                .check_restart(self.now, id, &replica.accounts())?;
        }
        Ok(())
    }

    fn unpause(&mut self, i: usize) {
        self.regions[i].state = State::Up;
        let held = std::mem::take(&mut self.regions[i].held);
        for message in held {
            self.deliver(message);
        }
    }

    fn wake_regions(&mut self) -> Result<(), Violation> {
        for i in 0..self.regions.len() {
            match self.regions[i].state {
                State::Crashed { until } if until <= self.now => self.restart(i)?,
                State::Paused { until } if until <= self.now => self.unpause(i),
                State::Waiting { join_at } if join_at <= self.now => self.start(i),
                _ => {}
            }
        }
        Ok(())
    }

    fn deliver(&mut self, message: InFlight) {
        let Some(i) = self.regions.iter().position(|r| r.id == message.to) else {
            return;
        };
        match self.regions[i].state {
            State::Paused { .. } => self.regions[i].held.push(message),
            State::Up | State::Leaving => {
                let now = self.local_now(i);
                if let Some(replica) = self.regions[i].replica.as_mut() {
                    if message.gossip {
                        replica.handle_gossip(Millis(now), &message.bytes);
                    } else {
                        replica.handle_peer(Millis(now), message.from, &message.bytes);
                    }
                }
                self.drain(i);
            }
            _ => {}
        }
    }

    /// Collects a region's outputs: replies to clients, bytes to the network.
    fn drain(&mut self, i: usize) {
        let from = self.regions[i].id;
        while let Some(reply) = self.regions[i]
            .replica
            .as_mut()
            .and_then(Replica::poll_reply)
        {
            self.trace_reply(from, &reply);
            self.reply(reply.request, reply.result, reply.replayed);
        }
        while let Some(transmit) = self.regions[i]
            .replica
            .as_mut()
            .and_then(Replica::poll_transmit)
        {
            self.trace_transmit(from, &transmit);
            let (to, bytes, gossip) = match transmit {
                Transmit::Replication { to, bytes, .. } => (to, bytes, false),
                Transmit::Gossip { to, bytes } => {
                    let Some(to) = region_at(to) else { continue };
                    (to, bytes, true)
                }
            };
            let message = InFlight {
                from,
                to,
                bytes,
                gossip,
            };
            self.net
                .send(&mut self.rng, &self.net_cfg, self.now, message);
        }
    }

    /// Mixes `parts` into the trace hash, after the time and the region.
    fn trace(&mut self, region: RegionId, parts: &[&[u8]]) {
        let mut mix = |bytes: &[u8]| {
            for &b in bytes {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        mix(&self.now.to_le_bytes());
        mix(&region.0.to_le_bytes());
        for part in parts {
            mix(part);
        }
    }

    fn trace_reply(&mut self, region: RegionId, reply: &Reply) {
        let result = format!("{:?}", reply.result);
        self.trace(region, &[&reply.request.0.to_le_bytes(), result.as_bytes()]);
    }

    fn trace_transmit(&mut self, region: RegionId, transmit: &Transmit) {
        match transmit {
            Transmit::Replication { to, bytes, .. } => {
                self.trace(region, &[&to.0.to_le_bytes(), bytes]);
            }
            Transmit::Gossip { to, bytes } => {
                self.trace(region, &[to.to_string().as_bytes(), bytes]);
            }
        }
    }

    fn reply(&mut self, request: RequestId, result: Result<Receipt, Refusal>, replayed: bool) {
        let Some(p) = self.pending.remove(&request.0) else {
            return;
        };
        let slot = (p.user.clone(), p.region);
        match result {
            Ok(receipt) => {
                if let Err(v) = self
                    .truth
                    .acked(self.now, &p.key, p.region, receipt, replayed)
                {
                    self.violations.push(v);
                }
                self.job_answered(&p.key, p.region, replayed, p.deadline - TIMEOUT_MS);
                if p.spend.is_some() {
                    self.report.acked_spends += 1;
                    if let Some(since) = self.waiting_since.remove(&slot) {
                        self.rebalance_samples.push(self.now - since);
                    }
                }
            }
            Err(refusal) => {
                if let Some(amount) = p.spend {
                    self.report.refused_spends += 1;
                    // Escrow's cost; a failing disk is not escrow's doing.
                    let disk = matches!(refusal, Refusal::StorageFailing);
                    if !disk && self.cluster_balance(&p.user) >= i128::from(amount) {
                        self.report.refused_with_enough += 1;
                    }
                    if matches!(refusal, Refusal::TokensInOtherRegion { .. }) {
                        self.waiting_since.entry(slot).or_insert(self.now);
                    }
                }
            }
        }
    }

    /// A job's hold, capture or release, sent at `sent_at`, was acknowledged.
    ///
    /// A capture charged after the job's release was acknowledged, or sent a
    /// whole TTL after its hold was (the hold ran out on the region's own
    /// clock before the capture arrived, whatever that clock's skew), is a
    /// charge for a job that never delivered.
    fn job_answered(&mut self, key: &str, region: RegionId, replayed: bool, sent_at: u64) {
        if let Some(job) = key.strip_prefix("hold-") {
            if let Some(j) = self.jobs.get_mut(job) {
                j.opened = true;
            }
            let first = self.hold_acked.entry((job.to_owned(), region));
            first.or_insert(self.now);
        } else if let Some(job) = key.strip_prefix("rel-") {
            if !replayed {
                self.released.insert((job.to_owned(), region));
            }
        } else if let Some(job) = key.strip_prefix("cap-")
            && !replayed
        {
            let at = (job.to_owned(), region);
            // On the region's own clock, which saturates at 0 early on.
            let skew = self
                .regions
                .iter()
                .find(|r| r.id == region)
                .map_or(0, |r| r.skew);
            let local = |t: u64| t.saturating_add_signed(skew);
            let expired = self
                .hold_acked
                .get(&at)
                .is_some_and(|&held| local(sent_at) >= local(held) + HOLD_TTL_MS);
            if self.released.contains(&at) || expired {
                self.violations.push(Violation {
                    at_ms: self.now,
                    invariant: "released-job-charged",
                    detail: format!(
                        "{job} was captured after its release was acknowledged or its hold expired"
                    ),
                });
            }
        }
    }

    /// The balance the whole cluster holds for `user`: every replica merged.
    fn cluster_balance(&self, user: &str) -> i128 {
        let mut merged = Account::new();
        for r in &self.regions {
            if let Some(a) = r.replica.as_ref().and_then(|x| x.account(user)) {
                merged.merge(&a);
            }
        }
        exact_balance(&merged, self.genesis.grant())
    }

    fn clients(&mut self) {
        let arrivals = u32::from(self.rng.chance(0.25)) + u32::from(self.rng.chance(0.05));
        for _ in 0..arrivals {
            if self.rng.chance(0.05) && !self.truth.ops.is_empty() {
                self.retry();
                continue;
            }
            let u = self.zipf.sample(&mut self.rng);
            let user = format!("user-{u}");
            // Users stay home, and sometimes travel.
            let home = self.homes[u];
            let region = if self.rng.chance(0.1) {
                self.rng.index(self.report.regions)
            } else {
                home
            };
            let premium = self.rng.unit();
            if premium < 0.03 {
                self.start_job(&user, region);
                continue;
            }
            if premium < 0.04 {
                self.billing_event(&user);
                continue;
            }
            let roll = self.rng.unit();
            let (command, kind, amount) = if roll < 0.9 {
                (Command::ChargeCall, Kind::Spend, self.meme_cost)
            } else if roll < 0.95 {
                let k = self.rng.range(1, 40);
                (Command::Adjust(k as i64), Kind::Credit, k)
            } else {
                let k = self.rng.range(1, 20);
                (Command::Adjust(-(k as i64)), Kind::Spend, k)
            };
            let key = format!("k{}", self.next_request);
            self.send_request(region, &user, command, kind, amount, key);
        }
    }

    /// Opens a hold for a new job of `user` at `region`; it closes later.
    fn start_job(&mut self, user: &str, region: usize) {
        let job = format!("job{}", self.next_request);
        let amount = self.rng.range(1, 5);
        // Some jobs outlive their hold's TTL: their capture must be refused.
        let close_at = self.now + self.rng.range(50, 1_500);
        let command = Command::Hold {
            job: job.clone(),
            amount,
        };
        self.jobs.insert(
            job.clone(),
            Job {
                user: user.to_owned(),
                region,
                amount,
                close_at,
                opened: false,
            },
        );
        self.send_request(
            region,
            user,
            command,
            Kind::Neutral,
            0,
            format!("hold-{job}"),
        );
    }

    /// Jobs due to close: most deliver (capture), some fail (release), a few
    /// are forgotten (their hold expires).
    fn close_jobs(&mut self) {
        let due: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.close_at <= self.now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            if !job.opened {
                continue;
            }
            let roll = self.rng.unit();
            if roll < 0.8 {
                let command = Command::Capture { job: id.clone() };
                let key = format!("cap-{id}");
                self.send_request(job.region, &job.user, command, Kind::Spend, job.amount, key);
            } else if roll < 0.95 {
                let command = Command::Release { job: id.clone() };
                let key = format!("rel-{id}");
                self.send_request(job.region, &job.user, command, Kind::Neutral, 0, key);
            }
        }
    }

    /// The billing system's word on `user`'s subscription, sent to a random
    /// region: usually a new version, sometimes an older one arriving late,
    /// sometimes a duplicate.
    fn billing_event(&mut self, user: &str) {
        let region = self.rng.index(self.report.regions);
        let roll = self.rng.unit();
        let log = self.billing.entry(user.to_owned()).or_default();
        let (version, until) = match log.1.last() {
            Some(&(v, u, ..)) if roll < 0.1 => (v, u),
            _ if roll < 0.3 && log.0 > 1 => {
                let older = log.0.saturating_sub(self.rng.range(1, 3)).max(1);
                (older, self.now + self.rng.range(0, 8_000))
            }
            _ => {
                log.0 += 1;
                // Some ends are already past: cancels.
                (
                    log.0,
                    (self.now + self.rng.range(0, 8_000)).saturating_sub(2_000),
                )
            }
        };
        let key = format!("sub{}", self.next_request);
        let region_id = self.regions[region].id;
        let log = self.billing.entry(user.to_owned()).or_default();
        log.1.push((version, until, key.clone(), region_id));
        let command = Command::Subscribe {
            version,
            until: Millis(until),
        };
        self.send_request(region, user, command, Kind::Neutral, 0, key);
    }

    /// Retries an earlier operation with the same key: usually at the same region,
    /// sometimes failing over to another.
    fn retry(&mut self) {
        let n = self.truth.ops.len();
        let Some(((key, region), op)) = self.truth.ops.iter().nth(self.rng.index(n)) else {
            return;
        };
        let (key, op) = (key.clone(), op.clone());
        let region_index = if self.rng.chance(0.8) {
            self.regions
                .iter()
                .position(|r| r.id == *region)
                .unwrap_or(0)
        } else {
            self.rng.index(self.report.regions)
        };
        let Some(command) = self.commands.get(&key).cloned() else {
            return;
        };
        self.send_request(region_index, &op.user, command, op.kind, op.amount, key);
    }

    fn send_request(
        &mut self,
        region: usize,
        user: &str,
        command: Command,
        kind: Kind,
        amount: u64,
        key: String,
    ) {
        let id = self.next_request;
        self.next_request += 1;
        let r = &self.regions[region];
        if r.state != State::Up && !matches!(r.state, State::Paused { .. }) {
            return; // The client cannot reach it: nothing happened.
        }
        let region_id = r.id;
        self.truth.attempt(&key, region_id, user, kind, amount);
        self.commands.insert(key.clone(), command.clone());
        // The production scoping and fingerprint rule, as the HTTP API applies it.
        // A hold carries the client's key too (an AI meme's job takes its hold
        // with it), so a retry failing over to another region replays there;
        // captures and releases are idempotent by job, subscriptions by
        // version: no key.
        let idempotency = match &command {
            Command::ChargeCall => Some(IdempotencyKey::meme_call(user, key.clone(), None, "")),
            Command::Adjust(amount) => Some(IdempotencyKey::adjustment(user, *amount, key.clone())),
            Command::Hold { .. } => Some(IdempotencyKey::ai_meme(user, key.clone(), None, "")),
            _ => None,
        };
        self.pending.insert(
            id,
            Pending {
                key,
                region: region_id,
                user: user.to_owned(),
                spend: (kind == Kind::Spend
                    && matches!(command, Command::ChargeCall | Command::Adjust(_)))
                .then_some(amount),
                deadline: self.now + TIMEOUT_MS,
            },
        );
        if matches!(r.state, State::Paused { .. }) {
            return; // It will time out.
        }
        let now = self.local_now(region);
        if let Some(replica) = self.regions[region].replica.as_mut() {
            let may_wait = matches!(command, Command::ChargeCall | Command::Hold { .. });
            let mut request = ClientRequest::new(RequestId(id), user, command, idempotency);
            // Meme calls and AI memes' holds wait for rights as `GET /memes` does
            // by default (500 ms), but a quarter ask `wait=0` and a quarter a
            // shorter wait (100–499 ms); drawn from the id so the seed's other
            // draws stay as they were.
            if may_wait {
                request.wait_for_rights_ms = match id % 4 {
                    0 => 100 + id.wrapping_mul(37) % 400,
                    1 => 0,
                    _ => 500,
                };
            }
            replica.handle_client(Millis(now), request);
        }
        self.drain(region);
    }

    fn timeouts(&mut self) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= self.now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                self.truth.timed_out(&p.key, p.region);
            }
        }
    }

    fn check_region(&mut self, i: usize) -> Result<(), Violation> {
        let region = self.regions[i].id;
        let Some(replica) = self.regions[i].replica.as_mut() else {
            return Ok(());
        };
        let changed = replica.drain_changed();
        if self.cfg.policy == Policy::Naive {
            return Ok(()); // Naive counters break the rights invariant by design.
        }
        for (user, held) in replica.open_holds() {
            let rights = replica
                .account(&user)
                .unwrap_or_default()
                .rights(&self.genesis, region);
            if held > rights {
                return Err(Violation {
                    at_ms: self.now,
                    invariant: "holds-within-rights",
                    detail: format!(
                        "{region} holds {held} of {user}'s tokens with rights {rights}"
                    ),
                });
            }
        }
        for user in changed {
            if let Some(account) = replica.account(&user)
                && let Err(e) = account.check_invariants(&self.genesis)
            {
                return Err(Violation {
                    at_ms: self.now,
                    invariant: "rights-and-balance-non-negative",
                    detail: format!("{} sees {user}: {e}", self.regions[i].id),
                });
            }
        }
        Ok(())
    }

    fn live(&self) -> Vec<&Replica> {
        self.regions
            .iter()
            .filter(|r| r.state == State::Up)
            .filter_map(|r| r.replica.as_ref())
            .collect()
    }

    fn converged(&self) -> bool {
        let live = self.live();
        let Some(first) = live.first() else {
            return true;
        };
        let view = |r: &Replica| -> BTreeMap<String, Vec<u8>> {
            r.accounts()
                .iter()
                .filter(|(_, a)| !a.entries().is_empty() || a.subscription().is_some())
                .map(|(u, a)| (u.clone(), a.to_bytes().unwrap_or_default()))
                .collect()
        };
        let reference = view(first);
        live[1..].iter().all(|r| view(r) == reference)
    }

    /// How the live replicas differ: the first user they disagree on, each
    /// region's view of it, and who each region believes is up.
    fn divergence(&self) -> String {
        let live: Vec<&Region> = self
            .regions
            .iter()
            .filter(|r| r.state == State::Up && r.replica.is_some())
            .collect();
        let mut out = String::new();
        let mut users: BTreeSet<String> = BTreeSet::new();
        for r in &live {
            if let Some(replica) = &r.replica {
                users.extend(replica.accounts().into_keys());
            }
        }
        let first = users.into_iter().find(|u| {
            let views: Vec<Option<Account>> = live
                .iter()
                .filter_map(|r| r.replica.as_ref())
                .map(|replica| replica.account(u).filter(|a| !a.entries().is_empty()))
                .collect();
            views.windows(2).any(|w| w[0] != w[1])
        });
        if let Some(user) = first {
            out.push_str(&format!("user {user:?}:"));
            for r in &live {
                if let Some(replica) = &r.replica {
                    out.push_str(&format!("\n    {}: {:?}", r.id, replica.account(&user)));
                }
            }
        }
        for r in &live {
            if let Some(replica) = &r.replica {
                let up: Vec<String> = replica
                    .members()
                    .iter()
                    .map(|(id, m)| format!("{id}{}", if m.up { "" } else { "(down)" }))
                    .collect();
                out.push_str(&format!(
                    "\n    {} sees up: [{}] identity gen {}",
                    r.id,
                    up.join(" "),
                    replica.identity().generation
                ));
            }
        }
        out
    }

    /// After the run: convergence, exact balances, and overspend.
    fn finish(&mut self) -> Result<(), Violation> {
        if self.report.converge_ms.is_none() {
            return Err(Violation {
                at_ms: self.now,
                invariant: "convergence",
                detail: format!(
                    "live replicas still differ {} ms after the faults stopped; {}",
                    self.cfg.settle_ms,
                    self.divergence()
                ),
            });
        }
        // The final state: live replicas, plus disks of regions gone for good.
        let mut users: BTreeSet<String> = self.truth.users().into_iter().collect();
        let mut merged: BTreeMap<String, Account> = BTreeMap::new();
        let sources = self.regions.iter().map(|r| match r.replica.as_ref() {
            Some(replica) => replica.accounts(),
            None => r.disk.clone().into_accounts(),
        });
        for accounts in sources {
            for (user, account) in accounts {
                users.insert(user.clone());
                merged.entry(user).or_default().merge(&account);
            }
        }
        for user in users {
            let account = merged.get(&user).cloned().unwrap_or_default();
            let balance = exact_balance(&account, self.genesis.grant());
            if balance < 0 {
                self.report.overspend += balance.unsigned_abs();
            }
            if self.cfg.policy == Policy::Escrow && balance < 0 {
                return Err(Violation {
                    at_ms: self.now,
                    invariant: "no-overspend",
                    detail: format!("{user} ended at {balance}"),
                });
            }
            self.check_subscription(&user, &account)?;
            let (lo, hi) = self.truth.expected_range(&user, self.genesis.grant());
            if !(lo..=hi).contains(&balance) {
                return Err(Violation {
                    at_ms: self.now,
                    invariant: "final-balance",
                    detail: format!(
                        "{user}: balance {balance}, clients saw between {lo} and {hi}; {}",
                        self.truth.describe(&user)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Adds `persist`'s statement lines to what `disk` holds (`sums`, per user),
/// and checks that each user the persist touches has a statement that adds
/// up: the grant plus every line on disk is the balance on disk, exactly.
/// Lines and accounts reach the disk in one persist, so this holds after
/// every flush, crashes and failed flushes included, not only after heal.
fn statement_adds_up(
    region: RegionId,
    disk: &Durable,
    sums: &mut BTreeMap<String, i128>,
    persist: &Persist,
    grant: u64,
) -> Result<(), String> {
    let mut touched: BTreeSet<&str> = persist.accounts.iter().map(|(u, _)| u.as_str()).collect();
    for line in &persist.statement {
        *sums.entry(line.user.clone()).or_default() += i128::from(line.amount);
        touched.insert(line.user.as_str());
    }
    for user in touched {
        let balance = disk
            .account_of(user)
            .map_or(i128::from(grant), |a| exact_balance(&a, grant));
        let lines = sums.get(user).copied().unwrap_or_default();
        if i128::from(grant) + lines != balance {
            return Err(format!(
                "{region}: {user}'s statement adds up to {} but the balance on disk is {balance}",
                i128::from(grant) + lines
            ));
        }
    }
    Ok(())
}

impl World {
    /// After heal: the user's subscription is one the billing system sent and
    /// that may have been applied, and no lower than any it acknowledged as
    /// applied (the highest version wins, whatever the order of arrival).
    fn check_subscription(&self, user: &str, account: &Account) -> Result<(), Violation> {
        let Some((_, sent)) = self.billing.get(user) else {
            return Ok(());
        };
        // At any region: a retry may carry the event elsewhere.
        let applied = |key: &str, maybe_too: bool| {
            self.truth
                .ops
                .iter()
                .filter(|((k, _), _)| k == key)
                .any(|(_, op)| op.acked || (maybe_too && op.maybe))
        };
        let highest_acked = sent
            .iter()
            .filter(|(_, _, key, _)| applied(key, false))
            .map(|&(v, u, ..)| (v, u))
            .max();
        let held = account
            .subscription()
            .map(|s| (s.version, s.memes_ai_until_ms));
        let possible = |h: (u64, u64)| {
            sent.iter()
                .any(|(v, u, key, _)| (*v, *u) == h && applied(key, true))
        };
        let ok = match held {
            None => highest_acked.is_none(),
            Some(h) => possible(h) && highest_acked.is_none_or(|a| h >= a),
        };
        if ok {
            return Ok(());
        }
        Err(Violation {
            at_ms: self.now,
            invariant: "subscription-highest-version",
            detail: format!("{user} ends with {held:?}; highest acknowledged {highest_acked:?}"),
        })
    }
}

/// Region `r`'s simulated address.
fn address_of(r: RegionId) -> SocketAddr {
    let [hi, lo] = r.0.to_be_bytes();
    SocketAddr::from(([10, 0, hi, lo], 7000))
}

/// The region at a simulated address.
fn region_at(addr: SocketAddr) -> Option<RegionId> {
    match addr {
        SocketAddr::V4(v4) => {
            let [_, _, hi, lo] = v4.ip().octets();
            Some(RegionId(u16::from_be_bytes([hi, lo])))
        }
        SocketAddr::V6(_) => None,
    }
}
