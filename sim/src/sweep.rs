//! Many seeds, escrow beside the naive baseline, summed up in one table.

use crate::world::{Broken, Policy, Report, SimConfig, World};

/// One run's configuration and report.
pub type Run = (SimConfig, Report);

/// Runs `seeds` seeds from `first` under `policy`, each with `regions`
/// regions if given (else the seed's choice).
pub fn sweep(
    first: u64,
    seeds: u64,
    policy: Policy,
    broken: Option<Broken>,
    regions: Option<usize>,
) -> Vec<Run> {
    (first..first + seeds)
        .map(|seed| {
            let mut cfg = SimConfig::new(seed);
            cfg.policy = policy;
            cfg.broken = broken;
            cfg.regions = regions;
            let report = World::new(cfg.clone()).run();
            (cfg, report)
        })
        .collect()
}

/// The summary row of a sweep.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Runs.
    pub runs: u64,
    /// Runs with a broken invariant.
    pub violations: u64,
    /// Runs that ended with some user overspent.
    pub overspent_runs: u64,
    /// Tokens overspent, all runs.
    pub overspend: u128,
    /// Spends acknowledged.
    pub acked: u64,
    /// Spends refused.
    pub refused: u64,
    /// Spends refused while the cluster held enough.
    pub refused_with_enough: u64,
    /// Mean convergence after heal, ms.
    pub converge_ms: f64,
    /// Mean rebalance latency, ms.
    pub rebalance_ms: f64,
    /// Peer messages per acknowledged spend.
    pub messages_per_spend: f64,
    /// Peer bytes per acknowledged spend.
    pub bytes_per_spend: f64,
}

/// Sums up a sweep.
pub fn summarize(runs: &[Run]) -> Summary {
    let mut s = Summary {
        runs: runs.len() as u64,
        ..Summary::default()
    };
    let (mut conv, mut conv_n, mut reb, mut reb_n, mut msgs, mut bytes) =
        (0.0, 0u64, 0.0, 0u64, 0u64, 0u64);
    for (_, r) in runs {
        s.violations += u64::from(r.violation.is_some());
        s.overspent_runs += u64::from(r.overspend > 0);
        s.overspend += r.overspend;
        s.acked += r.acked_spends;
        s.refused += r.refused_spends;
        s.refused_with_enough += r.refused_with_enough;
        if let Some(c) = r.converge_ms {
            conv += c as f64;
            conv_n += 1;
        }
        if let Some(b) = r.rebalance_ms {
            reb += b;
            reb_n += 1;
        }
        msgs += r.messages;
        bytes += r.bytes;
    }
    s.converge_ms = conv / conv_n.max(1) as f64;
    s.rebalance_ms = reb / reb_n.max(1) as f64;
    s.messages_per_spend = msgs as f64 / s.acked.max(1) as f64;
    s.bytes_per_spend = bytes as f64 / s.acked.max(1) as f64;
    s
}

/// The side-by-side markdown table.
pub fn table(rows: &[(&str, &Summary)]) -> String {
    let mut out = String::from(
        "| policy | runs | violations | runs overspent | tokens overspent | spends acked | refused | refused while cluster had enough | converge after heal | rebalance latency | msgs / spend | bytes / spend |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, s) in rows {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} ({:.1}%) | {:.0} ms | {:.0} ms | {:.1} | {:.0} |\n",
            s.runs,
            s.violations,
            s.overspent_runs,
            s.overspend,
            s.acked,
            s.refused,
            s.refused_with_enough,
            100.0 * s.refused_with_enough as f64 / (s.acked + s.refused).max(1) as f64,
            s.converge_ms,
            s.rebalance_ms,
            s.messages_per_spend,
            s.bytes_per_spend
        ));
    }
    out
}
