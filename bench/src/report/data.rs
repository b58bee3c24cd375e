//! The report as serialisable data: a fan-out run's settings, host, setup,
//! measurement windows and ramp ([`FanoutReport`] and what it holds). Field
//! names are the JSON that `--json` prints and `plot --from` reads back.

use serde::{Deserialize, Serialize};

use crate::stats::Histogram;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_comes_from_the_first_processor() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert!(HostInfo::read().cpus >= 1);
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
}
