//! What really happened, as the clients saw it, and the invariants it implies.
//!
//! Every client operation is a *logical operation*: one idempotency key at one
//! region. Retries at the same region are attempts of the same operation, which
//! the region must apply at most once. An attempt whose client timed out is
//! *maybe applied* (as in Jepsen's checkers); an acknowledged one is applied.

use ledger_crdt::{Account, RegionId};
use maas_node::Receipt;
use std::collections::BTreeMap;

/// The kind of a logical operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Adds tokens.
    Credit,
    /// Removes tokens (a memes call, an operator debit, or a hold's capture).
    Spend,
    /// Changes no balance (a hold, a release, a subscription).
    Neutral,
}

/// One logical operation.
#[derive(Clone, Debug)]
pub struct Logical {
    /// Whose tokens.
    pub user: String,
    /// The region it was sent to.
    pub region: RegionId,
    /// Credit or spend.
    pub kind: Kind,
    /// Tokens.
    pub amount: u64,
    /// Some attempt was acknowledged.
    pub acked: bool,
    /// Some attempt timed out.
    pub maybe: bool,
    /// The answer of the first acknowledged attempt; every later acknowledgement
    /// of the same key at the same region must be a replay of it.
    pub receipt: Option<Receipt>,
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Simulated ms at which it was seen.
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What exactly.
    pub detail: String,
}

/// The clients' record.
#[derive(Debug, Default)]
pub struct Truth {
    /// Logical operations by (key, region).
    pub ops: BTreeMap<(String, RegionId), Logical>,
    /// Acknowledged (credited, spent) per user and region.
    acked_at: BTreeMap<(String, RegionId), (u64, u64)>,
}

impl Truth {
    /// An attempt of `key` at `region` was sent.
    pub fn attempt(&mut self, key: &str, region: RegionId, user: &str, kind: Kind, amount: u64) {
        self.ops
            .entry((key.to_owned(), region))
            .or_insert_with(|| Logical {
                user: user.to_owned(),
                region,
                kind,
                amount,
                acked: false,
                maybe: false,
                receipt: None,
            });
    }

    /// An attempt was acknowledged with `receipt`. A second acknowledgement of the
    /// same key at the same region must replay the first answer; a different one
    /// means the region charged the key twice.
    ///
    /// A first acknowledgement that is already a replay answers from a record:
    /// either this region's own (an earlier attempt here timed out, so the
    /// operation stays maybe-applied here) or one replicated from the region
    /// that charged the key, in which case nothing was applied here. Either way
    /// it adds nothing this region must hold.
    pub fn acked(
        &mut self,
        at_ms: u64,
        key: &str,
        region: RegionId,
        receipt: Receipt,
        replayed: bool,
    ) -> Result<(), Violation> {
        let Some(op) = self.ops.get_mut(&(key.to_owned(), region)) else {
            return Ok(());
        };
        if op.kind == Kind::Neutral {
            // Holds, releases and subscriptions keep no idempotency record: a
            // repeat answers the account as it stands, not a remembered answer.
            op.acked |= !replayed;
            return Ok(());
        }
        if let Some(first) = op.receipt {
            if first != receipt {
                return Err(Violation {
                    at_ms,
                    invariant: "idempotency-key-charged-twice",
                    detail: format!("{key} at {region}: first {first:?}, then {receipt:?}"),
                });
            }
            // Two attempts in flight at once: the later one may be answered
            // (as a replay) before the one that applied it. The applying
            // attempt's answer still proves it applied here.
            if replayed || op.acked {
                return Ok(());
            }
        }
        op.receipt = Some(receipt);
        if replayed {
            return Ok(());
        }
        op.acked = true;
        let at = self.acked_at.entry((op.user.clone(), region)).or_default();
        match op.kind {
            Kind::Credit => at.0 += op.amount,
            Kind::Spend => at.1 += op.amount,
            Kind::Neutral => {}
        }
        Ok(())
    }

    /// An attempt's client gave up waiting.
    pub fn timed_out(&mut self, key: &str, region: RegionId) {
        if let Some(op) = self.ops.get_mut(&(key.to_owned(), region)) {
            op.maybe = true;
        }
    }

    /// A restarted region must still hold everything it acknowledged.
    pub fn check_restart(
        &self,
        at_ms: u64,
        region: RegionId,
        accounts: &BTreeMap<String, Account>,
    ) -> Result<(), Violation> {
        for ((user, r), &(credited, spent)) in &self.acked_at {
            if *r != region {
                continue;
            }
            let entry = accounts.get(user).and_then(|a| a.entry(region));
            let (have_c, have_s) = entry.map_or((0, 0), |e| (e.credited(), e.spent()));
            if have_c < credited || have_s < spent {
                return Err(Violation {
                    at_ms,
                    invariant: "acknowledged-write-lost",
                    detail: format!(
                        "{region} restarted holding credited {have_c}/spent {have_s} for {user}, but acknowledged {credited}/{spent}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The range a user's final balance must fall in: (lowest, highest).
    pub fn expected_range(&self, user: &str, grant: u64) -> (i128, i128) {
        let (mut lo, mut hi) = (i128::from(grant), i128::from(grant));
        for op in self.ops.values().filter(|o| o.user == user) {
            let a = i128::from(op.amount);
            match (op.kind, op.acked, op.maybe) {
                (Kind::Credit, true, _) => {
                    lo += a;
                    hi += a;
                }
                (Kind::Spend, true, _) => {
                    lo -= a;
                    hi -= a;
                }
                (Kind::Credit, false, true) => hi += a,
                (Kind::Spend, false, true) => lo -= a,
                (Kind::Neutral, ..) | (_, false, false) => {}
            }
        }
        (lo, hi)
    }

    /// The user's operations, for a violation's detail: key@region kind
    /// amount, and whether acknowledged (+) or maybe applied (?).
    pub fn describe(&self, user: &str) -> String {
        self.ops
            .iter()
            .filter(|(_, o)| o.user == user && o.kind != Kind::Neutral)
            .map(|((key, region), o)| {
                let mark = match (o.acked, o.maybe) {
                    (true, _) => "+",
                    (false, true) => "?",
                    (false, false) => "-",
                };
                format!("{key}@{region} {:?} {}{mark}", o.kind, o.amount)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every user any operation touched.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.ops.values().map(|o| o.user.clone()).collect();
        users.sort();
        users.dedup();
        users
    }
}

/// grant + credits − spends of an account, exactly (negative means overspent).
pub fn exact_balance(account: &Account, grant: u64) -> i128 {
    i128::from(grant) + account.credited() as i128 - account.spent() as i128
}
