//! Replication work is O(changes), not O(users).
//!
//! `cargo bench --bench replication` restores one region's replica holding N
//! users (10, then 100,000, then 1,000,000: their own entries and a peer's),
//! then times rounds of what the region does every few milliseconds in steady
//! state: 10 spends, their flush, the batch that carries them, and the answer
//! to a peer's digest. The cost per round should not grow with N; the table
//! gives the ratio to the 10-user replica, measured in the same run.
//! `MAAS_BENCH_SMOKE=1` stops at 1,000 users.

use ledger_crdt::{Account, Genesis, Op, RegionId};
use maas_node::{
    AccountWrite, ClientRequest, Command, Durable, Message, Meta, Millis, Packed, Persist, Replica,
    ReplicaConfig, RequestId, RulesConfig, Seq, SpendPolicy,
};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 2_000;
const SPENDS_PER_ROUND: u64 = 10;

fn main() {
    let smoke = std::env::var("MAAS_BENCH_SMOKE").is_ok();
    let sizes: &[usize] = if smoke {
        &[10, 1_000]
    } else {
        &[10, 100_000, 1_000_000]
    };
    println!(
        "| users held | µs per round (10 spends + flush + batch + digest answer) | ratio to 10 users |"
    );
    println!("|---|---|---|");
    let mut base = None;
    for &n in sizes {
        let per_round = measure(n, if smoke { 50 } else { ROUNDS });
        let base = *base.get_or_insert(per_round);
        println!(
            "| {n} | {:.1} | {:.2} |",
            per_round.as_secs_f64() * 1e6,
            per_round.as_secs_f64() / base.as_secs_f64()
        );
    }
}

fn genesis() -> Genesis {
    Genesis::new(1_000_000, [RegionId(1), RegionId(2)]).expect("genesis")
}

/// A replica of region 1 that holds `n` users: each with an own entry of ours
/// and an entry of region 2's.
fn replica(n: usize) -> Replica {
    let genesis = genesis();
    let mut persist = Persist::default();
    for i in 0..n {
        let user = format!("user-{i}");
        let mut account = Account::new();
        let ours = account
            .apply(
                &genesis,
                RegionId(1),
                Op::Spend {
                    amount: 1,
                    call: true,
                },
            )
            .expect("spend");
        let _ = account.apply(
            &genesis,
            RegionId(2),
            Op::Spend {
                amount: 1,
                call: true,
            },
        );
        let write = AccountWrite {
            account: Packed::pack(&account),
            own: Some((Seq(i as u64 + 1), Packed::pack(&ours))),
            held: vec![(RegionId(2), Seq(i as u64 + 1))],
        };
        persist.accounts.push((user, write));
    }
    persist.meta = Meta {
        last_written: Seq(n as u64),
        sent_upto: Seq(n as u64),
        watermarks: vec![(RegionId(2), Seq(n as u64))],
    };
    let mut durable = Durable::default();
    durable.apply(&persist);
    let rules = RulesConfig {
        region: RegionId(1),
        genesis,
        meme_cost: 1,
        idempotency_ttl_ms: 86_400_000,
        policy: SpendPolicy::Escrow,
    };
    Replica::restore(ReplicaConfig::new(rules), durable)
}

fn measure(n: usize, rounds: u64) -> Duration {
    let mut r = replica(n);
    let mut now = 1_000u64;
    let mut request = 0u64;
    let mut written = n as u64;
    // What a peer that is up to date would send.
    let digest = |written: u64| {
        Message::Digest {
            watermarks: vec![(RegionId(1), Seq(written)), (RegionId(2), Seq(n as u64))],
        }
        .encode()
        .expect("encode")
    };
    let started = Instant::now();
    for round in 0..rounds {
        for s in 0..SPENDS_PER_ROUND {
            request += 1;
            let user = format!("user-{}", (round * SPENDS_PER_ROUND + s) as usize % n);
            let spend = ClientRequest::new(RequestId(request), &user, Command::ChargeCall, None);
            r.handle_client(Millis(now), spend);
        }
        let persist = r.prepare_persist();
        r.handle_flushed(Millis(now), persist.upto, persist.number);
        written = persist.upto.0.max(written);
        while r.poll_reply().is_some() {}
        now += 20;
        r.handle_tick(Millis(now));
        r.handle_peer(Millis(now), RegionId(2), &digest(written));
        while r.poll_transmit().is_some() {}
    }
    started.elapsed() / rounds.max(1) as u32
}
