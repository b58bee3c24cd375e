//! The effective configuration: embedded defaults, overridden by a TOML file,
//! then `SLUICE_*` environment variables, then command-line flags.

mod addresses;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use addresses::parse_ip;

/// Everything `sluice serve` can be told. Field names are the TOML keys; the
/// flag is the name with dashes, the variable `SLUICE_` + upper-case name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTPS listen address (WHIP/WHEP, WebSocket, admin, metrics, web client).
    pub listen: SocketAddr,
    /// PEM certificate chain; a self-signed one is made at start when unset.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Dataplane shards; 0 = one per CPU this process may run on.
    pub shards: usize,
    /// CPUs to pin shards to, in order; empty = the process's allowed CPUs.
    pub cores: Vec<usize>,
    /// UDP port of shard 0; shard i uses port + i. 0 = ephemeral ports.
    pub media_port: u16,
    /// ICE-TCP port of shard 0; shard i listens on port + i. Unset = the same
    /// number as `media_port` (ephemeral ports when that is 0); 0 = no ICE-TCP.
    pub media_tcp_port: Option<u16>,
    /// Address the media sockets bind to; unset = the announce address when it
    /// is the only one and loopback, else `::` (dual-stack) when an announced
    /// address is IPv6, else 0.0.0.0.
    pub media_bind: Option<IpAddr>,
    /// Addresses put in ICE candidates, the primary one first (it also names
    /// this node in a cluster); one address or a list.
    #[serde(with = "addresses::one_or_many")]
    pub announce_ip: Vec<IpAddr>,
    /// io backend: auto, uring, mmsg, std, xdp.
    pub io: String,
    /// With `io = xdp`: the interface whose queues the shards bind.
    pub xdp_interface: String,
    /// With `io = xdp`: shard i binds queue `xdp_queue_base + i`.
    pub xdp_queue_base: u32,
    /// With `io = xdp`: where the XDP program runs: auto (native, else
    /// generic), drv (native), skb (generic).
    pub xdp_attach: String,
    /// With `io = xdp`: auto (zero-copy where the driver can), copy, zerocopy.
    pub xdp_bind: String,
    /// HS256 secret for tokens; unset = open dev mode.
    pub secret: Option<String>,
    /// Token for /admin; unset = admin API disabled unless in open dev mode.
    pub admin_token: Option<String>,
    /// Maximum concurrent sessions (WHIP + WHEP + room transports); 0 = no limit.
    pub max_sessions: usize,
    /// Largest accepted request body, bytes.
    pub max_body: usize,
    /// Seconds of silence after which a session is removed.
    pub idle_timeout_secs: f64,
    /// Seconds a session may take to connect.
    pub setup_timeout_secs: f64,
    /// Minimum milliseconds between keyframe requests to one publisher.
    pub keyframe_interval_ms: u64,
    /// Longest a video frame's first packets wait for its last one, so the
    /// frame goes to each viewer in one batch; 0 forwards packet by packet.
    pub frame_hold_ms: u64,
    /// Send media to viewers that estimate no bandwidth through sluice's own
    /// RTP/SRTP path instead of str0m's (about three times cheaper per packet).
    pub direct_send: bool,
    /// Log format: text or json.
    pub log_format: String,
    /// Seconds to wait for sessions to end on drain before exiting.
    pub drain_timeout_secs: f64,
    /// Initial bandwidth estimate (bits/s) for viewers of simulcast streams, whose layer
    /// follows TWCC estimation; 0 turns estimation (and its pacing) off.
    pub viewer_bwe_bps: u64,
    /// Per-session and per-track series in /metrics (one set per session and
    /// track; turn off on boxes with many thousands of sessions).
    pub metrics_sessions: bool,
    /// Concurrent HTTPS connections from one source address; 0 = no limit.
    pub max_conns_per_ip: usize,
    /// Concurrent HTTPS connections in total; 0 = no limit.
    pub max_conns: usize,
    /// Open ICE-TCP connections per shard; over it a new one is closed at once.
    pub tcp_max_conns_per_shard: usize,
    /// Open ICE-TCP connections per shard from one source address; 0 = no limit.
    pub tcp_max_conns_per_ip: usize,
    /// Bytes waiting to be written on all of a shard's ICE-TCP connections
    /// together; over it new frames are dropped, and past half of it so are
    /// frames for a congested connection. 0 = no limit.
    pub tcp_queue_budget_bytes: usize,
    /// WHIP/WHEP POSTs, ICE restarts (`PATCH`) and room joins per second from
    /// one source address (token bucket refill); 0 = no limit.
    pub signal_rate: f64,
    /// Burst of WHIP/WHEP POSTs, ICE restarts and room joins one source address may make at once.
    pub signal_burst: f64,
    /// Sessions (WHIP, WHEP) placed for one source address; 0 = no limit.
    pub max_sessions_per_ip: usize,
    /// Participants in one room; 0 = no limit.
    pub max_room_peers: usize,
    /// Rooms with participants; 0 = no limit.
    pub max_rooms: usize,
    /// Seconds between the server's pings to a room participant.
    pub ws_ping_secs: f64,
    /// Seconds a room participant may stay silent (no pong, no message) before it is removed.
    pub ws_timeout_secs: f64,
    /// Largest room message (bytes) a participant may send.
    pub ws_max_message: usize,
    /// Room messages per second one participant may send (burst: twice as many).
    pub ws_rate: f64,
    /// Messages waiting for one room participant to read; a peer that lets more
    /// pile up is disconnected.
    pub ws_queue: usize,
    /// The `[cluster]` table: nodes sharing a Redis registry. Last, as TOML puts tables
    /// after plain keys.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: flags `--cluster-<key>`, variables `SLUICE_CLUSTER_<KEY>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis URL of the registry (`redis://[:password@]host:port/db` or `rediss://…`);
    /// unset = a single node with no registry.
    pub redis_url: Option<String>,
    /// This node's id in the registry: 1-64 of A-Z a-z 0-9 - _ . (default: host name).
    pub node_id: String,
    /// HTTPS base URL other nodes reach this node on, e.g. `https://10.0.0.2:8443`;
    /// empty = `https://{first announce_ip}:{listen port}`.
    pub advertise: String,
    /// Shared secret of node-to-node calls; required with `redis_url`.
    pub secret: Option<String>,
    /// Lease of node records and claims, ms; a dead node's claims lapse after it.
    pub lease_ms: u64,
    /// Answer WHEP with 307 to a less loaded node.
    pub redirect: bool,
    /// Node id this node pulls remote streams through (a tier of a tree);
    /// empty = straight from each stream's origin.
    pub parent: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: host_name(),
            advertise: String::new(),
            secret: None,
            lease_ms: 5000,
            redirect: false,
            parent: String::new(),
        }
    }
}

