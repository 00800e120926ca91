//! The SVG back end: a [`Scene`] written by hand as SVG 1.1, coordinates with two decimals.

use crate::scene::{Anchor, Scene, Shape};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// `v` with at most two decimals and no trailing zeros (`12`, `3.5`, `0.25`).
fn num(v: f32) -> String {
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// The scene as an SVG document.
pub fn render(scene: &Scene) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n",
        w = scene.width,
        h = scene.height
    );
    out.push_str(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
        scene.width,
        scene.height,
        scene.background.hex()
    ));
    for shape in &scene.shapes {
        match shape {
            Shape::Rect {
                x,
                y,
                w,
                h,
                fill,
                opacity,
            } => {
                out.push_str(&format!(
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"",
                    num(*x),
                    num(*y),
                    num(w.max(0.0)),
                    num(h.max(0.0)),
                    fill.hex()
                ));
                if *opacity < 1.0 {
                    out.push_str(&format!(" fill-opacity=\"{}\"", num(*opacity)));
                }
                out.push_str("/>\n");
            }
            Shape::Line {
                points,
                color,
                width,
                dashed,
            } => {
                let pts: Vec<String> = points
                    .iter()
                    .map(|(x, y)| format!("{},{}", num(*x), num(*y)))
                    .collect();
                out.push_str(&format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"",
                    pts.join(" "),
                    color.hex(),
                    num(*width)
                ));
                if *dashed {
                    out.push_str(" stroke-dasharray=\"6,4\"");
                }
                out.push_str("/>\n");
            }
            Shape::Text {
                x,
                y,
                text,
                color,
                anchor,
                scale,
                vertical,
            } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let transform = if *vertical {
                    format!(" transform=\"rotate(-90 {} {})\"", num(*x), num(*y))
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "<text x=\"{}\" y=\"{}\" font-family=\"monospace\" font-size=\"{}\" fill=\"{}\" text-anchor=\"{anchor}\" dominant-baseline=\"central\"{transform}>{}</text>\n",
                    num(*x),
                    num(*y),
                    10 * scale,
                    color.hex(),
                    escape(text)
                ));
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::Color;

    #[test]
    fn writes_shapes_and_escapes_text() {
        let mut scene = Scene::new(20, 10);
        scene.push(Shape::Rect {
            x: 1.0,
            y: 2.5,
            w: 3.0,
            h: 4.0,
            fill: Color::BLUE,
            opacity: 0.5,
        });
        scene.text(5.0, 5.0, "a<b", Anchor::Middle, 1);
        let svg = render(&scene);
        assert!(svg.contains(
            "<rect x=\"1\" y=\"2.5\" width=\"3\" height=\"4\" fill=\"#1f77b4\" fill-opacity=\"0.5\"/>"
        ));
        assert!(svg.contains(">a&lt;b</text>"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
