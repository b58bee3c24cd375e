//! What `sluice-bench` reports: the figures of a fan-out run or ramp as plain
//! serialisable data (`--json` prints them as they are) and their layout as
//! readable text tables.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::stats::Histogram;
use crate::udp::{Outcome, UdpResult};

/// Median, tail and worst of a latency distribution, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median, in milliseconds.
    pub p50: f64,
    /// 99th percentile, in milliseconds.
    pub p99: f64,
    /// Largest sample, in milliseconds.
    pub max: f64,
    /// Samples the figures come from.
    pub samples: u64,
}

impl Percentiles {
    /// Milliseconds from a histogram of microseconds; `None` when it is empty.
    pub fn from_us(h: &Histogram) -> Option<Percentiles> {
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(h.percentile(50.0)),
            p99: ms(h.percentile(99.0)),
            max: ms(h.max()?),
            samples: h.count(),
        })
    }
}

/// Minimum, median and maximum over viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Lowest viewer, in the unit of the figure it spreads.
    pub min: f64,
    /// Median viewer, in the unit of the figure it spreads.
    pub median: f64,
    /// Highest viewer, in the unit of the figure it spreads.
    pub max: f64,
}

/// How many setups failed one way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorCount {
    /// The failure as its message reads, e.g. `HTTP connect failed: ...`.
    pub error: String,
    /// Viewer setups that failed with it.
    pub count: u64,
}

/// Viewer session setup: WHEP POST through ICE and DTLS to connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupReport {
    /// Viewer sessions started (WHEP offers posted).
    pub attempted: usize,
    /// Of those, sessions that reached connected (ICE and DTLS done).
    pub connected: usize,
    /// `attempted - connected`: sessions that failed or timed out.
    pub failed: usize,
    /// Wall time of the setup phases, all steps together.
    pub seconds: f64,
    /// Connected sessions per second of setup phase.
    pub rate_per_second: f64,
    /// Per session, from the POST to the DTLS handshake's end.
    pub latency_ms: Option<Percentiles>,
    /// Most frequent first.
    pub errors: Vec<ErrorCount>,
    /// Viewers set up at once.
    pub concurrency: usize,
    /// CPU seconds the server's threads spent during the setup phases
    /// (`--server-pid`), whatever else they did then (forwarding a live stream).
    #[serde(default)]
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds the bench itself spent during the setup phases: near one
    /// core per bench thread means the bench, not the server, set the pace.
    #[serde(default)]
    pub bench_cpu_seconds: Option<f64>,
}

impl SetupReport {
    /// Connected sessions per CPU-second of the server during setup: the
    /// setup rate one server core gives, independent of how busy it was.
    pub fn per_server_cpu_second(&self) -> Option<f64> {
        self.server_cpu_seconds
            .filter(|c| *c > 0.0)
            .map(|c| self.connected as f64 / c)
    }
}

/// CPU time of the threads of one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadGroup {
    /// Thread name (`comm` in /proc) the threads share.
    pub name: String,
    /// Threads of that name alive at the window's end.
    pub threads: usize,
    /// CPU seconds (user + system) they spent in the window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the window's wall time.
    pub cores: f64,
}

/// The server process (`--server-pid`) during a measurement window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    /// Process id read (`--server-pid`).
    pub pid: u32,
    /// CPU seconds (user + system) of all its threads in the window.
    pub cpu_seconds: f64,
    /// Average cores busy.
    pub cores: f64,
    /// CPUs the process may run on.
    pub allowed_cpus: usize,
    /// `cores / allowed_cpus`: 1.0 is saturated.
    pub load: f64,
    /// Seconds its threads were runnable but waited for a CPU (other
    /// processes on its cores); `None` where the kernel does not say.
    pub runqueue_wait_seconds: Option<f64>,
    /// Busiest first.
    pub threads: Vec<ThreadGroup>,
    /// Resident memory at the window's end.
    pub rss_bytes: u64,
    /// Resident memory with the publishers only, before any viewer.
    pub rss_baseline_bytes: u64,
    /// `(rss - baseline) / viewers`.
    pub memory_per_viewer_bytes: Option<f64>,
    /// Packets delivered to viewers per CPU-second the server spent.
    pub packets_per_cpu_second: Option<f64>,
}

