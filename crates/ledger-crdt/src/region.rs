//! Region identities.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// A region of the cluster, such as "Sydney".
///
/// Regions are small integers fixed by configuration rather than names: a region id
/// appears in every entry of every account, so it must encode in one or two bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RegionId(pub u16);

impl std::fmt::Display for RegionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}
