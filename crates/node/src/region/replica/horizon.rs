//! What a catch-up may leave out because it is still on its way.
//!
//! A digest says what its sender held when it sent it. Whatever our batches
//! sent within the last round trip, and whatever of a third region reached us
//! just as it reached the asker, is most likely still on its way there:
//! answering with it sends it twice. In the SLA run a third of replication's
//! bytes were such catch-ups, and more under load, when lag grows and every
//! digest asks for more. So an origin of which the asker lacks only what we
//! came to hold within the last `grace_ms` is left out of the answer; its
//! next digest gets it all, if it still lacks it then.
//!
//! An origin is answered in full or not at all. Cutting the answer's range at
//! the grace instead would claim the asker holds the range while an entry
//! written again after the cut is missing from it, and once that entry's
//! origin is down no one would forward it (found by the simulator, seed 280).
//! So the grace only delays a repair, by about `grace_ms`, and no invariant
//! rests on it.

use super::state::Durable;
use crate::region::units::{Millis, Seq};
use ledger_crdt::RegionId;
use std::collections::{BTreeMap, VecDeque};

/// The highest write we held of each origin (our own: what batches had
/// sent) at recent times, oldest first.
#[derive(Debug)]
pub(super) struct Horizon {
    grace_ms: u64,
    samples: VecDeque<(Millis, BTreeMap<RegionId, Seq>)>,
}

impl Horizon {
    /// `grace_ms` 0 turns it off: catch-ups cover everything held.
    pub(super) fn new(grace_ms: u64) -> Self {
        Self {
            grace_ms,
            samples: VecDeque::new(),
        }
    }

    /// Notes at `now` the highest write of each origin `state` holds (past
    /// a gap too: those are forwarded as well; ours: what was sent). Keeps
    /// one sample at least `grace_ms` old, and those after it.
    pub(super) fn note(&mut self, now: Millis, state: &Durable, me: RegionId) {
        if self.grace_ms == 0 {
            return;
        }
        let mut held = state.watermarks.clone();
        for (&origin, mark) in held.iter_mut() {
            let highest = state
                .seqs_by_origin
                .range((origin, Seq(0))..=(origin, Seq(u64::MAX)))
                .next_back()
                .map(|(&(_, seq), _)| seq);
            *mark = (*mark).max(highest.unwrap_or_default());
        }
        held.insert(me, state.sent_upto);
        if self.samples.back().is_some_and(|(_, last)| *last == held) {
            return;
        }
        self.samples.push_back((now, held));
        let horizon = now.0.saturating_sub(self.grace_ms);
        while self.samples.get(1).is_some_and(|(at, _)| at.0 <= horizon) {
            self.samples.pop_front();
        }
    }

    /// Whether an asker holding `origin`'s writes up to `known` lacks only
    /// what we came to hold within `grace_ms` of `now` (or since our first
    /// sample, if we have not run that long).
    pub(super) fn only_in_flight(&self, now: Millis, origin: RegionId, known: Seq) -> bool {
        self.cutoff(now, origin)
            .is_some_and(|cutoff| known >= cutoff)
    }

    /// The highest write of `origin` we held `grace_ms` before `now`, or at
    /// our first sample if we have not run that long. `None`: no sample.
    fn cutoff(&self, now: Millis, origin: RegionId) -> Option<Seq> {
        if self.grace_ms == 0 {
            return None;
        }
        let horizon = now.0.saturating_sub(self.grace_ms);
        let sample = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| at.0 <= horizon)
            .or_else(|| self.samples.front())?;
        Some(sample.1.get(&origin).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(sent: u64, of_two: u64) -> Durable {
        let mut state = Durable {
            sent_upto: Seq(sent),
            ..Durable::default()
        };
        state.watermarks.insert(RegionId(2), Seq(of_two));
        state
    }

    #[test]
    fn a_catch_up_covers_what_was_held_a_grace_ago() {
        let me = RegionId(1);
        let mut horizon = Horizon::new(500);
        assert_eq!(horizon.cutoff(Millis(0), me), None, "no sample: no limit");
        horizon.note(Millis(1_000), &state(10, 5), me);
        horizon.note(Millis(1_300), &state(20, 7), me);
        horizon.note(Millis(1_600), &state(30, 9), me);
        // Not yet 500 ms of samples at 1,400: the first one.
        assert_eq!(horizon.cutoff(Millis(1_400), me), Some(Seq(10)));
        assert_eq!(horizon.cutoff(Millis(1_850), me), Some(Seq(20)));
        assert_eq!(horizon.cutoff(Millis(1_850), RegionId(2)), Some(Seq(7)));
        assert_eq!(horizon.cutoff(Millis(2_100), me), Some(Seq(30)));
        assert_eq!(horizon.cutoff(Millis(2_100), RegionId(3)), Some(Seq(0)));
    }

    #[test]
    fn it_keeps_only_what_a_cutoff_can_still_read() {
        let me = RegionId(1);
        let mut horizon = Horizon::new(100);
        for t in 0..1_000u64 {
            horizon.note(Millis(t * 10), &state(t, t), me);
        }
        assert!(horizon.samples.len() <= 12, "{}", horizon.samples.len());
        assert_eq!(horizon.cutoff(Millis(9_990), me), Some(Seq(989)));
    }

    #[test]
    fn grace_zero_is_no_limit() {
        let me = RegionId(1);
        let mut horizon = Horizon::new(0);
        horizon.note(Millis(1_000), &state(10, 5), me);
        assert_eq!(horizon.cutoff(Millis(5_000), me), None);
        assert!(!horizon.only_in_flight(Millis(5_000), me, Seq(10)));
    }

    #[test]
    fn an_asker_behind_the_grace_gets_an_answer() {
        let me = RegionId(1);
        let mut horizon = Horizon::new(500);
        assert!(!horizon.only_in_flight(Millis(0), me, Seq(0)), "no sample");
        horizon.note(Millis(1_000), &state(10, 5), me);
        horizon.note(Millis(1_400), &state(20, 7), me);
        assert!(horizon.only_in_flight(Millis(1_600), me, Seq(10)));
        assert!(!horizon.only_in_flight(Millis(1_600), me, Seq(9)));
        assert!(!horizon.only_in_flight(Millis(1_900), me, Seq(19)));
        assert!(horizon.only_in_flight(Millis(1_900), RegionId(2), Seq(7)));
    }
}
