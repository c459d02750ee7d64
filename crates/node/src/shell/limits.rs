//! Rate limits, by GCRA (`governor`): per user after authentication
//! (`--rate-limit`), and per client IP before it (`--rate-limit-ip`), so that a
//! flood of requests that never authenticate is limited too.
//!
//! GCRA spaces requests out evenly with a burst of one second's worth, so no
//! window edge lets twice the limit through. Limits are per region: every node
//! counts its own callers.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// A caller within its limit: what the `RateLimit-*` headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    /// Requests per second allowed.
    pub limit: u32,
    /// Requests the caller may still make at once.
    pub remaining: u32,
}

/// A caller over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Denied {
    /// Requests per second allowed.
    pub limit: u32,
    /// Whole seconds until the next request would pass (at least 1).
    pub retry_after_secs: u64,
}

/// One keyed limit; `None` when disabled (0).
struct Limit<K: Hash + Eq + Clone> {
    per_second: u32,
    limiter: Option<Keyed<K>>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|n| {
            RateLimiter::keyed(Quota::per_second(n)).with_middleware::<StateInformationMiddleware>()
        });
        Self {
            per_second,
            limiter,
        }
    }

    /// `Ok(None)` when the limit is disabled.
    fn check(&self, key: &K) -> Result<Option<Allowed>, Denied> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        match limiter.check_key(key) {
            Ok(snapshot) => Ok(Some(Allowed {
                limit: self.per_second,
                remaining: snapshot.remaining_burst_capacity(),
            })),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Denied {
                    limit: self.per_second,
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }

    fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The node's limits.
pub(crate) struct Limits {
    users: Limit<String>,
    ips: Limit<IpAddr>,
}

impl Limits {
    /// `per_user` and `per_ip` requests per second; 0 disables either.
    pub(crate) fn new(per_user: u32, per_ip: u32) -> Self {
        Self {
            users: Limit::new(per_user),
            ips: Limit::new(per_ip),
        }
    }

    /// Whether authenticated `user` may make a request now (counts it).
    pub(crate) fn user(&self, user: &str) -> Result<Option<Allowed>, Denied> {
        self.users.check(&user.to_owned())
    }

    /// Whether a request from `ip` may go on to authentication (counts it).
    pub(crate) fn ip(&self, ip: IpAddr) -> Result<Option<Allowed>, Denied> {
        self.ips.check(&ip)
    }

    /// Drops the state of callers idle long enough to be back at a full burst,
    /// so memory follows the active callers.
    pub(crate) fn forget_idle(&self) {
        self.users.forget_idle();
        self.ips.forget_idle();
    }
}

/// How often idle callers are forgotten.
pub(crate) const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_passes_then_the_next_waits_about_one_interval() {
        let limits = Limits::new(3, 0);
        for left in [2, 1, 0] {
            let allowed = limits.user("a").expect("within the limit");
            assert_eq!(allowed.map(|a| (a.limit, a.remaining)), Some((3, left)));
        }
        let denied = limits.user("a").expect_err("over the limit");
        assert_eq!(denied.limit, 3);
        assert_eq!(denied.retry_after_secs, 1);
        assert!(limits.user("b").is_ok(), "per user");
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..1_000 {
            assert_eq!(limits.ip(ip), Ok(None), "0 disables");
        }
    }
}