/// The load generator's own CPU use, to tell when it, not the server, is the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchCpu {
    /// CPU seconds (user + system) this process spent in the window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the window's wall time: average cores busy.
    pub cores: f64,
    /// CPUs this process may run on.
    pub allowed_cpus: usize,
    /// Worker threads of its async runtime (`--threads`).
    pub worker_threads: usize,
    /// Seconds runnable but waiting for a CPU.
    pub runqueue_wait_seconds: Option<f64>,
    /// Busy for at least 90% of what its worker threads or CPUs allow.
    pub saturated: bool,
}

/// Figures of one measurement window at a fixed number of viewers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Viewers connected when the window began.
    pub viewers: usize,
    /// Of which decrypt and check payloads and latency.
    pub sample_viewers: usize,
    /// Wall time of the window, in seconds.
    pub seconds: f64,
    /// RTP packets the publishers sent during the window, all streams together.
    pub published_packets: u64,
    /// RTP packets all viewers received during the window.
    pub delivered_packets: u64,
    /// `delivered_packets / seconds`: packets per second, all viewers together.
    pub delivered_pps: f64,
    /// Delivered over what each viewer's stream published, summed over
    /// viewers (`published × viewers` with one stream), in percent.
    pub delivery_percent: Option<f64>,
    /// Lost over expected packets, all viewers together, from sequence numbers.
    pub loss_percent: f64,
    /// Each viewer's loss, in percent.
    pub loss_per_viewer_percent: Option<Spread>,
    /// Viewers that received nothing during the window (counted as 100% loss).
    pub silent_viewers: usize,
    /// Viewer sessions that ended during the window.
    pub viewers_ended: usize,
    /// Payloads that failed the integrity check (decrypting viewers).
    pub corrupt_payloads: u64,
    /// Publisher to decrypting viewer: from the send stamp in each payload
    /// to the kernel's receive time at the viewer's socket (to the bench's
    /// read of it where the kernel gives none, as over TCP).
    pub latency_ms: Option<Percentiles>,
    /// From the publisher's send of a video frame's last packet to a
    /// decrypting viewer's receipt of it: what the path added to the frame.
    /// (Reports from before pacing timed from the frame's first packet; with
    /// frames sent in one burst the two are the same.)
    #[serde(default)]
    pub frame_latency_ms: Option<Percentiles>,
    /// The server process in the window; `None` without `--server-pid`.
    pub server: Option<ServerReport>,
    /// The load generator's own CPU use in the window.
    pub bench: BenchCpu,
}

/// A ramp: viewers added step by step until loss or saturation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampReport {
    /// Every step in order, a retried one with its last measurement.
    pub steps: Vec<StepReport>,
    /// Largest viewer count of a step within the loss threshold.
    pub held_viewers: usize,
    /// Why the ramp stopped, in words.
    pub stop_reason: String,
    /// Loss limit a step had to stay within (`--max-loss`), in percent.
    pub max_loss_percent: f64,
    /// Server load that stops the ramp (`--max-server-load`), 1.0 = saturated.
    pub max_server_load: f64,
    /// Viewer counts whose step was over the loss limit and measured again.
    pub retried_steps: Vec<usize>,
}

