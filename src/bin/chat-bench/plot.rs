//! Line charts as SVG text, drawn with plotters' SVG backend, for the standard set's and the
//! lab's plots: x on a log scale (subscriber or connection counts, base 2 when every x is a
//! power of two, as the lab's doubling N is), y linear from zero, one line per series with an
//! optional min–max error bar per point, dashed lines with hollow markers for figures quoted
//! from elsewhere (the paper's), and a legend to the right of the plot.
//!
//! It only turns numbers into a string: it never reads or writes a file, and a point it cannot
//! place (x ≤ 0, a non-finite value) is left out rather than drawn somewhere wrong.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const W: u32 = 640;
const H: u32 = 400;
/// Width kept right of the plot for the legend.
const LEGEND_W: u32 = 150;
/// Distinct colours; a series picks one by index (`Series::colour`), wrapping around.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x55, 0x55, 0x55),
    RGBColor(0x8c, 0x56, 0x4b),
];
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const FONT: &str = "sans-serif";

/// One named line of `(x, y)` points; x must be > 0 (the x axis is logarithmic).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// `(x, min, max)`: the spread of y over repeated runs at x, drawn as an error bar.
    pub ranges: Vec<(f64, f64, f64)>,
    /// Index into the palette; `None`: the series' position in the chart.
    pub colour: Option<usize>,
    /// Drawn dashed with hollow markers: figures quoted from elsewhere, or a second figure of
    /// the same thing beside a solid line of the same colour.
    pub dashed: bool,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            ranges: Vec::new(),
            colour: None,
            dashed: false,
        }
    }

    pub fn ranges(mut self, ranges: Vec<(f64, f64, f64)>) -> Series {
        self.ranges = ranges;
        self
    }

    pub fn colour(mut self, index: usize) -> Series {
        self.colour = Some(index);
        self
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }
}

/// A round step near `max / 5` (1, 2 or 5 times a power of ten).
pub fn step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
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

/// A tick label: 4096 stays 4096 (a connection count reads better whole), 10000 is 10k.
fn short(v: f64) -> String {
    let v = (v * 1e6).round() / 1e6;
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

fn is_power_of_two(x: f64) -> bool {
    x >= 1.0 && x.fract() == 0.0 && (x as u64).is_power_of_two()
}

fn placeable(x: f64, y: f64) -> bool {
    x > 0.0 && x.is_finite() && y.is_finite()
}

/// The chart as an SVG document.
///
/// # Errors
/// What plotters reports when drawing fails (it does not when drawing into a string).
pub fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String, String> {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| placeable(p.0, p.1))
        .map(|p| p.0)
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin > xmax {
        (1.0, 10.0)
    } else if xmin == xmax {
        (xmin / 2.0, xmax * 2.0)
    } else {
        (xmin, xmax)
    };
    let base: f64 = if xs.iter().all(|&x| is_power_of_two(x)) {
        2.0
    } else {
        10.0
    };
    let ytop = series
        .iter()
        .flat_map(|s| {
            let tops = s.ranges.iter().map(|r| r.2);
            s.points.iter().map(|p| p.1).chain(tops)
        })
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    let st = step(ytop * 1.05);
    let ymax = (ytop * 1.05 / st).ceil().max(1.0) * st;
    // A little room either side so the end points do not sit on the frame.
    let (x0, x1) = (xmin / 1.15, xmax * 1.15);
    let powers = ((xmax / xmin).ln() / base.ln()).floor().max(1.0) as usize;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("drawing '{title}': {e}");
        root.fill(&WHITE).map_err(err)?;
        let (plot_area, legend_area) = root.split_horizontally(W - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((x0..x1).log_scale().base(base), 0.0..ymax)
            .map_err(err)?;
        let x_fmt = |x: &f64| short(*x);
        let y_fmt = |y: &f64| short(*y);
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            // One label per power of the base and no light lines between: with more labels
            // than powers plotters adds in-between ticks at odd values.
            .x_labels(powers + 1)
            .y_labels(((ymax / st).round() as usize) + 1)
            .max_light_lines(0)
            .bold_line_style(GRID)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            draw_series(&mut chart, s, i).map_err(err)?;
            legend_entry(&legend_area, s, i).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;

fn colour_of(s: &Series, i: usize) -> RGBColor {
    let k = s.colour.unwrap_or(i) % COLOURS.len();
    COLOURS.get(k).copied().unwrap_or(BLACK)
}

fn draw_series(
    chart: &mut Plot<'_, '_>,
    s: &Series,
    i: usize,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let colour = colour_of(s, i);
    let line = colour.stroke_width(2);
    let points: Vec<(f64, f64)> = s
        .points
        .iter()
        .copied()
        .filter(|&(x, y)| placeable(x, y))
        .collect();
    if s.dashed {
        chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, line))?;
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 4, colour.stroke_width(2))),
        )?;
    } else {
        chart.draw_series(LineSeries::new(points.clone(), line))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    let bars = s
        .ranges
        .iter()
        .filter(|&&(x, lo, hi)| placeable(x, lo) && placeable(x, hi));
    chart.draw_series(bars.map(|&(x, lo, hi)| {
        ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, colour.stroke_width(1), 8)
    }))?;
    Ok(())
}

