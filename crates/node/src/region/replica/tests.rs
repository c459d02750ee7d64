//! Unit tests of the replica: a harness of two or three replicas on an
//! in-memory network with instant delivery, stepped 10 ms at a time. The
//! simulator covers faults and invariants at scale; these pin single
//! behaviours (reply gating, batches, catch-up, escrow plans, waits) and run
//! in milliseconds.

use super::*;
use crate::region::command::Command;
use crate::region::idempotency::IdempotencyKey;
use ledger_crdt::Genesis;
use std::collections::BTreeMap;

/// Replicas, their disks, a clock and a network that can be cut.
struct Harness {
    replicas: Vec<Replica>,
    configs: Vec<ReplicaConfig>,
    disks: Vec<Durable>,
    now: u64,
    /// Pairs of replicas (by index, lower first) that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
    /// Whether [`Harness::step`] flushes every replica (group commit).
    auto_flush: bool,
    /// Replies received, per replica.
    replies: Vec<Vec<Reply>>,
    /// Replication messages delivered, decoded: (from, to, message).
    delivered: Vec<(usize, usize, Message)>,
    next_request: u64,
    /// What the statement lines on each disk add up to, per user.
    statement: Vec<BTreeMap<String, i128>>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((
        [127, 0, 0, 1],
        7000 + u16::try_from(i).expect("few replicas"),
    ))
}

fn region(i: usize) -> RegionId {
    RegionId(u16::try_from(i + 1).expect("few replicas"))
}

impl Harness {
    /// `n` replicas, the welcome grant of 100 tokens split over `genesis`
    /// (indexes), joined into one cluster.
    fn new(n: usize, genesis: &[usize], configure: impl Fn(&mut ReplicaConfig)) -> Self {
        let genesis = Genesis::new(100, genesis.iter().map(|&i| region(i))).expect("genesis");
        let configs: Vec<ReplicaConfig> = (0..n)
            .map(|i| {
                let mut config = ReplicaConfig::new(crate::RulesConfig {
                    region: region(i),
                    genesis: genesis.clone(),
                    meme_cost: 1,
                    idempotency_ttl_ms: 60_000,
                    policy: crate::SpendPolicy::Escrow,
                });
                config.addr = addr(i);
                configure(&mut config);
                config
            })
            .collect();
        let mut h = Self {
            replicas: configs.iter().cloned().map(Replica::new).collect(),
            configs,
            disks: vec![Durable::default(); n],
            now: 1_000,
            cut: BTreeSet::new(),
            auto_flush: true,
            replies: vec![Vec::new(); n],
            delivered: Vec::new(),
            next_request: 0,
            statement: vec![BTreeMap::new(); n],
        };
        let seeds: Vec<SocketAddr> = (0..n).map(addr).collect();
        for i in 0..n {
            h.replicas[i].join(Millis(h.now), &seeds);
        }
        h.route();
        h.run(2_000);
        for r in &h.replicas {
            assert_eq!(r.peers.live().len(), n - 1, "the cluster formed");
        }
        h.delivered.clear();
        h
    }

    fn now(&self) -> Millis {
        Millis(self.now)
    }

