//! The `sluice` daemon and its helper commands.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluice::app::{control_cpus, plan_cores};
use sluice::auth::{unix_now, Claims, TokenKey};
use sluice::config::Config;
use sluice::Server;

/// mimalloc, unless built with `--features system-alloc` (for heap profilers
/// such as heaptrack that follow the C library's malloc).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A WebRTC SFU built as a forwarding appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Mint an HS256 token for WHIP/WHEP or rooms.
    Token(TokenArgs),
    /// Check this host's settings for running sluice and say what to change
    /// (with a cluster configured, also that Redis answers and the advertised address).
    Doctor(ServeArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration as TOML.
    Print(ServeArgs),
}

/// Every option may also come from `SLUICE_<NAME>` or the TOML file.
#[derive(Args, Default, Clone)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// HTTPS listen address.
    #[arg(long, env = "SLUICE_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain (with --key); self-signed when absent.
    #[arg(long, env = "SLUICE_CERT")]
    cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "SLUICE_KEY")]
    key: Option<PathBuf>,
    /// Dataplane shards (0 = one per allowed CPU).
    #[arg(long, env = "SLUICE_SHARDS")]
    shards: Option<usize>,
    /// CPUs to pin shards to, e.g. 2,3.
    #[arg(long, env = "SLUICE_CORES", value_delimiter = ',')]
    cores: Option<Vec<usize>>,
    /// UDP port of shard 0 (shard i uses port+i).
    #[arg(long, env = "SLUICE_MEDIA_PORT")]
    media_port: Option<u16>,
    /// ICE-TCP port of shard 0 (shard i uses port+i); default: media_port; 0 = off.
    #[arg(long, env = "SLUICE_MEDIA_TCP_PORT")]
    media_tcp_port: Option<u16>,
    /// Address media sockets bind to.
    #[arg(long, env = "SLUICE_MEDIA_BIND")]
    media_bind: Option<IpAddr>,
    /// Addresses announced in ICE candidates, primary first, e.g. 203.0.113.7,2001:db8::7.
    #[arg(long, env = "SLUICE_ANNOUNCE_IP", value_delimiter = ',', value_parser = sluice::config::parse_ip)]
    announce_ip: Option<Vec<IpAddr>>,
    /// io backend: auto, uring, mmsg, std, xdp.
    #[arg(long, env = "SLUICE_IO")]
    io: Option<String>,
    /// With io xdp: the interface whose queues the shards bind.
    #[arg(long, env = "SLUICE_XDP_INTERFACE")]
    xdp_interface: Option<String>,
    /// With io xdp: shard i binds queue xdp_queue_base + i.
    #[arg(long, env = "SLUICE_XDP_QUEUE_BASE")]
    xdp_queue_base: Option<u32>,
    /// With io xdp: auto, drv (native) or skb (generic).
    #[arg(long, env = "SLUICE_XDP_ATTACH")]
    xdp_attach: Option<String>,
    /// With io xdp: auto, copy or zerocopy.
    #[arg(long, env = "SLUICE_XDP_BIND")]
    xdp_bind: Option<String>,
    /// HS256 token secret (unset = open dev mode).
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Bearer token for /admin.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Maximum concurrent sessions (0 = unlimited).
    #[arg(long, env = "SLUICE_MAX_SESSIONS")]
    max_sessions: Option<usize>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "SLUICE_MAX_BODY")]
    max_body: Option<usize>,
    /// Seconds of silence before a session is removed.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<f64>,
    /// Seconds a session may take to connect.
    #[arg(long, env = "SLUICE_SETUP_TIMEOUT_SECS")]
    setup_timeout_secs: Option<f64>,
    /// Minimum milliseconds between keyframe requests to a publisher.
    #[arg(long, env = "SLUICE_KEYFRAME_INTERVAL_MS")]
    keyframe_interval_ms: Option<u64>,
    /// Longest milliseconds a video frame's packets wait for its last one (0 = off).
    #[arg(long, env = "SLUICE_FRAME_HOLD_MS")]
    frame_hold_ms: Option<u64>,
    /// Send to viewers that estimate no bandwidth through sluice's own RTP/SRTP path (true/false).
    #[arg(long, env = "SLUICE_DIRECT_SEND")]
    direct_send: Option<bool>,
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT")]
    log_format: Option<String>,
    /// Seconds to wait for sessions on drain (SIGTERM) before exiting.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT_SECS")]
    drain_timeout_secs: Option<f64>,
    /// Initial TWCC estimate for viewers in bits/s (0 = no estimation or pacing).
    #[arg(long, env = "SLUICE_VIEWER_BWE_BPS")]
    viewer_bwe_bps: Option<u64>,
    /// Per-session and per-track series in /metrics (true/false).
    #[arg(long, env = "SLUICE_METRICS_SESSIONS")]
    metrics_sessions: Option<bool>,
    /// Concurrent HTTPS connections from one source address (0 = no limit).
    #[arg(long, env = "SLUICE_MAX_CONNS_PER_IP")]
    max_conns_per_ip: Option<usize>,
    /// Concurrent HTTPS connections in total (0 = no limit).
    #[arg(long, env = "SLUICE_MAX_CONNS")]
    max_conns: Option<usize>,
    /// Open ICE-TCP connections per shard.
    #[arg(long, env = "SLUICE_TCP_MAX_CONNS_PER_SHARD")]
    tcp_max_conns_per_shard: Option<usize>,
    /// Open ICE-TCP connections per shard from one source address (0 = no limit).
    #[arg(long, env = "SLUICE_TCP_MAX_CONNS_PER_IP")]
    tcp_max_conns_per_ip: Option<usize>,
    /// Bytes queued on all ICE-TCP connections of a shard together (0 = no limit).
    #[arg(long, env = "SLUICE_TCP_QUEUE_BUDGET_BYTES")]
    tcp_queue_budget_bytes: Option<usize>,
    /// WHIP/WHEP POSTs, ICE restarts and room joins per second per source address (0 = no limit).
    #[arg(long, env = "SLUICE_SIGNAL_RATE")]
    signal_rate: Option<f64>,
    /// Burst of WHIP/WHEP POSTs, ICE restarts and room joins per source address.
    #[arg(long, env = "SLUICE_SIGNAL_BURST")]
    signal_burst: Option<f64>,
    /// Sessions per source address (0 = no limit).
    #[arg(long, env = "SLUICE_MAX_SESSIONS_PER_IP")]
    max_sessions_per_ip: Option<usize>,
    /// Participants per room (0 = no limit).
    #[arg(long, env = "SLUICE_MAX_ROOM_PEERS")]
    max_room_peers: Option<usize>,
    /// Rooms (0 = no limit).
    #[arg(long, env = "SLUICE_MAX_ROOMS")]
    max_rooms: Option<usize>,
    /// Seconds between pings to room participants.
    #[arg(long, env = "SLUICE_WS_PING_SECS")]
    ws_ping_secs: Option<f64>,
    /// Seconds of silence after which a room participant is removed.
    #[arg(long, env = "SLUICE_WS_TIMEOUT_SECS")]
    ws_timeout_secs: Option<f64>,
    /// Largest room message in bytes.
    #[arg(long, env = "SLUICE_WS_MAX_MESSAGE")]
    ws_max_message: Option<usize>,
    /// Room messages per second per participant.
    #[arg(long, env = "SLUICE_WS_RATE")]
    ws_rate: Option<f64>,
    /// Messages queued for a room participant before it is disconnected.
    #[arg(long, env = "SLUICE_WS_QUEUE")]
    ws_queue: Option<usize>,
    /// Redis URL of the cluster registry (redis:// or rediss://); unset = single node.
    #[arg(long, env = "SLUICE_CLUSTER_REDIS_URL", hide_env_values = true)]
    cluster_redis_url: Option<String>,
    /// This node's id in the cluster (default: host name).
    #[arg(long, env = "SLUICE_CLUSTER_NODE_ID")]
    cluster_node_id: Option<String>,
    /// HTTPS base URL other nodes reach this node on.
    #[arg(long, env = "SLUICE_CLUSTER_ADVERTISE")]
    cluster_advertise: Option<String>,
    /// Cluster secret for node-to-node calls (required with a Redis URL).
    #[arg(long, env = "SLUICE_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Lease of node records and claims in ms.
    #[arg(long, env = "SLUICE_CLUSTER_LEASE_MS")]
    cluster_lease_ms: Option<u64>,
    /// Redirect WHEP to less loaded nodes (true/false).
    #[arg(long, env = "SLUICE_CLUSTER_REDIRECT")]
    cluster_redirect: Option<bool>,
    /// Node id to pull remote streams through (empty = from each origin).
    #[arg(long, env = "SLUICE_CLUSTER_PARENT")]
    cluster_parent: Option<String>,
}

