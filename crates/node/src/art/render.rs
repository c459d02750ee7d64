//! The layouts, drawn procedurally from a spec, and PNG encoding.

use super::canvas::{BLACK, Canvas, Rect, Rng, WHITE, mix, palette_colors};
use super::spec::{ImageSpec, Layout};
use super::text::{Style, caption, font};
use ab_glyph::FontRef;
use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The bundled font did not parse (a broken build).
    #[error("the bundled font does not parse")]
    Font,
    /// The PNG encoder failed.
    #[error("encoding the PNG: {0}")]
    Encode(String),
}

/// Draws `spec` and encodes it as a PNG.
pub fn render_png(spec: &ImageSpec) -> Result<Vec<u8>, RenderError> {
    let font = font().ok_or(RenderError::Font)?;
    let (w, h) = spec.layout.size();
    let mut canvas = Canvas::new(w, h);
    let text = |i: usize| spec.captions.get(i).map_or("", String::as_str);
    match spec.layout {
        Layout::TopBottom => top_bottom(&mut canvas, font, spec, text(0), text(1)),
        Layout::RejectApprove => reject_approve(&mut canvas, font, spec, [text(0), text(1)]),
        Layout::Ladder => ladder(
            &mut canvas,
            font,
            spec,
            [text(0), text(1), text(2), text(3)],
        ),
    }
    let mut png = Vec::with_capacity(64 * 1024);
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
        .write_image(canvas.img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(png)
}

const BIG: Style = Style {
    max_px: 52.0,
    min_px: 20.0,
    upper: true,
};

const PANEL: Style = Style {
    max_px: 36.0,
    min_px: 16.0,
    upper: false,
};

/// One picture, captions in the top and bottom bands.
fn top_bottom(canvas: &mut Canvas, font: &FontRef<'_>, spec: &ImageSpec, top: &str, bottom: &str) {
    let (w, h) = spec.layout.size();
    let all = Rect { x: 0, y: 0, w, h };
    canvas.background(all, spec.palette, spec.seed);
    let mut rng = Rng::new(spec.seed ^ 0x5eed);
    let (_, _, accent) = palette_colors(spec.palette);
    let mood = (rng.below(200) as f32 / 100.0) - 1.0;
    let skin = mix(accent, WHITE, 0.3);
    canvas.face(
        w as f32 / 2.0,
        h as f32 / 2.0,
        80.0 + rng.below(30) as f32,
        mood,
        skin,
    );
    let band = h * 3 / 10;
    caption(
        canvas,
        font,
        top,
        Rect {
            x: 0,
            y: 4,
            w,
            h: band,
        },
        BIG,
    );
    let bottom_band = Rect {
        x: 0,
        y: h - band - 4,
        w,
        h: band,
    };
    caption(canvas, font, bottom, bottom_band, BIG);
}

/// Two rows: the rejected option (a cross, a frown), then the approved one (a
/// tick, a grin).
fn reject_approve(canvas: &mut Canvas, font: &FontRef<'_>, spec: &ImageSpec, texts: [&str; 2]) {
    let (w, h) = spec.layout.size();
    let row = h / 2;
    let panel = w * 2 / 5;
    for (i, text) in texts.iter().enumerate() {
        let y = row * i as u32;
        let approve = i == 1;
        let (tint, mood) = if approve {
            ([46, 125, 50], 1.0)
        } else {
            ([198, 40, 40], -1.0)
        };
        canvas.gradient(
            Rect {
                x: 0,
                y,
                w: panel,
                h: row,
            },
            mix(tint, WHITE, 0.35),
            tint,
        );
        let (cx, cy) = (panel as f32 / 2.0, y as f32 + row as f32 / 2.0);
        canvas.face(cx - 20.0, cy, 62.0, mood, [255, 213, 79]);
        let (ix, iy) = (panel as f32 - 34.0, y as f32 + 34.0);
        if approve {
            canvas.line((ix - 16.0, iy), (ix - 4.0, iy + 14.0), 9.0, WHITE);
            canvas.line((ix - 4.0, iy + 14.0), (ix + 18.0, iy - 14.0), 9.0, WHITE);
        } else {
            canvas.line((ix - 14.0, iy - 14.0), (ix + 14.0, iy + 14.0), 9.0, WHITE);
            canvas.line((ix - 14.0, iy + 14.0), (ix + 14.0, iy - 14.0), 9.0, WHITE);
        }
        let area = Rect {
            x: panel,
            y,
            w: w - panel,
            h: row,
        };
        canvas.background(area, spec.palette, spec.seed.wrapping_add(i as u64));
        caption(canvas, font, text, area, PANEL);
    }
    canvas.fill_rect(
        Rect {
            x: 0,
            y: row - 1,
            w,
            h: 3,
        },
        BLACK,
    );
}

/// Four rows, each brighter than the last: the "expanding" ladder.
fn ladder(canvas: &mut Canvas, font: &FontRef<'_>, spec: &ImageSpec, texts: [&str; 4]) {
    let (w, h) = spec.layout.size();
    let row = h / 4;
    let split = w * 11 / 20;
    let (top, bottom, accent) = palette_colors(spec.palette);
    for (i, text) in texts.iter().enumerate() {
        let y = row * i as u32;
        let level = i as f32 / 3.0;
        let area = Rect {
            x: 0,
            y,
            w: split,
            h: row,
        };
        canvas.gradient(area, mix(top, BLACK, 0.4), mix(bottom, BLACK, 0.4));
        caption(canvas, font, text, area, PANEL);
        let glow = Rect {
            x: split,
            y,
            w: w - split,
            h: row,
        };
        canvas.gradient(glow, mix(BLACK, top, level), mix(BLACK, bottom, level));
        let (cx, cy) = (
            split as f32 + (w - split) as f32 / 2.0,
            y as f32 + row as f32 / 2.0,
        );
        let radius = 24.0 + 14.0 * i as f32;
        for ring in 0..4 {
            let r = radius + ring as f32 * 6.0;
            canvas.disc(cx, cy, r, accent, 0.12 * (level + 0.2));
        }
        canvas.disc(cx, cy, radius * 0.7, mix(accent, WHITE, level), 0.9);
        if i == 3 {
            for k in 0..12 {
                let angle = k as f32 * std::f32::consts::PI / 6.0;
                let (s, c) = angle.sin_cos();
                let from = (cx + c * radius * 0.9, cy + s * radius * 0.9);
                let to = (cx + c * (radius + 26.0), cy + s * (radius + 26.0));
                canvas.line(from, to, 3.0, WHITE);
            }
        }
        canvas.fill_rect(
            Rect {
                x: 0,
                y: y + row - 1,
                w,
                h: 2,
            },
            BLACK,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .expect("a PNG")
            .to_rgb8()
    }

    fn spec(layout: Layout) -> ImageSpec {
        ImageSpec {
            layout,
            palette: 2,
            seed: 7,
            captions: vec![
                "one does not simply".into(),
                "ship on friday".into(),
                "c".into(),
                "d".into(),
            ],
        }
    }

    #[test]
    fn every_layout_renders_a_png_of_its_size_with_white_caption_text() {
        for layout in [Layout::TopBottom, Layout::RejectApprove, Layout::Ladder] {
            let img = decode(&render_png(&spec(layout)).expect("renders"));
            assert_eq!(img.dimensions(), layout.size());
            let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
            assert!(white > 300, "{layout:?}: {white} white pixels");
        }
    }

    #[test]
    fn the_same_spec_gives_the_same_bytes_and_another_caption_other_pixels() {
        let a = render_png(&spec(Layout::TopBottom)).expect("renders");
        assert_eq!(a, render_png(&spec(Layout::TopBottom)).expect("renders"));
        let mut other = spec(Layout::TopBottom);
        other.captions[0] = "brace yourselves".into();
        assert_ne!(a, render_png(&other).expect("renders"));
    }

    #[test]
    fn the_top_band_holds_caption_pixels_and_a_blank_caption_leaves_it_plain() {
        let band_white = |s: &ImageSpec| {
            let img = decode(&render_png(s).expect("renders"));
            (0..100)
                .flat_map(|y| (0..480).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0 == [255, 255, 255])
                .count()
        };
        let with = spec(Layout::TopBottom);
        let mut without = with.clone();
        without.captions[0].clear();
        assert!(band_white(&with) > 200);
        assert_eq!(band_white(&without), 0);
    }
}
