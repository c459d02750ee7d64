//! How long the group commit waits before a flush, so that more writes share it.
//!
//! Each flush costs a log append and an `fdatasync`, so fewer, larger flushes
//! save CPU, at the price of the wait. The wait pays only while writes come
//! faster than one per flush: then the last flush carried more than one, and
//! the next will gather more. A lone client's spends, one after the other,
//! would each wait out the whole linger with nobody to share it (0.97 ms
//! against 0.32 ms median on this VM), so after a flush of one write the next
//! flush starts at once.
//!
//! And the wait ends once the writes stop coming: when no write has come for
//! a quarter of the linger. Clients that each wait for their answer before
//! sending again (a closed loop) send their next writes in a burst after a
//! flush and then none until the next; waiting out the rest of the linger
//! for writes that cannot come held sixteen such clients to 17.5k spends a
//! second, against 37k–41k with no linger (benches/README.md, session 19).
//!
//! It also ends, at once, when no more writes can come: every open HTTP
//! connection has a request waiting in the engine, and HTTP/1.1 carries one
//! request at a time. The quarter-linger of silence that otherwise ends a
//! closed loop's burst cost sixteen clients a fifth to a third of their
//! spends per second (benches/README.md, session 24).
//!
//! And it ends once the flush holds [`ENOUGH_TO_SHARE`] writes: an
//! `fdatasync` here is about two disk requests, each a VM exit, and spread
//! over that many writes it is a small part of each. Waiting longer only
//! adds latency: at 10,000 spends/s on one node, a 2 ms linger without this
//! rule took 5 % off the CPU and put 0.9 ms on the median. At the 3,300 a
//! second each node of the seeds' SLA run takes, eight writes take longer
//! to come than 500 µs (the default before), and the 2 ms default took
//! 6–9 % off the CPU per request (benches/README.md, session 30).

use std::time::{Duration, Instant};

/// Writes that share a flush well enough: with this many waiting, the
/// flush goes at once.
pub(crate) const ENOUGH_TO_SHARE: u32 = 8;

/// Whether the write that makes `writes` wait should wake the flusher: the
/// first starts a flush, the [`ENOUGH_TO_SHARE`]th ends its linger; the rest
/// ride along without a futex call each.
pub(crate) fn wakes_flusher(writes: u32) -> bool {
    writes == 1 || writes == ENOUGH_TO_SHARE
}

/// The linger, switched by what the last flush carried.
#[derive(Debug)]
pub(crate) struct Linger {
    configured: Duration,
    /// Whether the last flush carried more than one write; at first, as if it
    /// had, so a burst at startup is gathered.
    shared: bool,
}

impl Linger {
    pub(crate) fn new(configured: Duration) -> Self {
        Self {
            configured,
            shared: true,
        }
    }

    /// How long to sleep before flushing (`None`: flush now), for a group
    /// commit woken at `woke` by a first write, whose latest write came at
    /// `last_write`, holding `writes` writes: until no write has come for a
    /// quarter of the linger, and never past the linger after `woke`; not at
    /// all when no more writes can come (`more_can_come` false) or when
    /// [`ENOUGH_TO_SHARE`] wait already.
    pub(crate) fn wait_before_flush(
        &self,
        woke: Instant,
        last_write: Instant,
        now: Instant,
        writes: u32,
        more_can_come: bool,
    ) -> Option<Duration> {
        if !self.shared || self.configured.is_zero() || !more_can_come || writes >= ENOUGH_TO_SHARE
        {
            return None;
        }
        let quiet = last_write.max(woke) + self.configured / 4;
        let until = quiet.min(woke + self.configured);
        (now < until).then(|| until - now)
    }

    /// A flush began carrying `writes` writes.
    pub(crate) fn flushing(&mut self, writes: u32) {
        self.shared = writes > 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIGURED: Duration = Duration::from_micros(500);
    const QUIET: Duration = Duration::from_micros(125);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn lingers_only_after_a_flush_that_was_shared() {
        let t = Instant::now();
        let mut linger = Linger::new(CONFIGURED);
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, true),
            Some(QUIET),
            "a startup burst gathers"
        );
        linger.flushing(1);
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, true),
            None,
            "a lone write goes at once"
        );
        linger.flushing(3);
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, true),
            Some(QUIET),
            "writes come faster than flushes"
        );
        linger.flushing(0);
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, true),
            None,
            "a flush for a retry alone"
        );
    }

    #[test]
    fn the_wait_ends_when_the_writes_stop_coming() {
        let t = Instant::now();
        let linger = Linger::new(CONFIGURED);
        // A burst: the last write 60 µs after the first, then nothing.
        assert_eq!(
            linger.wait_before_flush(t, t + us(60), t + us(125), 2, true),
            Some(us(60))
        );
        assert_eq!(
            linger.wait_before_flush(t, t + us(60), t + us(185), 2, true),
            None
        );
    }

    #[test]
    fn writes_that_keep_coming_wait_no_longer_than_the_linger() {
        let t = Instant::now();
        let linger = Linger::new(CONFIGURED);
        assert_eq!(
            linger.wait_before_flush(t, t + us(450), t + us(460), 3, true),
            Some(us(40))
        );
        assert_eq!(
            linger.wait_before_flush(t, t + us(499), t + us(500), 3, true),
            None
        );
    }

    #[test]
    fn no_wait_once_no_more_writes_can_come() {
        let t = Instant::now();
        let mut linger = Linger::new(CONFIGURED);
        linger.flushing(16);
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, true),
            Some(QUIET),
            "other clients may still write"
        );
        assert_eq!(
            linger.wait_before_flush(t, t, t, 1, false),
            None,
            "every connection already waits for this flush"
        );
    }

    #[test]
    fn no_wait_once_enough_writes_share_the_flush() {
        let t = Instant::now();
        let mut linger = Linger::new(CONFIGURED);
        linger.flushing(ENOUGH_TO_SHARE);
        assert_eq!(
            linger.wait_before_flush(t, t, t, ENOUGH_TO_SHARE - 1, true),
            Some(QUIET),
            "one more may still come"
        );
        assert_eq!(
            linger.wait_before_flush(t, t, t, ENOUGH_TO_SHARE, true),
            None,
            "enough already share it"
        );
    }

    #[test]
    fn only_the_first_and_the_enough_th_write_wake_the_flusher() {
        let waking: Vec<u32> = (0..=2 * ENOUGH_TO_SHARE)
            .filter(|&w| wakes_flusher(w))
            .collect();
        assert_eq!(waking, vec![1, ENOUGH_TO_SHARE]);
    }

    #[test]
    fn zero_configured_never_waits() {
        let t = Instant::now();
        let mut linger = Linger::new(Duration::ZERO);
        linger.flushing(10);
        assert_eq!(linger.wait_before_flush(t, t, t, 1, true), None);
    }
}