impl ServeArgs {
    /// Defaults, then the file, then env/flags (clap has merged those two).
    fn resolve(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::from_toml_file(p)?,
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $(if let Some(v) = self.$f.clone() { c.$f = v; })* };
        }
        over!(
            listen,
            shards,
            cores,
            media_port,
            announce_ip,
            io,
            xdp_interface,
            xdp_queue_base,
            xdp_attach,
            xdp_bind,
            max_sessions,
            max_body,
            idle_timeout_secs,
            setup_timeout_secs,
            keyframe_interval_ms,
            frame_hold_ms,
            direct_send,
            log_format,
            drain_timeout_secs,
            viewer_bwe_bps,
            metrics_sessions,
            max_conns_per_ip,
            max_conns,
            tcp_max_conns_per_shard,
            tcp_max_conns_per_ip,
            tcp_queue_budget_bytes,
            signal_rate,
            signal_burst,
            max_sessions_per_ip,
            max_room_peers,
            max_rooms,
            ws_ping_secs,
            ws_timeout_secs,
            ws_max_message,
            ws_rate,
            ws_queue
        );
        macro_rules! over_opt {
            ($($f:ident),*) => { $(if let Some(v) = self.$f.clone() { c.$f = Some(v); })* };
        }
        over_opt!(cert, key, media_tcp_port, media_bind, secret, admin_token);
        let k = &mut c.cluster;
        macro_rules! over_cluster {
            ($($f:ident => $k:ident),*) => { $(if let Some(v) = self.$f.clone() { k.$k = v; })* };
        }
        over_cluster!(cluster_node_id => node_id, cluster_advertise => advertise,
            cluster_lease_ms => lease_ms, cluster_redirect => redirect,
            cluster_parent => parent);
        if let Some(v) = self.cluster_redis_url.clone() {
            k.redis_url = Some(v);
        }
        if let Some(v) = self.cluster_secret.clone() {
            k.secret = Some(v);
        }
        if c.cluster.redis_url.is_some() && c.cluster.advertise.is_empty() && c.listen.port() != 0 {
            c.cluster.advertise = c.cluster_advertise();
        }
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args)]
struct TokenArgs {
    /// The server's secret.
    #[arg(long, env = "SLUICE_SECRET", hide_env_values = true)]
    secret: String,
    /// Stream the token grants for WHIP/WHEP ("*" = any stream).
    #[arg(long)]
    stream: Option<String>,
    /// Room the token grants for joining ("*" = any room).
    #[arg(long)]
    room: Option<String>,
    /// Grant publishing.
    #[arg(long)]
    publish: bool,
    /// Grant subscribing.
    #[arg(long)]
    subscribe: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Subject (user id) recorded in the token.
    #[arg(long)]
    sub: Option<String>,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Serve(ServeArgs::default())) {
        Cmd::Serve(args) => serve(args.resolve()?),
        Cmd::Config {
            what: ConfigCmd::Print(args),
        } => {
            print!("{}", args.resolve()?.to_toml());
            Ok(())
        }
        Cmd::Doctor(args) => std::process::exit(sluice::doctor::run_with(&args.resolve()?)),
        Cmd::Token(t) => {
            if !t.publish && !t.subscribe {
                anyhow::bail!("grant at least one of --publish, --subscribe");
            }
            // A token without a scope grants nothing; say so rather than mint a useless one.
            if t.stream.is_none() && t.room.is_none() {
                anyhow::bail!(
                    "name what the token is for: --stream NAME and/or --room NAME (\"*\" = any)"
                );
            }
            let claims = Claims {
                exp: unix_now() + t.ttl,
                stream: t.stream,
                room: t.room,
                publish: t.publish,
                subscribe: t.subscribe,
                sub: t.sub,
            };
            println!("{}", TokenKey::new(t.secret.as_bytes()).mint(&claims));
            Ok(())
        }
    }
}

