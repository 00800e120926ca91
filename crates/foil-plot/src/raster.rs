//! The PNG back end's rasteriser: a [`Scene`] drawn into an RGB buffer without anti-aliasing
//! (rectangles blended by opacity, lines stamped as squares along each segment, text from the
//! bitmap [`font`](crate::font)). Integer arithmetic on pixels, so the bytes never vary.

use crate::font::glyph;
use crate::scene::{text_len, Anchor, Color, Scene, Shape};

/// An RGB image, row-major, three bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Color) -> Self {
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for _ in 0..width as usize * height as usize {
            pixels.extend_from_slice(&[background.r, background.g, background.b]);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Draws every shape of `scene` onto a new canvas.
    pub fn render(scene: &Scene) -> Self {
        let mut c = Canvas::new(scene.width, scene.height, scene.background);
        for shape in &scene.shapes {
            c.draw(shape);
        }
        c
    }

    /// The colour at (x, y).
    pub fn get(&self, x: u32, y: u32) -> Color {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Color::rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])
    }

    /// Blends `color` at (x, y) with `alpha` in 0..=256 (256: opaque); outside pixels are ignored.
    fn blend(&mut self, x: i64, y: i64, color: Color, alpha: u32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        for (k, v) in [color.r, color.g, color.b].into_iter().enumerate() {
            let old = self.pixels[i + k] as u32;
            self.pixels[i + k] = ((old * (256 - alpha) + v as u32 * alpha + 128) >> 8) as u8;
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Color, alpha: u32) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.blend(x, y, color, alpha);
            }
        }
    }

    fn draw(&mut self, shape: &Shape) {
        match shape {
            Shape::Rect {
                x,
                y,
                w,
                h,
                fill,
                opacity,
            } => {
                let alpha = (opacity.clamp(0.0, 1.0) * 256.0).round() as u32;
                let (x0, y0) = (x.round() as i64, y.round() as i64);
                let (x1, y1) = ((x + w).round() as i64, (y + h).round() as i64);
                self.fill(x0, y0, x1, y1, *fill, alpha);
            }
            Shape::Line {
                points,
                color,
                width,
                dashed,
            } => self.polyline(points, *color, *width, *dashed),
            Shape::Text {
                x,
                y,
                text,
                color,
                anchor,
                scale,
                vertical,
            } => self.text(*x, *y, text, *color, *anchor, *scale, *vertical),
        }
    }

    fn polyline(&mut self, points: &[(f32, f32)], color: Color, width: f32, dashed: bool) {
        let w = width.max(1.0).round() as i64;
        // Length of the line before the current segment, so that dashes run on across segments.
        let mut travelled = 0.0f32;
        for seg in points.windows(2) {
            let ((ax, ay), (bx, by)) = (seg[0], seg[1]);
            let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
            let steps = (len * 2.0).ceil().max(1.0) as usize;
            for s in 0..=steps {
                let t = s as f32 / steps as f32;
                if dashed && (travelled + t * len) % 10.0 >= 6.0 {
                    continue;
                }
                let (px, py) = (ax + (bx - ax) * t, ay + (by - ay) * t);
                let x0 = (px - w as f32 / 2.0).round() as i64;
                let y0 = (py - w as f32 / 2.0).round() as i64;
                self.fill(x0, y0, x0 + w, y0 + w, color, 256);
            }
            travelled += len;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        x: f32,
        y: f32,
        text: &str,
        color: Color,
        anchor: Anchor,
        scale: u32,
        vertical: bool,
    ) {
        let s = scale.max(1) as i64;
        let len = text_len(text, scale.max(1));
        let shift = match anchor {
            Anchor::Start => 0.0,
            Anchor::Middle => len / 2.0,
            Anchor::End => len,
        };
        let half_height = 7.0 * s as f32 / 2.0;
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    // Unit offsets along the reading direction (u) and down the glyph (v).
                    let u = i as i64 * 6 * s + col * s;
                    let v = r as i64 * s;
                    let (px, py) = if vertical {
                        let left = (x - half_height).round() as i64;
                        let bottom = (y + shift).round() as i64;
                        (left + v, bottom - u - s)
                    } else {
                        let left = (x - shift).round() as i64;
                        let top = (y - half_height).round() as i64;
                        (left + u, top + v)
                    };
                    self.fill(px, py, px + s, py + s, color, 256);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_blend_and_clip() {
        let mut scene = Scene::new(4, 3);
        scene.push(Shape::Rect {
            x: 1.0,
            y: 1.0,
            w: 10.0,
            h: 1.0,
            fill: Color::BLACK,
            opacity: 0.5,
        });
        let c = Canvas::render(&scene);
        assert_eq!(c.get(0, 1), Color::WHITE);
        assert_eq!(c.get(1, 1), Color::rgb(128, 128, 128));
        assert_eq!(c.get(3, 1), Color::rgb(128, 128, 128));
        assert_eq!(c.get(1, 2), Color::WHITE);
    }

    #[test]
    fn text_sets_the_glyph_pixels() {
        let mut scene = Scene::new(10, 10);
        scene.text(0.0, 3.5, "1", Anchor::Start, 1);
        let c = Canvas::render(&scene);
        // '1': the top row is 0x04, so only column 2 of row 0 is set.
        assert_eq!(c.get(2, 0), Color::BLACK);
        assert_eq!(c.get(1, 0), Color::WHITE);
        // the bottom row 0x0E: columns 1..=3 of row 6.
        assert_eq!(c.get(1, 6), Color::BLACK);
        assert_eq!(c.get(4, 6), Color::WHITE);
    }
}
