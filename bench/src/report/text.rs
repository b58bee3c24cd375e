//! The readable layout of a fan-out report ([`format_fanout`]): settings,
//! setup, the ramp's table and the measurement window as text lines.

use std::fmt::Write;

use super::data::{FanoutReport, RampReport, SetupReport, StepReport};
use super::numbers::{group_digits, human_bytes, ms};

fn setup_lines(out: &mut String, s: &SetupReport) {
    let _ = write!(
        out,
        "setup      {}/{} connected in {:.2} s: {:.1} sessions/s ({} at once)",
        s.connected, s.attempted, s.seconds, s.rate_per_second, s.concurrency
    );
    if let Some(l) = &s.latency_ms {
        let _ = write!(
            out,
            "; latency p50 {}  p99 {}  max {}",
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    out.push('\n');
    if let Some(per) = s.per_server_cpu_second() {
        let cores = |c: f64| c / s.seconds.max(1e-9);
        let _ = write!(
            out,
            "           {per:.0} sessions per server CPU-second (server {:.2} cores",
            cores(s.server_cpu_seconds.unwrap_or(0.0))
        );
        if let Some(b) = s.bench_cpu_seconds {
            let _ = write!(out, ", bench {:.2} cores", cores(b));
        }
        out.push_str(")\n");
    }
    for e in &s.errors {
        let _ = writeln!(out, "           {} failed: {}", e.count, e.error);
    }
}

fn step_lines(out: &mut String, m: &StepReport) {
    let _ = write!(
        out,
        "delivered  {} pkt/s to {} viewers ({} packets in {:.1} s)",
        group_digits(m.delivered_pps.round() as u64),
        m.viewers,
        group_digits(m.delivered_packets),
        m.seconds
    );
    if let Some(d) = m.delivery_percent {
        let _ = write!(out, "; {d:.2}% of what their streams published");
    }
    out.push('\n');
    let _ = write!(out, "loss       {:.3}% overall", m.loss_percent);
    if let Some(s) = &m.loss_per_viewer_percent {
        let _ = write!(
            out,
            "; per viewer min {:.3}%  median {:.3}%  max {:.3}%",
            s.min, s.median, s.max
        );
    }
    if m.silent_viewers > 0 {
        let _ = write!(out, "; {} viewers received nothing", m.silent_viewers);
    }
    if m.viewers_ended > 0 {
        let _ = write!(out, "; {} sessions ended", m.viewers_ended);
    }
    out.push('\n');
    match &m.latency_ms {
        Some(l) => {
            let _ = writeln!(
                out,
                "latency    p50 {}  p99 {}  max {}  ({} samples from {} decrypting viewers, {} corrupt)",
                ms(l.p50),
                ms(l.p99),
                ms(l.max),
                group_digits(l.samples),
                m.sample_viewers,
                m.corrupt_payloads
            );
        }
        None => {
            let _ = writeln!(
                out,
                "latency    no samples ({} corrupt)",
                m.corrupt_payloads
            );
        }
    }
    if let Some(l) = &m.frame_latency_ms {
        let _ = writeln!(
            out,
            "frames     p50 {}  p99 {}  max {}  last packet sent to last received ({} frames)",
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            group_digits(l.samples),
        );
    }
    if let Some(s) = &m.server {
        let _ = writeln!(
            out,
            "server     pid {}: {:.2} cores of {} ({:.0}%), {:.2} CPU-s, {} waiting for a CPU; RSS {} ({} before any viewer)",
            s.pid,
            s.cores,
            s.allowed_cpus,
            s.load * 100.0,
            s.cpu_seconds,
            s.runqueue_wait_seconds
                .map_or("?".into(), |w| format!("{w:.2} s")),
            human_bytes(s.rss_bytes as f64),
            human_bytes(s.rss_baseline_bytes as f64)
        );
        for t in &s.threads {
            if t.cpu_seconds > 0.0 {
                let _ = writeln!(
                    out,
                    "             {:<16} x{:<3} {:.2} cores",
                    t.name, t.threads, t.cores
                );
            }
        }
        let per_cpu = s
            .packets_per_cpu_second
            .map(|v| group_digits(v.round() as u64))
            .unwrap_or_else(|| "-".into());
        let per_viewer = s
            .memory_per_viewer_bytes
            .map(human_bytes)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "           {per_cpu} delivered pkt per server CPU-second; {per_viewer} per viewer"
        );
    }
    let b = &m.bench;
    let _ = writeln!(
        out,
        "bench      {:.2} cores ({} worker threads, {} CPUs allowed){}",
        b.cores,
        b.worker_threads,
        b.allowed_cpus,
        if b.saturated {
            ": SATURATED, figures bounded by the load generator"
        } else {
            ""
        }
    );
}

fn ramp_table(out: &mut String, r: &RampReport) {
    let _ = writeln!(
        out,
        "{:>8} {:>12} {:>8} {:>9} {:>9} {:>9} {:>7} {:>11} {:>9} {:>6}",
        "viewers",
        "pkt/s",
        "loss %",
        "max loss",
        "lat p50",
        "lat p99",
        "server",
        "pkt/CPU-s",
        "RSS",
        "bench"
    );
    for s in &r.steps {
        let (p50, p99) = s
            .latency_ms
            .as_ref()
            .map(|l| (format!("{:.2}", l.p50), format!("{:.2}", l.p99)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let max_loss = s
            .loss_per_viewer_percent
            .as_ref()
            .map(|l| format!("{:.3}", l.max))
            .unwrap_or_else(|| "-".into());
        let (cores, per_cpu, rss) = match &s.server {
            Some(v) => (
                format!("{:.2}", v.cores),
                v.packets_per_cpu_second
                    .map(|p| group_digits(p.round() as u64))
                    .unwrap_or_else(|| "-".into()),
                human_bytes(v.rss_bytes as f64),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:>8} {:>12} {:>8.3} {:>9} {:>9} {:>9} {:>7} {:>11} {:>9} {:>6.2}",
            s.viewers,
            group_digits(s.delivered_pps.round() as u64),
            s.loss_percent,
            max_loss,
            p50,
            p99,
            cores,
            per_cpu,
            rss,
            s.bench.cores
        );
    }
    let _ = writeln!(
        out,
        "held       {} viewers (loss and delivery shortfall <= {}%); stopped: {}",
        r.held_viewers, r.max_loss_percent, r.stop_reason
    );
    if !r.retried_steps.is_empty() {
        let _ = writeln!(
            out,
            "           measured again after going over the limit once: {:?} viewers",
            r.retried_steps
        );
    }
}

/// The readable form of a fan-out report.
pub fn format_fanout(r: &FanoutReport) -> String {
    let mut out = String::new();
    let st = &r.settings;
    let _ = writeln!(out, "sluice-bench fanout: {}", r.whep_url);
    let _ = writeln!(
        out,
        "           host: {} CPUs, {}, kernel {}",
        r.host.cpus, r.host.cpu_model, r.host.kernel
    );
    let _ = writeln!(
        out,
        "           {} viewers max{}, {:.2} Mbit/s {} at {} fps (keyframe every {:.1} s, {}){}{}, {} worker threads, {}",
        st.viewers,
        if st.streams > 1 {
            format!(" over {} streams", st.streams)
        } else {
            String::new()
        },
        st.bitrate as f64 / 1e6,
        st.video_codec,
        st.fps,
        st.keyframe_interval_seconds,
        if st.pacing_factor > 0.0 {
            format!("paced at {}x", st.pacing_factor)
        } else {
            "frames in bursts".into()
        },
        if st.audio { " + Opus-like audio 50 pkt/s" } else { "" },
        if st.streams > 1 { " each" } else { "" },
        st.worker_threads,
        if st.transport == "tcp" {
            "viewers over ICE-TCP"
        } else if st.udp_gro {
            "UDP GRO on"
        } else {
            "UDP GRO off"
        }
    );
    setup_lines(&mut out, &r.setup);
    if let Some(ramp) = &r.ramp {
        ramp_table(&mut out, ramp);
        if r.measurement.is_some() {
            let _ = writeln!(out, "at {} viewers:", ramp.held_viewers);
        }
    }
    if let Some(m) = &r.measurement {
        step_lines(&mut out, m);
    }
    for n in &r.notes {
        let _ = writeln!(out, "note       {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        BenchCpu, ErrorCount, HostInfo, Percentiles, ServerReport, Settings, Spread, ThreadGroup,
    };

    fn step(viewers: usize, loss: f64) -> StepReport {
        StepReport {
            viewers,
            sample_viewers: 1,
            seconds: 5.0,
            published_packets: 800,
            delivered_packets: 800 * viewers as u64,
            delivered_pps: 160.0 * viewers as f64,
            delivery_percent: Some(100.0),
            loss_percent: loss,
            loss_per_viewer_percent: Some(Spread {
                min: 0.0,
                median: loss,
                max: loss * 2.0,
            }),
            silent_viewers: 0,
            viewers_ended: 0,
            corrupt_payloads: 0,
            latency_ms: Some(Percentiles {
                p50: 0.5,
                p99: 2.0,
                max: 9.0,
                samples: 800,
            }),
            frame_latency_ms: Some(Percentiles {
                p50: 1.5,
                p99: 4.0,
                max: 12.0,
                samples: 100,
            }),
            server: Some(ServerReport {
                pid: 7,
                cpu_seconds: 1.0,
                cores: 0.2,
                allowed_cpus: 1,
                load: 0.2,
                runqueue_wait_seconds: Some(0.01),
                threads: vec![ThreadGroup {
                    name: "shard-0".into(),
                    threads: 1,
                    cpu_seconds: 0.9,
                    cores: 0.18,
                }],
                rss_bytes: 50 << 20,
                rss_baseline_bytes: 40 << 20,
                memory_per_viewer_bytes: Some(100_000.0),
                packets_per_cpu_second: Some(250_000.0),
            }),
            bench: BenchCpu {
                cpu_seconds: 2.0,
                cores: 0.4,
                allowed_cpus: 1,
                worker_threads: 1,
                runqueue_wait_seconds: None,
                saturated: false,
            },
        }
    }

    #[test]
    fn table_shows_the_headline_figures() {
        let report = FanoutReport {
            started_unix: 0,
            host: HostInfo {
                cpus: 2,
                cpu_model: "Test CPU".into(),
                kernel: "6.1".into(),
            },
            whip_url: "https://h/whip/s".into(),
            whep_url: "https://h/whep/s".into(),
            settings: Settings {
                viewers: 100,
                streams: 4,
                udp_gro: true,
                transport: "udp".into(),
                bitrate: 1_000_000,
                fps: 30,
                keyframe_interval_seconds: 2.0,
                pacing_factor: 2.5,
                audio: true,
                video_codec: "VP8".into(),
                duration_seconds: 5.0,
                warmup_seconds: 1.0,
                sample_percent: 1.0,
                worker_threads: 1,
            },
            setup: SetupReport {
                attempted: 100,
                connected: 99,
                failed: 1,
                seconds: 2.0,
                rate_per_second: 49.5,
                latency_ms: None,
                errors: vec![ErrorCount {
                    error: "HTTP 503".into(),
                    count: 1,
                }],
                concurrency: 32,
                server_cpu_seconds: Some(1.5),
                bench_cpu_seconds: None,
            },
            measurement: Some(step(100, 0.5)),
            ramp: Some(RampReport {
                steps: vec![step(50, 0.0), step(100, 0.5)],
                held_viewers: 100,
                stop_reason: "reached the viewer limit".into(),
                max_loss_percent: 1.0,
                max_server_load: 0.95,
                retried_steps: vec![],
            }),
            notes: vec!["something to know".into()],
        };
        let text = format_fanout(&report);
        for needle in [
            "99/100 connected",
            "1 failed: HTTP 503",
            "16,000 pkt/s to 100 viewers",
            "0.500% overall",
            "250,000 delivered pkt per server CPU-second",
            "97.7 KiB per viewer",
            "shard-0",
            "held       100 viewers",
            "note       something to know",
            "100 viewers max over 4 streams",
            "1 worker threads, UDP GRO on",
            "frames     p50 1.50 ms  p99 4.00 ms  max 12.0 ms  last packet sent to last received (100 frames)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["measurement"]["viewers"], 100);
        assert_eq!(json["ramp"]["steps"].as_array().unwrap().len(), 2);
        // A saved report reads back whole (`sluice-bench plot --from`).
        let back: FanoutReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, report);
        // Reports saved before streams and GRO were recorded still read, as
        // one stream received without GRO.
        let mut old = json;
        let settings = old["settings"].as_object_mut().unwrap();
        settings.remove("streams");
        settings.remove("udp_gro");
        let back: FanoutReport = serde_json::from_value(old).unwrap();
        assert_eq!((back.settings.streams, back.settings.udp_gro), (1, false));
    }
}
