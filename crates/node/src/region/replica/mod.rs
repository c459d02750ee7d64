//! One region's replicated ledger: a sans-IO state machine.
//!
//! Inputs, each with an explicit `now`: client requests
//! ([`Replica::handle_client`]), peer bytes ([`Replica::handle_peer`],
//! [`Replica::handle_gossip`]), timer ticks ([`Replica::handle_tick`], due at
//! [`Replica::poll_timeout`]) and storage's word that a persist is durable
//! ([`Replica::handle_flushed`]). Outputs: replies ([`Replica::poll_reply`]),
//! bytes for peers ([`Replica::poll_transmit`]) and what to write
//! ([`Replica::prepare_persist`]). The node shell and the simulator drive this
//! same code.
//!
//! `Replica` owns one sub-state per concern; each decides, and `Replica`
//! applies the decisions to the ledger state and the outputs:
//! - [`admission`]: whether a request may run here now;
//! - [`state`]: what survives a crash ([`Durable`]) and one flush of it ([`Persist`]);
//!   [`held`]: the versions a user's account holds of other regions' entries;
//! - [`ledger`]: the state, its [`journal`] (writes on their way to disk,
//!   persist planning) and the rules that change them;
//! - [`gate`]: replies held until their write is durable; keys in flight;
//! - [`key_queries`]: keyed requests held until peers say if they know the key;
//! - [`rights_waits`]: spends waiting for rights (bounded, within their wait);
//! - [`replication`]: batches, digests, catch-ups, peer lag; [`horizon`]:
//!   what catch-ups leave out as still on its way;
//! - [`escrow`]: demand, rebalancing plans, rights requests and answers;
//! - [`peers`]: who is up (the membership), and the bytes queued for them;
//! - [`view`]: what the replica shows (accounts, standings, the cluster).

mod admission;
mod config;
mod escrow;
mod gate;
mod held;
mod horizon;
mod journal;
mod key_queries;
mod ledger;
mod output;
mod peers;
mod replication;
mod rights_waits;
mod state;
#[cfg(test)]
mod tests;
mod throttle;
mod view;

pub use config::{Faults, ReplicaConfig};
pub use escrow::EscrowStats;
pub use output::{Reply, Transmit};
pub use replication::PeerLag;
pub use state::{AccountWrite, Durable, Meta, Persist};
pub use view::ClusterView;

use crate::region::command::{ClientRequest, Command, Receipt, Refusal};
use crate::region::idempotency::IdempotencyRecord;
use crate::region::membership::{Membership, NodeIdentity};
use crate::region::message::{Item, KeyState, Message};
use crate::region::rules::{Executed, Rules};
use crate::region::statement::{LineKind, StatementDrafts};
use crate::region::units::{Millis, RequestId, Seq};
use admission::{Admission, Situation};
use escrow::Escrow;
use gate::ReplyGate;
use key_queries::{KeyQueries, Settled};
use ledger::Ledger;
use ledger_crdt::{Account, RegionId};
use peers::Peers;
use replication::Replication;
use rights_waits::RightsWaits;
use state::HoldOutcome;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

/// How often the rest of the timing state (rights acceptances, expired
/// holds) is pruned, and how long a full sweep of the per-user state takes.
const PRUNE_EVERY_MS: u64 = 10_000;

/// How often one slice of per-user timing state is swept: every user's
/// entry is visited once per [`PRUNE_EVERY_MS`], as when it was one pass.
const SWEEP_EVERY_MS: u64 = PRUNE_EVERY_MS / crate::region::by_user::SLICES as u64;

/// Where the region stands in leaving the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    Staying,
    /// Rights handed over; waiting until everything is durable and sent.
    Leaving,
    /// The membership was told; nothing more to do.
    Left,
}

/// One region's replicated ledger.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    /// The faults in force (none outside the simulator).
    faults: Faults,
    ledger: Ledger,
    gate: ReplyGate,
    key_queries: KeyQueries,
    rights_waits: RightsWaits,
    replication: Replication,
    escrow: Escrow,
    peers: Peers,
    departure: Departure,
    replies: VecDeque<Reply>,
    next_prune: Millis,
    /// When the next slice of per-user timing state is swept.
    next_sweep: Millis,
}

impl Replica {
    /// A replica starting from nothing.
    pub fn new(config: ReplicaConfig) -> Self {
        Self::restore(config, Durable::default())
    }

