//! What statement lines cost the spend path, in the core.
//!
//! `cargo bench --bench statements` drives one region's replica (the same
//! sans-IO core the node runs) through spends of 10,000 users, Zipf-chosen:
//! each spend is `handle_client`, and every 32 spends the group commit's
//! `prepare_persist` and `handle_flushed`. It times the same workload with
//! statements on and off, interleaved five times (the machine is shared and
//! noisy: compare the medians), and prints the bytes a line adds to a
//! persist. The node's own cost (sled writing the lines) is in
//! `http_load`, which runs a node with statements off beside the default.
//! `MAAS_BENCH_SMOKE=1` runs a few thousand spends.

use ledger_crdt::{Genesis, RegionId};
use maas_node::{
    ClientRequest, Command, Millis, Replica, ReplicaConfig, RequestId, RulesConfig, SpendPolicy,
};
use maas_sim::rng::{Rng, Zipf};
use std::time::{Duration, Instant};

const USERS: usize = 10_000;
const PER_FLUSH: u64 = 32;

fn main() {
    let smoke = std::env::var("MAAS_BENCH_SMOKE").is_ok();
    let spends: u64 = if smoke { 5_000 } else { 300_000 };
    let repeats = if smoke { 1 } else { 5 };
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut line_bytes = (0u64, 0u64);
    for _ in 0..repeats {
        let (t, bytes) = run(true, spends);
        on.push(t);
        line_bytes = bytes;
        off.push(run(false, spends).0);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let per = |d: Duration| d.as_secs_f64() * 1e9 / spends as f64;
    let (m_on, m_off) = (median(&mut on), median(&mut off));
    println!("| statements | ns per spend (median of {repeats}) | every run |");
    println!("|---|---|---|");
    for (name, m, all) in [("on", m_on, &on), ("off", m_off, &off)] {
        let runs: Vec<String> = all.iter().map(|d| format!("{:.0}", per(*d))).collect();
        println!("| {name} | {:.0} | {} |", per(m), runs.join(", "));
    }
    println!("\non / off: {:.2}", per(m_on) / per(m_off));
    let (lines, bytes) = line_bytes;
    println!(
        "lines per spend: {:.2}; bytes per line in a persist (the line, its key, its share of the commit's note): {:.0}",
        lines as f64 / spends as f64,
        bytes as f64 / lines.max(1) as f64
    );
}

/// Times `spends` spends on a fresh replica; returns the time and (lines,
/// bytes they add to persists).
fn run(statements: bool, spends: u64) -> (Duration, (u64, u64)) {
    let genesis = Genesis::new(1_000_000_000, [RegionId(1)]).expect("genesis");
    let mut config = ReplicaConfig::new(RulesConfig {
        region: RegionId(1),
        genesis,
        meme_cost: 1,
        idempotency_ttl_ms: 60_000,
        policy: SpendPolicy::Escrow,
    });
    config.statements = statements;
    let mut replica = Replica::new(config);
    let names: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    let zipf = Zipf::new(USERS, 1.0);
    let mut rng = Rng::new(11);
    let users: Vec<usize> = (0..spends).map(|_| zipf.sample(&mut rng)).collect();
    let (mut lines, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    for (i, &user) in users.iter().enumerate() {
        let now = Millis(1_000 + i as u64 / 10);
        let request = ClientRequest::new(
            RequestId(i as u64 + 1),
            &names[user],
            Command::ChargeCall,
            None,
        );
        replica.handle_client(now, request);
        if (i as u64 + 1).is_multiple_of(PER_FLUSH) {
            let persist = replica.prepare_persist();
            for line in &persist.statement {
                lines += 1;
                let encoded = ledger_crdt::wire::encode(line).map_or(0, |b| b.len());
                // `l` + user + 0 + id (8), and its place in the commit's note.
                let key = 1 + line.user.len() + 1 + 8;
                bytes += (encoded + key + 2 + key) as u64;
            }
            if !persist.statement.is_empty() {
                // The note's own key: `L` + time + the first id.
                bytes += 17;
            }
            replica.handle_flushed(now, persist.upto, persist.number);
            while replica.poll_reply().is_some() {}
        }
    }
    (started.elapsed(), (lines, bytes))
}
