//! The versions one user's account holds of other origins' entries.
//!
//! One per other region that ever wrote the user: a handful. They sit in the
//! user's [`super::state::UserState`], beside the account a merge changes
//! with them, so a merge finds both with one look-up by name. A map per
//! origin keyed by name cost a merge two more look-ups (1,300–1,900
//! instructions a spend merged, `benches/peer_instructions.sh`). The price
//! is a pointer in every user's slot: 14–20 bytes a user more on a lone
//! node holding ten million or a million (the map's slack included).

use crate::region::units::Seq;
use ledger_crdt::RegionId;

/// The version held of each other origin's entry, by origin, ascending.
/// `None` until the first merge; behind a thin pointer, so that a user only
/// ever written here costs 8 bytes, not a slice's 16 (every user of a lone
/// region pays it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[expect(
    clippy::box_collection,
    reason = "the box is what keeps the slot a thin pointer"
)]
pub(super) struct HeldVersions(Option<Box<Vec<(RegionId, Seq)>>>);

impl HeldVersions {
    /// Each origin's version held, by origin.
    pub(super) fn iter(&self) -> impl Iterator<Item = (RegionId, Seq)> + '_ {
        self.0.iter().flat_map(|held| held.iter().copied())
    }

    /// The version held of `origin`'s entry, if any.
    #[cfg(test)]
    pub(super) fn of(&self, origin: RegionId) -> Option<Seq> {
        self.iter().find(|(o, _)| *o == origin).map(|(_, seq)| seq)
    }

    /// Holds version `seq` of `origin`'s entry unless a later one is held
    /// already (versions only grow). Returns what it replaced: `Some(None)`
    /// for a first version of that origin, `None` if nothing changed.
    pub(super) fn raise(&mut self, origin: RegionId, seq: Seq) -> Option<Option<Seq>> {
        if let Some(held) = self.0.as_mut()
            && let Some(slot) = held.iter_mut().find(|(o, _)| *o == origin)
        {
            if slot.1 >= seq {
                return None;
            }
            return Some(Some(std::mem::replace(&mut slot.1, seq)));
        }
        // A new origin for this user: once per region that writes it.
        let held = self.0.get_or_insert_default();
        let at = held.partition_point(|(o, _)| *o < origin);
        held.insert(at, (origin, seq));
        held.shrink_to_fit();
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_grow_and_stay_in_origin_order() {
        let mut held = HeldVersions::default();
        assert_eq!(held.raise(RegionId(3), Seq(5)), Some(None));
        assert_eq!(held.raise(RegionId(1), Seq(9)), Some(None));
        assert_eq!(held.raise(RegionId(3), Seq(4)), None, "older: kept");
        assert_eq!(held.raise(RegionId(3), Seq(5)), None, "the same: kept");
        assert_eq!(held.raise(RegionId(3), Seq(7)), Some(Some(Seq(5))));
        assert_eq!(held.raise(RegionId(2), Seq(1)), Some(None));
        let all: Vec<_> = held.iter().collect();
        assert_eq!(
            all,
            vec![
                (RegionId(1), Seq(9)),
                (RegionId(2), Seq(1)),
                (RegionId(3), Seq(7))
            ]
        );
        assert_eq!(held.of(RegionId(3)), Some(Seq(7)));
        assert_eq!(held.of(RegionId(4)), None);
    }
}
