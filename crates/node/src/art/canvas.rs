//! Pixels: an RGB canvas with blended shapes, and the procedural backgrounds.

use image::{Rgb, RgbImage};

/// A colour.
pub(crate) type Color = [u8; 3];

pub(crate) const WHITE: Color = [255, 255, 255];
pub(crate) const BLACK: Color = [0, 0, 0];

/// Background palettes: (top, bottom, accent).
const PALETTES: [(Color, Color, Color); 8] = [
    ([34, 49, 99], [103, 58, 183], [255, 193, 7]),
    ([0, 77, 64], [0, 150, 136], [255, 235, 59]),
    ([62, 39, 35], [191, 54, 12], [255, 204, 128]),
    ([13, 71, 161], [0, 188, 212], [255, 255, 255]),
    ([49, 27, 146], [233, 30, 99], [255, 241, 118]),
    ([27, 94, 32], [139, 195, 74], [255, 87, 34]),
    ([38, 50, 56], [96, 125, 139], [0, 229, 255]),
    ([136, 14, 79], [255, 111, 0], [255, 255, 141]),
];

/// How many background palettes there are.
pub(crate) const PALETTE_COUNT: u8 = PALETTES.len() as u8;

/// A rectangle of the canvas.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rect {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) w: u32,
    pub(crate) h: u32,
}

/// SplitMix64: tiny, and the same on every platform and release.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The image being drawn.
pub(crate) struct Canvas {
    pub(crate) img: RgbImage,
}

impl Canvas {
    pub(crate) fn new(w: u32, h: u32) -> Self {
        Self {
            img: RgbImage::new(w, h),
        }
    }

    /// Mixes `color` into pixel (x, y) with opacity `alpha` (0..=1).
    pub(crate) fn blend(&mut self, x: i64, y: i64, color: Color, alpha: f32) {
        if alpha <= 0.0 || x < 0 || y < 0 {
            return;
        }
        let (x, y) = (x as u32, y as u32);
        if x >= self.img.width() || y >= self.img.height() {
            return;
        }
        let a = alpha.min(1.0);
        let p = self.img.get_pixel_mut(x, y);
        for (channel, &target) in p.0.iter_mut().zip(color.iter()) {
            let mixed = f32::from(*channel) * (1.0 - a) + f32::from(target) * a;
            *channel = mixed.round().clamp(0.0, 255.0) as u8;
        }
    }

    pub(crate) fn fill_rect(&mut self, r: Rect, color: Color) {
        for y in r.y..(r.y + r.h).min(self.img.height()) {
            for x in r.x..(r.x + r.w).min(self.img.width()) {
                self.img.put_pixel(x, y, Rgb(color));
            }
        }
    }

    /// A vertical gradient from `top` to `bottom` over `r`.
    pub(crate) fn gradient(&mut self, r: Rect, top: Color, bottom: Color) {
        for dy in 0..r.h {
            let t = dy as f32 / r.h.max(1) as f32;
            let color = mix(top, bottom, t);
            self.fill_rect(
                Rect {
                    x: r.x,
                    y: r.y + dy,
                    w: r.w,
                    h: 1,
                },
                color,
            );
        }
    }

    /// A disc, its edge smoothed over one pixel.
    pub(crate) fn disc(&mut self, cx: f32, cy: f32, radius: f32, color: Color, alpha: f32) {
        let (x0, x1) = ((cx - radius - 1.0).floor(), (cx + radius + 1.0).ceil());
        let (y0, y1) = ((cy - radius - 1.0).floor(), (cy + radius + 1.0).ceil());
        for y in y0 as i64..=y1 as i64 {
            for x in x0 as i64..=x1 as i64 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                let coverage = (radius + 0.5 - d).clamp(0.0, 1.0);
                self.blend(x, y, color, coverage * alpha);
            }
        }
    }

    /// A thick line with round ends.
    pub(crate) fn line(&mut self, from: (f32, f32), to: (f32, f32), width: f32, color: Color) {
        let half = width / 2.0;
        let (x0, x1) = (from.0.min(to.0) - half - 1.0, from.0.max(to.0) + half + 1.0);
        let (y0, y1) = (from.1.min(to.1) - half - 1.0, from.1.max(to.1) + half + 1.0);
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let len2 = (dx * dx + dy * dy).max(f32::EPSILON);
        for y in y0 as i64..=y1 as i64 {
            for x in x0 as i64..=x1 as i64 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - from.0) * dx + (py - from.1) * dy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (from.0 + t * dx, from.1 + t * dy);
                let d = ((px - qx).powi(2) + (py - qy).powi(2)).sqrt();
                self.blend(x, y, color, (half + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    /// The palette's gradient over `r`, with a few translucent discs placed
    /// by `seed`.
    pub(crate) fn background(&mut self, r: Rect, palette: u8, seed: u64) {
        let (top, bottom, accent) = palette_colors(palette);
        self.gradient(r, top, bottom);
        let mut rng = Rng::new(seed);
        for _ in 0..5 {
            let cx = r.x as f32 + rng.below(u64::from(r.w)) as f32;
            let cy = r.y as f32 + rng.below(u64::from(r.h)) as f32;
            let radius = 10.0 + rng.below(u64::from(r.w / 4).max(1)) as f32;
            self.disc(cx, cy, radius, accent, 0.12);
        }
    }

    /// A cartoon face: `mood` from -1 (frown) to 1 (grin).
    pub(crate) fn face(&mut self, cx: f32, cy: f32, radius: f32, mood: f32, skin: Color) {
        self.disc(cx, cy, radius + 3.0, BLACK, 1.0);
        self.disc(cx, cy, radius, skin, 1.0);
        let eye = radius * 0.12;
        for side in [-1.0, 1.0] {
            let ex = cx + side * radius * 0.35;
            let ey = cy - radius * 0.2;
            self.disc(ex, ey, eye * 1.8, WHITE, 1.0);
            self.disc(ex + side * eye * 0.3, ey, eye, BLACK, 1.0);
        }
        // The mouth: a row of short segments along a parabola.
        let w = radius * 0.5;
        let steps = 12;
        let mut last = None;
        for i in 0..=steps {
            let t = i as f32 / steps as f32 * 2.0 - 1.0;
            let point = (
                cx + t * w,
                cy + radius * 0.35 + mood * (1.0 - t * t) * radius * 0.25,
            );
            if let Some(prev) = last {
                self.line(prev, point, radius * 0.08, BLACK);
            }
            last = Some(point);
        }
    }
}

/// The palette `index` (wrapping).
pub(crate) fn palette_colors(index: u8) -> (Color, Color, Color) {
    PALETTES[usize::from(index % PALETTE_COUNT)]
}

/// Linear mix of two colours, `t` in 0..=1.
pub(crate) fn mix(a: Color, b: Color, t: f32) -> Color {
    let t = t.clamp(0.0, 1.0);
    std::array::from_fn(|i| (f32::from(a[i]) * (1.0 - t) + f32::from(b[i]) * t).round() as u8)
}
