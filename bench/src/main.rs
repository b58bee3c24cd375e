//! `sluice-bench`: drives a WHIP/WHEP server with real WebRTC sessions and
//! reports delivered packets, loss, latency, setup rate and the server's CPU
//! and memory; `udp` measures this host's raw UDP limits.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_bench::client::{MediaSpec, VideoCodec};
use sluice_bench::fanout::{self, FanoutConfig, RampConfig, Target, DEFAULT_WHEP, DEFAULT_WHIP};
use sluice_bench::udp::{self, UdpBenchConfig, UdpMode};
use sluice_bench::units::{parse_bitrate, parse_duration};
use sluice_bench::{churn, client, plot, repeat, report};

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load generator for WHIP/WHEP servers (sluice or any other)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One WHIP publisher (or one per stream with --streams), N WHEP viewers:
    /// delivered packets, loss, latency, setup rate, and the server's CPU and
    /// memory per viewer.
    Fanout(Box<FanoutArgs>),
    /// Raw UDP send/receive throughput of this host over loopback.
    Udp(UdpArgs),
    /// Draw the ramp of a saved `fanout --ramp --json` report as SVG.
    Plot(PlotArgs),
    /// Churn soak: many WHEP viewers created and ended against one stream;
    /// the server's memory, sessions and open files before and after.
    Churn(ChurnArgs),
}

