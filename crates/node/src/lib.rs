//! A regional MaaS node: the HTTP API and durable storage around a sans-IO core.
//!
//! # Layout
//!
//! The core decides; the shell moves bytes. The compiler holds the line: the
//! shell's modules and crates (tokio, sled, quinn, axum, rustls, jsonwebtoken)
//! are behind the default `shell` feature, and the simulator builds this crate
//! without it (`.ci/run` checks that its dependency tree has none of them).
//!
//! - Core (no I/O, no clock; time is an input):
//!   - [`core`]: ledger rules on one account, idempotency records, in-flight keys.
//!   - [`rate_limit`]: per-user request limits over explicit time.
//!   - [`catalog`]: the built-in memes and the deterministic choice of one.
//!   - [`replica`]: one region's replicated ledger: batches, watermarks,
//!     anti-entropy, rebalancing, rights requests, graceful leave.
//!   - [`membership`]: who is up: SWIM (foca) with our identity, codec and
//!     timer queue.
//!   - [`records`]: idempotency records, by key and by the write that made them.
//!   - [`demand`]: per-user spend rates observed from deltas.
//!   - [`message`]: what regions say to each other, and its wire format.
//!   - [`packed`]: accounts held in memory as their bytes (a million users fit).
//! - Shell:
//!   - [`service`]: the replica behind one lock; group commit (prepare → write →
//!     flush → release replies); routing replies to waiting requests.
//!   - [`transport`]: QUIC between regions (quinn, mutual TLS): datagrams for
//!     membership, one stream per replication message, one connection per peer.
//!   - [`certs`]: the cluster CA and node certificates (`maas certs`).
//!   - [`store`]: sled: one atomic batch per flush, and loading at startup.
//!   - [`http`]: axum routes, parsing and responses.
//!   - [`listener`]: the accept loop: header timeout, connection cap, bounded
//!     drain, problem+json for what hyper refuses on its own.
//!   - [`problem`]: `application/problem+json` errors with stable `type`s.
//!   - [`auth`]: JWT clients and the operator credential.
//!   - [`metrics`]: Prometheus text.
//!   - [`config`]: flags and environment variables.
//!   - [`dev`]: `maas dev --regions N`, a loopback cluster for demos.
//!   - [`server`]: startup, the dev banner, background tasks, graceful shutdown.
//! - [`error`]: [`NodeError`], this crate's one error type.
//!
//! # A spend, end to end
//!
//! `GET /memes` → [`http`] authenticates and validates → [`service`] takes the
//! lock and hands the command to [`replica::Replica::client`], which applies it
//! under the escrow rule ([`core::Core`]) in memory and holds the reply → the
//! group-commit thread takes [`replica::Replica::prepare_persist`], writes it to
//! sled in one batch and flushes, then calls [`replica::Replica::flushed`] → the
//! reply is released and the meme returned. The simulator (`sim/`) drives the
//! same replica in the same order.

#[cfg(feature = "shell")]
pub mod auth;
pub mod catalog;
#[cfg(feature = "shell")]
pub mod certs;
#[cfg(feature = "shell")]
pub mod config;
pub mod core;
pub mod demand;
#[cfg(feature = "shell")]
pub mod dev;
pub mod error;
#[cfg(feature = "shell")]
pub mod http;
#[cfg(feature = "shell")]
pub mod listener;
pub mod membership;
pub mod message;
#[cfg(feature = "shell")]
pub mod metrics;
pub mod packed;
#[cfg(feature = "shell")]
pub mod problem;
pub mod rate_limit;
pub mod records;
pub mod replica;
#[cfg(feature = "shell")]
pub mod server;
#[cfg(feature = "shell")]
pub mod service;
#[cfg(feature = "shell")]
pub mod store;
#[cfg(feature = "shell")]
pub mod transport;

pub use error::NodeError;
