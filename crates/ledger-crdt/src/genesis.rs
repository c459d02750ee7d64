//! The welcome grant, given once per user without any message.

use crate::{Error, RegionId};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The welcome grant every new user starts with, and how its rights are split.
///
/// The grant is *implicit*: no region writes it. Every account carries it from its
/// first moment, with its rights pre-split over a fixed, cluster-wide list of genesis
/// regions. Two regions that meet the same new user during a partition therefore
/// both see the same 150 tokens, split the same way; neither can grant it again.
///
/// The split is the same everywhere because it depends only on this configuration:
/// `grant / n` each, and the remainder one token each to the lowest region ids. All
/// regions must run with the same `Genesis`; changing it changes every account's
/// balance, so it is a migration, never a setting to tweak on a live cluster.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Genesis {
    grant: u64,
    regions: Vec<RegionId>,
}

/// The seed service's welcome grant.
pub const DEFAULT_WELCOME_GRANT: u64 = 150;

impl Genesis {
    /// A welcome grant of `grant` tokens split over `regions` (order and duplicates
    /// do not matter).
    pub fn new(grant: u64, regions: impl IntoIterator<Item = RegionId>) -> Result<Self, Error> {
        let mut regions: Vec<RegionId> = regions.into_iter().collect();
        regions.sort_unstable();
        regions.dedup();
        if grant > 0 && regions.is_empty() {
            return Err(Error::GenesisWithoutRegions);
        }
        Ok(Self { grant, regions })
    }

    /// The total welcome grant.
    pub fn grant(&self) -> u64 {
        self.grant
    }

    /// The genesis regions, sorted.
    pub fn regions(&self) -> &[RegionId] {
        &self.regions
    }

    /// The part of the welcome grant whose rights start in `region`.
    pub fn share(&self, region: RegionId) -> u64 {
        let Ok(index) = self.regions.binary_search(&region) else {
            return 0;
        };
        // `regions` is non-empty here, and a Vec holds fewer than u64::MAX items.
        let n = self.regions.len() as u64;
        let extra = u64::from((index as u64) < self.grant % n);
        self.grant / n + extra
    }
}
