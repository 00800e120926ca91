//! Charts with axes: histograms drawn as translucent bars (so two overlay), curves, vertical
//! marker lines, grid lines at "nice" ticks (1, 2 or 5 × 10^k), axis labels, a title and a
//! legend row under the title; laid out into a [`Scene`] that [`crate::svg`] and
//! [`crate::raster`] draw alike.

use crate::scene::{text_len, Anchor, Color, Scene, Shape};

/// What a chart shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Series {
    /// A histogram: bar `i` spans `edges[i]..edges[i + 1]` with height `heights[i]`.
    Bars {
        label: String,
        color: Color,
        edges: Vec<f64>,
        heights: Vec<f64>,
    },
    /// A curve through `points` (data coordinates).
    Line {
        label: String,
        color: Color,
        points: Vec<(f64, f64)>,
        dashed: bool,
    },
    /// A vertical line across the plot at `x`.
    VLine { label: String, color: Color, x: f64 },
    /// A dashed horizontal line across the plot at `y` (a reference value).
    HLine { label: String, color: Color, y: f64 },
    /// Estimates with intervals: a dot at `(x, y)` and a capped whisker from `lo` to `hi`.
    Intervals {
        label: String,
        color: Color,
        /// `(x, y, lo, hi)` per estimate.
        points: Vec<(f64, f64, f64, f64)>,
    },
}

/// A chart: titles, data ranges and series; series with an empty label stay out of the legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
    /// Names of a categorical x axis: category `i` sits at x = `i` and is labelled under the
    /// axis instead of numeric ticks (set `x_range` to `(-0.5, n - 0.5)`).
    pub categories: Vec<String>,
    pub width: u32,
    pub height: u32,
}

/// The least left margin; wider y tick labels ("-0.05") widen it.
const LEFT: f32 = 84.0;
const RIGHT: f32 = 24.0;
const TOP: f32 = 70.0;
const BOTTOM: f32 = 62.0;
const TEXT: u32 = 2;
const BAR_OPACITY: f32 = 0.55;

/// Ticks inside `lo..=hi`, about `target` of them, at multiples of 1, 2 or 5 × 10^k; also
/// returns how many decimals print them exactly.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![lo], 2);
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            if v == 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect();
    (ticks, decimals)
}

