//! Per-user request rate limiting, as a pure state machine over explicit time.

use std::collections::HashMap;

/// A fixed one-second window per caller. Memory is bounded by the callers seen in
/// the current second: the whole map is dropped when the second changes.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    second: u64,
    counts: HashMap<String, u32>,
}

impl RateLimiter {
    /// Allows `per_second` requests per caller per second; 0 disables the limit.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            second: 0,
            counts: HashMap::new(),
        }
    }

    /// Whether `who` may make a request at `now_ms`; counts it if so.
    pub fn admit(&mut self, who: &str, now_ms: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let second = now_ms / 1_000;
        if second != self.second {
            self.second = second;
            self.counts.clear();
        }
        let count = self.counts.entry(who.to_owned()).or_insert(0);
        if *count >= self.per_second {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_caller_per_second() {
        let mut limiter = RateLimiter::new(2);
        assert!(limiter.admit("a", 1_000));
        assert!(limiter.admit("a", 1_500));
        assert!(!limiter.admit("a", 1_999));
        assert!(limiter.admit("b", 1_999));
        assert!(limiter.admit("a", 2_000));
    }
}