/// Nice value of the control plane's threads when they share the shards' cores.
const CONTROL_NICE: i32 = 10;

fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(&config.log_format);
    // Huge pages cost each viewer memory and each setup time, for nothing
    // measurable in forwarding; `MIMALLOC_ALLOW_THP=1` keeps them.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        if let Err(e) = sluice_dataplane::disable_transparent_huge_pages() {
            tracing::debug!("transparent huge pages stay on: {e}");
        }
    }
    let (_, shard_cores) = plan_cores(&config);
    let spare = control_cpus(&shard_cores);
    if !spare.is_empty() {
        // Threads started from here on (tokio's) inherit this mask; shards pin themselves.
        if let Err(e) = sluice_dataplane::set_thread_cpus(&spare) {
            tracing::warn!("could not keep the control plane off shard cores: {e}");
        }
    }
    // With no CPU to itself the control plane shares the shards' cores: its
    // threads yield to them (nice 10), so a join storm's HTTP, TLS and SDP
    // work does not hold back the packets of those already watching. The
    // shards are started from this (main) thread and keep its priority.
    let yield_to_shards = spare.is_empty() && !shard_cores.is_empty();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spare.len().clamp(1, 4))
        .thread_name("control")
        .on_thread_start(move || {
            if yield_to_shards {
                if let Err(e) = sluice_dataplane::set_thread_nice(CONTROL_NICE) {
                    tracing::debug!("control thread keeps its priority: {e}");
                }
            }
        })
        .enable_all()
        .build()?;
    rt.block_on(run(config))
}

