//! A line chart drawn on the server as inline SVG (no script, no library): one series of
//! `(Unix seconds, value)` from its first point (at least a minute, at most `window_s`
//! seconds back) up to `now_s`, scaled from zero to its highest value, its latest point
//! marked.

use std::fmt::Write;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

/// The chart of `points` titled `title` (a value's `unit` follows the numbers).
pub fn line(title: &str, unit: &str, points: &[(u64, f64)], now_s: u64, window_s: u64) -> String {
    let t = super::pages::escape(title);
    let (Some(&(first_s, _)), Some(&(_, latest))) = (points.first(), points.last()) else {
        return format!("<figure class=chart><figcaption>{t}: no samples yet</figcaption></figure>");
    };
    let span_s = now_s.saturating_sub(first_s).clamp(60, window_s.max(60));
    let top = points.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    let mut path = String::new();
    let mut last = (0.0, 0.0);
    for &(at_s, value) in points {
        last = place(at_s, value, top, now_s, span_s);
        let _ = write!(path, "{}{:.1},{:.1}", if path.is_empty() { "" } else { " " }, last.0, last.1);
    }
    format!(
        "<figure class=chart><figcaption>{t}: now {latest:.2}{unit}, highest {top:.2}{unit} \
         (last {})</figcaption><svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width={WIDTH} height={HEIGHT} \
         role=img aria-label=\"{t}\"><rect width={WIDTH} height={HEIGHT} fill=\"#fafafa\" stroke=\"#ddd\"/>\
         <polyline fill=none stroke=\"#b00\" stroke-width=1.5 points=\"{path}\"/>\
         <circle cx={:.1} cy={:.1} r=3 fill=\"#b00\"/></svg></figure>",
        crate::admin::board::uptime(Some(span_s)),
        last.0,
        last.1
    )
}

/// Where a point goes: time across (`span_s` ago at the left, now at the right),
/// value up (zero at the bottom, `top` a tenth below the top edge).
fn place(at_s: u64, value: f64, top: f64, now_s: u64, span_s: u64) -> (f64, f64) {
    let age = now_s.saturating_sub(at_s).min(span_s) as f64;
    let x = WIDTH * (1.0 - age / span_s.max(1) as f64);
    let scale = if top > 0.0 { value / top } else { 0.0 };
    (x, HEIGHT - scale * HEIGHT * 0.9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_runs_across_and_values_up() {
        assert_eq!(place(1000, 10.0, 10.0, 1000, 600), (WIDTH, HEIGHT * 0.1));
        assert_eq!(place(400, 0.0, 10.0, 1000, 600), (0.0, HEIGHT));
        assert_eq!(place(700, 5.0, 10.0, 1000, 600), (WIDTH / 2.0, HEIGHT * 0.55));
        // Older than the window: at the left edge; all zero: on the bottom.
        assert_eq!(place(0, 0.0, 0.0, 1000, 600), (0.0, HEIGHT));
    }

    #[test]
    fn a_chart_says_its_latest_and_highest_value() {
        // Ten seconds of samples fill the last minute.
        let svg = line("req/s", "", &[(990, 4.0), (1000, 2.5)], 1000, 600);
        assert!(svg.contains("now 2.50, highest 4.00 (last 1m00s)"), "{svg}");
        assert!(svg.contains("points=\"500.0,12.0 600.0,52.5\""), "{svg}");
        // The latest point is marked, so that a single sample shows.
        assert!(svg.contains("<circle cx=600.0 cy=52.5 r=3"), "{svg}");
        // Older samples than the window are at its left edge.
        let svg = line("req/s", "", &[(0, 1.0), (1000, 1.0)], 1000, 600);
        assert!(svg.contains("(last 10m00s)") && svg.contains("points=\"0.0,12.0 600.0,12.0\""), "{svg}");
        assert!(line("p99", " ms", &[], 1000, 600).contains("p99: no samples yet"));
    }
}