/// The host's name, made a valid node id; `sluice` when unreadable.
fn host_name() -> String {
    let name: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() {
        "sluice".into()
    } else {
        name
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert: None,
            key: None,
            shards: 0,
            cores: Vec::new(),
            media_port: 40000,
            media_tcp_port: None,
            media_bind: None,
            announce_ip: vec![IpAddr::from([127, 0, 0, 1])],
            io: "auto".into(),
            xdp_interface: String::new(),
            xdp_queue_base: 0,
            xdp_attach: "auto".into(),
            xdp_bind: "auto".into(),
            secret: None,
            admin_token: None,
            max_sessions: 0,
            max_body: 64 * 1024,
            idle_timeout_secs: 30.0,
            setup_timeout_secs: 30.0,
            keyframe_interval_ms: 500,
            frame_hold_ms: 0,
            direct_send: true,
            log_format: "text".into(),
            drain_timeout_secs: 30.0,
            viewer_bwe_bps: 2_500_000,
            metrics_sessions: true,
            max_conns_per_ip: 64,
            max_conns: 4096,
            tcp_max_conns_per_shard: 4096,
            tcp_max_conns_per_ip: 256,
            tcp_queue_budget_bytes: 64 << 20,
            signal_rate: 20.0,
            signal_burst: 40.0,
            max_sessions_per_ip: 200,
            max_room_peers: 50,
            max_rooms: 1000,
            ws_ping_secs: 10.0,
            ws_timeout_secs: 30.0,
            ws_max_message: 64 * 1024,
            ws_rate: 5000.0,
            ws_queue: 256,
            cluster: ClusterConfig::default(),
        }
    }
}

/// A configuration value that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as in the TOML file.
        key: &'static str,
        /// What is wrong and what to use.
        message: String,
    },
}

