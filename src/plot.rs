//! Pictures of a run: the learning curves (loss and accuracy per epoch, train vs validation,
//! the article's Fig. 3), the confusion matrix, and a sweep's validation curves side by side,
//! each as PNG and SVG.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::files::{FileError, atomic_write, atomic_write_bytes};
use crate::metrics::Confusion;
use crate::session::EpochRecord;

/// A picture could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("drawing {path}: {why}")]
    Draw {
        /// The file being drawn.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] FileError),
}

const FONT: &str = "sans-serif";
const CURVES_SIZE: (u32, u32) = (1200, 480);
const CONFUSION_SIZE: (u32, u32) = (640, 600);
const SWEEP_SIZE: (u32, u32) = (1000, 600);
/// Ten distinct, readable line colours (matplotlib's tab10), for a sweep's runs.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VALID_COLOR: RGBColor = RGBColor(255, 127, 14);

/// Registers the embedded DejaVu Sans font with plotters once (no system fonts needed).
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known good; a failure would only lose the labels.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Draws a picture into `STEM.png` and `STEM.svg` (the same drawing, once per backend);
/// returns the two paths.
fn render(
    stem: &Path,
    size: (u32, u32),
    draw_png: impl Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
    draw_svg: impl Fn(DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<[PathBuf; 2], PlotError> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let draw_err = |path: &Path| {
        let path = path.to_path_buf();
        move |why| PlotError::Draw { path, why }
    };

    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw_png(root.clone()).map_err(draw_err(&png))?;
        root.present().map_err(|e| draw_err(&png)(err(e)))?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, pixels)
        .ok_or_else(|| draw_err(&png)("pixel buffer of the wrong size".into()))?;
    atomic_write(&png, |f| {
        image
            .write_to(&mut std::io::BufWriter::new(f), image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw_svg(root.clone()).map_err(draw_err(&svg))?;
        root.present().map_err(|e| draw_err(&svg)(err(e)))?;
    }
    atomic_write_bytes(&svg, text.as_bytes())?;
    Ok([png, svg])
}

/// The learning curves: loss (left) and accuracy (right) per epoch, train vs validation.
pub fn learning_curves(history: &[EpochRecord], stem: &Path) -> Result<[PathBuf; 2], PlotError> {
    render(
        stem,
        CURVES_SIZE,
        |root| curves(root, history),
        |root| curves(root, history),
    )
}

fn curves<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, history: &[EpochRecord]) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    type Pick = fn(&EpochRecord) -> (f64, Option<f64>);
    let loss: Pick = |r| (r.train.loss, r.valid.map(|v| v.loss));
    let acc: Pick = |r| (r.train.accuracy, r.valid.map(|v| v.accuracy));
    // Legends where the curves are not: loss falls, accuracy rises.
    let (upper, lower) = (
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerRight,
    );
    let loss_labels = ("Loss per epoch", "loss (cross-entropy)");
    panel(&panels[0], history, loss_labels, loss, upper)?;
    panel(
        &panels[1],
        history,
        ("Accuracy per epoch", "accuracy"),
        acc,
        lower,
    )
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    history: &[EpochRecord],
    (title, y_label): (&str, &str),
    pick: fn(&EpochRecord) -> (f64, Option<f64>),
    legend: SeriesLabelPosition,
) -> DrawResult {
    let train: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.epoch as f64, pick(r).0))
        .collect();
    let valid: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|r| pick(r).1.map(|v| (r.epoch as f64, v)))
        .collect();
    let values = train
        .iter()
        .chain(&valid)
        .map(|p| p.1)
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let first = history.first().map_or(1, |r| r.epoch) as f64;
    let last = history.last().map_or(1, |r| r.epoch) as f64;
    let x_range = if last > first {
        first..last
    } else {
        first - 0.5..last + 0.5
    };

    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, (lo - pad)..(hi + pad))
        .map_err(err)?;
    epoch_mesh(&mut chart, y_label, 10)?;
    for (points, color, name) in [
        (&train, TRAIN_COLOR, "train"),
        (&valid, VALID_COLOR, "validation"),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .position(legend)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A sweep's runs side by side: validation accuracy per epoch, one line per run, labelled.
pub fn sweep_curves(
    runs: &[(String, Vec<EpochRecord>)],
    stem: &Path,
) -> Result<[PathBuf; 2], PlotError> {
    render(
        stem,
        SWEEP_SIZE,
        |root| sweep_chart(root, runs),
        |root| sweep_chart(root, runs),
    )
}

fn sweep_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[(String, Vec<EpochRecord>)],
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(label, history)| {
            let points = history
                .iter()
                .filter_map(|r| r.valid.map(|v| (r.epoch as f64, v.accuracy)))
                .collect();
            (label.as_str(), points)
        })
        .collect();
    let all = curves.iter().flat_map(|(_, p)| p.iter());
    let (lo, hi, last) = all.fold((1.0f64, 0.0f64, 1.0f64), |(lo, hi, last), &(x, y)| {
        (lo.min(y), hi.max(y), last.max(x))
    });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption("Validation accuracy per epoch", (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(1.0..last.max(2.0), (lo - pad)..(hi + pad))
        .map_err(err)?;
    // Whole epochs only: a tick per epoch up to 15, fewer beyond.
    epoch_mesh(&mut chart, "validation accuracy", (last as usize).min(15))?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = TAB10[i % TAB10.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Grid, axes and labels of a per-epoch chart: epochs along x (about `x_ticks` of them),
/// `y_label` up the side.
fn epoch_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    y_label: &str,
    x_ticks: usize,
) -> DrawResult {
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels(x_ticks)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()
        .map_err(err)
}

/// The confusion matrix as a heat map: rows the true class, columns the predicted one, each
/// cell its count (up to 30 classes), shaded by its share of the row; the classes labelled by
/// `names` (every k-th past 30 classes).
pub fn confusion(
    confusion: &Confusion,
    names: &[String],
    stem: &Path,
) -> Result<[PathBuf; 2], PlotError> {
    render(
        stem,
        CONFUSION_SIZE,
        |root| heat_map(root, confusion, names),
        |root| heat_map(root, confusion, names),
    )
}

fn heat_map<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &Confusion,
    names: &[String],
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let classes = c.classes();
    let n = classes as f64;
    let name = |i: f64| -> String {
        let i = i.round();
        if i < 0.0 || i >= n {
            return String::new();
        }
        let i = i as usize;
        names.get(i).cloned().unwrap_or_else(|| i.to_string())
    };
    let labels = classes.min(30);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Confusion matrix ({} test images)", c.total()),
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..n - 0.5, -0.5..n - 0.5)
        .map_err(err)?;
    // Row 0 at the top: the y axis counts down, so row d sits at y = 9 - d.
    let flip = |y: f64| n - 1.0 - y;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(labels)
        .y_labels(labels)
        .x_label_formatter(&|x| name(*x))
        .y_label_formatter(&|y| name(flip(*y)))
        .x_desc("predicted class")
        .y_desc("true class")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    let cells = (0..classes).flat_map(|t| (0..classes).map(move |p| (t, p)));
    for (t, p) in cells {
        let count = c.counts[t][p];
        let row: u32 = c.counts[t].iter().sum();
        let share = if row == 0 {
            0.0
        } else {
            f64::from(count) / f64::from(row)
        };
        // White to a deep blue, by the share of the row.
        let mix =
            |from: u8, to: u8| (f64::from(from) + (f64::from(to) - f64::from(from)) * share) as u8;
        let fill = RGBColor(mix(255, 8), mix(255, 48), mix(255, 107));
        let (x, y) = (p as f64, flip(t as f64));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                fill.filled(),
            )))
            .map_err(err)?;
        let ink = if share > 0.5 { WHITE } else { BLACK };
        let style = TextStyle::from((FONT, 14).into_font()).color(&ink).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        if classes <= 30 {
            chart
                .draw_series(std::iter::once(Text::new(count.to_string(), (x, y), style)))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn record(epoch: usize) -> EpochRecord {
        let m = |x: f64| Metrics {
            loss: 1.0 / x,
            accuracy: 1.0 - 0.5 / x,
            count: 10,
        };
        EpochRecord {
            epoch,
            train: m(epoch as f64 + 1.0),
            valid: Some(m(epoch as f64 + 0.5)),
            train_seconds: 1.0,
            seconds: 1.0,
        }
    }

    #[test]
    fn plots_are_valid_non_trivial_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let history: Vec<_> = (1..=5).map(record).collect();
        let [png, svg] = learning_curves(&history, &dir.path().join("curves")).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), CURVES_SIZE);
        // Both series colours are drawn.
        for color in [TRAIN_COLOR, VALID_COLOR] {
            let n = img
                .pixels()
                .filter(|p| p.0 == [color.0, color.1, color.2])
                .count();
            assert!(n > 200, "{n} pixels of {color:?}");
        }
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg") && text.contains("epoch") && text.contains("validation"));

        let c = Confusion::new(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
        let names: Vec<String> = ["zero", "one", "two"].map(String::from).to_vec();
        let [png, svg] = confusion(&c, &names, &dir.path().join("confusion")).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), CONFUSION_SIZE);
        assert!(
            img.pixels().any(|p| p.0 == [8, 48, 107]),
            "a full-share cell"
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("predicted class") && text.contains("two"),
            "{text}"
        );
    }

    #[test]
    fn a_single_epoch_still_plots() {
        let dir = tempfile::tempdir().unwrap();
        learning_curves(&[record(1)], &dir.path().join("one")).unwrap();
    }
}
