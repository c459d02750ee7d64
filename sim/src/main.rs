//! `sim`: run the deterministic simulator.
//!
//! - `sim --seed 7` runs one seed and prints its figures and trace hash.
//! - `sim --seed 7 --check-determinism` runs it twice and compares the hashes.
//! - `sim --sweep 300` runs 300 seeds under escrow and under the naive baseline,
//!   prints the table side by side, and fails if escrow broke any invariant.
//! - `sim --sweep 20000 --seed 100000 --escrow-only` is a soak: escrow alone.

use clap::{Parser, ValueEnum};
use maas_sim::sweep::{summarize, sweep, table};
use maas_sim::world::{Broken, Policy, SimConfig, World};
use std::process::ExitCode;

/// Deterministic simulation of MaaS regions under partitions, crashes and retries.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Seed of a single run (or the first seed of a sweep).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run this many seeds, escrow beside naive.
    #[arg(long)]
    sweep: Option<u64>,
    /// With --sweep: run escrow only (a soak), without the naive baseline.
    #[arg(long, requires = "sweep")]
    escrow_only: bool,
    /// Run the seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Spend policy of a single run.
    #[arg(long, value_enum, default_value_t = PolicyArg::Escrow)]
    policy: PolicyArg,
    /// Run a deliberately broken core (to see the checker catch it).
    #[arg(long, value_enum)]
    broken: Option<BrokenArg>,
    /// Start this many regions instead of the seed's choice of 3 to 5 (the
    /// scale-out figures run 10).
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=32))]
    regions: Option<u16>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    Escrow,
    Naive,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BrokenArg {
    SkipRightsCheck,
    AdditiveMerge,
    AckBeforeFlush,
    ForgetIdempotency,
    CaptureTwice,
    GiveAwayHeld,
    KeepExpiredHolds,
    SubscriptionByArrival,
    StatementOwnOnly,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let policy = match args.policy {
        PolicyArg::Escrow => Policy::Escrow,
        PolicyArg::Naive => Policy::Naive,
    };
    let broken = args.broken.map(|b| match b {
        BrokenArg::SkipRightsCheck => Broken::SkipRightsCheck,
        BrokenArg::AdditiveMerge => Broken::AdditiveMerge,
        BrokenArg::AckBeforeFlush => Broken::AckBeforeFlush,
        BrokenArg::ForgetIdempotency => Broken::ForgetIdempotency,
        BrokenArg::CaptureTwice => Broken::CaptureTwice,
        BrokenArg::GiveAwayHeld => Broken::GiveAwayHeld,
        BrokenArg::KeepExpiredHolds => Broken::KeepExpiredHolds,
        BrokenArg::SubscriptionByArrival => Broken::SubscriptionByArrival,
        BrokenArg::StatementOwnOnly => Broken::StatementOwnOnly,
    });
    if let Some(n) = args.sweep {
        let regions = args.regions.map(usize::from);
        let escrow = sweep(args.seed, n, Policy::Escrow, broken, regions);
        let e = summarize(&escrow);
        if args.escrow_only {
            println!("{}", table(&[("escrow", &e)]));
        } else {
            let naive = sweep(args.seed, n, Policy::Naive, broken, regions);
            let v = summarize(&naive);
            println!("{}", table(&[("escrow", &e), ("naive async counters", &v)]));
        }
        let mut failed = false;
        for (cfg, report) in &escrow {
            if let Some(violation) = &report.violation {
                failed = true;
                print_violation(cfg, violation);
            }
        }
        return if failed || e.overspend > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut cfg = SimConfig::new(args.seed);
    cfg.policy = policy;
    cfg.broken = broken;
    cfg.regions = args.regions.map(usize::from);
    let report = World::new(cfg.clone()).run();
    println!(
        "seed {} regions {} spends acked {} refused {} (with enough: {}) overspend {} converge {:?} ms rebalance {:?} ms messages {} bytes {} trace {:016x}",
        cfg.seed,
        report.regions,
        report.acked_spends,
        report.refused_spends,
        report.refused_with_enough,
        report.overspend,
        report.converge_ms,
        report.rebalance_ms,
        report.messages,
        report.bytes,
        report.trace_hash
    );
    if args.check_determinism {
        let again = World::new(cfg.clone()).run();
        if again.trace_hash != report.trace_hash {
            println!(
                "NOT DETERMINISTIC: {:016x} then {:016x}",
                report.trace_hash, again.trace_hash
            );
            return ExitCode::FAILURE;
        }
        println!("deterministic: both runs hashed {:016x}", report.trace_hash);
    }
    match &report.violation {
        Some(v) => {
            print_violation(&cfg, v);
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

fn print_violation(cfg: &SimConfig, v: &maas_sim::checker::Violation) {
    let policy = match cfg.policy {
        Policy::Escrow => "escrow",
        Policy::Naive => "naive",
    };
    let broken = match cfg.broken {
        Some(Broken::SkipRightsCheck) => " --broken skip-rights-check",
        Some(Broken::AdditiveMerge) => " --broken additive-merge",
        Some(Broken::AckBeforeFlush) => " --broken ack-before-flush",
        Some(Broken::ForgetIdempotency) => " --broken forget-idempotency",
        Some(Broken::CaptureTwice) => " --broken capture-twice",
        Some(Broken::GiveAwayHeld) => " --broken give-away-held",
        Some(Broken::KeepExpiredHolds) => " --broken keep-expired-holds",
        Some(Broken::SubscriptionByArrival) => " --broken subscription-by-arrival",
        Some(Broken::StatementOwnOnly) => " --broken statement-own-only",
        None => "",
    };
    let regions = cfg
        .regions
        .map_or(String::new(), |n| format!(" --regions {n}"));
    println!(
        "VIOLATION seed {} at {} ms: {}: {}\n  replay: cargo run --release -p maas-sim -- --seed {} --policy {policy}{broken}{regions}",
        cfg.seed, v.at_ms, v.invariant, v.detail, cfg.seed
    );
}
