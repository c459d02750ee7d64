//! The node's sans-IO core: ledger rules, idempotency and in-flight keys.
//!
//! The core never touches a socket, a disk or a clock. The shell hands it the
//! account and idempotency record it loaded, the command and the time; the core
//! mutates the account in place and says what to persist and what to answer. The
//! shell persists, waits for durability, and only then replies. The simulator can
//! drive this same code.

use bincode::{Decode, Encode};
use ledger_crdt::{Account, Error as LedgerError, Genesis, Op, RegionId};
use serde::Serialize;
use std::collections::HashSet;

/// The rules a region applies.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This region.
    pub region: RegionId,
    /// The welcome grant and its split; identical on every region.
    pub genesis: Genesis,
    /// Tokens one memes-API call costs.
    pub meme_cost: u64,
    /// How long an idempotency key is remembered, in ms.
    pub idempotency_ttl_ms: u64,
    /// How spends are checked.
    pub policy: SpendPolicy,
}

/// How a region decides whether it may spend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpendPolicy {
    /// Spend only from this region's own rights: never overspends.
    #[default]
    Escrow,
    /// Simulation only: the seed's "local writes with async replication" counter,
    /// which checks the balance this replica happens to see. It can overspend;
    /// the simulator shows by how much.
    #[cfg(feature = "simulation")]
    NaiveLocalView,
    /// Simulation only: a broken core that checks nothing; the checker must
    /// catch it.
    #[cfg(feature = "simulation")]
    SkipRightsCheck,
}

/// What a request asks the ledger to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Charge one memes-API call.
    ChargeCall,
    /// An operator's balance adjustment: positive credits, negative debits.
    Adjust(i64),
}

/// An `Idempotency-Key` and what identifies the request it came with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// Whose key space: keys of different principals never collide.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// A canonical rendering of the request; a reuse with another is refused.
    pub fingerprint: String,
}

/// What the caller's account looks like after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Receipt {
    /// The balance, as this region sees it.
    pub balance: u64,
    /// What this region can spend for the user right now.
    pub spendable_here: u64,
    /// Memes-API calls served for the user, all regions.
    pub calls: u64,
}

/// The remembered outcome of a request that carried an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct IdempotencyRecord {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// What it answered.
    pub receipt: Receipt,
    /// When it was first executed, ms since the Unix epoch.
    pub at_ms: u64,
    /// The region whose write made it.
    pub origin: RegionId,
    /// That region's sequence number of the write (set by the replica; 0 in
    /// records stored before records knew their write).
    pub seq: u64,
}

/// Why a request was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The balance does not cover the amount.
    InsufficientTokens {
        /// The balance this region sees.
        balance: u64,
    },
    /// The balance covers it but the rights are held by other regions.
    TokensInOtherRegion {
        /// Rights here.
        here: u64,
        /// Tokens elsewhere.
        elsewhere: u64,
    },
    /// The key is being used by a request that has not finished.
    KeyInUse,
    /// The key was already used for a different request.
    KeyReused,
    /// The amount would overflow the account.
    Overflow,
    /// A zero adjustment.
    ZeroAmount,
    /// Storage is failing: the last flush failed and no write is accepted
    /// until one succeeds.
    StorageFailing,
}

/// A request the core accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    /// What to answer.
    pub receipt: Receipt,
    /// Whether this is a replay of an earlier request with the same key.
    pub replayed: bool,
    /// Whether the account changed and must be persisted.
    pub account_changed: bool,
    /// An idempotency record to persist with the account, atomically.
    pub record: Option<IdempotencyRecord>,
}

/// The core state machine of one region.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    /// Keys whose request has been executed but not yet acknowledged.
    in_flight: HashSet<(String, String)>,
}

