//! The simulator's checker must be able to fail, and its runs must replay.

use maas_sim::sweep::{summarize, sweep};
use maas_sim::world::{Broken, Policy, SimConfig, World};

/// The invariant each of seeds 1 to 30 finds broken, in order, run lazily.
fn violations(broken: Broken) -> impl Iterator<Item = &'static str> {
    (1..=30).filter_map(move |seed| {
        let mut cfg = SimConfig::new(seed);
        cfg.broken = Some(broken);
        World::new(cfg).run().violation.map(|v| v.invariant)
    })
}

/// Runs seeds until a run reports a violation; returns its invariant.
fn first_violation(broken: Broken) -> Option<&'static str> {
    violations(broken).next()
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
    // A lost spend shows at the restart, when the region holds less than it
    // acknowledged; or, when durable writes nobody saw acknowledged (a
    // capture, a spend whose client gave up) make up the totals the restart
    // check compares, only at the end, as a balance above what clients saw.
    let seen: Vec<&str> = violations(Broken::AckBeforeFlush).collect();
    assert!(seen.contains(&"acknowledged-write-lost"), "{seen:?}");
    assert!(
        seen.iter()
            .all(|v| matches!(*v, "acknowledged-write-lost" | "final-balance")),
        "{seen:?}"
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
fn a_hold_captured_twice_is_caught() {
    // The repeat is charged again: seen as a second, different answer to the
    // capture, or (when the repeat came a TTL after the hold) as a charge for
    // a job whose hold had run out; or first, when the second charge took
    // rights that another open hold had set aside, as holds beyond rights.
    let seen: Vec<&str> = violations(Broken::CaptureTwice).collect();
    let charged_twice =
        |v: &&str| matches!(*v, "idempotency-key-charged-twice" | "released-job-charged");
    assert!(seen.iter().any(charged_twice), "{seen:?}");
    assert!(
        seen.iter()
            .all(|v| charged_twice(v) || *v == "holds-within-rights"),
        "{seen:?}"
    );
}

#[test]
fn held_rights_given_away_are_caught() {
    assert_eq!(
        first_violation(Broken::GiveAwayHeld),
        Some("holds-within-rights")
    );
}

#[test]
fn a_hold_kept_past_its_ttl_and_captured_is_caught() {
    assert_eq!(
        first_violation(Broken::KeepExpiredHolds),
        Some("released-job-charged")
    );
}

#[test]
fn a_subscription_taken_by_arrival_instead_of_version_is_caught() {
    // Regions that keep whatever arrived last end up disagreeing, or agreeing
    // on a stale version.
    let seen = first_violation(Broken::SubscriptionByArrival);
    assert!(
        matches!(seen, Some("convergence" | "subscription-highest-version")),
        "{seen:?}"
    );
}

#[test]
fn a_statement_that_misses_other_regions_changes_is_caught() {
    assert_eq!(first_violation(Broken::StatementOwnOnly), Some("statement"));
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
    let escrow = summarize(&sweep(1_000, 25, Policy::Escrow, None, None));
    let naive = summarize(&sweep(1_000, 25, Policy::Naive, None, None));
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

/// Seeds on which soaks far outside CI's range once found a failure. Mostly
/// liveness (live replicas still differing 8 s after the faults stopped); the
/// causes, all fixed, are listed by the seeds. The first two: two groups of regions that formed apart during a partition and
/// never heard of each other (membership now keeps announcing to seeds that are
/// not live members; `membership.rs` has a unit test of exactly that), and
/// rights going round in cycles between regions whose views of demand
/// disagreed (proactive rebalancing now needs a spend seen in the last 2 s).
/// The traces have changed since, so these are kept as hard scenarios that
/// must stay clean, under both policies.
const SOAK_FAILURES: [u64; 19] = [
    100_493, 105_595, 107_098, 108_818, 111_204, 111_621, 119_891, // first soak
    200_612, 205_182, 206_064, 206_246, 214_680, // second soak
    // third soak: a catch-up answering a digest sent before the asker crashed
    // raised its watermark over writes it had lost (305540, 306992, 308995,
    // 314310, 315499); a replay answered from a record not yet durable at the
    // replaying region, forgotten in a crash, then charged (301918)
    301_918, 305_540, 306_992, 308_995, 314_310, 315_499,
    // premium soak: a subscription forwarded inside another region's delta
    // before it was durable at its writer, then lost there in a crash
    613_462,
];

#[test]
fn seeds_where_soaks_found_liveness_failures_stay_clean() {
    for seed in SOAK_FAILURES {
        for policy in [Policy::Escrow, Policy::Naive] {
            let mut cfg = SimConfig::new(seed);
            cfg.policy = policy;
            let report = World::new(cfg).run();
            assert!(
                report.violation.is_none(),
                "seed {seed} {policy:?}: {:?}",
                report.violation
            );
        }
    }
}