#[derive(Args)]
struct ChurnArgs {
    /// Server base URL.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// Stream name.
    #[arg(long, default_value = "churn")]
    stream: String,
    /// Bearer token for WHIP/WHEP (one that may publish and subscribe the stream).
    #[arg(long, env = "SLUICE_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Bearer token for `/metrics`, where the server asks for the admin token.
    #[arg(long, env = "SLUICE_BENCH_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Accept self-signed TLS certificates.
    #[arg(long)]
    insecure: bool,
    /// PID of the server on this host (its RSS and open files are read from /proc).
    #[arg(long)]
    server_pid: u32,
    /// Viewers created and ended in the measured soak.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Viewers churned before the baseline is taken.
    #[arg(long, default_value_t = 1_000)]
    warmup_sessions: usize,
    /// Viewers alive at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long each viewer stays after its first media packet.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    hold: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn churn_cmd(a: &ChurnArgs) -> anyhow::Result<()> {
    raise_nofile(a.concurrency as u64 * 4 + 256)?;
    let endpoint = |kind: &str| client::Endpoint {
        url: format!("{}/{kind}/{}", a.url.trim_end_matches('/'), a.stream),
        token: a.token.clone(),
        insecure: a.insecure,
    };
    let cfg = churn::ChurnConfig {
        whip: endpoint("whip"),
        whep: endpoint("whep"),
        metrics_url: format!("{}/metrics", a.url.trim_end_matches('/')),
        metrics_token: a.metrics_token.clone(),
        server_pid: a.server_pid,
        sessions: a.sessions,
        warmup_sessions: a.warmup_sessions,
        concurrency: a.concurrency,
        hold: a.hold,
        media_timeout: Duration::from_secs(10),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(churn::run(&cfg))?;
    if a.json {
        eprint!("{}", churn::format(&report));
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", churn::format(&report));
    }
    Ok(())
}

#[derive(Args)]
struct PlotArgs {
    /// JSON report written by `fanout --ramp --json`.
    #[arg(long)]
    from: PathBuf,
    /// SVG file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    Vp8,
    H264,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

#[derive(Args)]
struct FanoutArgs {
    /// Server base URL, `{base}` in the URL templates (https or http).
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// Stream name, `{stream}` in the URL templates.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// WHIP endpoint template.
    #[arg(long, default_value = DEFAULT_WHIP)]
    whip: String,
    /// WHEP endpoint template.
    #[arg(long, default_value = DEFAULT_WHEP)]
    whep: String,
    /// Bearer token sent with every WHIP/WHEP request.
    #[arg(long, env = "SLUICE_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Accept self-signed TLS certificates.
    #[arg(long)]
    insecure: bool,
    /// Viewers (with --ramp: the most to go to).
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// Publishers, each of its own stream named `{stream}-{i}` (with 1, the
    /// stream is --stream itself), all sending the media set below; viewers
    /// are dealt to them round-robin. Many streams with few viewers each
    /// model a conference rather than a broadcast.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Receive without UDP GRO: the kernel re-segments GSO sends on the
    /// sender's core, as before.
    #[arg(long)]
    no_gro: bool,
    /// How viewers reach the server: udp, or tcp (ICE over TCP to the
    /// server's passive TCP candidate; publishers stay on UDP).
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// Video bit rate, e.g. 1M, 500k.
    #[arg(long, default_value = "1M", value_parser = parse_bitrate)]
    bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Time between video keyframes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    keyframe_interval: Duration,
    /// Video codec the synthetic payloads are shaped like.
    #[arg(long, value_enum, default_value = "vp8")]
    codec: Codec,
    /// Send video only (no Opus-like audio at 50 packets/s).
    #[arg(long)]
    no_audio: bool,
    /// Largest RTP payload in bytes (~1200-byte packets on the wire by default).
    #[arg(long, default_value_t = 1150)]
    max_payload: usize,
    /// Pace the publishers' video at this many times its bit rate, as a
    /// browser's sender paces at 2.5 times its target; 0 sends each frame's
    /// packets in one burst.
    #[arg(long, default_value_t = 2.5)]
    pacing_factor: f64,
    /// Measurement window, after setup and warm-up.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Settling time between setup and measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Percentage of viewers that decrypt and check every payload and its
    /// latency (of each stream's viewers, so at least one per stream); the
    /// rest count packets from RTP headers.
    #[arg(long, default_value_t = 1.0)]
    sample_percent: f64,
    /// Viewers set up at once.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// Longest a viewer may take from its POST to connected.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// PID of the server when it runs on this host: reports its CPU per thread,
    /// RSS, packets per CPU-second and memory per viewer.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Runtime worker threads (1 keeps the bench on one core under taskset).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keep the runtime's threads busy instead of sleeping in epoll. On
    /// loopback the sender's kernel wakes the receiver: without this the
    /// server's core pays for waking the bench on each datagram, which a
    /// remote viewer never charges it. Costs the bench its whole core.
    #[arg(long)]
    spin: bool,
    /// Local IP for media sockets (default: the one routing to the target).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Also accept this media address in the server's answers (e.g. a public
    /// IP the server announces); by default only the URL host's addresses are.
    #[arg(long = "allow-media-ip")]
    allow_media_ip: Vec<IpAddr>,
    /// Add viewers step by step until loss passes --max-loss or the server
    /// saturates; reports the largest viewer count held.
    #[arg(long)]
    ramp: bool,
    /// Viewers added per ramp step.
    #[arg(long, default_value_t = 100)]
    ramp_step: usize,
    /// Measurement window of each ramp step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    step_duration: Duration,
    /// Ramp stops when a step loses more than this percentage of packets.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Ramp stops when the server uses this share of the CPUs it may use.
    #[arg(long, default_value_t = 0.95)]
    max_server_load: f64,
    /// Times a ramp step over --max-loss is measured again before the ramp stops.
    #[arg(long, default_value_t = 1)]
    step_retries: u32,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the ramp as an SVG plot (viewers vs CPU, loss, latency); needs --ramp.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run the same measurement this many times (stream `{stream}-run{i}`
    /// each) and print min / median / max of each figure.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Args)]
struct UdpArgs {
    /// UDP payload bytes per datagram.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// How long each mode sends.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    duration: Duration,
    /// Datagrams per sendmmsg call and per io_uring submission.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Segments per GSO send.
    #[arg(long, default_value_t = 64)]
    gso_segments: usize,
    /// Modes to measure (send, sendmmsg, gso, io_uring), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "send,sendmmsg,gso,io_uring"
    )]
    modes: Vec<UdpMode>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Raises the soft open-files limit to the hard one: every viewer holds a
/// socket, and 1,000 of them pass common soft limits.
fn raise_nofile(needed: u64) -> anyhow::Result<()> {
    let mut lim = nofile::get().context("reading RLIMIT_NOFILE")?;
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        bail!(
            "{needed} file descriptors needed but the hard limit is {}: raise it (ulimit -Hn, or LimitNOFILE=) or use fewer viewers",
            lim.rlim_max
        );
    }
    lim.rlim_cur = lim.rlim_max;
    nofile::set(&lim).context("raising RLIMIT_NOFILE")
}

/// `getrlimit`/`setrlimit` of `RLIMIT_NOFILE`, the binary's only `unsafe` code.
#[allow(unsafe_code)]
mod nofile {
    use std::io;

    /// The soft and hard open-files limits.
    pub(super) fn get() -> io::Result<libc::rlimit> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct through a valid pointer
        // to a local and keeps no reference to it.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lim)
    }