/// Settings the run used, echoed for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Viewers asked for (for a ramp: the most it goes to).
    pub viewers: usize,
    /// Publishers, each of its own stream, the viewers spread over them.
    /// Reports from before the option had one.
    #[serde(default = "one")]
    pub streams: usize,
    /// Viewers received with UDP GRO, so the server's GSO sends reached them
    /// whole rather than being cut up on the server's core. Reports from
    /// before the option were measured without it.
    #[serde(default)]
    pub udp_gro: bool,
    /// How viewers reached the server: "udp" or "tcp" (ICE over TCP).
    /// Reports from before the option used UDP.
    #[serde(default = "udp")]
    pub transport: String,
    /// Video bit rate of each publisher, in bits per second.
    pub bitrate: u64,
    /// Video frames per second.
    pub fps: u32,
    /// Seconds between a publisher's keyframes.
    pub keyframe_interval_seconds: f64,
    /// Publishers paced their video at this many times its bit rate (0:
    /// each frame in one burst). Reports from before the option sent bursts.
    #[serde(default)]
    pub pacing_factor: f64,
    /// Publishers also sent an Opus audio track.
    pub audio: bool,
    /// Publishers' video codec: `VP8` or `H264`.
    pub video_codec: String,
    /// Measurement window (for a ramp: of each step), in seconds.
    pub duration_seconds: f64,
    /// Settling time between setup and measurement, in seconds.
    pub warmup_seconds: f64,
    /// Share of each stream's viewers that decrypt and check payloads, in percent.
    pub sample_percent: f64,
    /// Worker threads of the bench's async runtime (`--threads`).
    pub worker_threads: usize,
}

fn udp() -> String {
    "udp".into()
}

fn one() -> usize {
    1
}

/// The machine the bench ran on, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// CPUs of the machine (not only those this process may use).
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
}

impl HostInfo {
    /// Reads procfs; unknown fields stay empty.
    pub fn read() -> HostInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        HostInfo {
            // Not available_parallelism: that is this process's CPU mask.
            cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_default(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Everything a `fanout` run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// The machine the bench ran on.
    pub host: HostInfo,
    /// Where the publishers published (`{stream}-{0..K-1}` for K streams).
    pub whip_url: String,
    /// Where the viewers watched, named as `whip_url`.
    pub whep_url: String,
    /// What the run was asked to do.
    pub settings: Settings,
    /// How viewer setup went, over the whole run.
    pub setup: SetupReport,
    /// The window measured (for a ramp: the last step held, if any).
    pub measurement: Option<StepReport>,
    /// The ramp's steps and why it stopped; `None` for one measurement.
    pub ramp: Option<RampReport>,
    /// Things that make the figures less than they seem.
    pub notes: Vec<String>,
}

/// `1234567` as `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in the largest binary unit that keeps the number at or above 1.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[0])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A milliseconds figure with a precision that suits its size.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// `[#####-----]` for `fraction` in 0..=1.
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

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

/// UDP results as JSON values (the `udp` module's types stay serde-free).
pub fn udp_json(results: &[UdpResult], packet_size: usize) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (outcome, note) = match &r.outcome {
                Outcome::Measured => ("measured", None),
                Outcome::Unavailable(why) => ("unavailable", Some(why.clone())),
                Outcome::Failed(why) => ("failed", Some(why.clone())),
            };
            serde_json::json!({
                "mode": r.mode.name(),
                "outcome": outcome,
                "note": note,
                "packets_sent": r.packets_sent,
                "packets_received": r.packets_received,
                "seconds": r.seconds,
                "pps_sent": r.pps_sent,
                "pps_received": r.pps_received,
                "gbit_s": r.gbit_s,
            })
        })
        .collect();
    serde_json::json!({ "packet_size": packet_size, "modes": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cpu_model_comes_from_the_first_processor() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert!(HostInfo::read().cpus >= 1);
    }

    #[test]
    fn digits_are_grouped_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
    }

    #[test]
    fn bytes_take_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0.0, 4), "[----]");
        assert_eq!(bar(0.5, 4), "[##--]");
        assert_eq!(bar(2.0, 4), "[####]");
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = Histogram::new();
        assert_eq!(Percentiles::from_us(&h), None);
        for v in [1000, 2000, 3000] {
            h.record(v);
        }
        let p = Percentiles::from_us(&h).unwrap();
        assert_eq!(p.samples, 3);
        assert!((p.p50 - 2.0).abs() < 0.02, "{p:?}");
        assert!((p.max - 3.0).abs() < 1e-9, "{p:?}");
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