    /// Moves every queued output to where it goes, until none is left.
    fn route(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.replicas.len() {
                while let Some(reply) = self.replicas[i].poll_reply() {
                    self.replies[i].push(reply);
                }
                while let Some(transmit) = self.replicas[i].poll_transmit() {
                    moved = true;
                    let to = (0..self.replicas.len())
                        .find(|&j| addr(j) == transmit.addr())
                        .expect("a replica's address");
                    if self.cut.contains(&(i.min(to), i.max(to))) {
                        continue;
                    }
                    let now = self.now();
                    match transmit {
                        Transmit::Gossip { bytes, .. } => {
                            self.replicas[to].handle_gossip(now, &bytes)
                        }
                        Transmit::Replication { bytes, .. } => {
                            let message = Message::decode(&bytes).expect("decodes");
                            self.delivered.push((i, to, message));
                            self.replicas[to].handle_peer(now, region(i), &bytes);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Makes everything replica `i` wrote durable.
    fn flush(&mut self, i: usize) {
        let persist = self.replicas[i].prepare_persist();
        self.disks[i].apply(&persist);
        for line in &persist.statement {
            *self.statement[i].entry(line.user.clone()).or_default() += i128::from(line.amount);
        }
        let now = self.now();
        self.replicas[i].handle_flushed(now, persist.upto, persist.number);
        self.route();
    }

    /// 10 ms pass: flush (if automatic), tick, deliver.
    fn step(&mut self) {
        self.now += 10;
        for i in 0..self.replicas.len() {
            if self.auto_flush {
                self.flush(i);
            }
            let now = self.now();
            self.replicas[i].handle_tick(now);
            self.route();
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.step();
        }
    }

    /// Sends a request to replica `i`; returns its id.
    fn client(
        &mut self,
        i: usize,
        user: &str,
        command: Command,
        key: Option<&str>,
        wait_ms: u64,
    ) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let key = key.map(|k| IdempotencyKey::meme_call(user, k.to_owned(), None, ""));
        let mut request = ClientRequest::new(id, user, command, key);
        request.wait_for_rights_ms = wait_ms;
        let now = self.now();
        self.replicas[i].handle_client(now, request);
        self.route();
        id
    }

    /// Replica `i` crashes and restarts from its disk (alone: it does not
    /// rejoin, which these tests do not need).
    fn restart(&mut self, i: usize) {
        self.replicas[i] = Replica::restore(self.configs[i].clone(), self.disks[i].clone());
    }

    fn spend(&mut self, i: usize, user: &str) -> RequestId {
        self.client(i, user, Command::ChargeCall, None, 0)
    }

    /// The reply to `id` at replica `i`, if it came.
    fn reply(&self, i: usize, id: RequestId) -> Option<&Reply> {
        self.replies[i].iter().find(|r| r.request == id)
    }

    fn deltas_sent(&self) -> Vec<(Seq, Seq, usize)> {
        self.delivered
            .iter()
            .filter_map(|(_, _, m)| match m {
                Message::Deltas {
                    from_seq,
                    to_seq,
                    items,
                    ..
                } => Some((*from_seq, *to_seq, items.len())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_reply_waits_for_the_flush_of_its_write() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    h.auto_flush = false;
    let id = h.client(0, "alice", Command::ChargeCall, Some("k1"), 0);
    assert!(
        h.reply(0, id).is_none(),
        "no reply before the write is durable"
    );
    // A retry while the first is in flight is told to wait.
    let retry = h.client(0, "alice", Command::ChargeCall, Some("k1"), 0);
    assert_eq!(
        h.reply(0, retry).map(|r| &r.result),
        Some(&Err(Refusal::KeyInUse))
    );
    h.flush(0);
    let first = h.reply(0, id).expect("released by the flush").clone();
    assert_eq!(first.result.as_ref().map(|r| r.balance), Ok(99));
    assert!(!first.replayed);
    // A retry after it is a replay, itself held until the next flush.
    let replay = h.client(0, "alice", Command::ChargeCall, Some("k1"), 0);
    assert!(h.reply(0, replay).is_none() && h.replicas[0].needs_flush());
    h.flush(0);
    let replayed = h.reply(0, replay).expect("released");
    assert!(replayed.replayed);
    assert_eq!(replayed.result, first.result, "charged once");
}

#[test]
fn only_durable_writes_leave_and_batches_split_by_size() {
    let mut h = Harness::new(2, &[0, 1], |c| {
        c.batch_bytes = 200;
        c.batch_age_ms = 10;
    });
    h.auto_flush = false;
    for user in ["a", "b", "c", "d", "e"] {
        h.spend(0, user);
    }
    h.run(100);
    assert!(h.deltas_sent().is_empty(), "nothing left before a flush");
    h.flush(0);
    h.run(20);
    let batches = h.deltas_sent();
    // Items cost 65 bytes each here: a message closes once past 200 bytes,
    // and each covers its own contiguous range.
    assert_eq!(
        batches,
        vec![(Seq(0), Seq(4), 4), (Seq(4), Seq(5), 1)],
        "{batches:?}"
    );
    for user in ["a", "e"] {
        assert_eq!(h.replicas[1].receipt(user).balance, 99, "{user} replicated");
    }
}

#[test]
fn a_region_cut_off_catches_up_by_anti_entropy() {
    let mut h = Harness::new(3, &[0, 1, 2], |_| {});
    // 2 cannot hear 0, but hears 1: 0's writes reach it through 1.
    h.cut.insert((0, 2));
    for _ in 0..5 {
        h.spend(0, "alice");
    }
    h.run(1_000);
    assert_eq!(h.replicas[2].receipt("alice").balance, 95);
    assert!(
        h.delivered
            .iter()
            .any(|(from, to, m)| (*from, *to) == (1, 2) && matches!(m, Message::CatchUp { .. })),
        "forwarded by a catch-up"
    );
}

#[test]
fn rights_move_toward_demand_before_a_region_runs_dry() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    let start = h.replicas[1].receipt("bob").spendable_here;
    assert_eq!(start, 50);
    for _ in 0..30 {
        h.spend(1, "bob");
        h.run(20);
    }
    assert!(h.replicas[0].stats().transfers > 0, "region 0 sent rights");
    let bob = h.replicas[1].receipt("bob");
    assert_eq!(bob.balance, 70);
    assert!(
        bob.spendable_here > 50 - 30,
        "rights arrived ahead of demand: {bob:?}"
    );
    // Both see one balance once quiet.
    h.run(1_000);
    assert_eq!(h.replicas[0].receipt("bob").balance, 70);
}

#[test]
fn a_spend_that_may_wait_runs_when_rights_arrive() {
    // All of carol's rights start at region 0.
    let mut h = Harness::new(2, &[0], |_| {});
    let quick = h.spend(1, "carol");
    assert!(matches!(
        h.reply(1, quick).map(|r| &r.result),
        Some(Err(Refusal::TokensInOtherRegion { here: 0, .. }))
    ));
    let patient = h.client(1, "carol", Command::ChargeCall, None, 500);
    assert!(h.reply(1, patient).is_none(), "held, not refused");
    h.run(200);
    let reply = h.reply(1, patient).expect("answered once rights came");
    assert_eq!(reply.result.as_ref().map(|r| r.balance), Ok(99));
}

#[test]
fn rights_a_region_asked_for_leave_without_waiting_for_the_batch() {
    // Batches close after 300 ms: the answer must not wait for that.
    let mut h = Harness::new(2, &[0], |c| c.batch_age_ms = 300);
    let patient = h.client(1, "carol", Command::ChargeCall, None, 1_000);
    h.run(50);
    let reply = h
        .reply(1, patient)
        .expect("answered long before a batch closed");
    assert_eq!(reply.result.as_ref().map(|r| r.balance), Ok(99));
    // Other writes still wait for their batch: a spend at region 0 reaches
    // region 1 only once 300 ms have passed.
    h.spend(0, "erin");
    h.run(200);
    assert_eq!(h.replicas[1].receipt("erin").balance, 100);
    h.run(200);
    assert_eq!(h.replicas[1].receipt("erin").balance, 99);
}

#[test]
fn a_spend_waits_no_longer_than_asked() {
    let mut h = Harness::new(2, &[0], |_| {});
    // Region 0 cannot be reached: no rights will come.
    h.cut.insert((0, 1));
    let id = h.client(1, "dave", Command::ChargeCall, None, 300);
    h.run(290);
    assert!(h.reply(1, id).is_none());
    assert!(h.replicas[1].poll_timeout() <= Millis(h.now + 10));
    h.run(20);
    assert!(matches!(
        h.reply(1, id).map(|r| &r.result),
        Some(Err(Refusal::TokensInOtherRegion { .. }))
    ));
}

/// Runs `h` until replica `i` sees `live` peers up (at most a minute).
fn until_live(h: &mut Harness, i: usize, live: usize) {
    for _ in 0..600 {
        if h.replicas[i].peers.live().len() == live {
            return;
        }
        h.run(100);
    }
    panic!("replica {i} never saw {live} peers up");
}

#[test]
fn a_region_alone_sends_no_batch_and_its_peer_catches_up_once_back() {
    let mut h = Harness::new(2, &[0, 1], |c| c.batch_age_ms = 10);
    h.cut.insert((0, 1));
    until_live(&mut h, 0, 0);
    for _ in 0..5 {
        let id = h.spend(0, "ann");
        h.run(20);
        assert!(h.reply(0, id).is_some_and(|r| r.result.is_ok()));
    }
    // Its writes count as sent: no batch waits for a peer that is not there.
    let state = &h.replicas[0].ledger.state;
    assert_eq!(state.sent_upto, state.last_written);
    assert!(state.sent_upto > Seq::ZERO);
    h.delivered.clear();
    h.cut.clear();
    until_live(&mut h, 1, 1);
    h.run(2_000);
    assert_eq!(h.replicas[1].receipt("ann").balance, 95, "caught up");
    assert!(
        h.deltas_sent().iter().all(|&(_, _, items)| items == 0),
        "by anti-entropy, not by a batch"
    );
}

#[test]
fn a_spend_does_not_wait_when_no_live_region_holds_rights() {
    let mut h = Harness::new(2, &[0], |_| {});
    // Region 0, which holds all of erin's rights, is cut off long enough for
    // the membership to call it down: waiting could only delay the 402.
    h.cut.insert((0, 1));
    until_live(&mut h, 1, 0);
    let id = h.client(1, "erin", Command::ChargeCall, None, 500);
    assert!(matches!(
        h.reply(1, id).map(|r| &r.result),
        Some(Err(Refusal::TokensInOtherRegion { here: 0, .. }))
    ));
    // Healed, the same wait is held until rights come.
    h.cut.clear();
    until_live(&mut h, 1, 1);
    let id = h.client(1, "erin", Command::ChargeCall, None, 500);
    assert!(h.reply(1, id).is_none(), "held while region 0 is live");
    h.run(300);
    let reply = h.reply(1, id).expect("answered once rights came");
    assert_eq!(reply.result.as_ref().map(|r| r.balance), Ok(99));
}

#[test]
fn a_retry_in_another_region_replays_the_first_regions_record() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    let first = h.client(0, "erin", Command::ChargeCall, Some("k"), 0);
    h.run(10);
    let charged = h.reply(0, first).expect("answered").result.clone();
    // The retry fails over at once, before region 0's batch could arrive:
    // region 1 asks region 0 about the key.
    let retry = h.client(1, "erin", Command::ChargeCall, Some("k"), 0);
    h.run(30);
    let replay = h.reply(1, retry).expect("answered");
    assert!(replay.replayed);
    assert_eq!(replay.result, charged);
    h.run(1_000);
    assert_eq!(h.replicas[1].receipt("erin").balance, 99, "charged once");
}

#[test]
fn poll_timeout_names_the_next_thing_to_do() {
    let mut h = Harness::new(2, &[0, 1], |c| c.batch_age_ms = 25);
    h.auto_flush = false;
    let idle = h.replicas[0].poll_timeout();
    assert!(idle > h.now(), "nothing due at once when idle");
    h.spend(0, "fay");
    h.flush(0);
    assert!(
        h.replicas[0].poll_timeout() <= Millis(h.now + 25),
        "the batch closes within its age"
    );
}

fn hold(job: &str, amount: u64) -> Command {
    Command::Hold {
        job: job.into(),
        amount,
    }
}

fn capture(job: &str) -> Command {
    Command::Capture { job: job.into() }
}

fn release(job: &str) -> Command {
    Command::Release { job: job.into() }
}

#[test]
fn a_hold_sets_rights_aside_until_it_is_captured_once() {
    let mut h = Harness::new(1, &[0], |_| {});
    h.auto_flush = false;
    let held = h.client(0, "gil", hold("job-1", 60), None, 0);
    assert!(h.reply(0, held).is_none(), "durable before the job starts");
    h.flush(0);
    let receipt = h.reply(0, held).and_then(|r| r.result.clone().ok());
    assert_eq!(
        receipt.map(|r| (r.balance, r.spendable_here)),
        Some((100, 40))
    );
    h.auto_flush = true;
    for _ in 0..40 {
        h.spend(0, "gil");
    }
    let refused = h.spend(0, "gil");
    assert!(matches!(
        h.reply(0, refused).map(|r| &r.result),
        Some(Err(Refusal::InsufficientTokens { balance: 0 }))
    ));
    let first = h.client(0, "gil", capture("job-1"), None, 0);
    h.run(10);
    let captured = h.reply(0, first).expect("captured").clone();
    assert_eq!(captured.result.as_ref().map(|r| r.balance), Ok(0));
    let again = h.client(0, "gil", capture("job-1"), None, 0);
    h.run(10);
    let again = h.reply(0, again).expect("answered");
    assert!(
        again.replayed && again.result == captured.result,
        "charged once"
    );
    let late = h.client(0, "gil", release("job-1"), None, 0);
    assert_eq!(
        h.reply(0, late).map(|r| &r.result),
        Some(&Err(Refusal::HoldCaptured))
    );
    assert_eq!(h.replicas[0].receipt("gil").calls, 41);
}

#[test]
fn a_hold_that_may_wait_is_taken_when_rights_arrive() {
    // All of hal's rights start at region 0; an AI meme's hold at region 1.
    let mut h = Harness::new(2, &[0], |_| {});
    let quick = h.client(1, "hal", hold("job-q", 5), None, 0);
    assert!(matches!(
        h.reply(1, quick).map(|r| &r.result),
        Some(Err(Refusal::TokensInOtherRegion { .. }))
    ));
    let patient = h.client(1, "hal", hold("job-p", 5), None, 500);
    assert!(h.reply(1, patient).is_none(), "held, not refused");
    h.run(300);
    let reply = h.reply(1, patient).expect("answered once rights came");
    assert!(reply.result.is_ok(), "{:?}", reply.result);
    assert_eq!(h.replicas[1].open_holds().get("hal"), Some(&5));
}

#[test]
fn released_and_expired_holds_charge_nothing() {
    let mut h = Harness::new(1, &[0], |c| c.hold_ttl_ms = 100);
    h.client(0, "hal", hold("a", 10), None, 0);
    h.client(0, "hal", release("a"), None, 0);
    h.client(0, "hal", hold("b", 10), None, 0);
    h.run(200);
    let late = h.client(0, "hal", capture("b"), None, 0);
    assert_eq!(
        h.reply(0, late).map(|r| &r.result),
        Some(&Err(Refusal::HoldReleased))
    );
    let unknown = h.client(0, "hal", capture("never"), None, 0);
    assert_eq!(
        h.reply(0, unknown).map(|r| &r.result),
        Some(&Err(Refusal::UnknownHold))
    );
    let standing = h.replicas[0].standing("hal", h.now());
    assert_eq!((standing.receipt.balance, standing.held), (100, 0));
}

#[test]
fn held_rights_are_never_given_away() {
    // All of ivy's rights start at region 0, which holds 95 of them.
    let mut h = Harness::new(2, &[0], |_| {});
    h.client(0, "ivy", hold("job", 95), None, 0);
    h.run(10);
    for _ in 0..20 {
        h.spend(1, "ivy");
        h.run(50);
    }
    let here = h.replicas[0].standing("ivy", h.now());
    assert_eq!(here.held, 95);
    let rights = h.replicas[0]
        .account("ivy")
        .expect("known")
        .rights(&h.configs[0].rules.genesis, region(0));
    assert!(rights >= 95, "region 0 kept the held rights: {rights}");
    assert_eq!(
        h.replicas[1].receipt("ivy").balance,
        95,
        "only 5 were spendable"
    );
}

#[test]
fn a_hold_survives_a_crash_and_is_captured_after_it() {
    let mut h = Harness::new(1, &[0], |_| {});
    h.client(0, "jo", hold("job", 30), None, 0);
    h.run(10);
    h.restart(0);
    assert_eq!(h.replicas[0].standing("jo", h.now()).held, 30);
    let id = h.client(0, "jo", capture("job"), None, 0);
    h.run(10);
    assert_eq!(
        h.reply(0, id).map(|r| r.result.as_ref().map(|r| r.balance)),
        Some(Ok(70))
    );
}

#[test]
fn the_versions_held_of_another_regions_entries_survive_a_restart() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    for user in ["ann", "bo", "cy"] {
        h.spend(0, user);
    }
    h.run(1_000);
    // They ride each account's stored value; lost, a restart would ask for
    // every entry again.
    let held = |state: &Durable| -> BTreeMap<String, Seq> {
        let versions = state.accounts.iter();
        versions
            .filter_map(|(user, u)| Some((user.to_string(), u.held.of(region(0))?)))
            .collect()
    };
    let merged = held(&h.replicas[1].ledger.state);
    assert_eq!(merged.len(), 3, "region 1 merged the three users");
    assert_eq!(held(&h.disks[1]), merged);
    h.restart(1);
    assert_eq!(held(&h.replicas[1].ledger.state), merged);
}

/// Every version held in a user's slot is named, under that user, by the
/// index catch-ups read, and nothing else is; the same for our own entries.
fn assert_indexes_match_the_slots(state: &Durable) {
    let in_slots: BTreeSet<((RegionId, Seq), String)> = state
        .accounts
        .iter()
        .flat_map(|(user, u)| u.held.iter().map(move |v| (v, user.to_string())))
        .collect();
    let indexed: BTreeSet<((RegionId, Seq), String)> = state
        .seqs_by_origin
        .iter()
        .map(|(version, id)| (*version, id.to_string()))
        .collect();
    assert_eq!(in_slots, indexed, "versions held");
    let own_in_slots: BTreeSet<(Seq, String)> = state
        .accounts
        .iter()
        .filter_map(|(user, u)| Some((u.own.as_ref()?.0, user.to_string())))
        .collect();
    let own_indexed: BTreeSet<(Seq, String)> = state
        .own_by_seq
        .iter()
        .map(|(seq, id)| (*seq, id.to_string()))
        .collect();
    assert_eq!(own_in_slots, own_indexed, "our own entries");
}

#[test]
fn the_indexes_by_version_follow_every_merge_and_survive_a_restart() {
    let mut h = Harness::new(3, &[0, 1, 2], |_| {});
    // Each user written by every region in turn, so each slot holds versions
    // of two origins and every version is raised more than once.
    for round in 0..4 {
        for (i, user) in ["ann", "bo", "cy"].into_iter().enumerate() {
            h.spend((round + i) % 3, user);
        }
        h.run(500);
    }
    h.run(1_000);
    for r in &h.replicas {
        let state = &r.ledger.state;
        let versions: usize = state.accounts.values().map(|u| u.held.iter().count()).sum();
        assert_eq!(versions, 6, "three users, two other origins each");
        assert_indexes_match_the_slots(state);
    }
    let before = h.replicas[1].ledger.state.clone();
    h.restart(1);
    let after = &h.replicas[1].ledger.state;
    assert_indexes_match_the_slots(after);
    assert_eq!(after.accounts, before.accounts);
    assert_eq!(after.seqs_by_origin, before.seqs_by_origin);
    assert_eq!(after.own_by_seq, before.own_by_seq);
}

#[test]
fn the_highest_subscription_version_wins_in_every_region() {
    let mut h = Harness::new(3, &[0, 1, 2], |_| {});
    let subscribe = |version, until| Command::Subscribe {
        version,
        until: Millis(until),
    };
    // A cancel (version 3) reaches region 0 before the older upgrade
    // (version 2, stamped with a far later end) reaches region 1.
    h.client(0, "kim", subscribe(3, 0), None, 0);
    h.client(1, "kim", subscribe(2, u64::MAX), None, 0);
    let dup = h.client(2, "kim", subscribe(3, 0), None, 0);
    h.run(1_000);
    for r in &h.replicas {
        let standing = r.standing("kim", h.now());
        assert_eq!(standing.memes_ai_until, Some(Millis(0)));
        assert!(!standing.memes_ai);
    }
    // Region 2 may have seen version 3 before its own duplicate arrived; either
    // way the duplicate changes nothing there once it has it.
    let again = h.client(2, "kim", subscribe(3, 0), None, 0);
    h.run(10);
    assert!(h.reply(2, again).is_some_and(|r| r.replayed), "not applied");
    assert!(h.reply(2, dup).is_some());
    // An upgrade with a higher version takes effect everywhere, and expires on time.
    let until = h.now + 500;
    h.client(1, "kim", subscribe(4, until), None, 0);
    h.run(300);
    assert!(h.replicas.iter().all(|r| r.memes_ai("kim", h.now())));
    h.run(300);
    assert!(h.replicas.iter().all(|r| !r.memes_ai("kim", h.now())));
}

#[test]
fn a_keyed_hold_retried_in_another_region_replays_and_holds_nothing_there() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    let first = h.client(0, "ivy", hold("job-k", 5), Some("k"), 0);
    h.run(10);
    let held = h.reply(0, first).expect("answered").clone();
    assert!(held.result.is_ok() && !held.replayed);
    // The retry fails over before region 0's batch could arrive: region 1
    // asks region 0 about the key, and replays.
    let retry = h.client(1, "ivy", hold("job-k", 5), Some("k"), 0);
    h.run(30);
    let replay = h.reply(1, retry).expect("answered");
    assert!(replay.replayed, "{replay:?}");
    assert_eq!(replay.result, held.result);
    h.run(1_000);
    assert_eq!(h.replicas[0].open_holds().get("ivy"), Some(&5));
    assert_eq!(
        h.replicas[1].open_holds().get("ivy"),
        None,
        "no second hold"
    );
    // Once replicated, the record answers a later retry there at once.
    let later = h.client(1, "ivy", hold("job-k", 5), Some("k"), 0);
    h.run(10);
    assert!(h.reply(1, later).expect("answered").replayed);
}

#[test]
fn a_digest_claiming_the_largest_watermarks_is_answered_without_overflow() {
    let mut h = Harness::new(3, &[0, 1, 2], |_| {});
    h.spend(0, "kim");
    h.run(100);
    let digest = Message::Digest {
        watermarks: vec![(region(0), Seq(u64::MAX)), (region(2), Seq(u64::MAX))],
    }
    .encode()
    .expect("encode");
    let now = h.now();
    // Bytes from a peer never panic, whatever they claim.
    h.replicas[0].handle_peer(now, region(1), &digest);
    h.replicas[2].handle_peer(now, region(1), &digest);
    h.run(100);
    assert_eq!(h.replicas[0].receipt("kim").calls, 1);
}

#[test]
fn a_region_makes_statement_lines_for_another_regions_spends() {
    let mut h = Harness::new(2, &[0, 1], |_| {});
    h.auto_flush = false;
    let mut lines: Vec<Vec<crate::StatementLine>> = vec![Vec::new(); 2];
    h.spend(1, "u");
    h.spend(1, "u");
    for _ in 0..50 {
        h.now += 10;
        for (i, seen) in lines.iter_mut().enumerate() {
            let persist = h.replicas[i].prepare_persist();
            seen.extend(persist.statement.iter().cloned());
            h.disks[i].apply(&persist);
            let now = h.now();
            h.replicas[i].handle_flushed(now, persist.upto, persist.number);
            h.replicas[i].handle_tick(now);
        }
        h.route();
    }
    let spent_at = |i: usize, r: usize| -> i64 {
        lines[i]
            .iter()
            .filter(|l| l.region == region(r))
            .map(|l| l.amount)
            .sum()
    };
    assert_eq!(spent_at(1, 1), -2, "its own: {:?}", lines[1]);
    assert_eq!(spent_at(0, 1), -2, "the other region's: {:?}", lines[0]);
}

mod statement_property {
    use super::*;
    use proptest::prelude::*;

    /// One thing that happens to a three-region cluster.
    #[derive(Clone, Debug)]
    enum Event {
        Spend(usize, u8),
        Adjust(usize, u8, i64),
        Hold(usize, u8, u8, u64),
        Capture(usize, u8, u8),
        Release(usize, u8, u8),
        /// A persist that storage failed: its lines wait for the next one.
        FailFlush(usize),
        Cut(usize, usize),
        Heal,
        Pass(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        let r = 0usize..3;
        let u = 0u8..3;
        let job = 0u8..4;
        prop_oneof![
            4 => (r.clone(), u.clone()).prop_map(|(r, u)| Event::Spend(r, u)),
            2 => (r.clone(), u.clone(), -40i64..60).prop_map(|(r, u, n)| Event::Adjust(r, u, n)),
            1 => (r.clone(), u.clone(), job.clone(), 1u64..20)
                .prop_map(|(r, u, j, n)| Event::Hold(r, u, j, n)),
            1 => (r.clone(), u.clone(), job.clone()).prop_map(|(r, u, j)| Event::Capture(r, u, j)),
            1 => (r.clone(), u.clone(), job).prop_map(|(r, u, j)| Event::Release(r, u, j)),
            1 => r.clone().prop_map(Event::FailFlush),
            1 => (r.clone(), r).prop_map(|(a, b)| Event::Cut(a.min(b), a.max(b))),
            1 => Just(Event::Heal),
            2 => (10u64..400).prop_map(Event::Pass),
        ]
    }

    fn exact(account: Option<ledger_crdt::Account>) -> i128 {
        account.map_or(100, |a| 100 + a.credited() as i128 - a.spent() as i128)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For any sequence of operations across regions, partitions and
        /// failed flushes included: after convergence, each user's statement
        /// (the grant plus every line on disk) is their balance, in every
        /// region.
        #[test]
        fn statements_add_up_to_the_balance_in_every_region(
            events in proptest::collection::vec(event(), 1..60)
        ) {
            let mut h = Harness::new(3, &[0, 1, 2], |_| {});
            for event in events {
                let user = |u: u8| format!("u{u}");
                let job = |j: u8| format!("job-{j}");
                match event {
                    Event::Spend(r, u) => {
                        h.spend(r, &user(u));
                    }
                    Event::Adjust(r, u, n) if n != 0 => {
                        h.client(r, &user(u), Command::Adjust(n), None, 0);
                    }
                    Event::Adjust(..) => {}
                    Event::Hold(r, u, j, amount) => {
                        h.client(r, &user(u), Command::Hold { job: job(j), amount }, None, 0);
                    }
                    Event::Capture(r, u, j) => {
                        h.client(r, &user(u), Command::Capture { job: job(j) }, None, 0);
                    }
                    Event::Release(r, u, j) => {
                        h.client(r, &user(u), Command::Release { job: job(j) }, None, 0);
                    }
                    Event::FailFlush(r) => {
                        let persist = h.replicas[r].prepare_persist();
                        h.replicas[r].handle_flush_failed(persist);
                    }
                    Event::Cut(a, b) if a != b => {
                        h.cut.insert((a, b));
                    }
                    Event::Cut(..) => {}
                    Event::Heal => h.cut.clear(),
                    Event::Pass(ms) => h.run(ms),
                }
            }
            h.cut.clear();
            h.run(3_000);
            for i in 0..3 {
                h.flush(i);
            }
            for u in 0..3 {
                let user = format!("u{u}");
                let balances: Vec<i128> =
                    (0..3).map(|i| exact(h.replicas[i].account(&user))).collect();
                prop_assert!(balances.iter().all(|b| *b == balances[0]), "converged: {balances:?}");
                for (i, balance) in balances.iter().enumerate() {
                    let lines = h.statement[i].get(&user).copied().unwrap_or_default();
                    prop_assert_eq!(100 + lines, exact(h.disks[i].account_of(&user)), "region {} on disk", i);
                    prop_assert_eq!(100 + lines, *balance, "region {}", i);
                }
            }
        }
    }
}
