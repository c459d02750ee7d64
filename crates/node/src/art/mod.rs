//! Meme images: what an image is ([`ImageSpec`]), how it is drawn, and the
//! cache of encoded PNGs. Pure code, no I/O: the shell renders on a blocking
//! thread and serves the bytes.
//!
//! # Layout
//! - `spec.rs`: [`ImageSpec`] (layout, palette, seed, captions) and its id,
//!   which is the image's URL name and `ETag`. An image is a pure function of
//!   its spec, so images need no replication: store the spec, render on a miss.
//! - `canvas.rs`: pixels, shapes and the procedural backgrounds.
//! - `text.rs`: the bundled font, word wrapping, and classic meme text (white,
//!   black outline).
//! - `render.rs`: the three layouts (top/bottom caption, two-panel
//!   reject/approve, four-step ladder) and PNG encoding.
//! - `cache.rs`: [`ImageCache`], a byte-bounded cache of encoded PNGs.
//! - `captions.rs`: the curated captions of the catalog, and the embedded AI
//!   generator's seeded grammar.
//! - `filter.rs`: [`CaptionFilter`], the blocklist every caption passes.

mod cache;
mod canvas;
mod captions;
mod filter;
mod render;
mod spec;
mod text;

pub use cache::ImageCache;
pub use captions::{ai_spec, curated_spec};
pub use filter::CaptionFilter;
pub use render::{RenderError, render_png};
pub use spec::{ImageSpec, Layout};
