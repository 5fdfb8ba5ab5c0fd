//! Charts drawn on the server as inline SVG: readable without JavaScript, styled only by classes
//! from the stylesheet (the CSP allows no `style` attribute), each bar with a `<title>` that
//! names its value on hover, and the figure's caption holding the numbers in words. Pure functions
//! of their data, so unit tests check the geometry.

use maud::{Markup, html};

/// The plot area of a bar chart, in SVG units (the SVG scales to its container).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
/// Room below the plot for the slot labels.
const LABEL_ROOM: f64 = 18.0;
/// The colour classes of stacked layers, in order (`.c0` .. `.c5` in the stylesheet).
pub const PALETTE: usize = 6;

/// One layer of a stacked chart: a name, its colour class, a value per slot.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub class: String,
    pub values: Vec<u64>,
}

/// One bar of a stack, placed: its layer, value and rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Rect {
    pub slot: usize,
    pub layer: usize,
    pub value: u64,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Where each non-zero value of `layers` goes: slot `i` is a column, layers stacked from the
/// bottom; the tallest stack fills the height.
pub fn stack(slots: usize, layers: &[Layer]) -> Vec<Rect> {
    let total = |i: usize| layers.iter().map(|l| l.values.get(i).copied().unwrap_or(0)).sum::<u64>();
    let max = (0..slots).map(total).max().unwrap_or(0);
    if max == 0 || slots == 0 {
        return Vec::new();
    }
    let step = WIDTH / slots as f64;
    let w = (step * 0.8).max(1.0);
    let mut rects = Vec::new();
    for i in 0..slots {
        let mut y = HEIGHT;
        for (li, l) in layers.iter().enumerate() {
            let v = l.values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = v as f64 * HEIGHT / max as f64;
            y -= h;
            rects.push(Rect { slot: i, layer: li, value: v, x: i as f64 * step + (step - w) / 2.0, y, w, h });
        }
    }
    rects
}

fn n(x: f64) -> String {
    format!("{:.1}", x)
}

/// A stacked column chart: one column per slot (labelled below every `label_every` slots), a
/// legend with each layer's total. With nothing to draw, `empty` instead.
pub fn stacked_columns(title: &str, slots: &[String], layers: &[Layer], label_every: usize, empty: &str) -> Markup {
    let rects = stack(slots.len(), layers);
    let max = (0..slots.len()).map(|i| layers.iter().map(|l| l.values.get(i).copied().unwrap_or(0)).sum::<u64>()).max().unwrap_or(0);
    let step = if slots.is_empty() { 0.0 } else { WIDTH / slots.len() as f64 };
    html! {
        figure.chart {
            figcaption { strong { (title) } }
            @if rects.is_empty() {
                p.empty { (empty) }
            } @else {
                svg viewBox=(format!("0 0 {} {}", WIDTH, HEIGHT + LABEL_ROOM)) role="img" aria-label=(title) preserveAspectRatio="none" {
                    title { (title) }
                    line.axis x1="0" y1=(n(HEIGHT)) x2=(n(WIDTH)) y2=(n(HEIGHT)) {}
                    text.scale x="2" y="10" { "max " (max) }
                    @for r in &rects {
                        rect class=(layers[r.layer].class) x=(n(r.x)) y=(n(r.y)) width=(n(r.w)) height=(n(r.h)) {
                            title { (slots[r.slot]) " · " (layers[r.layer].name) ": " (r.value) }
                        }
                    }
                    @for (i, s) in slots.iter().enumerate() {
                        @if label_every > 0 && i % label_every == 0 {
                            text.label x=(n(i as f64 * step + step / 2.0)) y=(n(HEIGHT + LABEL_ROOM - 4.0)) text-anchor="middle" { (s) }
                        }
                    }
                }
                ul.legend {
                    @for l in layers {
                        li { span class=(format!("swatch {}", l.class)) {} (l.name) ": " (l.values.iter().sum::<u64>()) }
                    }
                }
            }
        }
    }
}