    /// A replica restarting from what survived.
    pub fn restore(config: ReplicaConfig, mut state: Durable) -> Self {
        state.statement = StatementDrafts::new(!config.statements, config.rules.genesis.grant());
        let identity = NodeIdentity {
            region: config.rules.region,
            addr: config.addr,
            generation: config.generation,
        };
        let faults = if cfg!(feature = "simulation") {
            config.faults
        } else {
            Faults::default()
        };
        Self {
            faults,
            ledger: Ledger::new(
                Rules::new(config.rules.clone()),
                state,
                config.track_changes,
            ),
            gate: ReplyGate::default(),
            key_queries: KeyQueries::default(),
            rights_waits: RightsWaits::default(),
            replication: Replication::new(
                config.batch_age_ms,
                config.batch_bytes,
                config.anti_entropy_ms,
                config.catch_up_grace_ms,
            ),
            escrow: Escrow::new(&config),
            peers: Peers::new(Membership::new(identity, &config.membership, config.seed)),
            departure: Departure::Staying,
            replies: VecDeque::new(),
            next_prune: Millis(0),
            next_sweep: Millis(0),
            config,
        }
    }

    fn me(&self) -> RegionId {
        self.config.rules.region
    }

    fn leaving(&self) -> bool {
        self.departure != Departure::Staying
    }

    /// A client request. Its [`Reply`] comes out of [`Replica::poll_reply`]
    /// once the write is durable.
    ///
    /// A keyed request whose key this region holds no record of may first be
    /// held while peers are asked about the key (see [`key_queries`]), unless
    /// this region served the user's latest spend it knows of within
    /// [`ReplicaConfig::local_customer_ms`]. Requests without a key never wait
    /// for peers.
    pub fn handle_client(&mut self, now: Millis, request: ClientRequest) {
        self.ledger.state.statement.at(now);
        if let Some(k) = &request.key
            && !self.leaving()
            && !self.faults.forget_idempotency
            && !self.ledger.state.records.contains(&k.id)
        {
            if self.key_queries.asking(&k.id) {
                self.reply(request.id, Err(Refusal::KeyInUse));
                return;
            }
            let live = self.peers.live();
            let local_customer = self.escrow.served_last(&request.user, live, now);
            if !local_customer && !live.is_empty() {
                let id = k.id.clone();
                let peers = live.to_vec();
                self.peers
                    .broadcast_live(&Message::RecordQuery { id: id.clone() });
                let deadline = now.after(self.config.key_query_ms);
                self.key_queries
                    .hold(request, id, peers.into_iter().collect(), deadline);
                return;
            }
        }
        self.execute(now, request);
    }

    /// Bytes from peer region `from`. Undecodable bytes are dropped:
    /// anti-entropy resends whatever mattered.
    pub fn handle_peer(&mut self, now: Millis, from: RegionId, bytes: &[u8]) {
        self.ledger.state.statement.at(now);
        let Ok(message) = Message::decode(bytes) else {
            return;
        };
        let me = self.me();
        match message {
            Message::Deltas {
                from_seq,
                to_seq,
                items,
                records,
            } => {
                self.ledger.take_peer_records(records);
                for item in items.into_iter().filter(|i| i.origin == from) {
                    self.merge_item(item, now);
                }
                Replication::received_range(&mut self.ledger.state, from, from_seq, to_seq);
            }
            Message::Digest { watermarks } => {
                // It says how far it holds our writes; the answer is what it lacks.
                if let Some(&(_, mark)) = watermarks.iter().find(|(r, _)| *r == me) {
                    self.replication.peer_holds(from, mark, self.peers.live());
                }
                let durable = self.ledger.journal.durable();
                let answer = self.replication.catch_up(
                    now,
                    &self.ledger.state,
                    durable,
                    me,
                    from,
                    &watermarks,
                );
                if let Some(answer) = answer {
                    self.peers.send(from, &answer);
                }
            }
            Message::CatchUp {
                items,
                covered,
                records,
            } => {
                self.ledger.take_peer_records(records);
                for item in items {
                    self.merge_item(item, now);
                }
                for c in covered {
                    Replication::received_cover(&mut self.ledger.state, me, c);
                }
            }
            Message::RecordQuery { id } => {
                let known = self.gate.key_state(&id, self.ledger.state.records.get(&id));
                self.peers.send(from, &Message::RecordAnswer { id, known });
            }
            Message::RecordAnswer { id, known } => {
                match self.key_queries.answered(from, &id, &known) {
                    None => {}
                    Some(Settled::KeyInUse(request)) => self.reply(request, Err(Refusal::KeyInUse)),
                    Some(Settled::Run(request)) => {
                        if let KeyState::Held(record) = known {
                            self.ledger.take_peer_records(vec![(id, record)]);
                        }
                        // Now answered from the record: a replay, or a refusal
                        // if the key was used for another request.
                        self.execute(now, request);
                    }
                }
            }
            Message::RightsRequest { user, amount } => {
                if !self.leaving() {
                    let account = self.ledger.state.account(&user);
                    if let Some(give) = self.escrow.answer(&user, &account, amount, now)
                        && self.transfer(&user, from, give)
                    {
                        // Spends may wait for it there.
                        self.replication.awaited(self.ledger.state.last_written);
                    }
                }
            }
        }
    }

