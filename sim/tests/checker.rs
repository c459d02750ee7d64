//! The simulator's checker must be able to fail, and its runs must replay.

use maas_sim::sweep::{summarize, sweep};
use maas_sim::world::{Broken, Policy, SimConfig, World};

/// Runs seeds until a run reports a violation; returns its invariant.
fn first_violation(broken: Broken) -> Option<&'static str> {
    (1..=30).find_map(|seed| {
        let mut cfg = SimConfig::new(seed);
        cfg.broken = Some(broken);
        World::new(cfg).run().violation.map(|v| v.invariant)
    })
}

#[test]
fn a_spend_that_skips_the_rights_check_is_caught() {
    assert_eq!(
        first_violation(Broken::SkipRightsCheck),
        Some("rights-and-balance-non-negative")
    );
}

#[test]
fn a_merge_that_adds_instead_of_taking_the_max_is_caught() {
    assert_eq!(
        first_violation(Broken::AdditiveMerge),
        Some("rights-and-balance-non-negative")
    );
}

#[test]
fn an_acknowledged_write_that_was_not_flushed_is_caught() {
    assert_eq!(
        first_violation(Broken::AckBeforeFlush),
        Some("acknowledged-write-lost")
    );
}

#[test]
fn a_retry_charged_twice_by_one_region_is_caught() {
    assert_eq!(
        first_violation(Broken::ForgetIdempotency),
        Some("idempotency-key-charged-twice")
    );
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let a = World::new(SimConfig::new(42)).run();
    let b = World::new(SimConfig::new(42)).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.acked_spends, b.acked_spends);
    let c = World::new(SimConfig::new(43)).run();
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seeds, different runs"
    );
}

#[test]
fn escrow_holds_where_naive_counters_overspend() {
    let escrow = summarize(&sweep(1_000, 25, Policy::Escrow, None));
    let naive = summarize(&sweep(1_000, 25, Policy::Naive, None));
    assert_eq!(escrow.violations, 0);
    assert_eq!(escrow.overspend, 0);
    assert!(
        escrow.acked > 10_000,
        "the workload ran: {} spends",
        escrow.acked
    );
    assert!(
        naive.overspend > 0,
        "the naive baseline should lose tokens somewhere in 25 seeds"
    );
}