/// What `serve` prints once it listens: the URL, the certificate's fingerprint
/// and each shard's media addresses (UDP, and ICE-TCP or "off"), core and io backend.
fn banner(server: &Server) -> String {
    let mut b = format!(
        "sluice listening on {}\n  TLS certificate SHA-256 fingerprint: {}\n",
        server.url(),
        server.app.tls_fingerprint
    );
    let list = |addrs: &[SocketAddr]| {
        let v: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        v.join(",")
    };
    for s in &server.app.dataplane.shards {
        let tcp = if s.tcp_addrs.is_empty() {
            "off".to_string()
        } else {
            list(&s.tcp_addrs)
        };
        b += &format!(
            "  shard {} media udp {} tcp {tcp} core {} io {}\n",
            s.id,
            list(&s.addrs),
            s.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            s.io
        );
    }
    b += &format!("  web client: {}/\n", server.url());
    b
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.secret.is_none() {
        tracing::warn!("no secret configured: open dev mode, anyone may publish and view");
    }
    let drain_timeout = config.drain_timeout();
    // Take over SIGTERM and SIGINT before anyone can be told we serve: a
    // supervisor (or a test) that stops us right after READY=1 or the banner
    // must get a drain, not the default action's abrupt exit.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut server = Server::start(config, true).await?;
    // The banner is a courtesy: a closed stdout (a supervisor that read the
    // first line and went away) must not take the server down.
    let _ = std::io::stdout().write_all(banner(&server).as_bytes());
    sluice::notify::notify_or_log(&format!(
        "READY=1\nSTATUS=serving on {}, {} shard(s)\nMAINPID={}",
        server.url(),
        server.app.dataplane.shards.len(),
        std::process::id()
    ));
    let admin_drain = server.app.clone();
    tokio::select! {
        r = server.wait() => { r?; }
        _ = term.recv() => {
            tracing::info!("SIGTERM: draining (no new sessions) for up to {:?}", drain_timeout);
            sluice::notify::notify_or_log("STOPPING=1\nSTATUS=draining");
            tokio::select! {
                _ = server.drain(drain_timeout) => {}
                _ = int.recv() => tracing::info!("SIGINT: exiting now"),
            }
        }
        _ = admin_drain.drain_requested.notified() => {
            tracing::info!("admin drain: no new sessions; exiting when they end or after {:?}", drain_timeout);
            sluice::notify::notify_or_log("STOPPING=1\nSTATUS=draining");
            tokio::select! {
                _ = server.drain(drain_timeout) => {}
                _ = int.recv() => tracing::info!("SIGINT: exiting now"),
            }
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: draining; press Ctrl-C again to exit at once");
            sluice::notify::notify_or_log("STOPPING=1\nSTATUS=draining");
            tokio::select! {
                _ = server.drain(drain_timeout) => {}
                _ = int.recv() => tracing::info!("second SIGINT: exiting now"),
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .ok();
    Ok(())
}