    /// A membership packet from the network.
    pub fn handle_gossip(&mut self, now: Millis, bytes: &[u8]) {
        self.ledger.state.statement.at(now);
        self.peers.membership().handle_data(now, bytes);
        self.membership_moved();
    }

    /// Time passes: run held requests that are due, close the batch, send a
    /// digest, fire membership timers. Call it at [`Replica::poll_timeout`]
    /// (calling it more often is harmless).
    pub fn handle_tick(&mut self, now: Millis) {
        self.ledger.state.statement.at(now);
        for request in self.key_queries.overdue(now) {
            self.execute(now, request);
        }
        for request in self.rights_waits.overdue(now) {
            self.execute(now, request);
        }
        if self.replication.batch_due(now) {
            self.send_batch();
        }
        let durable = self.ledger.journal.durable();
        self.replication
            .note_held(now, &self.ledger.state, durable, self.me());
        if let Some(to) = self.replication.digest_due(now, self.peers.live()) {
            let digest = Replication::digest(&self.ledger.state, durable, self.me());
            self.peers.send(to, &digest);
        }
        if now >= self.next_sweep {
            // Rides the ticks that come anyway (batches, digests, membership),
            // adding no deadline of its own.
            self.next_sweep = now.after(SWEEP_EVERY_MS);
            self.escrow.sweep(now);
        }
        let prune = now >= self.next_prune;
        if prune {
            self.next_prune = now.after(PRUNE_EVERY_MS);
            self.escrow.prune(now);
        }
        let keep = prune.then_some(self.config.rules.idempotency_ttl_ms);
        if !self.faults.keep_expired_holds {
            self.ledger.expire_holds(now, keep);
        }
        self.peers.membership().tick(now);
        // A graceful leave ends by telling the membership, once every
        // handed-over right has been made durable and sent.
        if self.departure == Departure::Leaving && self.drained() {
            self.peers.membership().leave(now);
            self.departure = Departure::Left;
        }
        self.membership_moved();
    }

    /// What a flush must write now: everything changed since the last call, up
    /// to [`Replica::last_written`]. The shell writes it, makes it durable, then
    /// calls [`Replica::handle_flushed`]; only then do replies and our new
    /// entries leave the region.
    pub fn prepare_persist(&mut self) -> Persist {
        let mut persist = self.ledger.journal.prepare(&self.ledger.state);
        persist.statement = self.ledger.state.statement.take();
        persist
    }

    /// Storage made persist number `number` durable, and with it every write
    /// up to `upto` (an empty persist counts: nothing was left to write).
    pub fn handle_flushed(&mut self, now: Millis, upto: Seq, number: u64) {
        self.ledger.state.statement.at(now);
        let replays = self.gate.release_replays(number);
        self.replies.extend(replays);
        let Some(done) = self
            .ledger
            .journal
            .flushed(upto, self.ledger.state.last_written)
        else {
            return;
        };
        self.ledger.state.promote(done);
        let durable = self.ledger.journal.durable();
        self.replication
            .became_durable(now, durable, self.ledger.state.sent_upto);
        let released = self.gate.release_durable(durable);
        self.replies.extend(released);
    }

    /// Storage could not make `persist` durable. Everything it carried is
    /// written again by the next [`Replica::prepare_persist`] (at its current
    /// value); until a flush succeeds, new writes are refused
    /// ([`Refusal::StorageFailing`]), so a failing disk is answered at once
    /// instead of piling up writes whose outcome nobody could know.
    pub fn handle_flush_failed(&mut self, mut persist: Persist) {
        let lines = std::mem::take(&mut persist.statement);
        self.ledger.state.statement.restore(lines);
        self.ledger.journal.failed(persist);
    }

