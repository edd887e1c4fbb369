//! `triad bench plot CSV OUT`: draws the samples a soak run wrote (`tests/bench/soak.sh`) as an
//! SVG, one panel per measure, one line per process, with the `plotters` crate.
//!
//! The CSV's first column is the time in seconds (`t_s`); every other column is named
//! `<process>_<measure>` (`m1_rss_mib`, `m2_data_mib`, `m1_jobs`, `e1_work_mib`, …). Columns
//! that share a measure share a panel, in the order the measures first appear. Empty cells (a
//! process that could not be sampled) leave a gap.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One panel: a measure and its series (process name, points).
struct Panel {
    measure: String,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Parsed CSV: a panel per measure.
fn panels(text: &str) -> anyhow::Result<Vec<Panel>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().context("the CSV is empty")?.split(',').collect();
    anyhow::ensure!(header.first() == Some(&"t_s"), "the first column must be t_s");
    let mut panels: Vec<Panel> = Vec::new();
    // For each column after the first: (panel index, series index).
    let mut slot = Vec::new();
    for col in &header[1..] {
        let (process, measure) = col
            .split_once('_')
            .with_context(|| format!("column {col:?} is not <process>_<measure>"))?;
        let p = match panels.iter().position(|p| p.measure == measure) {
            Some(p) => p,
            None => {
                panels.push(Panel { measure: measure.to_string(), series: Vec::new() });
                panels.len() - 1
            }
        };
        panels[p].series.push((process.to_string(), Vec::new()));
        slot.push((p, panels[p].series.len() - 1));
    }
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        let t: f64 = cells[0].trim().parse().with_context(|| format!("row {}: bad t_s", n + 2))?;
        for (i, cell) in cells.iter().enumerate().skip(1) {
            let Some(&(p, s)) = slot.get(i - 1) else { continue };
            if let Ok(v) = cell.trim().parse::<f64>() {
                panels[p].series[s].1.push((t, v));
            }
        }
    }
    Ok(panels)
}

/// The title of a measure's panel.
fn title(measure: &str) -> String {
    match measure {
        "rss_mib" => "master RSS (MiB)".into(),
        "data_mib" => "master data dir (MiB)".into(),
        "jobs" => "jobs in state".into(),
        "work_mib" => "executor work dir (MiB)".into(),
        other => other.replace('_', " "),
    }
}

/// Draws `csv` into the SVG file `out`.
pub fn plot(csv: &Path, out: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let panels = panels(&text)?;
    anyhow::ensure!(!panels.is_empty(), "{} has no measures to plot", csv.display());
    let height = 260 * panels.len() as u32;
    let root = SVGBackend::new(out, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let areas = root.split_evenly((panels.len(), 1));
    for (panel, area) in panels.iter().zip(areas) {
        draw_panel(panel, &area)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

fn draw_panel(
    panel: &Panel,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let points = panel.series.iter().flat_map(|(_, pts)| pts.iter());
    let (mut t_max, mut y_max) = (1.0f64, 1.0f64);
    for &(t, v) in points {
        t_max = t_max.max(t);
        y_max = y_max.max(v);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title(&panel.measure), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)
        .map_err(draw_err)?;
    chart.configure_mesh().x_desc("seconds").draw().map_err(draw_err)?;
    for (i, (name, pts)) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_group_by_measure_and_an_empty_cell_is_a_gap() {
        let csv = "t_s,m1_rss_mib,m2_rss_mib,m1_jobs,e1_work_mib\n0,10,11,0,1\n5,12,,40,2\n";
        let p = panels(csv).unwrap();
        let measures: Vec<&str> = p.iter().map(|p| p.measure.as_str()).collect();
        assert_eq!(measures, ["rss_mib", "jobs", "work_mib"]);
        assert_eq!(p[0].series[0], ("m1".to_string(), vec![(0.0, 10.0), (5.0, 12.0)]));
        assert_eq!(p[0].series[1], ("m2".to_string(), vec![(0.0, 11.0)]));
        assert!(panels("x,m1_rss_mib\n").is_err(), "t_s comes first");

        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("s.csv"), dir.path().join("s.svg"));
        std::fs::write(&input, csv).unwrap();
        plot(&input, &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("master RSS (MiB)"), "{}", &svg[..200]);
    }
}
