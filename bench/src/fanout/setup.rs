//! Setup bookkeeping of a run: the tally of viewer setups, the progress line
//! on stderr, how a failed setup is named, the target resolved into session
//! options, and reading the server's `/proc`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::config::FanoutConfig;
use super::FanoutError;
use crate::client::{self, ClientError, SessionOptions};
use crate::report::{ErrorCount, Percentiles, SetupReport};
use crate::stats::{Histogram, ProcSnapshot};
use crate::units::url_host_port;

#[derive(Default)]
pub(super) struct SetupTotals {
    pub(super) attempted: usize,
    pub(super) connected: usize,
    pub(super) seconds: f64,
    /// `None` without `--server-pid`.
    pub(super) server_cpu: Option<f64>,
    pub(super) bench_cpu: Option<f64>,
    pub(super) latency: Histogram,
    pub(super) errors: BTreeMap<String, u64>,
}

impl SetupTotals {
    pub(super) fn report(&self, concurrency: usize) -> SetupReport {
        let mut errors: Vec<ErrorCount> = self
            .errors
            .iter()
            .map(|(e, n)| ErrorCount {
                error: e.clone(),
                count: *n,
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        SetupReport {
            attempted: self.attempted,
            connected: self.connected,
            failed: self.attempted - self.connected,
            seconds: self.seconds,
            rate_per_second: if self.seconds > 0.0 {
                self.connected as f64 / self.seconds
            } else {
                0.0
            },
            latency_ms: Percentiles::from_us(&self.latency),
            errors,
            concurrency,
            server_cpu_seconds: self.server_cpu,
            bench_cpu_seconds: self.bench_cpu,
        }
    }
}

/// A line redrawn in place on stderr while stderr is a terminal; elsewhere
/// (a log file) the same line every [`LOG_EVERY`] at most.
pub(super) struct Progress {
    pub(super) enabled: bool,
    pub(super) log: bool,
    last_log: std::sync::Mutex<Option<Instant>>,
}

/// How often progress goes to a non-terminal stderr.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub(super) fn new(wanted: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            enabled: wanted && tty,
            log: wanted && !tty,
            last_log: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn show(&self, line: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{line}");
            let _ = e.flush();
        } else if self.log {
            let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                *last = Some(Instant::now());
                eprintln!("{line}");
            }
        }
    }

    /// A line that stays, printed whether or not the bar is shown.
    pub(super) fn say(&self, line: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{line}");
    }

    pub(super) fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

pub(super) fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Status { status, reason } => format!("HTTP {status}: {reason}"),
        ClientError::Http(e) if e.is_timeout() => "HTTP request timed out".into(),
        ClientError::Http(e) if e.is_connect() => format!("HTTP connect failed: {e}"),
        other => other.to_string(),
    }
}

pub(super) async fn resolve_target(cfg: &FanoutConfig) -> Result<SessionOptions, FanoutError> {
    let mut allowed: Vec<IpAddr> = cfg.target.extra_media_ips.clone();
    let mut first = None;
    for url in [cfg.target.whip_url(), cfg.target.whep_url()] {
        let (host, port) = url_host_port(&url).expect("validated");
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| FanoutError::Resolve {
                host: host.clone(),
                source,
            })?;
        for a in addrs {
            first.get_or_insert(a);
            if !allowed.contains(&a.ip()) {
                allowed.push(a.ip());
            }
        }
    }
    let local_ip = match (cfg.target.bind_ip, first) {
        (Some(ip), _) => Some(ip),
        (None, Some(a)) if a.ip().is_loopback() => Some(a.ip()),
        // The address the kernel would send from toward the target; connecting
        // a UDP socket sends nothing.
        (None, Some(a)) => std::net::UdpSocket::bind((
            if a.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))
        .and_then(|s| {
            s.connect(a)?;
            s.local_addr()
        })
        .ok()
        .map(|l| l.ip()),
        (None, None) => None,
    };
    Ok(SessionOptions {
        local_ip,
        allowed_media_ips: Some(allowed),
        udp_gro: cfg.udp_gro,
        transport: client::Transport::Udp,
    })
}

pub(super) fn read_proc(pid: u32) -> Result<ProcSnapshot, FanoutError> {
    ProcSnapshot::read(pid).map_err(|source| FanoutError::ServerPid { pid, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::config::tests::config;

    #[tokio::test]
    async fn loopback_target_binds_loopback_and_allows_only_itself() {
        let opts = resolve_target(&config(1)).await.unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(opts.local_ip, Some(lo));
        assert_eq!(opts.allowed_media_ips, Some(vec![lo]));
        assert!(opts.udp_gro);
        let mut no_gro = config(1);
        no_gro.udp_gro = false;
        assert!(!resolve_target(&no_gro).await.unwrap().udp_gro);
    }
}
