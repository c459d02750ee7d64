//! Ledger core throughput and encoded sizes.
//!
//! `cargo bench --bench ledger` prints spend and merge throughput next to a naive
//! baseline measured in the same run (a plain counter decrement, and a pointwise max
//! over a bare map), and the encoded size of 3- and 10-region accounts. Ratios
//! matter more than absolute figures on a shared, noisy machine.

use ledger_crdt::{Account, Delta, Genesis, Op, RegionId};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SPENDS: u64 = 2_000_000;
const MERGES: u64 = 1_000_000;

fn main() {
    let genesis = Genesis::new(150, [RegionId(1), RegionId(2), RegionId(3)]).expect("genesis");

    // Spend: the escrow rule (rights check) plus delta construction.
    let mut account = Account::new();
    account
        .apply(&genesis, RegionId(1), Op::Credit { amount: SPENDS * 2 })
        .expect("credit");
    let ours = time(SPENDS, || {
        let delta = account.apply(
            &genesis,
            RegionId(1),
            Op::Spend {
                amount: 1,
                call: true,
            },
        );
        black_box(delta).expect("covered");
    });
    // Baseline: a counter in a hash map with a checked decrement, no replication.
    let mut naive: HashMap<u64, u64> = HashMap::from([(7, SPENDS * 2)]);
    let base = time(SPENDS, || {
        let v = naive.get_mut(&black_box(7)).expect("present");
        *v = v.checked_sub(1).expect("covered");
    });
    report("spend", SPENDS, ours, base);

    // Merge: deltas from three regions arriving in turn.
    let deltas: Vec<Delta> = (1..=3u16)
        .map(|r| delta_from(&genesis, RegionId(r)))
        .collect();
    let mut target = Account::new();
    let mut i = 0usize;
    let ours = time(MERGES, || {
        black_box(target.merge(&deltas[i % 3]));
        i += 1;
    });
    // Baseline: pointwise max over a bare map of three per-region counters.
    let maps: Vec<BTreeMap<u16, u64>> = (1..=3u16).map(|r| BTreeMap::from([(r, 100)])).collect();
    let mut bare: BTreeMap<u16, u64> = BTreeMap::new();
    let base = time(MERGES, || {
        for (&k, &v) in &maps[i % 3] {
            let e = bare.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
        i += 1;
    });
    report("merge", MERGES, ours, base);

    for regions in [3u16, 10] {
        let (account, delta) = busy_account(regions);
        let whole = account.to_bytes().expect("encodes").len();
        let one = delta.to_bytes().expect("encodes").len();
        println!("size    {regions:>2}-region account: {whole} bytes whole, {one} bytes per delta");
    }
}

fn time(n: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed()
}

fn report(what: &str, n: u64, ours: Duration, base: Duration) {
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{what:<7} {:>12.0} ops/s   baseline {:>12.0} ops/s   ratio {:.2}",
        rate(ours),
        rate(base),
        rate(ours) / rate(base)
    );
}

fn delta_from(genesis: &Genesis, region: RegionId) -> Delta {
    let mut a = Account::new();
    a.apply(genesis, region, Op::Credit { amount: 100 })
        .expect("credit");
    a.apply(
        genesis,
        region,
        Op::Spend {
            amount: 1,
            call: true,
        },
    )
    .expect("spend")
}

/// An account every region has used: credits, spends and calls everywhere, rights
/// sent around the ring and accepted. Returns it and one region's delta.
fn busy_account(regions: u16) -> (Account, Delta) {
    let ids: Vec<RegionId> = (1..=regions).map(RegionId).collect();
    let genesis = Genesis::new(150, ids.clone()).expect("genesis");
    let mut account = Account::new();
    for (i, &r) in ids.iter().enumerate() {
        let next = ids[(i + 1) % ids.len()];
        account
            .apply(&genesis, r, Op::Credit { amount: 10_000 })
            .expect("credit");
        for _ in 0..1_000 {
            account
                .apply(
                    &genesis,
                    r,
                    Op::Spend {
                        amount: 1,
                        call: true,
                    },
                )
                .expect("spend");
        }
        account
            .apply(
                &genesis,
                r,
                Op::Transfer {
                    to: next,
                    amount: 500,
                },
            )
            .expect("transfer");
    }
    for &r in &ids {
        account.accept_transfers(r);
    }
    let delta = account.delta_of(ids[0]);
    (account, delta)
}
