//! The ledger rules of one region, on one account: what a command does, when a
//! retry is a replay, and the escrow check. Pure: the caller hands in the
//! account and the record it holds, and applies what comes back.

use crate::region::command::{Command, Receipt, Refusal};
use crate::region::idempotency::{IdempotencyKey, IdempotencyRecord};
use crate::region::units::{Millis, Seq};
use ledger_crdt::{Account, Error as LedgerError, Genesis, Op, RegionId, Subscription};

/// The rules a region applies.
#[derive(Clone, Debug)]
pub struct RulesConfig {
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

/// A request the rules accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executed {
    /// A retry of an earlier request with the same key: answer what it answered.
    Replayed(Receipt),
    /// Nothing to change (a billing event older than what is held, or a
    /// duplicate): answer the account as it stands.
    Unchanged(Receipt),
    /// The account changed (in place) and must be persisted.
    Applied {
        /// What to answer once durable.
        receipt: Receipt,
        /// The record to store with the write, if the request had a key (its
        /// `seq` is the caller's to fill in).
        record: Option<IdempotencyRecord>,
    },
}

/// The ledger rules of one region.
#[derive(Debug)]
pub struct Rules {
    config: RulesConfig,
}

impl Rules {
    /// Rules applying `config`.
    pub fn new(config: RulesConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// Tokens `command` needs from this region's rights.
    pub fn cost(&self, command: &Command) -> u64 {
        match command {
            Command::ChargeCall => self.config.meme_cost,
            Command::Adjust(a) => a.unsigned_abs(),
            Command::Hold { amount, .. } => *amount,
            Command::Subscribe { .. } | Command::Capture { .. } | Command::Release { .. } => 0,
        }
    }

    /// The receipt for an account as it stands, `held` tokens being held here.
    pub fn receipt(&self, account: &Account, held: u64) -> Receipt {
        Receipt {
            balance: account.balance(&self.config.genesis),
            spendable_here: account
                .rights(&self.config.genesis, self.config.region)
                .saturating_sub(held),
            calls: account.calls(),
        }
    }

    /// The escrow rule with holds: `amount` must fit in this region's rights
    /// minus the `held` tokens set aside for jobs.
    pub fn check_free(&self, account: &Account, amount: u64, held: u64) -> Result<(), Refusal> {
        let (genesis, me) = (&self.config.genesis, self.config.region);
        let free = account.rights(genesis, me).saturating_sub(held);
        if free >= amount {
            return Ok(());
        }
        let balance = account.balance(genesis).saturating_sub(held);
        if balance >= amount {
            Err(Refusal::TokensInOtherRegion {
                here: free,
                elsewhere: balance - free,
            })
        } else {
            Err(Refusal::InsufficientTokens { balance })
        }
    }

    /// Executes `command` on `account` (mutated in place when applied), with
    /// `held` tokens of the user held here. `stored` is the record held under
    /// `key`, if any; whether the key is in use by a request still in flight
    /// is the caller's to check first. Holds are the caller's too
    /// ([`crate::Holds`]); only their effect on spends is checked here.
    pub fn execute(
        &self,
        account: &mut Account,
        command: &Command,
        key: Option<&IdempotencyKey>,
        stored: Option<&IdempotencyRecord>,
        held: u64,
        now: Millis,
    ) -> Result<Executed, Refusal> {
        if let Some(key) = key {
            let live = stored.filter(|r| now.since(r.at) < self.config.idempotency_ttl_ms);
            if let Some(record) = live {
                if record.fingerprint != key.fingerprint {
                    return Err(Refusal::KeyReused);
                }
                return Ok(Executed::Replayed(record.receipt));
            }
        }
        let op = match *command {
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
            Command::Subscribe { version, until } => {
                let subscription = Subscription {
                    version,
                    memes_ai_until_ms: until.0,
                };
                if account
                    .subscribe(self.config.region, subscription)
                    .is_none()
                {
                    return Ok(Executed::Unchanged(self.receipt(account, held)));
                }
                return Ok(self.applied(account, key, held, now));
            }
            Command::Hold { .. } | Command::Capture { .. } | Command::Release { .. } => {
                // The replica's holds handle these; reaching here is a caller bug,
                // refused rather than applied.
                return Err(Refusal::UnknownHold);
            }
        };
        if let Op::Spend { amount, .. } = op
            && held > 0
        {
            self.check_free(account, amount, held)?;
        }
        self.apply(account, op).map_err(refusal)?;
        Ok(self.applied(account, key, held, now))
    }

    /// A capture: charges `amount` held for a job as one memes-API call. The
    /// hold itself is set aside in `held_by_others`' complement: the caller
    /// passes what the user's *other* open holds hold.
    pub fn capture(
        &self,
        account: &mut Account,
        amount: u64,
        held_by_others: u64,
    ) -> Result<Receipt, Refusal> {
        self.check_free(account, amount, held_by_others)?;
        self.apply(account, Op::Spend { amount, call: true })
            .map_err(refusal)?;
        Ok(self.receipt(account, held_by_others))
    }

    fn applied(
        &self,
        account: &Account,
        key: Option<&IdempotencyKey>,
        held: u64,
        now: Millis,
    ) -> Executed {
        let receipt = self.receipt(account, held);
        let record = key.map(|k| IdempotencyRecord {
            fingerprint: k.fingerprint.clone(),
            receipt,
            at: now,
            origin: self.config.region,
            seq: Seq::ZERO,
        });
        Executed::Applied { receipt, record }
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

    fn rules() -> Rules {
        Rules::new(RulesConfig {
            region: RegionId(1),
            genesis: Genesis::new(3, [RegionId(1)]).expect("genesis"),
            meme_cost: 1,
            idempotency_ttl_ms: 1_000,
            policy: SpendPolicy::Escrow,
        })
    }

    fn key(query: &str) -> IdempotencyKey {
        IdempotencyKey::meme_call("alice", "k1".into(), None, query)
    }

    #[test]
    fn a_retried_key_replays_and_charges_once() {
        let rules = rules();
        let mut account = Account::new();
        let k = key("cats");
        let Ok(Executed::Applied { receipt, record }) = rules.execute(
            &mut account,
            &Command::ChargeCall,
            Some(&k),
            None,
            0,
            Millis(10),
        ) else {
            panic!("not charged");
        };
        assert_eq!(receipt.balance, 2);
        let replay = rules.execute(
            &mut account,
            &Command::ChargeCall,
            Some(&k),
            record.as_ref(),
            0,
            Millis(12),
        );
        assert_eq!(replay, Ok(Executed::Replayed(receipt)));
        assert_eq!(rules.receipt(&account, 0).balance, 2, "charged once");
        let other = rules.execute(
            &mut account,
            &Command::ChargeCall,
            Some(&key("dogs")),
            record.as_ref(),
            0,
            Millis(13),
        );
        assert_eq!(other, Err(Refusal::KeyReused));
        // After the TTL the key is fresh again.
        let later = rules.execute(
            &mut account,
            &Command::ChargeCall,
            Some(&key("dogs")),
            record.as_ref(),
            0,
            Millis(2_000),
        );
        assert!(matches!(later, Ok(Executed::Applied { .. })));
    }

    #[test]
    fn debits_obey_the_escrow_rule() {
        let rules = rules();
        let mut account = Account::new();
        let mut run = |command| rules.execute(&mut account, &command, None, None, 0, Millis(0));
        assert_eq!(
            run(Command::Adjust(-4)),
            Err(Refusal::InsufficientTokens { balance: 3 })
        );
        assert_eq!(run(Command::Adjust(0)), Err(Refusal::ZeroAmount));
        assert!(matches!(
            run(Command::Adjust(-3)),
            Ok(Executed::Applied { receipt, .. }) if receipt.balance == 0
        ));
        assert_eq!(
            run(Command::ChargeCall),
            Err(Refusal::InsufficientTokens { balance: 0 })
        );
    }

    #[test]
    fn held_tokens_cannot_be_spent_and_subscriptions_go_by_version() {
        let rules = rules();
        let mut account = Account::new();
        // 3 tokens, 2 of them held: one call fits, a second does not.
        let mut run =
            |command: Command| rules.execute(&mut account, &command, None, None, 2, Millis(0));
        assert!(
            matches!(run(Command::ChargeCall), Ok(Executed::Applied { receipt, .. })
            if receipt.balance == 2 && receipt.spendable_here == 0)
        );
        assert_eq!(
            run(Command::ChargeCall),
            Err(Refusal::InsufficientTokens { balance: 0 })
        );
        let subscribe = |version, until| Command::Subscribe {
            version,
            until: Millis(until),
        };
        assert!(matches!(
            run(subscribe(5, 1_000)),
            Ok(Executed::Applied { .. })
        ));
        assert!(
            matches!(run(subscribe(4, 9_000)), Ok(Executed::Unchanged(_))),
            "older"
        );
        assert!(
            matches!(run(subscribe(5, 1_000)), Ok(Executed::Unchanged(_))),
            "duplicate"
        );
        assert!(
            matches!(run(subscribe(6, 0)), Ok(Executed::Applied { .. })),
            "a cancel"
        );
    }
}
