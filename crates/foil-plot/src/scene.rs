//! The display list both back ends draw: rectangles, polylines and text in pixel coordinates
//! (origin at the top left, y downwards).

/// An opaque RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Color {
    pub const fn rgb(r: u8, g: u8, b: u8) -> Self {
        Self { r, g, b }
    }
    pub const WHITE: Color = Color::rgb(255, 255, 255);
    pub const BLACK: Color = Color::rgb(0, 0, 0);
    pub const GRID: Color = Color::rgb(225, 225, 225);
    pub const AXIS: Color = Color::rgb(60, 60, 60);
    pub const BLUE: Color = Color::rgb(31, 119, 180);
    pub const ORANGE: Color = Color::rgb(255, 127, 14);
    pub const GREEN: Color = Color::rgb(44, 160, 44);
    pub const RED: Color = Color::rgb(214, 39, 40);
    pub const GRAY: Color = Color::rgb(140, 140, 140);

    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

/// Where a text's anchor point lies along its reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One drawing primitive.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A filled rectangle; `opacity` in [0, 1] blends it over what is below.
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Color,
        opacity: f32,
    },
    /// A polyline of `width` pixels, solid or dashed (6 on, 4 off).
    Line {
        points: Vec<(f32, f32)>,
        color: Color,
        width: f32,
        dashed: bool,
    },
    /// Text in the bitmap font at integer `scale` (a glyph is 5×7 units in a 6×8 cell),
    /// vertically centred on `y`; `vertical` text reads bottom to top and is centred on `x`.
    Text {
        x: f32,
        y: f32,
        text: String,
        color: Color,
        anchor: Anchor,
        scale: u32,
        vertical: bool,
    },
}

/// A picture: its size, background and primitives, drawn in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub background: Color,
    pub shapes: Vec<Shape>,
}

impl Scene {
    /// An empty scene.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            background: Color::WHITE,
            shapes: Vec::new(),
        }
    }

    pub fn push(&mut self, shape: Shape) {
        self.shapes.push(shape);
    }

    /// Text at `scale` with the defaults (black, horizontal).
    pub fn text(&mut self, x: f32, y: f32, text: &str, anchor: Anchor, scale: u32) {
        self.push(Shape::Text {
            x,
            y,
            text: text.to_string(),
            color: Color::BLACK,
            anchor,
            scale,
            vertical: false,
        });
    }
}

/// The length in pixels of `text` at `scale` (cells of 6 units, the last one's spacing dropped).
pub fn text_len(text: &str, scale: u32) -> f32 {
    let n = text.chars().count() as f32;
    if n == 0.0 {
        0.0
    } else {
        (n * 6.0 - 1.0) * scale as f32
    }
}
