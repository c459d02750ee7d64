//! The region core: one region's ledger as a sans-IO state machine.
//!
//! Nothing here touches a socket, a disk or a clock: inputs carry the time,
//! outputs are values. The crate's `shell` feature adds the I/O around it; the
//! simulator drives it without.
//!
//! - [`replica`]: one region's replicated ledger, furnished as sub-states.
//! - [`rules`]: the ledger rules on one account (escrow check, replays).
//! - [`command`]: what clients ask, and what they are answered.
//! - [`idempotency`]: key scoping, fingerprints, records.
//! - [`records`]: the records a region holds, by key and by the write that made them.
//! - [`holds`]: tokens set aside for jobs, captured on delivery or released.
//! - [`statement`]: a user's statement lines, derived from the versions a
//!   region makes and merges.
//! - [`membership`]: who is up: SWIM (foca) with our identity, codec and timers.
//! - [`message`]: what regions say to each other, and its wire format.
//! - [`demand`]: per-user spend rates observed from deltas.
//! - [`packed`]: accounts held in memory as their bytes (a million users fit).
//! - [`units`]: `Seq`, `Millis`, `RequestId`.

pub(crate) mod by_user;
pub(crate) mod command;
pub(crate) mod demand;
pub(crate) mod holds;
pub(crate) mod idempotency;
pub(crate) mod membership;
pub(crate) mod message;
pub(crate) mod packed;
pub(crate) mod records;
pub(crate) mod replica;
pub(crate) mod rules;
pub(crate) mod statement;
pub(crate) mod units;