/// A horizontal bar per item (name, value, colour class), the longest filling the width; with
/// every value 0 (or none), `empty` instead.
pub fn bars(title: &str, items: &[(String, u64, String)], empty: &str) -> Markup {
    let max = items.iter().map(|(_, v, _)| *v).max().unwrap_or(0);
    const ROW: f64 = 22.0;
    const LABEL: f64 = 110.0;
    const VALUE: f64 = 60.0;
    let plot = WIDTH - LABEL - VALUE;
    html! {
        figure.chart {
            figcaption { strong { (title) } }
            @if max == 0 {
                p.empty { (empty) }
            } @else {
                svg viewBox=(format!("0 0 {} {}", WIDTH, ROW * items.len() as f64)) role="img" aria-label=(title) {
                    title { (title) }
                    @for (i, (name, v, class)) in items.iter().enumerate() {
                        @let y = i as f64 * ROW;
                        @let w = *v as f64 * plot / max as f64;
                        text.label x=(n(LABEL - 6.0)) y=(n(y + ROW * 0.7)) text-anchor="end" { (name) }
                        rect class=(class) x=(n(LABEL)) y=(n(y + 3.0)) width=(n(w)) height=(n(ROW - 6.0)) { title { (name) ": " (v) } }
                        text.value x=(n(LABEL + w + 6.0)) y=(n(y + ROW * 0.7)) { (v) }
                    }
                }
            }
        }
    }
}

/// A tiny line of `values` (oldest first) for a table cell; nothing when there is no data.
pub fn sparkline(values: &[u64], label: &str) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0);
    if values.len() < 2 {
        return html! {};
    }
    let (w, h) = (60.0, 16.0);
    let step = w / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max == 0 { h - 1.0 } else { h - 1.0 - *v as f64 * (h - 2.0) / max as f64 };
            format!("{},{}", n(i as f64 * step), n(y))
        })
        .collect();
    html! {
        svg.spark viewBox=(format!("0 0 {w} {h}")) width="60" height="16" role="img" aria-label=(label) {
            title { (label) }
            polyline points=(points.join(" ")) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, values: &[u64]) -> Layer {
        Layer { name: name.into(), class: "c0".into(), values: values.to_vec() }
    }

    #[test]
    fn columns_scale_to_the_tallest_stack() {
        let rects = stack(4, &[layer("a", &[2, 0, 4, 1]), layer("b", &[2, 0, 0, 0])]);
        // Slot 0 (2+2) and slot 2 (4) are the tallest: they fill the height.
        let slot0: Vec<&Rect> = rects.iter().filter(|r| r.x < WIDTH / 4.0).collect();
        assert_eq!(slot0.len(), 2);
        assert!((slot0.iter().map(|r| r.h).sum::<f64>() - HEIGHT).abs() < 1e-9, "{slot0:?}");
        assert_eq!(slot0[1].y, 0.0, "the top layer reaches the top");
        let slot2 = rects.iter().find(|r| r.value == 4).unwrap();
        assert_eq!((slot2.h, slot2.y), (HEIGHT, 0.0));
        let slot3 = rects.iter().find(|r| r.value == 1).unwrap();
        assert!((slot3.h - HEIGHT / 4.0).abs() < 1e-9, "a quarter of the tallest: {slot3:?}");
        assert!(rects.iter().all(|r| r.value > 0), "no rectangle for a zero");
    }

    #[test]
    fn nothing_to_draw_is_an_empty_state_without_svg() {
        assert!(stack(24, &[layer("a", &[0; 24])]).is_empty());
        let html = stacked_columns("Deliveries", &["00".into(), "01".into()], &[layer("a", &[0, 0])], 1, "No deliveries yet").into_string();
        assert!(html.contains("No deliveries yet") && !html.contains("<svg"), "{html}");
        let html = bars("Verdicts", &[], "No verdicts").into_string();
        assert!(html.contains("No verdicts") && !html.contains("<svg"), "{html}");
        assert_eq!(sparkline(&[], "x").into_string(), "");
    }

    #[test]
    fn charts_name_their_values_and_escape_names() {
        let html = stacked_columns("Deliveries", &["10:00".into(), "11:00".into()], &[layer("<edr>", &[3, 1])], 1, "-").into_string();
        assert!(html.contains("<svg") && html.contains("10:00 · &lt;edr&gt;: 3"), "{html}");
        assert!(html.contains("&lt;edr&gt;: 4"), "the legend's total: {html}");
        assert!(!html.contains("style="), "{html}");
        let html = bars("Severity", &[("high".into(), 4, "sev-high".into()), ("low".into(), 2, "sev-low".into())], "-").into_string();
        assert!(html.contains(r#"class="sev-high" x="110.0" y="3.0" width="550.0""#), "the largest fills the plot: {html}");
        assert!(html.contains(r#"width="275.0""#), "half of it: {html}");
        let html = sparkline(&[0, 5, 10], "edr").into_string();
        assert!(html.contains(r#"points="0.0,15.0 30.0,8.0 60.0,1.0""#), "{html}");
    }
}
