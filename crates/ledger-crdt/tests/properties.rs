//! Property tests: the merge laws, and the escrow invariant under a hostile network.

use ledger_crdt::{
    Account, Error, Genesis, Op, RebalanceConfig, RegionId, Subscription, plan_transfers,
};
use proptest::prelude::*;

/// An arbitrary account: any counters at all, valid or not. The merge laws must hold
/// for every state, not only for the ones the escrow rule produces.
fn any_account() -> impl Strategy<Value = Account> {
    let region = (0u16..6).prop_map(RegionId);
    let ops = proptest::collection::vec((region.clone(), 0u8..5, region, 1u64..1_000), 0..12);
    ops.prop_map(|ops| {
        // Build through deltas of a permissive genesis so every entry is reachable.
        let genesis = Genesis::new(u64::MAX / 2, (0..6).map(RegionId)).expect("genesis");
        let mut account = Account::new();
        for (at, kind, to, amount) in ops {
            let op = match kind {
                0 => Op::Credit { amount },
                1 => Op::Spend { amount, call: true },
                2 => Op::Transfer { to, amount },
                3 => {
                    // Few versions, so equal versions with different ends occur.
                    let subscription = Subscription {
                        version: amount % 5,
                        memes_ai_until_ms: amount,
                    };
                    account.subscribe(at, subscription);
                    continue;
                }
                _ => {
                    account.accept_transfers(at);
                    continue;
                }
            };
            let _ = account.apply(&genesis, at, op);
        }
        account
    })
}

fn merged(a: &Account, b: &Account) -> Account {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(a in any_account(), b in any_account()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in any_account(), b in any_account(), c in any_account()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in any_account(), b in any_account()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn subscriptions_converge_to_the_highest_version_whatever_the_order(
        events in proptest::collection::vec((0u64..6, 0u64..1_000, 0usize..3), 1..12),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
    ) {
        // Each billing event is written at some region, then every region's
        // delta reaches every other in a shuffled order with duplicates.
        let mut writers = vec![Account::new(); 3];
        let mut deltas = Vec::new();
        for &(version, until, at) in &events {
            let event = Subscription { version, memes_ai_until_ms: until };
            if let Some(delta) = writers[at].subscribe(RegionId(at as u16), event) {
                deltas.push(delta);
            }
        }
        let mut replicas = vec![Account::new(); 3];
        for (n, pick) in order.iter().enumerate() {
            if !deltas.is_empty() {
                replicas[n % 3].merge(&deltas[pick.index(deltas.len())]);
            }
        }
        // Anti-entropy: every delta reaches every replica in the end.
        for r in &mut replicas {
            for d in &deltas {
                r.merge(d);
            }
        }
        let highest = events
            .iter()
            .map(|&(version, until, _)| Subscription { version, memes_ai_until_ms: until })
            .max();
        for r in &replicas {
            prop_assert_eq!(r.subscription(), highest);
        }
    }

    #[test]
    fn encoding_round_trips(a in any_account()) {
        let bytes = a.to_bytes().expect("encodes");
        prop_assert_eq!(Account::from_bytes(&bytes), Ok(a));
    }

    /// `encode_into` sizes its buffer first: what it appends must be exactly
    /// what `encode` returns, after whatever the buffer held, and the buffer
    /// must end up just large enough.
    #[test]
    fn encoding_into_a_buffer_appends_exactly_the_encoding(
        a in any_account(),
        prefix in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let alone = ledger_crdt::wire::encode(&(&a, 7u64)).expect("encodes");
        let mut out = prefix.clone();
        ledger_crdt::wire::encode_into(&mut out, &(&a, 7u64)).expect("encodes");
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &alone[..]);
        prop_assert_eq!(out.capacity(), out.len(), "grown once, to the size measured");
        let mut exact = Vec::new();
        ledger_crdt::wire::encode_into(&mut exact, &a).expect("encodes");
        prop_assert_eq!(exact.capacity(), exact.len());
    }
}

