//! Escrowed token accounts that replicate as CRDTs and can never go below zero.
//!
//! This crate is the pure data core of MaaS: no I/O, no clock, no async. The node,
//! the simulator and the tests all drive the same types.
//!
//! # Layout
//!
//! - [`region`]: [`RegionId`], the small integer that names a region.
//! - [`genesis`]: [`Genesis`], the welcome grant every user starts with and how its
//!   rights are pre-split across regions.
//! - [`entry`]: [`RegionEntry`], the grow-only counters one region writes.
//! - [`op`]: [`Op`], the local operations (credit, spend, transfer).
//! - [`account`]: [`Account`], one user's replicated state; operations, merge, rights,
//!   balance and the invariant check.
//! - [`subscription`]: [`Subscription`], the premium tier's register, ordered by
//!   billing version.
//! - [`rebalance`]: the pure policy that moves rights toward demand.
//! - [`small_map`]: [`SmallMap`], the sorted-vector map accounts and entries use,
//!   so a user costs bytes, not kilobytes, of RAM.
//! - [`wire`]: the versioned, size-limited bincode format.
//! - [`error`]: [`Error`], the crate's one error type.
//!
//! # Model
//!
//! Each user's account holds one [`RegionEntry`] per region, and **only region `r`
//! writes entry `r`**. An entry is a set of counters that only grow:
//!
//! | counter            | meaning                                        |
//! |--------------------|------------------------------------------------|
//! | `credited`         | top-ups and refunds made at `r`                |
//! | `spent`            | spends and operator debits made at `r`         |
//! | `calls`            | memes-API calls served at `r`                  |
//! | `sent[s]`          | rights `r` transferred to `s` (escrow matrix)  |
//! | `received[s]`      | rights from `s` that `r` has accepted          |
//!
//! The **rights** of region `r` are what it may spend without asking anyone:
//!
//! ```text
//! rights(r) = genesis_share(r) + credited(r) + Σ received(r)[s] − Σ sent(r)[s] − spent(r)
//! ```
//!
//! The **balance** is the sum of all regions' rights plus rights in transit (sent but
//! not yet accepted); transfers cancel out, so once everything is delivered it is
//! `welcome grant + Σ credited − Σ spent`.
//!
//! **Why no balance can go negative.** Region `r` spends or sends only what
//! `rights(r)` covers, and every term of `rights(r)` lives in `r`'s own entry. So
//! every version of entry `r` that `r` ever wrote has rights ≥ 0. Replicas merge
//! entries by pointwise maximum, and because every counter only grows, the maximum of
//! two versions of `r`'s entry *is* the later version: a replica always holds some
//! version `r` really wrote, never a mixture. Deltas carry the writer's whole entry
//! for the same reason. Hence every replica's view of every region's rights is ≥ 0,
//! and so is its view of the balance, whatever the network does: loss, duplication,
//! reordering, partitions. No spend ever waits on another region.
//!
//! **Why transfers are accepted.** A transfer only raises `sent(r)[s]` in `r`'s
//! entry. It becomes `s`'s rights when `s` merges it and calls
//! [`Account::accept_transfers`], raising `received(s)[r]` in its own entry. Counting
//! it only then keeps all of `s`'s rights inside `s`'s entry, as above.
//!
//! **The welcome grant** is implicit: see [`Genesis`]. It is never written, so it can
//! never be granted twice.
//!
//! **Merging** is a join: commutative, associative and idempotent. A delta is just a
//! small [`Account`], so duplicated, reordered, lost-then-resent and forwarded
//! deltas are all harmless; updates flow A→B→C even while A–C is cut.
//!
//! **Amounts** are `u64` with checked arithmetic; sums across regions are computed in
//! `u128`. An overflow is a refused operation ([`Error::Overflow`]), never a wrap.

pub mod account;
pub mod entry;
pub mod error;
pub mod genesis;
pub mod op;
pub mod rebalance;
pub mod region;
pub mod small_map;
pub mod subscription;
pub mod wire;

pub use account::{Account, Delta};
pub use entry::RegionEntry;
pub use error::Error;
pub use genesis::{DEFAULT_WELCOME_GRANT, Genesis};
pub use op::Op;
pub use rebalance::{RebalanceConfig, Transfer, answer_request, plan_transfers};
pub use region::RegionId;
pub use small_map::SmallMap;
pub use subscription::Subscription;
