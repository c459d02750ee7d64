//! Spends that wait for rights: a spend refused for lack of local rights (the
//! holders were asked at once) is held until rights for its user arrive, or
//! its wait runs out.
//!
//! Every spend may wait (`GET /memes` waits by default), so the waiting are
//! indexed both by deadline and by user: neither an arrival of rights nor the
//! next deadline, asked after every input, walks every waiting spend. And
//! they are bounded: past [`MAX_WAITING`], a spend is refused at once rather
//! than held, so a flood of spends for users whose rights are elsewhere
//! cannot grow the region without end.

use crate::hashing::Map;
use crate::region::command::ClientRequest;
use crate::region::units::{Millis, RequestId};
use std::collections::BTreeMap;

/// The most spends that wait at once, in one region.
pub(super) const MAX_WAITING: usize = 10_000;

/// Where a waiting spend is filed: its deadline, then its id (unique).
type WaitKey = (Millis, RequestId);

/// The spends waiting for rights.
#[derive(Debug, Default)]
pub(super) struct RightsWaits {
    /// Each waiting spend, by when it is answered with the refusal if rights
    /// have not come.
    by_deadline: BTreeMap<WaitKey, ClientRequest>,
    /// The waiting spends of each user, in the order they came.
    by_user: Map<String, Vec<WaitKey>>,
}

impl RightsWaits {
    /// Holds `request` until rights for its user arrive, or `deadline`.
    /// Gives it back, to be refused at once, if [`MAX_WAITING`] spends wait
    /// already (or one with its id does).
    #[must_use]
    pub(super) fn hold(
        &mut self,
        request: ClientRequest,
        deadline: Millis,
    ) -> Option<ClientRequest> {
        let key = (deadline, request.id);
        if self.by_deadline.len() >= MAX_WAITING || self.by_deadline.contains_key(&key) {
            return Some(request);
        }
        match self.by_user.get_mut(request.user.as_str()) {
            Some(keys) => keys.push(key),
            None => {
                self.by_user.insert(request.user.clone(), vec![key]);
            }
        }
        self.by_deadline.insert(key, request);
        None
    }

    /// Rights for `user` arrived: its waiting spends run again, in the order
    /// they came, each with what is left of its wait.
    pub(super) fn rights_arrived(&mut self, user: &str, now: Millis) -> Vec<ClientRequest> {
        let Some(keys) = self.by_user.remove(user) else {
            return Vec::new();
        };
        keys.into_iter()
            .filter_map(|key| {
                let request = self.by_deadline.remove(&key)?;
                Some(with_wait_left(request, key.0, now))
            })
            .collect()
    }

    /// Spends whose wait ran out: they run once more, without waiting.
    pub(super) fn overdue(&mut self, now: Millis) -> Vec<ClientRequest> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((deadline, _), request) = entry.remove_entry();
            due.push(with_wait_left(request, deadline, now));
        }
        // Each user's list once, however many of its spends ran out: every
        // key due by `now` has left `by_deadline`.
        let mut users: Vec<&str> = due.iter().map(|r| r.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            if let Some(keys) = self.by_user.get_mut(user) {
                keys.retain(|&(deadline, _)| deadline > now);
                if keys.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
        due
    }

    /// How many spends wait.
    pub(super) fn len(&self) -> usize {
        self.by_deadline.len()
    }

    /// The earliest deadline, if any spend waits.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline)
    }
}

/// `request`, to run again at `now`, with what is left of a wait to `deadline`.
fn with_wait_left(request: ClientRequest, deadline: Millis, now: Millis) -> ClientRequest {
    ClientRequest {
        wait_for_rights_ms: deadline.since(now),
        ..request
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
        assert!(waits.hold(spend(1, "alice"), Millis(500)).is_none());
        assert!(waits.hold(spend(2, "bob"), Millis(300)).is_none());
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

    #[test]
    fn a_users_spends_run_in_the_order_they_came_and_leave_both_indexes() {
        let mut waits = RightsWaits::default();
        assert!(waits.hold(spend(1, "carl"), Millis(900)).is_none());
        assert!(waits.hold(spend(2, "carl"), Millis(200)).is_none());
        assert!(waits.hold(spend(3, "dana"), Millis(200)).is_none());
        // Dana's deadline passes: only hers is answered, and carl's first
        // deadline is the next.
        assert!(waits.hold(spend(4, "carl"), Millis(600)).is_none());
        let due = waits.overdue(Millis(200));
        let due: Vec<u64> = due.iter().map(|r| r.id.0).collect();
        assert_eq!(due, [2, 3]);
        assert_eq!(waits.next_deadline(), Some(Millis(600)));
        assert!(waits.rights_arrived("dana", Millis(250)).is_empty());
        let woken: Vec<u64> = waits
            .rights_arrived("carl", Millis(250))
            .iter()
            .map(|r| r.id.0)
            .collect();
        assert_eq!(woken, [1, 4]);
        assert_eq!(waits.next_deadline(), None);
        assert!(waits.by_user.is_empty() && waits.by_deadline.is_empty());
    }

    #[test]
    fn many_spends_of_one_user_run_out_together_and_leave_none_behind() {
        let mut waits = RightsWaits::default();
        for id in 0..1_000 {
            assert!(waits.hold(spend(id, "gus"), Millis(100 + id % 7)).is_none());
        }
        assert!(waits.hold(spend(5_000, "gus"), Millis(900)).is_none());
        assert_eq!(waits.overdue(Millis(106)).len(), 1_000);
        assert_eq!(waits.by_user.get("gus").map(Vec::len), Some(1));
        let woken = waits.rights_arrived("gus", Millis(200));
        assert_eq!((woken.len(), woken[0].wait_for_rights_ms), (1, 700));
    }

    #[test]
    fn past_the_bound_a_spend_is_given_back_to_be_refused() {
        let mut waits = RightsWaits::default();
        for id in 0..MAX_WAITING as u64 {
            assert!(waits.hold(spend(id, "eve"), Millis(500)).is_none());
        }
        let extra = waits.hold(spend(u64::MAX, "eve"), Millis(500));
        assert_eq!(extra.map(|r| r.id), Some(RequestId(u64::MAX)));
        // A spend with a waiting one's id is given back, never overwrites it.
        let mut waits = RightsWaits::default();
        assert!(waits.hold(spend(7, "eve"), Millis(500)).is_none());
        assert!(waits.hold(spend(7, "fred"), Millis(500)).is_some());
        assert_eq!(waits.rights_arrived("eve", Millis(0)).len(), 1);
    }
}