/// One step of a run against several replicas and a hostile network.
#[derive(Clone, Debug)]
enum Step {
    Credit {
        at: usize,
        amount: u64,
    },
    Spend {
        at: usize,
        amount: u64,
    },
    Transfer {
        at: usize,
        to: usize,
        amount: u64,
    },
    Rebalance {
        at: usize,
        demand: Vec<u64>,
    },
    /// Delivers one message in flight (any of them: the network reorders).
    Deliver {
        pick: usize,
        duplicate: bool,
    },
    /// Loses one message in flight; anti-entropy at the end resends its content.
    Drop {
        pick: usize,
    },
    /// A replica forwards its view of some region's entry to another replica.
    Forward {
        from: usize,
        to: usize,
        region: usize,
    },
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    let at = 0..replicas;
    prop_oneof![
        (at.clone(), 1u64..40).prop_map(|(at, amount)| Step::Credit { at, amount }),
        (at.clone(), 1u64..40).prop_map(|(at, amount)| Step::Spend { at, amount }),
        (at.clone(), at.clone(), 1u64..60).prop_map(|(at, to, amount)| Step::Transfer {
            at,
            to,
            amount
        }),
        (at.clone(), proptest::collection::vec(0u64..20, replicas))
            .prop_map(|(at, demand)| Step::Rebalance { at, demand }),
        (any::<usize>(), any::<bool>())
            .prop_map(|(pick, duplicate)| Step::Deliver { pick, duplicate }),
        any::<usize>().prop_map(|pick| Step::Drop { pick }),
        (at.clone(), at.clone(), at).prop_map(|(from, to, region)| Step::Forward {
            from,
            to,
            region
        }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, usize, u64, Vec<Step>)> {
    (3usize..=5).prop_flat_map(|n| {
        (
            Just(n),
            1..=n,
            0u64..300,
            proptest::collection::vec(step(n), 1..250),
        )
    })
}

struct Cluster {
    genesis: Genesis,
    replicas: Vec<Account>,
    in_flight: Vec<(usize, Account)>,
    credited: u128,
    spent: u128,
}

impl Cluster {
    fn region(i: usize) -> RegionId {
        RegionId(i as u16 + 1)
    }

    /// Applies a local op at replica `at` and broadcasts its delta to every peer.
    fn local(&mut self, at: usize, op: Op) -> Result<(), Error> {
        let delta = self.replicas[at].apply(&self.genesis, Self::region(at), op)?;
        self.broadcast(at, delta);
        Ok(())
    }

    fn broadcast(&mut self, from: usize, delta: Account) {
        for to in 0..self.replicas.len() {
            if to != from {
                self.in_flight.push((to, delta.clone()));
            }
        }
    }

    fn receive(&mut self, at: usize, delta: &Account) {
        self.replicas[at].merge(delta);
        if let Some(ack) = self.replicas[at].accept_transfers(Self::region(at)) {
            self.broadcast(at, ack);
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for (i, replica) in self.replicas.iter().enumerate() {
            prop_assert_eq!(
                replica.check_invariants(&self.genesis),
                Ok(()),
                "replica {} went negative",
                i
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The heart of escrow: whatever the interleaving and whatever the network does,
    /// no replica ever sees a region's rights (and so a balance) below zero; after
    /// full delivery all replicas are byte-identical and the balance is exact.
    #[test]
    fn escrow_never_overspends_and_converges((n, genesis_regions, grant, steps) in scenario()) {
        let genesis = Genesis::new(grant, (0..genesis_regions).map(Cluster::region)).expect("genesis");
        let mut c = Cluster {
            genesis,
            replicas: vec![Account::new(); n],
            in_flight: Vec::new(),
            credited: 0,
            spent: 0,
        };
        let config = RebalanceConfig::default();
        for step in steps {
            match step {
                Step::Credit { at, amount } => {
                    c.local(at, Op::Credit { amount }).expect("credits always succeed here");
                    c.credited += u128::from(amount);
                }
                Step::Spend { at, amount } => {
                    let here = c.replicas[at].rights(&c.genesis, Cluster::region(at));
                    match c.local(at, Op::Spend { amount, call: true }) {
                        Ok(()) => c.spent += u128::from(amount),
                        Err(Error::InsufficientHere { here: h, .. } | Error::InsufficientAnywhere { balance: h }) => {
                            prop_assert!(h < amount && here < amount);
                        }
                        Err(e) => prop_assert!(false, "unexpected refusal {e}"),
                    }
                }
                Step::Transfer { at, to, amount } => {
                    let _ = c.local(at, Op::Transfer { to: Cluster::region(to), amount });
                }
                Step::Rebalance { at, demand } => {
                    let demand: Vec<(RegionId, u64)> = demand
                        .into_iter()
                        .enumerate()
                        .map(|(i, d)| (Cluster::region(i), d))
                        .collect();
                    let me = Cluster::region(at);
                    let plan = plan_transfers(&c.replicas[at], &c.genesis, me, &demand, &config);
                    for t in plan {
                        // The policy must only propose what the rights cover.
                        c.local(at, Op::Transfer { to: t.to, amount: t.amount })
                            .map_err(|e| TestCaseError::fail(format!("policy overspent: {e}")))?;
                    }
                }
                Step::Deliver { pick, duplicate } => {
                    if !c.in_flight.is_empty() {
                        let i = pick % c.in_flight.len();
                        let (to, delta) = if duplicate {
                            c.in_flight[i].clone()
                        } else {
                            c.in_flight.swap_remove(i)
                        };
                        c.receive(to, &delta);
                    }
                }
                Step::Drop { pick } => {
                    if !c.in_flight.is_empty() {
                        let i = pick % c.in_flight.len();
                        c.in_flight.swap_remove(i);
                    }
                }
                Step::Forward { from, to, region } => {
                    let delta = c.replicas[from].delta_of(Cluster::region(region));
                    c.receive(to, &delta);
                }
            }
            c.check()?;
        }

        // Heal: anti-entropy exchanges whole states until nothing changes.
        c.in_flight.clear();
        loop {
            let mut changed = false;
            for from in 0..n {
                for to in 0..n {
                    let state = c.replicas[from].clone();
                    changed |= c.replicas[to].merge(&state);
                    changed |= c.replicas[to].accept_transfers(Cluster::region(to)).is_some();
                }
            }
            c.check()?;
            if !changed {
                break;
            }
        }
        let first = c.replicas[0].to_bytes().expect("encodes");
        for replica in &c.replicas[1..] {
            prop_assert_eq!(&replica.to_bytes().expect("encodes"), &first);
        }
        let expected = u128::from(grant) + c.credited - c.spent;
        prop_assert_eq!(u128::from(c.replicas[0].balance(&c.genesis)), expected);
        prop_assert_eq!(c.replicas[0].in_transit(), 0);
    }
}

proptest! {
    /// Random bytes never panic the decoder.
    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Account::from_bytes(&bytes);
    }

    /// Every strict prefix of a valid encoding is an error, and so is any encoding
    /// with a flipped byte that does not happen to still be valid; none panic.
    #[test]
    fn truncated_and_corrupted_bytes_are_errors(a in any_account(), flip in any::<(usize, u8)>()) {
        let bytes = a.to_bytes().expect("encodes");
        for cut in 0..bytes.len() {
            prop_assert!(Account::from_bytes(&bytes[..cut]).is_err(), "prefix {} decoded", cut);
        }
        let mut corrupted = bytes.clone();
        let i = flip.0 % corrupted.len();
        corrupted[i] ^= flip.1 | 1;
        let _ = Account::from_bytes(&corrupted);
    }
}

#[test]
fn decoding_rejects_versions_trailing_bytes_and_huge_lengths() {
    let bytes = Account::new().to_bytes().expect("encodes");
    let mut other_version = bytes.clone();
    other_version[0] = 99;
    assert_eq!(
        Account::from_bytes(&other_version),
        Err(Error::UnsupportedVersion(99))
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(Account::from_bytes(&trailing), Err(Error::TrailingBytes(1)));
    assert_eq!(Account::from_bytes(&[]), Err(Error::Empty));
    // A map claiming 2^60 entries must be refused by the size limit, not allocated.
    let huge = [1u8, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x10];
    assert!(matches!(Account::from_bytes(&huge), Err(Error::Decode(_))));
}

#[test]
fn two_regions_meeting_a_new_user_in_a_partition_grant_once() {
    let genesis = Genesis::new(150, [RegionId(1), RegionId(2)]).expect("genesis");
    let (mut a, mut b) = (Account::new(), Account::new());
    // Both sides serve the new user while cut off from each other.
    let da = a
        .apply(
            &genesis,
            RegionId(1),
            Op::Spend {
                amount: 10,
                call: true,
            },
        )
        .expect("spend");
    let db = b
        .apply(
            &genesis,
            RegionId(2),
            Op::Spend {
                amount: 20,
                call: true,
            },
        )
        .expect("spend");
    a.merge(&db);
    b.merge(&da);
    assert_eq!(a, b);
    assert_eq!(a.balance(&genesis), 120, "150 granted once, never 300");
    assert_eq!(a.calls(), 2);
}