    /// Sets the open-files limits to `lim`.
    pub(super) fn set(lim: &libc::rlimit) -> io::Result<()> {
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer
        // to a live borrow and keeps no reference to it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn fanout_config(a: &FanoutArgs) -> FanoutConfig {
    FanoutConfig {
        target: Target {
            base: a.url.clone(),
            stream: a.stream.clone(),
            whip_template: a.whip.clone(),
            whep_template: a.whep.clone(),
            token: a.token.clone(),
            insecure: a.insecure,
            bind_ip: a.bind,
            extra_media_ips: a.allow_media_ip.clone(),
        },
        viewers: a.viewers,
        streams: a.streams,
        udp_gro: !a.no_gro,
        viewer_transport: match a.transport {
            TransportArg::Udp => client::Transport::Udp,
            TransportArg::Tcp => client::Transport::Tcp,
        },
        media: MediaSpec {
            audio: !a.no_audio,
            video: true,
            video_codec: match a.codec {
                Codec::Vp8 => VideoCodec::Vp8,
                Codec::H264 => VideoCodec::H264,
            },
            bitrate: a.bitrate,
            fps: a.fps,
            keyframe_interval: a.keyframe_interval,
            keyframe_phase: Duration::ZERO,
            phase: 0.0,
            max_payload: a.max_payload,
            pacing_factor: a.pacing_factor,
        },
        duration: a.duration,
        warmup: a.warmup,
        sample_percent: a.sample_percent,
        setup_concurrency: a.setup_concurrency,
        setup_timeout: a.setup_timeout,
        server_pid: a.server_pid,
        ramp: a.ramp.then_some(RampConfig {
            step: a.ramp_step,
            step_duration: a.step_duration,
            max_loss_percent: a.max_loss,
            max_server_load: a.max_server_load,
            retries: a.step_retries,
        }),
        worker_threads: a.threads,
        spin: a.spin,
        progress: true,
    }
}

fn fanout(a: &FanoutArgs) -> anyhow::Result<()> {
    if a.plot.is_some() && !a.ramp {
        bail!("--plot draws a ramp: add --ramp");
    }
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    // Each viewer and publisher: one UDP socket, plus HTTP connections and
    // the runtime's own.
    raise_nofile(
        a.viewers as u64 + a.streams.min(a.viewers) as u64 + a.setup_concurrency as u64 + 128,
    )?;
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if a.repeat > 1 && a.ramp {
        bail!("--repeat measures one window several times; it does not take --ramp");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .thread_name("bench-worker")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let on_signal = cancel.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: finishing the current phase and closing sessions");
                on_signal.store(true, Ordering::Relaxed);
            }
        });
    }
    if a.repeat > 1 {
        let mut runs = Vec::with_capacity(a.repeat);
        for i in 1..=a.repeat {
            let mut cfg = fanout_config(a);
            cfg.target.stream = format!("{}-run{i}", a.stream);
            eprintln!("\n--- run {i} of {} ---", a.repeat);
            let report = rt.block_on(fanout::run(&cfg, cancel.clone()))?;
            eprint!("{}", report::format_fanout(&report));
            runs.push(report);
            if cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        rt.shutdown_timeout(Duration::from_millis(100));
        let summary = repeat::summarize(runs);
        if a.json {
            eprint!("{}", repeat::format_repeat(&summary));
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{}", repeat::format_repeat(&summary));
        }
        if cancel.load(Ordering::Relaxed) {
            std::process::exit(130);
        }
        return Ok(());
    }
    let cfg = fanout_config(a);
    let report = rt.block_on(fanout::run(&cfg, cancel.clone()))?;
    // Sessions are closed; do not wait for the signal task.
    rt.shutdown_timeout(Duration::from_millis(100));
    if let (Some(path), Some(ramp)) = (&a.plot, &report.ramp) {
        plot::write_ramp_svg(path, ramp, &plot_title(&report))?;
        eprintln!("ramp plot written to {}", path.display());
    }
    if a.json {
        // Machines read stdout; the table still goes to whoever watches stderr.
        eprint!("{}", report::format_fanout(&report));
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::format_fanout(&report));
    }
    if cancel.load(Ordering::Relaxed) {
        std::process::exit(130);
    }
    Ok(())
}

fn plot_title(report: &report::FanoutReport) -> String {
    format!(
        "sluice-bench ramp: {}, {:.1} Mbit/s {}",
        report.whep_url,
        report.settings.bitrate as f64 / 1e6,
        report.settings.video_codec
    )
}

fn plot_cmd(a: &PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.from)
        .with_context(|| format!("reading {}", a.from.display()))?;
    let report: report::FanoutReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sluice-bench fanout JSON report",
            a.from.display()
        )
    })?;
    let Some(ramp) = &report.ramp else {
        bail!(
            "{} holds no ramp: run fanout with --ramp --json",
            a.from.display()
        );
    };
    plot::write_ramp_svg(&a.out, ramp, &plot_title(&report))?;
    eprintln!("ramp plot written to {}", a.out.display());
    Ok(())
}

fn udp_cmd(a: &UdpArgs) -> anyhow::Result<()> {
    let cfg = UdpBenchConfig {
        packet_size: a.size,
        duration: a.duration,
        batch: a.batch,
        gso_segments: a.gso_segments,
        modes: a.modes.clone(),
    };
    let results = udp::run(&cfg).context("UDP benchmark")?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::udp_json(&results, a.size))?
        );
    } else {
        println!(
            "UDP over loopback, {}-byte datagrams, {:.1} s per mode, one sending thread",
            a.size,
            a.duration.as_secs_f64()
        );
        print!("{}", udp::format_table(&results));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Fanout(a) => fanout(a),
        Cmd::Udp(a) => udp_cmd(a),
        Cmd::Plot(a) => plot_cmd(a),
        Cmd::Churn(a) => churn_cmd(a),
    }
}
