//! Classic meme text: the bundled font, word wrapping to a box, and white
//! glyphs with a black outline.

use super::canvas::{BLACK, Canvas, Rect, WHITE};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use std::sync::OnceLock;

/// DejaVu Sans Condensed Bold, cut down to Latin (see `assets/font/README.md`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/font/DejaVuSansCondensed-Bold-Latin.ttf");

/// The bundled font, parsed once; `None` if the bundled bytes were not a font
/// (a unit test makes sure they are).
pub(crate) fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
}

/// How a caption is drawn into its box.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    /// The largest font size tried, px.
    pub(crate) max_px: f32,
    /// The smallest; below it the text is cut.
    pub(crate) min_px: f32,
    /// Upper-case the text, as classic memes do.
    pub(crate) upper: bool,
}

/// Draws `text` centred in `area`, as large as fits between the style's sizes:
/// white, with a black outline.
pub(crate) fn caption(
    canvas: &mut Canvas,
    font: &FontRef<'_>,
    text: &str,
    area: Rect,
    style: Style,
) {
    let text = if style.upper {
        text.to_uppercase()
    } else {
        text.to_owned()
    };
    let pad = 8.0;
    let width = (area.w as f32 - 2.0 * pad).max(1.0);
    let mut px = style.max_px;
    let lines = loop {
        let scaled = font.as_scaled(PxScale::from(px));
        let lines = wrap(&scaled, &text, width);
        let fits_height = lines.len() as f32 * scaled.height() <= area.h as f32 - pad;
        let fits_width = lines.iter().all(|l| measure(&scaled, l) <= width);
        if (fits_height && fits_width) || px <= style.min_px {
            break lines;
        }
        px -= 2.0;
    };
    let scaled = font.as_scaled(PxScale::from(px));
    let line_h = scaled.height();
    let shown = ((area.h as f32 - pad) / line_h).floor().max(1.0) as usize;
    let lines = &lines[..lines.len().min(shown)];
    // Coverage of the glyphs over the box, then the outline as its dilation.
    let (w, h) = (area.w as usize, area.h as usize);
    let mut mask = vec![0f32; w * h];
    let top = (area.h as f32 - lines.len() as f32 * line_h) / 2.0;
    for (i, line) in lines.iter().enumerate() {
        let left = ((area.w as f32 - measure(&scaled, line)) / 2.0).max(0.0);
        let baseline = top + i as f32 * line_h + scaled.ascent();
        let mut x = left;
        let mut previous = None;
        for c in line.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                x += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(PxScale::from(px), point(x, baseline));
            x += scaled.h_advance(id);
            previous = Some(id);
            let Some(outlined) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, c| {
                let mx = bounds.min.x as i64 + i64::from(gx);
                let my = bounds.min.y as i64 + i64::from(gy);
                if mx >= 0 && my >= 0 && (mx as usize) < w && (my as usize) < h {
                    let cell = &mut mask[my as usize * w + mx as usize];
                    *cell = cell.max(c);
                }
            });
        }
    }
    let radius = (px / 14.0).clamp(1.5, 4.0);
    let outline = dilate(&mask, w, h, radius);
    for y in 0..h {
        for x in 0..w {
            let (cx, cy) = (i64::from(area.x) + x as i64, i64::from(area.y) + y as i64);
            canvas.blend(cx, cy, BLACK, outline[y * w + x]);
            canvas.blend(cx, cy, WHITE, mask[y * w + x]);
        }
    }
}

/// Splits `text` into lines no wider than `width` (a word wider than that
/// gets a line of its own).
fn wrap<F: Font>(scaled: &ab_glyph::PxScaleFont<&F>, text: &str, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if measure(scaled, &candidate) <= width || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The advance width of one line, kerning included.
fn measure<F: Font>(scaled: &ab_glyph::PxScaleFont<&F>, line: &str) -> f32 {
    let mut width = 0.0;
    let mut previous = None;
    for c in line.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// Each cell's maximum over a disc of `radius` around it: the outline.
fn dilate(mask: &[f32], w: usize, h: usize, radius: f32) -> Vec<f32> {
    let r = radius.ceil() as i64;
    let offsets: Vec<(i64, i64)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| ((dx * dx + dy * dy) as f32).sqrt() <= radius)
        .collect();
    let mut out = vec![0f32; w * h];
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let v = mask[y as usize * w + x as usize];
            if v <= 0.0 {
                continue;
            }
            for &(dx, dy) in &offsets {
                let (nx, ny) = (x + dx, y + dy);
                if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h {
                    let cell = &mut out[ny as usize * w + nx as usize];
                    *cell = cell.max(v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_font_parses_and_covers_the_caption_characters() {
        let font = font().expect("the bundled font parses");
        for c in "AZaz09!?'\"ÄÖÜßéçãñ€…".chars() {
            assert_ne!(font.glyph_id(c).0, 0, "{c:?} has no glyph");
        }
    }

    #[test]
    fn long_captions_wrap_within_the_width() {
        let font = font().expect("font");
        let scaled = font.as_scaled(PxScale::from(40.0));
        let lines = wrap(&scaled, "when the build is green on the first try", 300.0);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| measure(&scaled, l) <= 300.0));
    }
}
