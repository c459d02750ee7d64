//! What an image is: everything its pixels depend on.

use bincode::{Decode, Encode};
use std::fmt::Write;

/// How the picture is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Layout {
    /// One picture, a caption at the top and one at the bottom.
    TopBottom,
    /// Two rows: the rejected option, then the approved one.
    RejectApprove,
    /// Four rows, each a step up from the last.
    Ladder,
}

impl Layout {
    /// How many captions the layout shows.
    pub fn captions(self) -> usize {
        match self {
            Layout::TopBottom | Layout::RejectApprove => 2,
            Layout::Ladder => 4,
        }
    }

    /// Width and height in pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Layout::TopBottom | Layout::RejectApprove => (480, 480),
            Layout::Ladder => (480, 640),
        }
    }
}

/// An image, as a value: the renderer draws the same pixels from the same spec
/// on every node and every release that keeps [`ImageSpec::VERSION`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct ImageSpec {
    /// The layout.
    pub layout: Layout,
    /// Which background palette.
    pub palette: u8,
    /// Drives the procedural shapes.
    pub seed: u64,
    /// One caption per slot of the layout (missing ones are blank).
    pub captions: Vec<String>,
}

impl ImageSpec {
    /// Bumped whenever the renderer draws a spec differently, so that ids,
    /// and with them URLs and ETags, change with the pixels.
    pub const VERSION: u8 = 1;

    /// The image's name: 32 hex digits of SHA-256 over the version and the
    /// spec. Used in the URL and as the `ETag`.
    pub fn id(&self) -> String {
        let mut bytes = vec![Self::VERSION];
        // Encoding a spec into a Vec cannot fail.
        if let Ok(spec) = bincode::encode_to_vec(self, bincode::config::standard()) {
            bytes.extend(spec);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut id = String::with_capacity(32);
        for b in &digest.as_ref()[..16] {
            let _ = write!(id, "{b:02x}");
        }
        id
    }

    /// The spec as stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// A stored spec, or `None` if the bytes are not one (at most `limit`
    /// bytes are read).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        const LIMIT: usize = 16 * 1024;
        let config = bincode::config::standard().with_limit::<LIMIT>();
        let (spec, read): (Self, usize) = bincode::decode_from_slice(bytes, config).ok()?;
        (read == bytes.len()).then_some(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(caption: &str) -> ImageSpec {
        ImageSpec {
            layout: Layout::TopBottom,
            palette: 3,
            seed: 42,
            captions: vec![caption.into(), "bottom".into()],
        }
    }

    #[test]
    fn the_id_follows_the_spec_and_nothing_else() {
        assert_eq!(spec("top").id(), spec("top").id());
        assert_ne!(spec("top").id(), spec("Top").id());
        assert_eq!(spec("top").id().len(), 32);
    }

    #[test]
    fn stored_specs_round_trip_and_garbage_is_refused() {
        let s = spec("top");
        assert_eq!(ImageSpec::from_bytes(&s.to_bytes()), Some(s));
        assert_eq!(ImageSpec::from_bytes(&[0xff; 40]), None);
        assert_eq!(ImageSpec::from_bytes(&[]), None);
    }
}
