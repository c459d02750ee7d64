//! How long the group commit waits before a flush, so that more writes share it.
//!
//! Each flush costs a log append and an `fdatasync`, so fewer, larger flushes
//! save CPU, at the price of the wait. The wait pays only while writes come
//! faster than one per flush: then the last flush carried more than one, and
//! the next will gather more. A lone client's spends, one after the other,
//! would each wait out the whole linger with nobody to share it (0.97 ms
//! against 0.32 ms median on this VM), so after a flush of one write the next
//! flush starts at once.

use std::time::Duration;

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

    /// How long to wait before the next flush.
    pub(crate) fn before_flush(&self) -> Duration {
        if self.shared {
            self.configured
        } else {
            Duration::ZERO
        }
    }

    /// A flush began carrying `writes` writes.
    pub(crate) fn flushing(&mut self, writes: u32) {
        self.shared = writes > 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingers_only_after_a_flush_that_was_shared() {
        let configured = Duration::from_micros(500);
        let mut linger = Linger::new(configured);
        assert_eq!(linger.before_flush(), configured, "a startup burst gathers");
        linger.flushing(1);
        assert_eq!(
            linger.before_flush(),
            Duration::ZERO,
            "a lone write goes at once"
        );
        linger.flushing(1);
        assert_eq!(linger.before_flush(), Duration::ZERO);
        linger.flushing(3);
        assert_eq!(
            linger.before_flush(),
            configured,
            "writes come faster than flushes"
        );
        linger.flushing(2);
        assert_eq!(linger.before_flush(), configured);
        linger.flushing(0);
        assert_eq!(
            linger.before_flush(),
            Duration::ZERO,
            "a flush for a retry alone"
        );
    }

    #[test]
    fn zero_configured_never_waits() {
        let mut linger = Linger::new(Duration::ZERO);
        linger.flushing(10);
        assert_eq!(linger.before_flush(), Duration::ZERO);
    }
}
