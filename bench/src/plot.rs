//! The ramp as an SVG figure: viewers on the x axis against server and bench
//! CPU, loss, and latency, one panel each.

use std::path::Path;

use plotters::prelude::*;

use crate::report::RampReport;

/// Drawing failed (plotters' errors are not `Send`, so they travel as text).
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The ramp measured no step.
    #[error("nothing to plot: the ramp has no steps")]
    Empty,
    /// plotters failed to lay out or render the figure.
    #[error("drawing the plot: {0}")]
    Draw(String),
    /// The SVG file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file asked for.
        path: String,
        /// Why writing failed.
        source: std::io::Error,
    },
}

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// One line of a panel.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
) -> Result<(), PlotError> {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // Headroom, and a visible range even when every value is zero.
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("viewers")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if y_max >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .max_light_lines(2)
        .draw()
        .map_err(draw_err)?;
    for line in lines {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(line.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The ramp as an SVG document.
pub fn ramp_svg(ramp: &RampReport, title: &str) -> Result<String, PlotError> {
    if ramp.steps.is_empty() {
        return Err(PlotError::Empty);
    }
    let x_max = ramp
        .steps
        .iter()
        .map(|s| s.viewers as f64)
        .fold(0.0, f64::max)
        * 1.05;
    let series = |f: &dyn Fn(&crate::report::StepReport) -> Option<f64>| -> Vec<(f64, f64)> {
        ramp.steps
            .iter()
            .filter_map(|s| f(s).map(|y| (s.viewers as f64, y)))
            .collect()
    };
    let cpu = [
        Line {
            label: "server",
            color: RGBColor(200, 40, 40),
            points: series(&|s| s.server.as_ref().map(|v| v.cores)),
        },
        Line {
            label: "bench",
            color: RGBColor(120, 120, 120),
            points: series(&|s| Some(s.bench.cores)),
        },
    ];
    let loss = [
        Line {
            label: "overall",
            color: RGBColor(30, 90, 200),
            points: series(&|s| Some(s.loss_percent)),
        },
        Line {
            label: "worst viewer",
            color: RGBColor(140, 170, 230),
            points: series(&|s| s.loss_per_viewer_percent.as_ref().map(|l| l.max)),
        },
        Line {
            label: "delivery shortfall",
            color: RGBColor(150, 60, 170),
            points: series(&|s| Some(crate::fanout::shortfall_percent(s))),
        },
    ];
    let latency = [
        Line {
            label: "p50",
            color: RGBColor(20, 140, 60),
            points: series(&|s| s.latency_ms.as_ref().map(|l| l.p50)),
        },
        Line {
            label: "p99",
            color: RGBColor(230, 140, 20),
            points: series(&|s| s.latency_ms.as_ref().map(|l| l.p99)),
        },
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 1000)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
        let panels = root.split_evenly((3, 1));
        panel(&panels[0], "CPU", "cores", x_max, &cpu)?;
        panel(&panels[1], "Loss and delivery shortfall", "%", x_max, &loss)?;
        panel(
            &panels[2],
            "Latency, publisher to viewer",
            "ms",
            x_max,
            &latency,
        )?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Writes [`ramp_svg`] to `path`.
pub fn write_ramp_svg(path: &Path, ramp: &RampReport, title: &str) -> Result<(), PlotError> {
    let svg = ramp_svg(ramp, title)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BenchCpu, Percentiles, StepReport};

    fn step(viewers: usize, loss: f64) -> StepReport {
        StepReport {
            viewers,
            sample_viewers: 1,
            seconds: 1.0,
            published_packets: 160,
            delivered_packets: 160 * viewers as u64,
            delivered_pps: 160.0 * viewers as f64,
            delivery_percent: Some(100.0),
            loss_percent: loss,
            loss_per_viewer_percent: None,
            silent_viewers: 0,
            viewers_ended: 0,
            corrupt_payloads: 0,
            latency_ms: Some(Percentiles {
                p50: 1.0,
                p99: 3.0,
                max: 5.0,
                samples: 160,
            }),
            frame_latency_ms: None,
            server: None,
            bench: BenchCpu {
                cpu_seconds: 0.1,
                cores: 0.1,
                allowed_cpus: 1,
                worker_threads: 1,
                runqueue_wait_seconds: None,
                saturated: false,
            },
        }
    }

    fn ramp(steps: Vec<StepReport>) -> RampReport {
        RampReport {
            steps,
            held_viewers: 200,
            stop_reason: "test".into(),
            max_loss_percent: 1.0,
            max_server_load: 0.95,
            retried_steps: vec![],
        }
    }

    #[test]
    fn ramp_plot_is_an_svg_with_three_panels() {
        let svg = ramp_svg(&ramp(vec![step(100, 0.0), step(200, 0.2)]), "ramp").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "CPU",
            "Loss",
            "Latency",
            "viewers",
            "p99",
            "worst viewer",
            "delivery shortfall",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn empty_ramp_is_refused() {
        assert!(matches!(
            ramp_svg(&ramp(vec![]), "x"),
            Err(PlotError::Empty)
        ));
    }
}