    /// Joins the cluster through these seed addresses (any member will do).
    /// Harmless to repeat.
    pub fn join(&mut self, now: Millis, seeds: &[SocketAddr]) {
        self.ledger.state.statement.at(now);
        self.peers.membership().join(now, seeds);
        self.membership_moved();
    }

    /// Leave gracefully: hand every right this region holds to live peers, so
    /// nothing is stranded. Keep ticking and flushing until [`Replica::left`].
    pub fn leave(&mut self, now: Millis) {
        self.ledger.state.statement.at(now);
        self.departure = Departure::Leaving;
        let me = self.me();
        let users: Vec<String> = self
            .ledger
            .state
            .accounts
            .keys()
            .map(|u| u.to_string())
            .collect();
        for user in users {
            let rights = self
                .ledger
                .state
                .account(&user)
                .rights(&self.config.rules.genesis, me);
            let Some(to) = self.escrow.heir(&user, self.peers.live(), now) else {
                return;
            };
            if rights > 0 {
                self.transfer(&user, to, rights);
            }
        }
    }

    /// Forgets idempotency records older than the TTL. Returns how many.
    pub fn expire_records(&mut self, now: Millis) -> usize {
        self.ledger.expire_records(now)
    }

    /// The next reply to a client, if any.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// The next bytes for the network, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.peers.poll_transmit()
    }

    /// When [`Replica::handle_tick`] is next needed. Inputs may move it
    /// earlier; the shell asks again after each.
    pub fn poll_timeout(&self) -> Millis {
        if self.departure == Departure::Leaving && self.drained() {
            return Millis(0);
        }
        [
            self.key_queries.next_deadline(),
            self.rights_waits.next_deadline(),
            self.peers.next_deadline(),
            self.ledger.state.statement.due(),
        ]
        .into_iter()
        .flatten()
        .fold(
            self.replication.next_deadline().min(self.next_prune),
            Millis::min,
        )
    }

    /// Our last write: a flush covering it makes everything so far durable.
    pub fn last_written(&self) -> Seq {
        self.ledger.state.last_written
    }

    /// Whether anything waits for a flush that no new write would trigger: a
    /// replay waiting for its record to be durable here. The shell flushes
    /// when [`Replica::last_written`] moves or this says so.
    pub fn needs_flush(&self) -> bool {
        self.gate.replays_waiting() || self.ledger.state.statement.overdue()
    }

    /// Tokens held open here, per user (for the simulator's checks).
    pub fn open_holds(&self) -> std::collections::BTreeMap<String, u64> {
        let mut held = std::collections::BTreeMap::new();
        for (id, amount) in self.ledger.state.holds.open() {
            *held.entry(id.user.clone()).or_insert(0) += amount;
        }
        held
    }

    /// Users whose account changed since the last call.
    pub fn drain_changed(&mut self) -> BTreeSet<String> {
        self.ledger.drain_changed()
    }

    /// Runs a client request here, now.
    fn execute(&mut self, now: Millis, request: ClientRequest) {
        let situation = Situation {
            leaving: self.leaving(),
            forget_records: self.faults.forget_idempotency,
            rules: &self.ledger.rules,
            state: &self.ledger.state,
            journal: &self.ledger.journal,
            gate: &self.gate,
        };
        let stored = match situation.admit(&request) {
            Admission::Refuse(refusal) => return self.reply(request.id, Err(refusal)),
            Admission::Run(stored) => stored,
        };
        let user = request.user.as_str();
        if matches!(
            request.command,
            Command::Hold { .. } | Command::Capture { .. } | Command::Release { .. }
        ) {
            self.execute_hold(now, request, stored);
            return;
        }
        let me = self.me();
        let mut account = self.ledger.state.account(user);
        let unchanged = self.ledger.state.before_change(&account);
        let held = self.ledger.state.holds.held(user);
        let spent_before = state::spent_at(&account, me);
        let executed = self.ledger.rules.execute(
            &mut account,
            &request.command,
            request.key.as_ref(),
            stored.as_ref(),
            held,
            now,
        );
        match executed {
            Err(refusal) => self.refused(now, request, refusal),
            Ok(Executed::Replayed(receipt)) => {
                self.answer_when_persisted(request.id, receipt, true)
            }
            Ok(Executed::Unchanged(receipt)) => {
                self.answer_when_persisted(request.id, receipt, true)
            }
            Ok(Executed::Applied { receipt, record }) => {
                let spent = state::spent_at(&account, me) - spent_before;
                self.ledger
                    .state
                    .set_account(user, unchanged.as_ref(), &account);
                let seq = self.ledger.write_own(user, &account);
                let key = request.key.map(|k| k.id);
                let reference = key.as_ref().map(|k| k.key.as_str());
                self.ledger.state.statement.annotate(user, None, reference);
                if let (Some(mut record), Some(id)) = (record, &key) {
                    record.seq = seq;
                    self.ledger.journal.record_changed(id.clone());
                    self.ledger.state.records.insert(id.clone(), record);
                    self.replication.record_made(seq, id.clone());
                }
                self.escrow.observe(user, me, spent, now);
                if self.faults.ack_before_flush {
                    self.reply(request.id, Ok(receipt));
                } else {
                    self.gate.hold(seq, request.id, receipt, key);
                }
                self.rebalance(user, &account, now);
            }
        }
    }

    /// A refusal; one for lack of rights here asks the holders for some, and
    /// holds the request if its client lets it wait and a live region holds
    /// rights to give (with none, as in a partition, waiting is only delay).
    fn refused(&mut self, now: Millis, mut request: ClientRequest, refusal: Refusal) {
        if let Refusal::TokensInOtherRegion { .. } = refusal {
            let account = self.ledger.state.account(&request.user);
            let holders = self.escrow.live_holders(self.peers.live(), &account);
            let cost = self.ledger.rules.cost(&request.command);
            self.ask_for_rights(&request.user, &holders, cost, now);
            if request.wait_for_rights_ms > 0 && !holders.is_empty() {
                let deadline = now.after(request.wait_for_rights_ms);
                match self.rights_waits.hold(request, deadline) {
                    None => {
                        self.escrow.spend_waits();
                        return;
                    }
                    // Too many wait already: refused at once.
                    Some(given_back) => request = given_back,
                }
            }
        }
        self.reply(request.id, Err(refusal));
    }

    /// Answers `receipt` once everything the replica holds now (a record or
    /// hold included) is durable: the next persist at the latest.
    fn answer_when_persisted(&mut self, request: RequestId, receipt: Receipt, replayed: bool) {
        if self.faults.ack_before_flush {
            self.answer(request, Ok(receipt), replayed);
        } else {
            let number = self.ledger.journal.next_number();
            self.gate
                .hold_until_persisted(number, request, receipt, replayed);
        }
    }

    /// A hold, capture or release (see [`crate::Holds`]). A hold with an
    /// idempotency key whose record is `stored` (made here, or at another
    /// region and replicated) replays instead: the client's retry in another
    /// region never opens a second hold for one request.
    fn execute_hold(
        &mut self,
        now: Millis,
        request: ClientRequest,
        stored: Option<IdempotencyRecord>,
    ) {
        let Some(id) = request.hold_id() else {
            return;
        };
        let opening = matches!(request.command, Command::Hold { .. });
        if let (true, Some(key), Some(record)) = (opening, &request.key, stored) {
            if record.fingerprint == key.fingerprint {
                self.answer_when_persisted(request.id, record.receipt, true);
            } else {
                self.reply(request.id, Err(Refusal::KeyReused));
            }
            return;
        }
        let ttl = self.config.hold_ttl_ms;
        let held_before = self.ledger.state.holds.held(&id.user);
        let applied = self
            .ledger
            .apply_hold(&id, &request.command, now, ttl, self.faults);
        if let (true, HoldOutcome::Answer { receipt, .. }) = (applied.changed, &applied.outcome) {
            // A hold or a release: no change to the balance, a line all the same.
            let held_after = self.ledger.state.holds.held(&id.user);
            let (kind, held) = if opening {
                (LineKind::Hold, held_after.saturating_sub(held_before))
            } else {
                (LineKind::Release, held_before.saturating_sub(held_after))
            };
            let me = self.me();
            let statement = &mut self.ledger.state.statement;
            statement.held(&id.user, me, kind, held, receipt.balance, &id.job);
        }
        match applied.outcome {
            HoldOutcome::Refused(refusal) => self.refused(now, request, refusal),
            HoldOutcome::Answer {
                receipt,
                replayed: false,
            } if opening && request.key.is_some() => {
                // A keyed hold's record goes to peers with a write of ours (our
                // entry, unchanged): records travel only with writes.
                let account = self.ledger.state.account(&id.user);
                let seq = self.ledger.write_own(&id.user, &account);
                let key = request.key.map(|k| {
                    let record = IdempotencyRecord {
                        fingerprint: k.fingerprint,
                        receipt,
                        at: now,
                        origin: self.me(),
                        seq,
                    };
                    self.ledger.journal.record_changed(k.id.clone());
                    self.ledger.state.records.insert(k.id.clone(), record);
                    self.replication.record_made(seq, k.id.clone());
                    k.id
                });
                self.gate.hold(seq, request.id, receipt, key);
            }
            HoldOutcome::Answer { receipt, replayed } => {
                self.answer_when_persisted(request.id, receipt, replayed);
            }
            HoldOutcome::Captured {
                receipt,
                account,
                amount,
            } => {
                let seq = self.ledger.write_own(&id.user, &account);
                let statement = &mut self.ledger.state.statement;
                statement.annotate(&id.user, Some(LineKind::Capture), Some(&id.job));
                self.escrow.observe(&id.user, self.me(), amount, now);
                if self.faults.ack_before_flush {
                    self.reply(request.id, Ok(receipt));
                } else {
                    self.gate.hold(seq, request.id, receipt, None);
                }
                self.rebalance(&id.user, &account, now);
            }
        }
    }

    /// Sends rights (see [`Ledger::transfer`]) and counts them.
    fn transfer(&mut self, user: &str, to: RegionId, amount: u64) -> bool {
        let ignore_holds = self.faults.give_away_held;
        let sent = self.ledger.transfer(user, to, amount, ignore_holds);
        if let Some(sent) = sent {
            self.escrow.transferred(sent);
        }
        sent.is_some()
    }

    /// Weighs moving `user`'s rights, whose account is now `account`.
    fn rebalance(&mut self, user: &str, account: &Account, now: Millis) {
        if self.leaving() {
            return;
        }
        let plan = self.escrow.plan(user, self.peers.live(), now, account);
        for t in plan {
            self.transfer(user, t.to, t.amount);
        }
    }

    /// Asks `holders` (the live regions holding some of `user`'s rights) for
    /// `amount`, unless asked lately.
    fn ask_for_rights(&mut self, user: &str, holders: &[RegionId], amount: u64, now: Millis) {
        if self.escrow.rights_request(user, holders, now) {
            let message = Message::RightsRequest {
                user: user.to_owned(),
                amount,
            };
            self.peers.broadcast(holders, &message);
        }
    }

    fn merge_item(&mut self, item: Item, now: Millis) {
        // Peers hold only durable versions of our entry, which we hold too.
        if item.origin == self.me() {
            return;
        }
        let merged = self.ledger.state.merge(&item, self.me(), self.faults);
        self.ledger.touched(&item.user);
        self.ledger.journal.merged(&item.user);
        self.escrow
            .observe(&item.user, item.origin, merged.spent, now);
        let mut account = merged.account;
        if merged.accepted {
            self.escrow.accepted_from(&item.user, item.origin, now);
            self.ledger.write_own(&item.user, &account);
            let waiting = self.rights_waits.rights_arrived(&item.user, now);
            if !waiting.is_empty() {
                for request in waiting {
                    self.execute(now, request);
                }
                // The spends that waited for these rights changed it.
                account = self.ledger.state.account(&item.user);
            }
        }
        self.rebalance(&item.user, &account, now);
    }

    fn send_batch(&mut self) {
        let durable = self.ledger.journal.durable();
        let me = self.me();
        let anyone_live = !self.peers.live().is_empty();
        for message in self
            .replication
            .take_batch(&mut self.ledger.state, durable, me, anyone_live)
        {
            self.peers.broadcast_live(&message);
        }
    }

    /// After a membership input: catch up with a peer that came up at once (a
    /// new node pulls its snapshot this way) rather than at its anti-entropy
    /// turn.
    fn membership_moved(&mut self) {
        for region in self.peers.membership_moved() {
            if !self.leaving() {
                let digest = Replication::digest(
                    &self.ledger.state,
                    self.ledger.journal.durable(),
                    self.me(),
                );
                self.peers.send(region, &digest);
            }
        }
    }

    fn reply(&mut self, request: RequestId, result: Result<Receipt, Refusal>) {
        self.answer(request, result, false);
    }

    fn answer(&mut self, request: RequestId, result: Result<Receipt, Refusal>, replayed: bool) {
        self.replies.push_back(Reply {
            request,
            result,
            replayed,
        });
    }

    /// Whether everything written has been made durable and sent.
    fn drained(&self) -> bool {
        self.ledger.journal.all_durable()
            && self.ledger.state.sent_upto >= self.ledger.state.last_written
    }
}