/// One line of the legend: a sample of the line, then the name.
fn legend_entry(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    s: &Series,
    i: usize,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let colour = colour_of(s, i);
    let y = 48 + 20 * i as i32;
    let (x0, x1) = (4, 28);
    if s.dashed {
        area.draw(&DashedPathElement::new(
            vec![(x0, y), (x1, y)],
            6,
            4,
            colour.stroke_width(2),
        ))?;
        area.draw(&Circle::new(((x0 + x1) / 2, y), 4, colour.stroke_width(2)))?;
    } else {
        area.draw(&PathElement::new(
            vec![(x0, y), (x1, y)],
            colour.stroke_width(2),
        ))?;
        area.draw(&Circle::new(((x0 + x1) / 2, y), 3, colour.filled()))?;
    }
    let style = TextStyle::from((FONT, 13).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(s.name.clone(), (x1 + 6, y), style))
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

    fn colour_hex(i: usize) -> String {
        let RGBColor(r, g, b) = COLOURS[i];
        format!("#{r:02X}{g:02X}{b:02X}")
    }

    #[test]
    fn a_chart_has_a_line_and_a_legend_entry_per_series() {
        let series = [
            Series::new("chatd", vec![(1.0, 10.0), (10.0, 20.0), (100.0, 5.0)]),
            Series::new("redis", vec![(1.0, 1.0), (1000.0, 3.0)]),
        ];
        let svg = chart("fanout", "subscribers", "msgs/s", &series).expect("drawn");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        for (i, name) in ["chatd", "redis"].iter().enumerate() {
            let stroke = format!("stroke=\"{}\"", colour_hex(i));
            let lines = svg
                .lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
                .count();
            // The data line and the legend's sample of it.
            assert_eq!(lines, 2, "{name}: {svg}");
            assert!(
                svg.contains(&format!("\n{name}\n</text>")),
                "{name} not in the legend"
            );
        }
        for text in ["fanout", "subscribers", "msgs/s"] {
            assert!(
                svg.contains(&format!("\n{text}\n</text>")),
                "{text} missing"
            );
        }
    }

    #[test]
    fn doubling_counts_get_a_tick_per_power_of_two() {
        let n: Vec<(f64, f64)> = (0..13).map(|k| (f64::from(1 << k), 1.0)).collect();
        let svg = chart("t", "N", "y", &[Series::new("a", n)]).expect("drawn");
        for tick in ["1", "2", "64", "1024", "4096"] {
            assert!(
                svg.contains(&format!("\n{tick}\n</text>")),
                "no tick {tick}"
            );
        }
        assert!(!svg.contains("\n3\n</text>"), "an in-between tick");
    }

    #[test]
    fn dashed_series_and_error_bars_are_drawn() {
        let ours = Series::new("ours", vec![(1.0, 2.0), (8.0, 4.0)])
            .ranges(vec![(1.0, 1.5, 2.5), (8.0, 3.0, 5.0)]);
        let paper = Series::new("paper: Go", vec![(1.0, 1.9), (8.0, 6.2), (64.0, 36.1)])
            .dashed()
            .colour(6);
        let svg = chart("cpu", "N", "%", &[ours, paper]).expect("drawn");
        let grey = format!("stroke=\"{}\"", colour_hex(6));
        let dashes = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&grey))
            .count();
        assert!(
            dashes > 4,
            "a dashed line is many short polylines: {dashes}"
        );
        let hollow = svg
            .lines()
            .filter(|l| {
                l.starts_with("<circle") && l.contains(&grey) && l.contains("fill=\"none\"")
            })
            .count();
        assert_eq!(hollow, 4, "three points and the legend's marker");
        // An error bar is three lines (the bar and two caps), in the series' colour.
        let red = format!("stroke=\"{}\"", colour_hex(0));
        let bars = svg
            .lines()
            .filter(|l| l.starts_with("<line") && l.contains(&red))
            .count();
        assert_eq!(bars, 6);
    }

    #[test]
    fn the_y_axis_reaches_the_tallest_error_bar() {
        let ours = Series::new("ours", vec![(1.0, 2.0), (8.0, 4.0)]);
        let svg = chart("cpu", "N", "%", std::slice::from_ref(&ours)).expect("drawn");
        assert!(
            !svg.contains("\n6\n</text>"),
            "4.0 alone needs no tick at 6"
        );
        let ours = ours.ranges(vec![(8.0, 3.0, 5.5)]);
        let svg = chart("cpu", "N", "%", &[ours]).expect("drawn");
        assert!(
            svg.contains("\n6\n</text>"),
            "the bar's top (5.5) is off the axis"
        );
    }

    #[test]
    fn points_that_cannot_be_placed_are_left_out() {
        let s = Series::new(
            "a",
            vec![(0.0, 1.0), (2.0, f64::NAN), (4.0, 3.0), (8.0, 2.0)],
        );
        let svg = chart("t", "N", "y", &[s]).expect("drawn");
        let red = format!("fill=\"{}\"", colour_hex(0));
        let dots = svg
            .lines()
            .filter(|l| l.starts_with("<circle") && l.contains(&red))
            .count();
        assert_eq!(dots, 3, "two points and the legend's marker");
        let empty = chart("t", "N", "y", &[]).expect("an empty chart is still drawn");
        assert!(empty.starts_with("<svg"));
    }
}