impl Chart {
    /// An empty chart of the default size (720 × 470).
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series: Vec::new(),
            categories: Vec::new(),
            width: 720,
            height: 470,
        }
    }

    /// The chart laid out as a scene.
    pub fn scene(&self) -> Scene {
        let mut scene = Scene::new(self.width, self.height);
        let (w, h) = (self.width as f32, self.height as f32);
        let (x0, x1) = widen(self.x_range);
        let (y0, y1) = widen(self.y_range);
        let (yt, yd) = nice_ticks(y0, y1, 5);
        // Room for the vertical axis title (at x = 18) and the widest tick label beside it.
        let widest = yt
            .iter()
            .map(|t| text_len(&format!("{t:.yd$}"), TEXT))
            .fold(0.0f32, f32::max);
        let left = LEFT.max(32.0 + 9.0 + widest);
        let (pw, ph) = (w - left - RIGHT, h - TOP - BOTTOM);
        let px = |x: f64| left + (((x - x0) / (x1 - x0)).clamp(0.0, 1.0) as f32) * pw;
        let py = |y: f64| TOP + ph - (((y - y0) / (y1 - y0)).clamp(0.0, 1.0) as f32) * ph;
        let line = |points: Vec<(f32, f32)>, color: Color, width: f32, dashed: bool| Shape::Line {
            points,
            color,
            width,
            dashed,
        };

        // Grid and tick labels.
        let (xt, xd) = if self.categories.is_empty() {
            nice_ticks(x0, x1, 6)
        } else {
            (Vec::new(), 0)
        };
        for (i, name) in self.categories.iter().enumerate() {
            let x = px(i as f64);
            scene.push(line(
                vec![(x, TOP + ph), (x, TOP + ph + 5.0)],
                Color::AXIS,
                1.0,
                false,
            ));
            scene.text(x, TOP + ph + 16.0, name, Anchor::Middle, TEXT);
        }
        for &t in &xt {
            scene.push(line(
                vec![(px(t), TOP), (px(t), TOP + ph)],
                Color::GRID,
                1.0,
                false,
            ));
            scene.push(line(
                vec![(px(t), TOP + ph), (px(t), TOP + ph + 5.0)],
                Color::AXIS,
                1.0,
                false,
            ));
            scene.text(
                px(t),
                TOP + ph + 16.0,
                &format!("{t:.xd$}"),
                Anchor::Middle,
                TEXT,
            );
        }
        for &t in &yt {
            scene.push(line(
                vec![(left, py(t)), (left + pw, py(t))],
                Color::GRID,
                1.0,
                false,
            ));
            scene.push(line(
                vec![(left - 5.0, py(t)), (left, py(t))],
                Color::AXIS,
                1.0,
                false,
            ));
            scene.text(left - 9.0, py(t), &format!("{t:.yd$}"), Anchor::End, TEXT);
        }

        // Data.
        for s in &self.series {
            match s {
                Series::Bars {
                    color,
                    edges,
                    heights,
                    ..
                } => {
                    for (i, &v) in heights.iter().enumerate() {
                        if v <= 0.0 || i + 1 >= edges.len() {
                            continue;
                        }
                        let (l, r) = (px(edges[i]), px(edges[i + 1]));
                        let top = py(v);
                        scene.push(Shape::Rect {
                            x: l,
                            y: top,
                            w: r - l,
                            h: TOP + ph - top,
                            fill: *color,
                            opacity: BAR_OPACITY,
                        });
                    }
                }
                Series::Line {
                    color,
                    points,
                    dashed,
                    ..
                } => {
                    let pts = points.iter().map(|&(x, y)| (px(x), py(y))).collect();
                    scene.push(line(pts, *color, 2.0, *dashed));
                }
                Series::VLine { color, x, .. } => {
                    scene.push(line(
                        vec![(px(*x), TOP), (px(*x), TOP + ph)],
                        *color,
                        2.0,
                        true,
                    ));
                }
                Series::HLine { color, y, .. } => {
                    scene.push(line(
                        vec![(left, py(*y)), (left + pw, py(*y))],
                        *color,
                        2.0,
                        true,
                    ));
                }
                Series::Intervals { color, points, .. } => {
                    const CAP: f32 = 8.0;
                    const DOT: f32 = 9.0;
                    for &(x, y, lo, hi) in points {
                        let (x, lo, hi) = (px(x), py(lo), py(hi));
                        scene.push(line(vec![(x, lo), (x, hi)], *color, 2.0, false));
                        for end in [lo, hi] {
                            scene.push(line(
                                vec![(x - CAP, end), (x + CAP, end)],
                                *color,
                                2.0,
                                false,
                            ));
                        }
                        scene.push(Shape::Rect {
                            x: x - DOT / 2.0,
                            y: py(y) - DOT / 2.0,
                            w: DOT,
                            h: DOT,
                            fill: *color,
                            opacity: 1.0,
                        });
                    }
                }
            }
        }

        // Axes, titles.
        scene.push(line(
            vec![(left, TOP), (left, TOP + ph), (left + pw, TOP + ph)],
            Color::AXIS,
            1.0,
            false,
        ));
        scene.text(w / 2.0, 18.0, &self.title, Anchor::Middle, TEXT);
        scene.text(
            left + pw / 2.0,
            h - 16.0,
            &self.x_label,
            Anchor::Middle,
            TEXT,
        );
        scene.push(Shape::Text {
            x: 18.0,
            y: TOP + ph / 2.0,
            text: self.y_label.clone(),
            color: Color::BLACK,
            anchor: Anchor::Middle,
            scale: TEXT,
            vertical: true,
        });

        // Legend: one row under the title, centred over the plot.
        let entries: Vec<(&str, Color, bool)> = self
            .series
            .iter()
            .map(|s| match s {
                Series::Bars { label, color, .. } => (label.as_str(), *color, true),
                Series::Line { label, color, .. }
                | Series::VLine { label, color, .. }
                | Series::HLine { label, color, .. }
                | Series::Intervals { label, color, .. } => (label.as_str(), *color, false),
            })
            .filter(|(l, _, _)| !l.is_empty())
            .collect();
        const SWATCH: f32 = 20.0;
        const GAP: f32 = 6.0;
        const SPACE: f32 = 24.0;
        let widths: Vec<f32> = entries
            .iter()
            .map(|(l, _, _)| SWATCH + GAP + text_len(l, TEXT))
            .collect();
        let total = widths.iter().sum::<f32>() + SPACE * widths.len().saturating_sub(1) as f32;
        let mut x = left + (pw - total) / 2.0;
        let y = 46.0;
        for ((label, color, bar), width) in entries.iter().zip(&widths) {
            if *bar {
                scene.push(Shape::Rect {
                    x,
                    y: y - 6.0,
                    w: SWATCH,
                    h: 12.0,
                    fill: *color,
                    opacity: BAR_OPACITY,
                });
            } else {
                scene.push(line(vec![(x, y), (x + SWATCH, y)], *color, 2.0, false));
            }
            scene.text(x + SWATCH + GAP, y, label, Anchor::Start, TEXT);
            x += width + SPACE;
        }
        scene
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        crate::svg::render(&self.scene())
    }

    /// The chart as a PNG file.
    pub fn png(&self) -> Vec<u8> {
        crate::png::encode(&crate::raster::Canvas::render(&self.scene()))
    }
}