impl Core {
    /// A core applying `config`.
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            in_flight: HashSet::new(),
        }
    }

    /// The receipt for an account as it stands.
    pub fn receipt(&self, account: &Account) -> Receipt {
        Receipt {
            balance: account.balance(&self.config.genesis),
            spendable_here: account.rights(&self.config.genesis, self.config.region),
            calls: account.calls(),
        }
    }

    /// Executes `command` on `account` (mutated in place on success). `stored` is
    /// the record the shell found under `key`, if any.
    pub fn execute(
        &mut self,
        account: &mut Account,
        command: Command,
        key: Option<&IdempotencyKey>,
        stored: Option<IdempotencyRecord>,
        now_ms: u64,
    ) -> Result<Executed, Refusal> {
        if let Some(key) = key {
            if self
                .in_flight
                .contains(&(key.scope.clone(), key.key.clone()))
            {
                return Err(Refusal::KeyInUse);
            }
            let live =
                stored.filter(|r| now_ms.saturating_sub(r.at_ms) < self.config.idempotency_ttl_ms);
            if let Some(record) = live {
                if record.fingerprint != key.fingerprint {
                    return Err(Refusal::KeyReused);
                }
                return Ok(Executed {
                    receipt: record.receipt,
                    replayed: true,
                    account_changed: false,
                    record: None,
                });
            }
        }
        let op = match command {
            Command::ChargeCall => Op::Spend {
                amount: self.config.meme_cost,
                call: true,
            },
            Command::Adjust(0) => return Err(Refusal::ZeroAmount),
            Command::Adjust(a) if a > 0 => Op::Credit {
                amount: a.unsigned_abs(),
            },
            Command::Adjust(a) => Op::Spend {
                amount: a.unsigned_abs(),
                call: false,
            },
        };
        self.apply(account, op).map_err(refusal)?;
        let receipt = self.receipt(account);
        let record = key.map(|k| {
            self.in_flight.insert((k.scope.clone(), k.key.clone()));
            IdempotencyRecord {
                fingerprint: k.fingerprint.clone(),
                receipt,
                at_ms: now_ms,
                origin: self.config.region,
                seq: 0,
            }
        });
        Ok(Executed {
            receipt,
            replayed: false,
            account_changed: true,
            record,
        })
    }

    /// Applies a local op under the configured spend policy.
    pub fn apply(&self, account: &mut Account, op: Op) -> Result<ledger_crdt::Delta, LedgerError> {
        let (genesis, me) = (&self.config.genesis, self.config.region);
        match self.config.policy {
            SpendPolicy::Escrow => account.apply(genesis, me, op),
            #[cfg(feature = "simulation")]
            SpendPolicy::NaiveLocalView => {
                let balance = account.balance(genesis);
                match op {
                    Op::Spend { amount, .. } | Op::Transfer { amount, .. } if amount > balance => {
                        Err(LedgerError::InsufficientAnywhere { balance })
                    }
                    _ => account.apply_unchecked(me, op),
                }
            }
            #[cfg(feature = "simulation")]
            SpendPolicy::SkipRightsCheck => account.apply_unchecked(me, op),
        }
    }

    /// Whether a request with this key was executed and is not yet acknowledged.
    pub fn in_flight(&self, scope: &str, key: &str) -> bool {
        self.in_flight.contains(&(scope.to_owned(), key.to_owned()))
    }

    /// The request that used `key` has been answered (or has failed): the key may
    /// be replayed from its record now.
    pub fn finish(&mut self, key: &IdempotencyKey) {
        self.in_flight.remove(&(key.scope.clone(), key.key.clone()));
    }
}

fn refusal(e: LedgerError) -> Refusal {
    match e {
        LedgerError::InsufficientHere { here, elsewhere } => {
            Refusal::TokensInOtherRegion { here, elsewhere }
        }
        LedgerError::InsufficientAnywhere { balance } => Refusal::InsufficientTokens { balance },
        LedgerError::ZeroAmount => Refusal::ZeroAmount,
        // Every other ledger error on a local op is an overflow in effect.
        _ => Refusal::Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Core {
        Core::new(CoreConfig {
            region: RegionId(1),
            genesis: Genesis::new(3, [RegionId(1)]).expect("genesis"),
            meme_cost: 1,
            idempotency_ttl_ms: 1_000,
            policy: SpendPolicy::Escrow,
        })
    }

    fn key(fingerprint: &str) -> IdempotencyKey {
        IdempotencyKey {
            scope: "u:alice".into(),
            key: "k1".into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn a_retried_key_replays_and_charges_once() {
        let mut core = core();
        let mut account = Account::new();
        let k = key("GET memes");
        let first = core
            .execute(&mut account, Command::ChargeCall, Some(&k), None, 10)
            .expect("charged");
        assert_eq!(first.receipt.balance, 2);
        // Still in flight: a concurrent retry is told to wait.
        let again = core.execute(
            &mut account,
            Command::ChargeCall,
            Some(&k),
            first.record.clone(),
            11,
        );
        assert_eq!(again, Err(Refusal::KeyInUse));
        core.finish(&k);
        let replay = core
            .execute(
                &mut account,
                Command::ChargeCall,
                Some(&k),
                first.record.clone(),
                12,
            )
            .expect("replayed");
        assert!(replay.replayed && !replay.account_changed);
        assert_eq!(replay.receipt, first.receipt);
        assert_eq!(core.receipt(&account).balance, 2, "charged once");
        let other = core.execute(
            &mut account,
            Command::ChargeCall,
            Some(&key("other")),
            first.record.clone(),
            13,
        );
        assert_eq!(other, Err(Refusal::KeyReused));
        // After the TTL the key is fresh again.
        let later = core
            .execute(
                &mut account,
                Command::ChargeCall,
                Some(&key("other")),
                first.record,
                2_000,
            )
            .expect("fresh");
        assert!(!later.replayed);
    }

    #[test]
    fn debits_obey_the_escrow_rule() {
        let mut core = core();
        let mut account = Account::new();
        let refused = core.execute(&mut account, Command::Adjust(-4), None, None, 0);
        assert_eq!(refused, Err(Refusal::InsufficientTokens { balance: 3 }));
        assert_eq!(
            core.execute(&mut account, Command::Adjust(0), None, None, 0),
            Err(Refusal::ZeroAmount)
        );
        let ok = core
            .execute(&mut account, Command::Adjust(-3), None, None, 0)
            .expect("debit");
        assert_eq!(ok.receipt.balance, 0);
        let refused = core.execute(&mut account, Command::ChargeCall, None, None, 0);
        assert_eq!(refused, Err(Refusal::InsufficientTokens { balance: 0 }));
    }
}
