//! `scripts/bench --plot DIR`: PNG charts of benchmark reports (the JSON `scripts/bench
//! --json` writes). A single run gives secretref next to ESO and the API server's floor for
//! each figure; a `--growth` run gives the curves over N.
//!
//! Usage: `bench-plot DIR REPORT.json...`; each chart is named after its report's file stem.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::{
        FontStyle,
        text_anchor::{HPos, Pos, VPos},
    },
};
use serde_json::Value;

const OURS: RGBColor = RGBColor(31, 119, 180);
const PEER: RGBColor = RGBColor(255, 127, 14);
const FLOOR: RGBColor = RGBColor(120, 120, 120);
const SIZE: (u32, u32) = (960, 540);
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, reports) = args.split_first().context("usage: bench-plot DIR REPORT.json...")?;
    if reports.is_empty() {
        anyhow::bail!("usage: bench-plot DIR REPORT.json...");
    }
    // The machines have no system fonts: the charts' font is compiled in.
    plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| anyhow!("the embedded font does not load"))?;
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    for file in reports {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let report: Value = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
        let stem = Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("bench")
            .to_string();
        let written = if report.get("growth").is_some() {
            growth(&dir, &stem, &report)?
        } else {
            single(&dir, &stem, &report)?
        };
        for path in written {
            println!("{}", path.display());
        }
    }
    Ok(())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// The charts of one run: each figure for secretref, ESO (when measured) and the floor.
fn single(dir: &Path, stem: &str, r: &Value) -> anyhow::Result<Vec<PathBuf>> {
    let refs = num(r, &["refs"]).unwrap_or(0.0);
    let ops: Vec<(&str, RGBColor, &Value)> = [("secretref", OURS), ("ESO", PEER)]
        .into_iter()
        .filter_map(|(name, color)| {
            let key = if name == "ESO" { "eso" } else { name };
            r.get(key).filter(|v| !v.is_null()).map(|v| (name, color, v))
        })
        .collect();
    let mut out = Vec::new();

    let mut cold: Vec<(String, f64, RGBColor)> = ops
        .iter()
        .map(|(n, c, o)| (n.to_string(), num(o, &["cold_sync_per_s"]).unwrap_or(0.0), *c))
        .collect();
    cold.push((
        "floor: 3 writes/object".into(),
        num(r, &["limit.min_writes_per_s"]).unwrap_or(0.0),
        FLOOR,
    ));
    let path = dir.join(format!("{stem}-cold-sync.png"));
    bars(
        &path,
        &format!("Cold sync of {refs} SecretRefs (higher is better)"),
        "objects per second",
        &cold,
    )?;
    out.push(path);

    let mut prop = Vec::new();
    for (n, c, o) in &ops {
        prop.push((
            format!("{n} p50"),
            num(o, &["propagation_p50_ms"]).unwrap_or(0.0) / 1000.0,
            *c,
        ));
        prop.push((
            format!("{n} p99"),
            num(o, &["propagation_p99_ms"]).unwrap_or(0.0) / 1000.0,
            *c,
        ));
    }
    prop.push((
        "floor: raw apply".into(),
        num(r, &["limit.fanout_apply_s"]).unwrap_or(0.0),
        FLOOR,
    ));
    let fanout = refs / num(r, &["store_secrets"]).unwrap_or(1.0).max(1.0);
    let path = dir.join(format!("{stem}-propagation.png"));
    bars(
        &path,
        &format!("One store change to {fanout:.0} targets (lower is better)"),
        "seconds",
        &prop,
    )?;
    out.push(path);

    let mut rss = Vec::new();
    for (n, c, o) in &ops {
        rss.push((
            format!("{n} peak"),
            num(o, &["peak_rss_bytes"]).unwrap_or(0.0) / MIB,
            *c,
        ));
        rss.push((
            format!("{n} settled"),
            num(o, &["settled_rss_bytes"]).unwrap_or(0.0) / MIB,
            *c,
        ));
        if let Some(u) = num(o, &["peak_rss_bytes_with_unrelated"]) {
            rss.push((format!("{n} +unrelated"), u / MIB, *c));
        }
    }
    let path = dir.join(format!("{stem}-memory.png"));
    bars(&path, "Operator memory (RSS, lower is better)", "MiB", &rss)?;
    out.push(path);

    let mut steady = Vec::new();
    for (n, c, o) in &ops {
        steady.push((
            format!("{n} writes"),
            num(o, &["steady_writes_per_cycle"]).unwrap_or(0.0),
            *c,
        ));
        steady.push((
            format!("{n} store reads"),
            num(o, &["backend_reads_per_cycle"]).unwrap_or(0.0),
            *c,
        ));
    }
    let path = dir.join(format!("{stem}-steady.png"));
    bars(
        &path,
        "One refresh cycle with nothing changed (lower is better)",
        "requests per cycle",
        &steady,
    )?;
    out.push(path);
    Ok(out)
}