/// A range with positive width (an empty or inverted one is widened by 0.5 each way).
fn widen((lo, hi): (f64, f64)) -> (f64, f64) {
    if lo.is_finite() && hi.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_inside() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            (vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0], 1)
        );
        let (t, d) = nice_ticks(-0.13, 0.42, 6);
        assert_eq!(d, 1);
        assert_eq!(t.first().copied(), Some(-0.1));
        assert!(t.iter().all(|&x| (-0.13..=0.42).contains(&x)));
        let (t, d) = nice_ticks(0.0, 37.0, 5);
        assert_eq!((t, d), (vec![0.0, 10.0, 20.0, 30.0], 0));
    }

    #[test]
    fn the_same_chart_gives_the_same_bytes() {
        let mut c = Chart::new("Scores", "score", "share");
        c.series.push(Series::Bars {
            label: "positives".into(),
            color: Color::BLUE,
            edges: vec![0.0, 0.5, 1.0],
            heights: vec![0.25, 0.75],
        });
        c.series.push(Series::VLine {
            label: String::new(),
            color: Color::RED,
            x: 0.5,
        });
        assert_eq!(c.png(), c.png());
        assert_eq!(c.svg(), c.svg());
        assert!(c.svg().contains(">positives</text>"));
    }

    #[test]
    fn categories_label_the_x_axis_and_intervals_span_their_bounds() {
        let mut c = Chart::new("Change", "pipeline", "difference");
        c.categories = vec!["bm25".into(), "llm".into()];
        c.x_range = (-0.5, 1.5);
        c.y_range = (-0.1, 0.1);
        c.series.push(Series::Intervals {
            label: "mean, 95% interval".into(),
            color: Color::BLUE,
            points: vec![(0.0, 0.01, -0.02, 0.04), (1.0, -0.05, -0.08, -0.02)],
        });
        c.series.push(Series::HLine {
            label: "base".into(),
            color: Color::GRAY,
            y: 0.0,
        });
        let svg = c.svg();
        assert!(
            svg.contains(">bm25</text>") && svg.contains(">llm</text>"),
            "{svg}"
        );
        // No numeric x ticks on a categorical axis: the only x labels are the categories.
        assert!(!svg.contains(">0.5</text>"), "{svg}");
        // The first whisker runs from y(-0.02) to y(0.04) at x(0).
        let scene = c.scene();
        let whiskers: Vec<&Vec<(f32, f32)>> = scene
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Line { points, color, .. } if *color == Color::BLUE => Some(points),
                _ => None,
            })
            .collect();
        assert_eq!(
            whiskers.len(),
            7,
            "a whisker and two caps per estimate, and the legend swatch"
        );
        let (x, y_lo) = whiskers[0][0];
        let (_, y_hi) = whiskers[0][1];
        assert!(y_lo > y_hi, "the lower bound is drawn lower (larger y)");
        // Categories sit a quarter and three quarters across the plot; the plot's left edge
        // leaves room for the widest tick label, "-0.10".
        let next = whiskers[3][0].0;
        let left = next - 3.0 * (next - x) / 2.0;
        assert!((c.width as f32 - RIGHT - left - 2.0 * (next - x)).abs() < 0.01);
        assert!(left >= 32.0 + 9.0 + text_len("-0.10", TEXT), "{left}");
        assert_eq!(c.png(), c.png());
    }
}
