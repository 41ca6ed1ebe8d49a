//! PNG charts of the benches' distributions, written to `docs/charts/` next to the figures
//! in docs/benchmarks.md. Each is an empirical CDF: for every value on the x axis, the share
//! of samples at or below it, one line per series; p50 and p99 read off where the lines cross
//! 50 % and 99 %. The axis ends a little past the largest p99; the legend gives each worst.
//!
//! Text needs a TrueType font, read at run time (Debian: `apt install fonts-dejavu-core`);
//! without one the chart is skipped with a message, and the bench's figures still print.

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::prelude::*;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let Some(bytes) = FONTS.iter().find_map(|p| std::fs::read(p).ok()) else {
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Where charts go: docs/charts/NAME.png in the repository.
pub fn chart_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/charts")
        .join(format!("{name}.png"))
}

/// Draws the CDF of each series (values in milliseconds) to docs/charts/NAME.png and says
/// where; a series without samples is left out.
pub fn cdf(name: &str, title: &str, series: &[(String, Vec<f64>)]) {
    let path = chart_path(name);
    match draw(&path, title, series) {
        Ok(()) => println!("chart: {}", path.display()),
        Err(e) => println!("chart {name} not drawn: {e}"),
    }
}

fn draw(path: &std::path::Path, title: &str, series: &[(String, Vec<f64>)]) -> Result<(), String> {
    if !font_registered() {
        return Err(format!(
            "no font at {FONTS:?} (apt install fonts-dejavu-core)"
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    // The axis ends past the largest p99, so a few stragglers do not squash the rest (each
    // legend entry gives its worst); below a millisecond the axis is in microseconds.
    let p99 = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
            .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let limit_ms = series.iter().map(|(_, v)| p99(v)).fold(0.0f64, f64::max) * 1.3;
    let (scale, unit) = if limit_ms < 1.0 {
        (1000.0, "microseconds")
    } else {
        (1.0, "milliseconds")
    };
    let max = (limit_ms * scale).max(1.0);
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max * 1.05, 0.0..100.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("samples at or below (%)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (label, values)) in series.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let mut sorted: Vec<f64> = values.iter().map(|v| v * scale).collect();
        sorted.sort_by(f64::total_cmp);
        let worst = sorted.last().copied().unwrap_or(0.0);
        let n = sorted.len() as f64;
        // A step line: up by 1/n at each sample.
        let mut points = vec![(0.0, 0.0)];
        for (k, v) in sorted.iter().enumerate() {
            let x = v.min(max);
            points.push((x, k as f64 * 100.0 / n));
            points.push((x, (k + 1) as f64 * 100.0 / n));
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{label} (n = {}, worst {worst:.0})", sorted.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
