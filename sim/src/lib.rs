//! A deterministic simulator for the MaaS ledger, in the spirit of TigerBeetle's
//! VOPR: the very replica core production runs, driven through seeded network and
//! node faults, with the ledger's invariants checked as it goes.
//!
//! # Layout
//!
//! - [`rng`]: the one seeded random source (xoshiro256**), and Zipf choice.
//! - [`network`]: per-link latency, loss, duplication, reordering, cuts.
//! - [`checker`]: what clients saw (acknowledged, refused, maybe applied) and the
//!   invariants that follow.
//! - [`world`]: regions, clients, faults, and the step loop.
//! - [`sweep`]: many seeds, escrow beside the naive baseline.
//!
//! # Determinism
//!
//! Simulated time, one RNG, ordered maps everywhere an order is observed: a seed
//! replays bit for bit, and the run prints a hash of every output to prove it.
//! Nothing tells a region who is up: each runs the real membership (foca) over
//! the simulated network, and finds crashes, deaths and leaves by probing.

pub mod checker;
pub mod network;
pub mod rng;
pub mod sweep;
pub mod world;
