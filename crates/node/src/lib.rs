//! A regional MaaS node: the HTTP API and durable storage around a sans-IO core.
//!
//! # Layout
//!
//! The core decides; the shell moves bytes. The compiler holds the line: the
//! shell's modules and crates (tokio, sled, quinn, axum, rustls, jsonwebtoken)
//! are behind the default `shell` feature, and the simulator builds this crate
//! without it (`.ci/run` checks that its dependency tree has none of them).
//! Modules are private; what callers use is re-exported here.
//!
//! - `region/` — the region core (no I/O, no clock; time is an input):
//!   - `replica/`: [`Replica`], one region's replicated ledger, as owned
//!     sub-states that decide (journal, reply gate, key queries, rights
//!     waits, replication, escrow, peers) and a thin struct that applies
//!     their decisions. Handlers are verbs: `handle_client`, `handle_peer`,
//!     `handle_gossip`, `handle_tick`, `handle_flushed`; outputs are polled:
//!     `poll_reply`, `poll_transmit`, `poll_timeout`, `prepare_persist`.
//!   - `rules.rs` ([`Rules`]): the ledger rules on one account.
//!   - `command.rs`, `idempotency.rs`, `records.rs`: requests, answers, keys
//!     (one scoping and fingerprint rule, used by HTTP and the simulator).
//!   - `membership/` ([`Membership`]): SWIM (foca) with our identity, codec, timers.
//!   - `message.rs` ([`Message`]), `demand.rs` and `by_user.rs` (per-user
//!     timing state, swept a slice at a time), `packed.rs`, `units.rs`
//!     ([`Seq`], [`Millis`], [`RequestId`]).
//! - `catalog.rs` ([`Catalog`]): the meme catalog, a pure helper of the API.
//! - `art/` (feature `shell`): meme images, pure: [`ImageSpec`], the
//!   renderer ([`render_png`]), [`ImageCache`], the curated captions and the
//!   embedded AI generator's grammar ([`ai_spec`]), [`CaptionFilter`].
//! - `shell/` — the node around the core (feature `shell`):
//!   - `engine.rs`: the replica behind one lock; group commit (prepare → write
//!     → flush → release replies); routing replies and transmits; ticks at
//!     the core's `poll_timeout`.
//!   - `app.rs`: what an HTTP handler needs (engine, catalog, auth, limiter,
//!     metrics).
//!   - `http/`: axum routes, parsing and responses: the router, admission,
//!     the caller, the core's refusals as problems, and the memes, balance
//!     and operations routes, a file each (`query.rs`: a URL query's pairs,
//!     decoded only if they hold an escape); `front.rs`: what
//!     every request passes through around its route (id, body limit,
//!     timeout, panic, metrics, problems); `log_lines.rs`: the log line
//!     formats, which name the request being served; `listener.rs`: the
//!     accept loop (header timeout, connection cap, bounded drain, the count
//!     of open connections the group commit reads);
//!     `openapi.rs`: the OpenAPI 3.1 document and the offline docs UI.
//!   - `transport.rs`: QUIC between regions (quinn, mutual TLS); `certs.rs`.
//!   - `store.rs`: sled behind the write-ahead log, loading at startup;
//!     `keys.rs`: the key space, one prefix byte per kind of key, and every key built there.
//!   - `wal.rs`: the write-ahead log: one fsynced record per group commit;
//!     checkpoints flush sled and delete it; replayed at every open.
//!   - `linger.rs`: how long a group commit waits for more writes to share
//!     its flush (only while they come faster than one per flush, until
//!     they stop coming, and while a connection is free to send one).
//!   - `limits.rs`: rate limits (GCRA) per user and per client IP.
//!   - `statements.rs`: users' statement lines in sled (pages, usage by
//!     day, retention, erasure); `pending.rs`: the lines logged but not yet
//!     in sled, which reads see; `history.rs`: their HTTP routes;
//!     `notify.rs`: low-balance events from a durable outbox.
//!   - `auth.rs`: who is calling; `verified.rs`: client tokens verified
//!     before, so the next call skips the signature check.
//!   - `problem.rs`, `metrics.rs`, `config.rs`, `dev.rs`, `server.rs`.
//! - `error.rs`: [`NodeError`], this crate's one error type.
//! - `hashing.rs`: the hash maps of the hot paths, with foldhash.
//!
//! # A spend, end to end
//!
//! `GET /memes` → `http` authenticates and validates → the engine takes the
//! lock and hands a [`ClientRequest`] to [`Replica::handle_client`], which
//! applies it under the [`Rules`] in memory and holds the reply → the
//! group-commit thread takes [`Replica::prepare_persist`], writes it to sled in
//! one batch and flushes, then calls [`Replica::handle_flushed`] → the reply
//! comes out of [`Replica::poll_reply`] and the meme is returned. The simulator
//! (`sim/`) drives the same replica in the same order.

#[cfg(feature = "shell")]
mod art;
mod catalog;
mod error;
mod hashing;
mod region;
#[cfg(feature = "shell")]
mod shell;

#[cfg(feature = "shell")]
pub use art::{
    CaptionFilter, ImageCache, ImageSpec, Layout, RenderError, ai_spec, curated_spec, render_png,
};
pub use catalog::{Catalog, Meme, Position, nearest_locale};
pub use error::NodeError;
pub use region::command::{ClientRequest, Command, Receipt, Refusal, Standing};
pub use region::holds::{HoldId, HoldState, HoldStep, Holds};
pub use region::idempotency::{IdempotencyKey, IdempotencyRecord, RecordId};
pub use region::membership::{
    MAX_GOSSIP_PACKET, MemberEvent, MemberView, Membership, MembershipConfig, NodeIdentity,
    WireCodec,
};
pub use region::message::{Covered, Item, KeyState, MAX_MESSAGE_BYTES, Message};
pub use region::packed::Packed;
pub use region::replica::{
    AccountWrite, ClusterView, Durable, EscrowStats, Faults, Meta, PeerLag, Persist, Replica,
    ReplicaConfig, Reply, Transmit,
};
pub use region::rules::{Executed, Rules, RulesConfig, SpendPolicy};
pub use region::statement::{LineKind, StatementLine};
pub use region::units::{Millis, RequestId, Seq};
#[cfg(feature = "shell")]
pub use shell::{
    auth::{Authenticator, JwtKey, JwtRules, Principal, sign_hs256, sign_hs256_valid_for},
    config::{DEV_BILLING_WEBHOOK_SECRET, DEV_JWT_SECRET, DEV_OPERATOR_TOKEN},
    server::main,
    webhook::sign as sign_webhook,
};
