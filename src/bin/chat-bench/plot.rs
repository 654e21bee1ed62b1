//! Line charts as plain SVG, for the standard set's plots: one line per system, x on a log
//! scale (subscriber counts), y linear from zero. Written by hand rather than with a plotting
//! crate: a few axes, ticks, polylines and a legend are all the docs need.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// One named line of `(x, y)` points; x must be > 0.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A round step near `max / 5` (1, 2 or 5 times a power of ten).
pub fn step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let unit = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    unit * mag
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin > xmax {
        (1.0, 10.0)
    } else {
        (xmin, xmax)
    };
    let (lx0, lx1) = (xmin.max(1e-9).log10(), xmax.max(1e-9).log10());
    let span = if lx1 > lx0 { lx1 - lx0 } else { 1.0 };
    let ymax_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let st = step(ymax_data * 1.05);
    let ymax = (ymax_data * 1.05 / st).ceil().max(1.0) * st;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.max(1e-9).log10() - lx0) / span * pw;
    let py = |y: f64| TOP + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{title}</text>",
        LEFT + pw / 2.0
    );
    let mut y = 0.0;
    while y <= ymax + st / 2.0 {
        let yy = py(y);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            short(y)
        );
        y += st;
    }
    let mut decade = 10f64.powf(lx0.floor());
    while decade <= xmax * 1.0001 {
        if decade >= xmin * 0.9999 {
            let xx = px(decade);
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 16.0,
                short(decade)
            );
        }
        decade *= 10.0;
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\
         \n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\
         \n<text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text>",
        LEFT + pw / 2.0,
        H - 12.0,
        TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or("black");
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                px(x),
                py(y)
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            se.name
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(step(100.0), 20.0);
        assert_eq!(step(7.0), 2.0);
        assert_eq!(step(1_000_000.0), 200_000.0);
        assert_eq!(step(0.0), 1.0);
    }

    #[test]
    fn a_chart_has_a_line_and_a_legend_entry_per_series() {
        let series = [
            Series {
                name: "chatd".into(),
                points: vec![(1.0, 10.0), (10.0, 20.0), (100.0, 5.0)],
            },
            Series {
                name: "redis".into(),
                points: vec![(1.0, 1.0)],
            },
        ];
        let svg = chart("t", "subscribers", "msgs/s", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">chatd</text>") && svg.contains(">redis</text>"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
