//! foil-plot: small charts — overlaid histograms and curves with axes, ticks, labels and a
//! legend — drawn once as a [`Scene`] of primitives (rectangles, polylines, text) and written
//! both as SVG (by hand) and as PNG (rasterised here with a built-in 5×7 bitmap font, encoded
//! by [`png`]). The same chart always gives the same bytes.

pub mod chart;
pub mod font;
pub mod png;
pub mod raster;
pub mod scene;
pub mod svg;

pub use chart::{nice_ticks, Chart, Series};
pub use raster::Canvas;
pub use scene::{Anchor, Color, Scene, Shape};
