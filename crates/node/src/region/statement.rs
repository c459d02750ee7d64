//! A user's statement: one line per change of their balance, as this region
//! learns of it.
//!
//! Lines are not replicated. Each region derives its own from the versions it
//! already exchanges: a write of ours gives a line with what the request was
//! (its kind, its idempotency key or job); a merged version of another
//! region's entry gives a line for what grew in it (credited, spent, calls).
//! Every change of the counters a balance is made of passes through
//! [`StatementDrafts::changed`], so a region's lines always add up: the
//! opening balance (the welcome grant, or what retention carried forward)
//! plus every line's amount is the balance, exactly, once the region holds
//! every version. Statements cost no bytes on the wire; the price is that a
//! line from another region carries that region's counts, not its request's
//! key, and several requests folded into one replicated version show as one
//! line with their `calls`.
//!
//! Lines ride the persist that makes their change durable, so a crash loses a
//! line only with its change (which replication or a retry brings back, with
//! a new line).

use crate::region::units::Millis;
use bincode::{Decode, Encode};
use ledger_crdt::{Account, RegionId};

/// What one line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum LineKind {
    /// Memes-API calls charged (`calls` of them).
    Spend,
    /// Tokens credited: a top-up or an operator's credit.
    Credit,
    /// Tokens debited by an operator.
    Debit,
    /// Tokens set aside for a job (no change to the balance).
    Hold,
    /// A job delivered: its held tokens charged.
    Capture,
    /// A job failed: its held tokens set free (no change to the balance).
    Release,
}

impl LineKind {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Spend => "spend",
            LineKind::Credit => "credit",
            LineKind::Debit => "debit",
            LineKind::Hold => "hold",
            LineKind::Capture => "capture",
            LineKind::Release => "release",
        }
    }
}

/// One line of a user's statement.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct StatementLine {
    /// Whose statement.
    pub user: String,
    /// When this region made or learnt of the change.
    pub at: Millis,
    /// The region where it happened.
    pub region: RegionId,
    /// What happened.
    pub kind: LineKind,
    /// The change to the balance: positive credits, negative charges; 0 for
    /// a hold or a release (held tokens are still the user's).
    pub amount: i64,
    /// Memes-API calls the line covers.
    pub calls: u64,
    /// Tokens a hold set aside or a release set free.
    pub held: u64,
    /// The balance after it, as this region saw it then.
    pub balance_after: u64,
    /// The request's idempotency key, or the job: only at the region that
    /// served it.
    pub reference: Option<String>,
}

/// How long a line may wait for a persist when nothing else calls for one:
/// merged versions are otherwise written lazily, with the region's next write
/// of its own, and a region that only receives would never show them.
pub(crate) const LINE_WAIT_MS: u64 = 1_000;

/// Lines made since the last persist, waiting for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StatementDrafts {
    /// Off: no lines at all (`--statement-retention-days 0`).
    off: bool,
    /// The welcome grant: the balance of an account with no writes.
    grant: u64,
    /// The time of the input being handled.
    now: Millis,
    lines: Vec<StatementLine>,
    /// Where the lines of the latest change start.
    latest: usize,
}

impl StatementDrafts {
    /// Drafts that make lines (none when `off`) for accounts whose welcome
    /// grant is `grant`.
    pub(crate) fn new(off: bool, grant: u64) -> Self {
        Self {
            off,
            grant,
            ..Self::default()
        }
    }

    /// When waiting lines call for a persist of their own (see
    /// [`LINE_WAIT_MS`]), if any wait.
    pub(crate) fn due(&self) -> Option<Millis> {
        self.lines.first().map(|l| l.at.after(LINE_WAIT_MS))
    }

    /// Whether waiting lines call for a persist now.
    pub(crate) fn overdue(&self) -> bool {
        self.due().is_some_and(|due| due <= self.now)
    }

    /// Whether lines are made at all.
    pub(crate) fn is_on(&self) -> bool {
        !self.off
    }

    /// The time stamped on lines made from now on.
    pub(crate) fn at(&mut self, now: Millis) {
        self.now = now;
    }

    /// `user`'s account changed from `old` to `new`: a line per region whose
    /// credited, spent or calls counters grew.
    pub(crate) fn changed(&mut self, user: &str, old: &Account, new: &Account) {
        if self.off {
            return;
        }
        let balance_after = balance(new, self.grant);
        self.latest = self.lines.len();
        for (&region, entry) in new.entries().iter() {
            let before = old.entry(region);
            let credited = entry.credited() - before.map_or(0, |e| e.credited());
            let spent = entry.spent() - before.map_or(0, |e| e.spent());
            let calls = entry.calls() - before.map_or(0, |e| e.calls());
            if credited > 0 {
                self.push(
                    user,
                    region,
                    LineKind::Credit,
                    signed(credited),
                    0,
                    balance_after,
                );
            }
            if spent > 0 || calls > 0 {
                let kind = if calls > 0 {
                    LineKind::Spend
                } else {
                    LineKind::Debit
                };
                self.push(user, region, kind, -signed(spent), calls, balance_after);
            }
        }
    }

    fn push(
        &mut self,
        user: &str,
        region: RegionId,
        kind: LineKind,
        amount: i64,
        calls: u64,
        balance_after: u64,
    ) {
        self.lines.push(StatementLine {
            user: user.to_owned(),
            at: self.now,
            region,
            kind,
            amount,
            calls,
            held: 0,
            balance_after,
            reference: None,
        });
    }

    /// A line with no change to the balance (a hold or a release).
    pub(crate) fn held(
        &mut self,
        user: &str,
        region: RegionId,
        kind: LineKind,
        held: u64,
        balance_after: u64,
        job: &str,
    ) {
        if self.off {
            return;
        }
        self.latest = self.lines.len();
        self.push(user, region, kind, 0, 0, balance_after);
        if let Some(line) = self.lines.last_mut() {
            line.held = held;
            line.reference = Some(job.to_owned());
        }
    }

    /// Names the request behind the latest change (a write of ours, just
    /// made to `user`'s account): its kind when it says more than the
    /// counters do (a capture is not a memes call), and its key or job.
    pub(crate) fn annotate(&mut self, user: &str, kind: Option<LineKind>, reference: Option<&str>) {
        let start = self.latest.min(self.lines.len());
        for line in self.lines[start..].iter_mut().filter(|l| l.user == user) {
            if let Some(kind) = kind {
                line.kind = kind;
            }
            line.reference = reference.map(str::to_owned);
        }
    }

    /// The lines made so far, for the next persist.
    pub(crate) fn take(&mut self) -> Vec<StatementLine> {
        self.latest = 0;
        std::mem::take(&mut self.lines)
    }

    /// Lines of a persist that failed, back in front of newer ones.
    pub(crate) fn restore(&mut self, mut lines: Vec<StatementLine>) {
        self.latest += lines.len();
        lines.append(&mut self.lines);
        self.lines = lines;
    }
}

/// The balance an account stands for: the grant, plus credits, less spends
/// (what [`Account::balance`] comes to, without the genesis lookup).
pub(crate) fn balance(account: &Account, grant: u64) -> u64 {
    let total = i128::from(grant) + account.credited() as i128 - account.spent() as i128;
    u64::try_from(total.max(0)).unwrap_or(u64::MAX)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
