//! Spends that wait for rights: a client that sent `wait` lets the region hold
//! a spend refused for lack of local rights (the holders were asked at once)
//! until rights for its user arrive, or the wait runs out.

use crate::region::command::ClientRequest;
use crate::region::units::Millis;

/// A spend waiting for rights.
#[derive(Debug)]
struct RightsWait {
    request: ClientRequest,
    /// When it is answered with the refusal, if rights have not come.
    deadline: Millis,
}

/// The spends waiting for rights.
#[derive(Debug, Default)]
pub(super) struct RightsWaits {
    waiting: Vec<RightsWait>,
}

impl RightsWaits {
    /// Holds `request` until rights for its user arrive, or `deadline`.
    pub(super) fn hold(&mut self, request: ClientRequest, deadline: Millis) {
        self.waiting.push(RightsWait { request, deadline });
    }

    /// Rights for `user` arrived: its waiting spends run again, each with
    /// what is left of its wait.
    pub(super) fn rights_arrived(&mut self, user: &str, now: Millis) -> Vec<ClientRequest> {
        self.take(now, |w| w.request.user == user)
    }

    /// Spends whose wait ran out: they run once more, without waiting.
    pub(super) fn overdue(&mut self, now: Millis) -> Vec<ClientRequest> {
        self.take(now, |w| w.deadline <= now)
    }

    /// The earliest deadline, if any spend waits.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.waiting.iter().map(|w| w.deadline).min()
    }

    fn take(&mut self, now: Millis, pick: impl Fn(&RightsWait) -> bool) -> Vec<ClientRequest> {
        if !self.waiting.iter().any(&pick) {
            return Vec::new();
        }
        let (picked, rest): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|w| pick(w));
        self.waiting = rest;
        picked
            .into_iter()
            .map(|w| ClientRequest {
                wait_for_rights_ms: w.deadline.since(now),
                ..w.request
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::command::Command;
    use crate::region::units::RequestId;

    fn spend(id: u64, user: &str) -> ClientRequest {
        ClientRequest::new(RequestId(id), user, Command::ChargeCall, None)
    }

    #[test]
    fn rights_wake_their_users_spends_and_deadlines_end_the_wait() {
        let mut waits = RightsWaits::default();
        waits.hold(spend(1, "alice"), Millis(500));
        waits.hold(spend(2, "bob"), Millis(300));
        assert_eq!(waits.next_deadline(), Some(Millis(300)));
        let woken = waits.rights_arrived("alice", Millis(100));
        assert_eq!(woken.len(), 1);
        assert_eq!(
            (woken[0].id, woken[0].wait_for_rights_ms),
            (RequestId(1), 400)
        );
        assert!(waits.overdue(Millis(299)).is_empty());
        let due = waits.overdue(Millis(300));
        assert_eq!((due[0].id, due[0].wait_for_rights_ms), (RequestId(2), 0));
        assert_eq!(waits.next_deadline(), None);
    }
}
