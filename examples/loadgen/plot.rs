//! `loadgen plot`: SVG plots of runs recorded with `--json`, drawn with plotters.
//!
//! One line per broker and mode, the number of streams on a logarithmic x axis:
//! - `tokens_per_s.svg`: tokens/s delivered, and the rate offered (streams × rate);
//! - `p99_latency.svg`: every-token added latency, p99, ms (logarithmic);
//! - `cpu_per_token.svg`: CPU µs per token, gateway + worker + broker.
//!
//! When a file holds several runs of one broker, mode and size, the last one counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use serde_json::Value;

use crate::BoxResult;

/// `loadgen plot`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PlotArgs {
    /// JSON lines written by runs with `--json`.
    #[arg(long)]
    input: PathBuf,
    /// Where the SVG files go.
    #[arg(long, default_value = "benches/plots")]
    out_dir: PathBuf,
}

/// One line of a plot: (streams, value) pairs in order.
type Series = BTreeMap<String, Vec<(f64, f64)>>;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

pub(crate) fn plot(args: &PlotArgs) -> BoxResult<()> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    // (broker mode, streams) → the last run's figures.
    let mut runs: BTreeMap<(String, u64), Value> = BTreeMap::new();
    let mut commits: Vec<String> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", args.input.display(), i + 1))?;
        let name = format!(
            "{} {}",
            v["broker"].as_str().unwrap_or("?"),
            v["mode"].as_str().unwrap_or("?")
        );
        let streams = v["streams"].as_u64().ok_or("a run without streams")?;
        if let Some(c) = v["commit"].as_str() {
            if !commits.iter().any(|k| k == c) {
                commits.push(c.to_owned());
            }
        }
        runs.insert((name, streams), v);
    }
    if runs.is_empty() {
        return Err(format!("{}: no runs", args.input.display()).into());
    }
    let pick = |f: &dyn Fn(&Value) -> Option<f64>| -> Series {
        let mut s = Series::new();
        for ((name, streams), v) in &runs {
            if let Some(y) = f(v) {
                s.entry(name.clone())
                    .or_default()
                    .push((*streams as f64, y));
            }
        }
        s
    };
    let mut delivered = pick(&|v| v["tokens_per_s"].as_f64());
    let mut offered: Vec<(f64, f64)> = runs
        .iter()
        .filter_map(|((_, n), v)| Some((*n as f64, v["offered_tokens_per_s"].as_f64()?)))
        .collect();
    offered.sort_by(|a, b| a.0.total_cmp(&b.0));
    offered.dedup_by(|a, b| a.0 == b.0);
    if !offered.is_empty() {
        delivered.insert("offered (streams × rate)".to_owned(), offered);
    }
    let latency = pick(&|v| v["every_ms"]["p99"].as_f64());
    let cpu = pick(&|v| v["cpu_us_per_token"]["sum"].as_f64());
    std::fs::create_dir_all(&args.out_dir)?;
    let note = format!("commits {}", commits.join(", "));
    draw(
        &args.out_dir.join("tokens_per_s.svg"),
        &format!("Tokens/s delivered ({note})"),
        "tokens/s",
        &delivered,
        true,
    )?;
    draw(
        &args.out_dir.join("p99_latency.svg"),
        &format!("Every-token added latency, p99 ({note})"),
        "ms",
        &latency,
        true,
    )?;
    draw(
        &args.out_dir.join("cpu_per_token.svg"),
        &format!("CPU per token, gateway + worker + broker ({note})"),
        "µs",
        &cpu,
        false,
    )?;
    println!(
        "loadgen: {} runs → {}/{{tokens_per_s,p99_latency,cpu_per_token}}.svg",
        runs.len(),
        args.out_dir.display()
    );
    Ok(())
}

/// Draws `series` against the number of streams (log x), y logarithmic when `log_y`.
fn draw(path: &Path, title: &str, unit: &str, series: &Series, log_y: bool) -> BoxResult<()> {
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    // Whole decades, so that a logarithmic axis always has labelled ticks.
    let decade_below = |v: f64| 10f64.powf(v.max(1e-3).log10().floor());
    let decade_above = |v: f64| 10f64.powf(v.max(1e-3).log10().ceil());
    let (x0, x1) = (decade_below(x0), x1 * 1.3);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if log_y {
        let (y0, y1) = (decade_below(y0), decade_above(y1 * 1.01));
        let mut c = chart.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
        lines(&mut c, unit, series)?;
    } else {
        let mut c = chart.build_cartesian_2d((x0..x1).log_scale(), 0f64..y1 * 1.15)?;
        lines(&mut c, unit, series)?;
    }
    root.present()?;
    Ok(())
}

/// A tick label: no decimals from 10 up, two below.
fn number(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The axes (streams, `unit`), then one line and its points per series, and the legend.
fn lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    unit: &str,
    series: &Series,
) -> BoxResult<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("streams")
        .y_desc(unit)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| number(*v))
        .draw()?;
    // One colour per broker and mode in every plot: the offered rate is grey and takes none.
    let mut next = 0;
    for (name, points) in series {
        let color = if name.starts_with("offered") {
            RGBColor(140, 140, 140)
        } else {
            next += 1;
            COLORS[(next - 1) % COLORS.len()]
        };
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