/// The curves of a `--growth` run over N.
fn growth(dir: &Path, stem: &str, r: &Value) -> anyhow::Result<Vec<PathBuf>> {
    let points = r["growth"].as_array().cloned().unwrap_or_default();
    let series = |path: &[&str], scale: f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| Some((num(p, &["refs"])?, num(p, path)? * scale)))
            .collect()
    };
    let mut out = Vec::new();

    let mut rss = vec![
        (
            "secretref peak".to_string(),
            OURS,
            series(&["peak_rss_bytes"], 1.0 / MIB),
        ),
        (
            "secretref settled".to_string(),
            RGBColor(23, 190, 207),
            series(&["settled_rss_bytes"], 1.0 / MIB),
        ),
    ];
    let eso_rss = series(&["eso", "peak_rss_bytes"], 1.0 / MIB);
    if !eso_rss.is_empty() {
        rss.push(("ESO peak".to_string(), PEER, eso_rss));
    }
    let path = dir.join(format!("{stem}-rss.png"));
    lines(&path, "Operator RSS over N SecretRefs", "MiB", &rss)?;
    out.push(path);

    let mut rate = vec![
        (
            "secretref cold sync".to_string(),
            OURS,
            series(&["cold_sync_per_s"], 1.0),
        ),
        (
            "floor: 3 writes/object".to_string(),
            FLOOR,
            series(&["min_writes_per_s"], 1.0),
        ),
    ];
    // The same floor taken again after the operators ran (growth runs since the seventh pass).
    let after = series(&["min_writes_per_s_after"], 1.0);
    if !after.is_empty() {
        rate.push(("floor, taken again after".to_string(), RGBColor(150, 150, 150), after));
    }
    let eso_rate = series(&["eso", "cold_sync_per_s"], 1.0);
    if !eso_rate.is_empty() {
        rate.push(("ESO cold sync".to_string(), PEER, eso_rate));
    }
    let path = dir.join(format!("{stem}-cold-sync.png"));
    lines(&path, "Cold sync rate over N", "objects per second", &rate)?;
    out.push(path);

    let mut prop = vec![
        (
            "secretref p99".to_string(),
            OURS,
            series(&["propagation_p99_ms"], 1.0 / 1000.0),
        ),
        (
            "secretref p50".to_string(),
            RGBColor(23, 190, 207),
            series(&["propagation_p50_ms"], 1.0 / 1000.0),
        ),
        (
            "floor: raw apply of N/10".to_string(),
            FLOOR,
            series(&["fanout_apply_s"], 1.0),
        ),
    ];
    let eso_prop = series(&["eso", "propagation_p99_ms"], 1.0 / 1000.0);
    if !eso_prop.is_empty() {
        prop.push(("ESO p99".to_string(), PEER, eso_prop));
    }
    let path = dir.join(format!("{stem}-propagation.png"));
    lines(&path, "One store change to N/10 targets over N", "seconds", &prop)?;
    out.push(path);
    Ok(out)
}

/// One bar per item, its value written above it.
fn bars(path: &Path, title: &str, y_desc: &str, items: &[(String, f64, RGBColor)]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let top = items
        .iter()
        .map(|i| i.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let n = i32::try_from(items.len()).unwrap_or(i32::MAX);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), 0f64..top)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(items.len() + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| items.get(i))
                .map(|it| it.0.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(draw)?;
    for (i, (_, value, color)) in items.iter().enumerate() {
        let i = i32::try_from(i).unwrap_or(i32::MAX);
        let value = if value.is_finite() { *value } else { 0.0 };
        let mut bar = Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), value)],
            color.filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        chart.draw_series(std::iter::once(bar)).map_err(draw)?;
        let label = if value >= 100.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.2}")
        };
        let style = TextStyle::from(("sans-serif", 17).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (SegmentValue::CenterOf(i), value),
                style,
            )))
            .map_err(draw)?;
    }
    root.present().map_err(draw)?;
    Ok(())
}

/// A named, coloured line of (N, value) points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// Lines over N (log scale), one per series, with a legend.
fn lines(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let all = || series.iter().flat_map(|s| s.2.iter());
    let (lo, hi) = all().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (lo, hi) = if lo <= hi { (lo / 1.5, hi * 1.5) } else { (100.0, 1e6) };
    let top = all()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..top)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("N SecretRefs (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(draw)?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(3)))
            .map_err(draw)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 5, color.filled())))
            .map_err(draw)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// plotters' errors borrow the backend's; ours own their text.
fn draw<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}
