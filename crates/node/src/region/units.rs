//! The numbers the region core counts in, as types: a write's sequence number,
//! a point in time, a client request's id. Each was a bare `u64` under four
//! names; now the compiler keeps them apart.

use bincode::{Decode, Encode};
use std::fmt;

/// A region's write sequence number: its writes are numbered 1, 2, … in the
/// order made, and `Seq(0)` means "none yet". "Durable up to `s`" and "a peer
/// holds every write of that origin up to `s`" are both said in `Seq`s.
///
/// Encoded as the bare number, so stored data and peer messages are unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Seq(pub u64);

impl Seq {
    /// No write yet.
    pub const ZERO: Seq = Seq(0);

    /// The sequence number after this one (saturating: a peer's digest may
    /// claim any watermark, and a range after it must not overflow).
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// How many writes lie in `(earlier, self]`.
    pub fn writes_since(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A point in time, in milliseconds on the shell's clock: the Unix epoch in
/// the node, virtual time in the simulator. The core never reads a clock; every
/// input carries one of these. Durations stay plain `u64` milliseconds, named
/// `*_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Millis(pub u64);

impl Millis {
    /// Milliseconds from `earlier` to `self`; 0 if `earlier` is later (clocks
    /// of different nodes, or of one node across a restart, disagree).
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `ms` milliseconds later.
    pub fn after(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// A client request, as the shell numbers them: the core hands it back with
/// the request's [`crate::Reply`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newtypes_encode_as_the_bare_number() {
        let config = bincode::config::standard();
        for n in [0u64, 1, 250, 1 << 40] {
            let bare = bincode::encode_to_vec(n, config).expect("encodes");
            assert_eq!(
                bincode::encode_to_vec(Seq(n), config).expect("encodes"),
                bare
            );
            assert_eq!(
                bincode::encode_to_vec(Millis(n), config).expect("encodes"),
                bare
            );
        }
    }

    #[test]
    fn time_differences_never_underflow() {
        assert_eq!(Millis(5).since(Millis(9)), 0);
        assert_eq!(Millis(9).since(Millis(5)), 4);
        assert_eq!(Millis(u64::MAX).after(1), Millis(u64::MAX));
        assert_eq!(Seq(3).writes_since(Seq(7)), 0);
    }
}
