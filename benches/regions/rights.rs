//! Scenario 8 (`MAAS_BENCH_RIGHTS=1`): how long a write waits for rights that
//! another region holds.
//!
//! A debit that its region's share does not cover asks the holders for rights
//! and waits for them: the holder writes the transfer, makes it durable and
//! sends it, and the asking region runs the debit again when it arrives. Each
//! trial takes a new user:
//! 1. an operator credits 1,000 tokens in region 1, which gets their rights;
//! 2. once region 2 shows the balance, an operator debits 500 in region 2. It
//!    holds none of the rights before its first write, and never more than
//!    the reserve rebalancing leaves a region (a quarter of an even share,
//!    83), so the debit waits for rights: the figure;
//! 3. an operator debits 1 in region 1, which holds the rights: one durable
//!    write and no wait, the floor in the same run.
//!
//! Trials run at a round trip of 0 ms between regions (the proxies relay at
//! once), then at 100 ms. `MAAS_BENCH_RIGHTS_TRIALS` (100) per round trip;
//! `MAAS_BENCH_NODE` runs another build's nodes, for an A/B. Every debit in
//! region 2 must have waited for rights (region 2's `maas_rights_waits_total`),
//! or the run fails: it would be timing something else.

use super::{Deployment, ONE_WAY, maas_cluster, ms};
use crate::support::load::{fetch, histogram, post};
use crate::support::servers::{OPERATOR, counters};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Tokens each trial's user gets in region 1.
const CREDIT: u64 = 1_000;
/// The debit in region 2: more than any reserve of [`CREDIT`] a region keeps.
const REMOTE_DEBIT: u64 = 500;
/// How long region 2 may take to show a credit made in region 1.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Latencies of one round trip's trials.
struct Trials {
    one_way: Duration,
    /// The debits that needed region 1's rights, µs.
    remote: Histogram<u64>,
    /// The debits region 1 covered itself, µs.
    local: Histogram<u64>,
    /// Writes that did not answer 200, and credits region 2 never showed.
    failed: u64,
    /// Region 2's `maas_rights_waits_total` over the trials.
    waits: u64,
}

/// Runs `trials` trials at each round trip and prints the table; `false` if
/// a write failed or a debit in region 2 did not wait for rights (then this
/// measures something else).
pub(super) async fn rights_run(proxies: &Handle, trials: u64) -> bool {
    let deployment = maas_cluster("ours: escrow (maas)", 205, 0, &[], proxies).await;
    let Some(links) = deployment.links.clone() else {
        return false;
    };
    let mut results = Vec::new();
    for (round, one_way) in [Duration::ZERO, ONE_WAY].into_iter().enumerate() {
        links.set_delay(one_way);
        results.push(run(&deployment, round, one_way, trials).await);
    }
    println!(
        "Rights another region holds: per trial a new user, {CREDIT} tokens credited in region 1, then {REMOTE_DEBIT} debited in region 2 (which must ask region 1 for rights) and 1 in region 1 (which holds them); {trials} trials per round trip; replication batches close after 25 ms unless the node was started otherwise.\n"
    );
    println!(
        "| RTT | debit | p50 | p90 | p99 | max | mean | failures | waits for rights (region 2) |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut ok = true;
    for t in &results {
        // Failures and waits are the trial's, shown once.
        let counts = format!("{} | {}", t.failed, t.waits);
        for (what, h, counts) in [
            ("region 2, rights in region 1", &t.remote, counts.as_str()),
            ("region 1, rights here", &t.local, " |"),
        ] {
            println!(
                "| {} ms | {what} | {} | {} | {} | {} | {} | {counts} |",
                (t.one_way * 2).as_millis(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                ms(h.mean() as u64),
            );
        }
        if t.failed > 0 || t.waits != trials {
            eprintln!(
                "rights bench at {} ms RTT: {} failures, {} of {trials} debits in region 2 waited for rights",
                (t.one_way * 2).as_millis(),
                t.failed,
                t.waits
            );
            ok = false;
        }
    }
    ok
}

/// `trials` trials with users `rights-{round}-{i}`.
async fn run(deployment: &Deployment, round: usize, one_way: Duration, trials: u64) -> Trials {
    let (one, two) = (&deployment.servers[0].addr, &deployment.servers[1].addr);
    let waits_before = region_two_waits(deployment).await;
    let mut out = Trials {
        one_way,
        remote: histogram(),
        local: histogram(),
        failed: 0,
        waits: 0,
    };
    for i in 0..trials {
        let user = format!("rights-{round}-{i}");
        let adjust = |amount: i64| format!("{{\"amount\":{amount}}}");
        let path = format!("/v1/users/{user}/adjustments");
        if write(one, &path, adjust(CREDIT as i64)).await.is_none() {
            out.failed += 1;
            continue;
        }
        if !shows_balance(two, &user, CREDIT).await {
            out.failed += 1;
            continue;
        }
        for (addr, amount, hist) in [
            (two, REMOTE_DEBIT, &mut out.remote),
            (one, 1, &mut out.local),
        ] {
            match write(addr, &path, adjust(-(amount as i64))).await {
                Some(took) => {
                    let _ = hist.record(took.as_micros().max(1) as u64);
                }
                None => out.failed += 1,
            }
        }
    }
    out.waits = region_two_waits(deployment)
        .await
        .saturating_sub(waits_before);
    out
}

/// An operator's write of `body` to `path`: how long it took, if it was
/// answered 200 within [`WRITE_TIMEOUT`].
async fn write(addr: &str, path: &str, body: String) -> Option<Duration> {
    let started = Instant::now();
    match tokio::time::timeout(WRITE_TIMEOUT, post(addr, path, OPERATOR, &body)).await {
        Ok(Ok((200, _))) => Some(started.elapsed()),
        _ => None,
    }
}

/// Whether region 2 shows `user` holding `balance` within
/// [`REPLICATION_TIMEOUT`].
async fn shows_balance(addr: &str, user: &str, balance: u64) -> bool {
    let path = format!("/v1/users/{user}");
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    while Instant::now() < deadline {
        let read = tokio::time::timeout(REPLICATION_TIMEOUT, fetch(addr, &path, OPERATOR));
        if let Ok(Ok((200, body))) = read.await {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if json["balance"].as_u64() == Some(balance) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// Spends region 2 has held for rights so far.
async fn region_two_waits(deployment: &Deployment) -> u64 {
    counters(&deployment.servers[1..2])
        .await
        .get("maas_rights_waits_total")
        .copied()
        .unwrap_or(0)
}
