//! "At most once per user every so often", for decisions that must not repeat
//! on every spend (rebalancing plans, rights requests).

use crate::region::by_user::ByUser;
use crate::region::units::Millis;

/// A per-user rate limit of one event every `every_ms`.
#[derive(Debug)]
pub(super) struct Throttle {
    every_ms: u64,
    last: ByUser<Millis>,
}

impl Throttle {
    pub(super) fn new(every_ms: u64) -> Self {
        Self {
            every_ms,
            last: ByUser::default(),
        }
    }

    /// Whether `user`'s event may happen at `now`; if so, it is counted.
    pub(super) fn allow(&mut self, user: &str, now: Millis) -> bool {
        if self
            .last
            .get(user)
            .is_some_and(|&t| now.since(t) < self.every_ms)
        {
            return false;
        }
        *self.last.entry(user, || now) = now;
        true
    }

    /// Forgets, in one slice of the users, those whose last event no longer
    /// holds anything back (a full pass takes
    /// [`crate::region::by_user::SLICES`] calls).
    pub(super) fn prune(&mut self, now: Millis) {
        let every_ms = self.every_ms;
        self.last.sweep(|&mut t| now.since(t) < every_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_user_per_period() {
        let mut t = Throttle::new(100);
        assert!(t.allow("a", Millis(1_000)));
        assert!(!t.allow("a", Millis(1_099)));
        assert!(t.allow("b", Millis(1_099)), "users are independent");
        assert!(t.allow("a", Millis(1_100)));
        for _ in 0..crate::region::by_user::SLICES {
            t.prune(Millis(1_199));
        }
        assert_eq!(t.last.len(), 1, "b is forgotten, a still counts");
    }
}