impl Config {
    /// Parse a TOML file; unknown keys are errors.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_string(),
        })
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if sluice_dataplane::IoKind::parse(&self.io).is_none() {
            return Err(ConfigError::Invalid {
                key: "io",
                message: format!("{:?} is not one of auto, uring, mmsg, std, xdp", self.io),
            });
        }
        if sluice_dataplane::XdpAttach::parse(&self.xdp_attach).is_none() {
            return Err(ConfigError::Invalid {
                key: "xdp_attach",
                message: format!("{:?} is not one of auto, drv, skb", self.xdp_attach),
            });
        }
        if sluice_dataplane::XdpBind::parse(&self.xdp_bind).is_none() {
            return Err(ConfigError::Invalid {
                key: "xdp_bind",
                message: format!("{:?} is not one of auto, copy, zerocopy", self.xdp_bind),
            });
        }
        if self.io == "xdp" && self.xdp_interface.is_empty() {
            return Err(ConfigError::Invalid {
                key: "xdp_interface",
                message: "io = xdp needs the interface to bind (xdp_interface)".into(),
            });
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log_format",
                message: format!("{:?} is not one of text, json", self.log_format),
            });
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid {
                key: "cert",
                message: "cert and key must be given together".into(),
            });
        }
        if self.shards > sluice_dataplane::MAX_SHARDS {
            return Err(ConfigError::Invalid {
                key: "shards",
                message: format!("at most {}", sluice_dataplane::MAX_SHARDS),
            });
        }
        for (key, v) in [
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("setup_timeout_secs", self.setup_timeout_secs),
            ("drain_timeout_secs", self.drain_timeout_secs),
            ("ws_ping_secs", self.ws_ping_secs),
            ("ws_timeout_secs", self.ws_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{v} is not a positive number of seconds"),
                });
            }
        }
        if self.frame_hold_ms > 100 {
            return Err(ConfigError::Invalid {
                key: "frame_hold_ms",
                message: format!(
                    "{} ms is more than a frame interval; use 0 to 100",
                    self.frame_hold_ms
                ),
            });
        }
        for (key, v) in [
            ("signal_rate", self.signal_rate),
            ("signal_burst", self.signal_burst),
            ("ws_rate", self.ws_rate),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{v} is not a rate of 0 (no limit) or more"),
                });
            }
        }
        if self.ws_timeout_secs <= self.ws_ping_secs {
            return Err(ConfigError::Invalid {
                key: "ws_timeout_secs",
                message: "must be longer than ws_ping_secs".into(),
            });
        }
        if self.ws_max_message < 1024 || self.ws_queue < 16 {
            return Err(ConfigError::Invalid {
                key: "ws_max_message",
                message: "ws_max_message must be at least 1024 bytes and ws_queue at least 16"
                    .into(),
            });
        }
        addresses::check_announce(&self.announce_ip).map_err(|message| ConfigError::Invalid {
            key: "announce_ip",
            message,
        })?;
        if let Some(bind) = self.media_bind {
            addresses::check_bind(bind, &self.announce_ip).map_err(|message| {
                ConfigError::Invalid {
                    key: "media_bind",
                    message,
                }
            })?;
        }
        if self.tcp_max_conns_per_shard == 0 {
            return Err(ConfigError::Invalid {
                key: "tcp_max_conns_per_shard",
                message: "must be at least 1; to turn ICE-TCP off set media_tcp_port = 0".into(),
            });
        }
        let one_queue = sluice_dataplane::TcpLimits::default().queue_hard;
        if self.tcp_queue_budget_bytes != 0 && self.tcp_queue_budget_bytes < 2 * one_queue {
            return Err(ConfigError::Invalid {
                key: "tcp_queue_budget_bytes",
                message: format!(
                    "use 0 (no limit) or at least {} bytes: twice what one connection may queue",
                    2 * one_queue
                ),
            });
        }
        if self.max_body < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body",
                message: "must be at least 1024 bytes".into(),
            });
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let Some(url) = &c.redis_url else {
            return Ok(());
        };
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return invalid(
                "cluster.redis_url",
                "must start with redis:// or rediss:// (TLS)",
            );
        }
        if c.secret.as_deref().unwrap_or("").len() < 16 {
            return invalid(
                "cluster.secret",
                "required with cluster.redis_url: set the same secret of at least 16 characters on every node",
            );
        }
        let id_ok = !c.node_id.is_empty()
            && c.node_id.len() <= 64
            && c.node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return invalid(
                "cluster.node_id",
                "must be 1-64 characters of A-Z a-z 0-9 - _ .",
            );
        }
        if !(1000..=600_000).contains(&c.lease_ms) {
            return invalid("cluster.lease_ms", "use 1000 to 600000 ms");
        }
        let bad_url = !c.advertise.starts_with("https://") || c.advertise.ends_with('/');
        if !c.advertise.is_empty() && bad_url {
            return invalid(
                "cluster.advertise",
                "must be an https:// base URL without a trailing slash, e.g. https://10.0.0.2:8443",
            );
        }
        Ok(())
    }

    /// The HTTPS base URL other nodes reach this one on: `cluster.advertise`, or
    /// the announce address with the listen port.
    pub fn cluster_advertise(&self) -> String {
        if !self.cluster.advertise.is_empty() {
            return self.cluster.advertise.clone();
        }
        let addr = std::net::SocketAddr::new(self.primary_announce_ip(), self.listen.port());
        format!("https://{addr}")
    }

    /// The first announced address: the one public URLs and the cluster name.
    pub fn primary_announce_ip(&self) -> IpAddr {
        self.announce_ip
            .first()
            .copied()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// The ICE-TCP port of shard 0 as the dataplane takes it: `None` = off,
    /// `Some(0)` = ephemeral ports (`media_tcp_port` unset with `media_port` 0).
    pub fn media_tcp_base(&self) -> Option<u16> {
        match self.media_tcp_port {
            None => Some(self.media_port),
            Some(0) => None,
            Some(p) => Some(p),
        }
    }

    /// Limits of each shard's ICE-TCP listener; a silent connection is closed
    /// after `idle_timeout_secs`, as a silent session is.
    pub fn tcp_limits(&self) -> sluice_dataplane::TcpLimits {
        sluice_dataplane::TcpLimits {
            max_conns: self.tcp_max_conns_per_shard,
            max_per_ip: self.tcp_max_conns_per_ip,
            queue_total: self.tcp_queue_budget_bytes,
            idle_timeout: self.idle_timeout(),
            ..sluice_dataplane::TcpLimits::default()
        }
    }

    /// The dataplane's AF_XDP settings (used with `io = xdp`).
    pub fn xdp_settings(&self) -> sluice_dataplane::XdpSettings {
        sluice_dataplane::XdpSettings {
            interface: self.xdp_interface.clone(),
            queue_base: self.xdp_queue_base,
            attach: sluice_dataplane::XdpAttach::parse(&self.xdp_attach)
                .unwrap_or(sluice_dataplane::XdpAttach::Auto),
            bind: sluice_dataplane::XdpBind::parse(&self.xdp_bind)
                .unwrap_or(sluice_dataplane::XdpBind::Auto),
        }
    }

    /// `idle_timeout_secs` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }

    /// `setup_timeout_secs` as a duration.
    pub fn setup_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.setup_timeout_secs)
    }

    /// `ws_ping_secs` as a duration.
    pub fn ws_ping(&self) -> Duration {
        Duration::from_secs_f64(self.ws_ping_secs)
    }

    /// `ws_timeout_secs` as a duration.
    pub fn ws_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ws_timeout_secs)
    }

    /// `drain_timeout_secs` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_secs)
    }

    /// Where media sockets bind.
    pub fn media_bind_ip(&self) -> IpAddr {
        self.media_bind
            .unwrap_or_else(|| addresses::default_bind(&self.announce_ip))
    }

    /// The effective config as TOML: `media_tcp_port` shows the port it
    /// follows, or says in a comment that it follows an ephemeral `media_port`.
    pub fn to_toml(&self) -> String {
        let mut c = self.clone();
        if c.media_tcp_port.is_none() && c.media_port != 0 {
            c.media_tcp_port = Some(c.media_port);
        }
        let text = toml::to_string_pretty(&c).unwrap_or_default();
        if c.media_tcp_port.is_some() {
            return text;
        }
        text.replacen(
            "media_port = 0\n",
            "media_port = 0\n# media_tcp_port unset: follows media_port, so ICE-TCP takes ephemeral ports too\n",
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.media_bind_ip(), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn unknown_keys_in_a_file_are_errors_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "shards = 2\nshardz = 3\n").unwrap();
        let e = Config::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("shardz"), "{e}");
    }

    #[test]
    fn bad_io_backend_names_allowed_values() {
        let c = Config {
            io: "epoll".into(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("io:") && e.contains("auto, uring, mmsg, std, xdp"),
            "{e}"
        );
    }

    #[test]
    fn a_cluster_needs_a_secret_and_a_redis_url_scheme() {
        let mut c = Config::default();
        c.cluster.redis_url = Some("redis://127.0.0.1:6379".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("cluster.secret:"), "{e}");
        c.cluster.secret = Some("0123456789abcdef".into());
        c.validate().unwrap();
        c.cluster.redis_url = Some("http://127.0.0.1:6379".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("cluster.redis_url:"), "{e}");
    }

    #[test]
    fn the_cluster_table_round_trips_through_toml_and_derives_advertise() {
        let mut c = Config::default();
        c.cluster.redis_url = Some("rediss://:pw@127.0.0.1:6380".into());
        c.cluster.secret = Some("0123456789abcdef".into());
        c.cluster.node_id = "a".into();
        let text = c.to_toml();
        assert!(text.contains("[cluster]"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.cluster, c.cluster);
        assert_eq!(back.to_toml(), text);
        assert_eq!(c.cluster_advertise(), "https://127.0.0.1:8443");
    }

    #[test]
    fn public_announce_address_binds_all_interfaces() {
        let c = Config {
            announce_ip: vec![IpAddr::from([203, 0, 113, 7])],
            ..Config::default()
        };
        assert_eq!(c.media_bind_ip(), IpAddr::from([0, 0, 0, 0]));
    }
}
