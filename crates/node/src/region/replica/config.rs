//! How a replica is tuned, and the deliberate bugs the simulator may switch on.

use crate::region::membership::MembershipConfig;
use crate::region::rules::RulesConfig;
use ledger_crdt::RebalanceConfig;
use std::net::SocketAddr;

/// Tuning of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The ledger rules of this region.
    pub rules: RulesConfig,
    /// Where this node's peer endpoint listens, as peers should reach it.
    pub addr: SocketAddr,
    /// This life of the node: its start time in ms (see [`crate::NodeIdentity`]).
    pub generation: u64,
    /// Seeds the membership protocol's random choices.
    pub seed: u64,
    /// Timing of the membership protocol.
    pub membership: MembershipConfig,
    /// The rebalancing policy's tuning.
    pub rebalance: RebalanceConfig,
    /// A batch of deltas closes when its oldest write is this old, or as
    /// soon as it carries rights a peer asked for.
    pub batch_age_ms: u64,
    /// A batch message holds at most about this many bytes.
    pub batch_bytes: usize,
    /// How often to send a digest to one peer.
    pub anti_entropy_ms: u64,
    /// A catch-up covers what this region held this long ago: anything newer
    /// is most likely still on its way to the asker (see
    /// `region::replica::horizon`). About a round trip plus the batch age; 0
    /// covers everything.
    pub catch_up_grace_ms: u64,
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
    /// they know its key (see [`crate::Replica::handle_client`]) before it runs anyway.
    pub key_query_ms: u64,
    /// A user whose latest known spend was served here within this long is a
    /// steady local customer: its keyed requests run without asking peers.
    pub local_customer_ms: u64,
    /// An open hold not captured or released within this long is released.
    pub hold_ttl_ms: u64,
    /// Record which users changed, for [`crate::Replica::drain_changed`] (the
    /// simulator checks exactly those accounts after every step).
    pub track_changes: bool,
    /// Make statement lines (see [`crate::region::statement`]).
    pub statements: bool,
    /// Deliberate bugs, for proving the simulator's checker can fail.
    pub faults: Faults,
}

impl ReplicaConfig {
    /// Defaults around `rules`.
    pub fn new(rules: RulesConfig) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            generation: 0,
            seed: u64::from(rules.region.0),
            membership: MembershipConfig::default(),
            rules,
            rebalance: RebalanceConfig::default(),
            batch_age_ms: 25,
            batch_bytes: 64 * 1024,
            anti_entropy_ms: 200,
            catch_up_grace_ms: 500,
            demand_half_life_ms: 2_000,
            rebalance_every_ms: 50,
            rebalance_quiet_ms: 2_000,
            rights_request_every_ms: 100,
            keep_horizon_ms: 2_000,
            bounce_cooldown_ms: 1_000,
            key_query_ms: 300,
            local_customer_ms: 5_000,
            hold_ttl_ms: 60_000,
            track_changes: false,
            statements: true,
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
    /// Charge a captured hold again when its capture is repeated.
    pub capture_twice: bool,
    /// Give away (rebalance, answer, leave) rights that open holds set aside.
    pub give_away_held: bool,
    /// Never release a hold at its TTL.
    pub keep_expired_holds: bool,
    /// Statement lines only for our own writes, none for merged versions.
    pub statement_own_only: bool,
    /// Take whatever subscription a peer sends last, not the highest version.
    pub subscription_by_arrival: bool,
}
