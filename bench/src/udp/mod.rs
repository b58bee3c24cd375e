//! Raw UDP send throughput of this host over loopback, the ceiling against
//! which the SFU's packet rates are read.
//!
//! [`run`] sends fixed-size datagrams from one thread to a receiver socket it
//! binds on 127.0.0.1, once per [`UdpMode`]: one `send_to` per packet,
//! `sendmmsg` batches, UDP GSO (`UDP_SEGMENT`) super-packets, and batches of
//! `SendMsg` operations on io_uring. A receiver thread drains the socket with
//! `recvmmsg` and counts what arrived. Modes the kernel refuses are reported
//! as [`Outcome::Unavailable`], not as errors. The syscall glue for those
//! modes is in `raw`, the one submodule allowed `unsafe`; the receive side of
//! the WebRTC clients has its own in [`crate::gro`].
//!
//! Traffic goes only to 127.0.0.1 and each mode stops after its configured
//! duration (plus at most about one second of draining).

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::{Duration, Instant};

#[allow(unsafe_code)]
mod raw;

use raw::{loopback_socket, Receiver, SocketBuffer};

/// Largest UDP payload over IPv4.
pub const MAX_PAYLOAD: usize = 65_507;

/// Kernel limit on segments per UDP GSO send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Kernel limit on messages per `sendmmsg`/`recvmmsg` call (`UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;

/// How the sender hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpMode {
    /// One `send_to` syscall per datagram.
    Send,
    /// `sendmmsg` with [`UdpBenchConfig::batch`] datagrams per call.
    Sendmmsg,
    /// `sendmsg` with a `UDP_SEGMENT` control message: one super-packet the
    /// kernel cuts into [`UdpBenchConfig::gso_segments`] datagrams.
    Gso,
    /// io_uring `SendMsg` operations, [`UdpBenchConfig::batch`] per submission.
    IoUring,
}

impl UdpMode {
    /// Every mode, in the order [`run`] measures them by default.
    pub const ALL: [UdpMode; 4] = [
        UdpMode::Send,
        UdpMode::Sendmmsg,
        UdpMode::Gso,
        UdpMode::IoUring,
    ];

    /// Name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            UdpMode::Send => "send",
            UdpMode::Sendmmsg => "sendmmsg",
            UdpMode::Gso => "gso",
            UdpMode::IoUring => "io_uring",
        }
    }
}

impl fmt::Display for UdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is none of `send`, `sendmmsg`, `gso`, `io_uring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown UDP mode {:?}: use send, sendmmsg, gso or io_uring",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for UdpMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "send" => Ok(UdpMode::Send),
            "sendmmsg" | "mmsg" => Ok(UdpMode::Sendmmsg),
            "gso" => Ok(UdpMode::Gso),
            "io_uring" | "uring" => Ok(UdpMode::IoUring),
            other => Err(UnknownMode(other.to_string())),
        }
    }
}

/// What to measure. The destination is always a socket on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpBenchConfig {
    /// UDP payload bytes per datagram, 1..=65507 (default 1200, a typical RTP packet).
    pub packet_size: usize,
    /// How long each mode sends (default 2 s).
    pub duration: Duration,
    /// Datagrams per `sendmmsg` call and per io_uring submission, 1..=1024 (default 32).
    pub batch: usize,
    /// Segments per GSO send (default 64); lowered to what fits in one
    /// 64 KiB datagram, see [`UdpBenchConfig::effective_gso_segments`].
    pub gso_segments: usize,
    /// Modes to measure, in order (default all).
    pub modes: Vec<UdpMode>,
}

impl Default for UdpBenchConfig {
    fn default() -> Self {
        Self {
            packet_size: 1200,
            duration: Duration::from_secs(2),
            batch: 32,
            gso_segments: MAX_GSO_SEGMENTS,
            modes: UdpMode::ALL.to_vec(),
        }
    }
}

impl UdpBenchConfig {
    /// Segments per GSO send actually used: the kernel takes at most 64 and the
    /// super-packet must fit in one UDP datagram (54 for 1200-byte packets).
    pub fn effective_gso_segments(&self) -> usize {
        let fit = MAX_PAYLOAD / self.packet_size.max(1);
        self.gso_segments.min(MAX_GSO_SEGMENTS).min(fit).max(1)
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(1..=MAX_PAYLOAD).contains(&self.packet_size) {
            return invalid(format!(
                "packet size {} is outside 1..={MAX_PAYLOAD} bytes",
                self.packet_size
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return invalid(format!("batch {} is outside 1..={MAX_BATCH}", self.batch));
        }
        if self.duration.is_zero() {
            return invalid("duration must be above zero".to_string());
        }
        Ok(())
    }
}

/// Whether a mode could be measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The mode ran for the whole duration.
    Measured,
    /// The kernel refused the mode before any datagram left (e.g. no GSO, io_uring disabled).
    Unavailable(String),
    /// The mode stopped early on an error; the counts cover the time until then.
    Failed(String),
}

/// Figures of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpResult {
    /// Mode measured.
    pub mode: UdpMode,
    /// Whether the figures mean anything.
    pub outcome: Outcome,
    /// Datagrams the kernel accepted from the sender.
    pub packets_sent: u64,
    /// Datagrams the receiver read (the rest were dropped at its socket).
    pub packets_received: u64,
    /// Time spent sending.
    pub seconds: f64,
    /// `packets_sent / seconds`.
    pub pps_sent: f64,
    /// `packets_received / seconds`.
    pub pps_received: f64,
    /// UDP payload sent, in gigabits per second.
    pub gbit_s: f64,
}

/// Measures each configured mode in turn.
///
/// Errors are for what stops the whole run (an invalid config, no loopback
/// socket, no thread); a mode the kernel refuses is a result with
/// [`Outcome::Unavailable`].
pub fn run(cfg: &UdpBenchConfig) -> io::Result<Vec<UdpResult>> {
    cfg.validate()?;
    cfg.modes.iter().map(|&mode| run_mode(mode, cfg)).collect()
}

fn run_mode(mode: UdpMode, cfg: &UdpBenchConfig) -> io::Result<UdpResult> {
    let receiver = Receiver::start(cfg.packet_size)?;
    let sender = loopback_socket(SocketBuffer::Send)?;
    let dest = receiver.addr;
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let sent = match mode {
        UdpMode::Send => raw::send_plain(&sender, dest, cfg.packet_size, deadline),
        UdpMode::Sendmmsg => raw::send_mmsg(&sender, dest, cfg.packet_size, cfg.batch, deadline),
        UdpMode::Gso => raw::send_gso(
            &sender,
            dest,
            cfg.packet_size,
            cfg.effective_gso_segments(),
            deadline,
        ),
        UdpMode::IoUring => raw::send_uring(&sender, dest, cfg.packet_size, cfg.batch, deadline),
    };
    let seconds = started.elapsed().as_secs_f64();
    let packets_received = receiver.finish()?;

    let outcome = match sent.error {
        None => Outcome::Measured,
        Some(e) if sent.packets == 0 => Outcome::Unavailable(unavailable_reason(mode, &e)),
        Some(e) => Outcome::Failed(e.to_string()),
    };
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(UdpResult {
        mode,
        outcome,
        packets_sent: sent.packets,
        packets_received,
        seconds,
        pps_sent: per_second(sent.packets),
        pps_received: per_second(packets_received),
        gbit_s: per_second(sent.packets) * cfg.packet_size as f64 * 8.0 / 1e9,
    })
}

fn unavailable_reason(mode: UdpMode, e: &io::Error) -> String {
    let unsupported = matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::ENOSYS)
    );
    match mode {
        UdpMode::Gso if unsupported => format!("UDP GSO not supported here ({e})"),
        UdpMode::IoUring if unsupported || e.raw_os_error() == Some(libc::EPERM) => {
            format!("io_uring not available here ({e})")
        }
        _ => e.to_string(),
    }
}

/// Lays out the results as an aligned text table, one line per mode.
pub fn format_table(results: &[UdpResult]) -> String {
    let mut out = format!(
        "{:<9} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}  note\n",
        "mode", "sent", "received", "seconds", "sent pkt/s", "recv pkt/s", "Gbit/s"
    );
    for r in results {
        let figures = match r.outcome {
            Outcome::Unavailable(_) => ["-"; 6].map(String::from),
            _ => [
                r.packets_sent.to_string(),
                r.packets_received.to_string(),
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.pps_sent),
                format!("{:.0}", r.pps_received),
                format!("{:.2}", r.gbit_s),
            ],
        };
        let note = match &r.outcome {
            Outcome::Measured if r.packets_received < r.packets_sent => {
                let dropped = r.packets_sent - r.packets_received;
                format!(
                    "{:.1}% dropped at the receiver",
                    100.0 * dropped as f64 / r.packets_sent as f64
                )
            }
            Outcome::Measured => String::new(),
            Outcome::Unavailable(why) => format!("unavailable: {why}"),
            Outcome::Failed(why) => format!("stopped early: {why}"),
        };
        let [sent, received, seconds, pps_sent, pps_received, gbit_s] = figures;
        let line = format!(
            "{:<9} {sent:>12} {received:>12} {seconds:>7} {pps_sent:>12} {pps_received:>12} {gbit_s:>7}  {note}",
            r.mode.name(),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(modes: Vec<UdpMode>) -> UdpBenchConfig {
        UdpBenchConfig {
            duration: Duration::from_millis(200),
            modes,
            ..UdpBenchConfig::default()
        }
    }

    #[test]
    fn every_mode_runs_briefly_and_plain_send_reaches_the_receiver() {
        let results = run(&short(UdpMode::ALL.to_vec())).unwrap();
        let modes: Vec<UdpMode> = results.iter().map(|r| r.mode).collect();
        assert_eq!(modes, UdpMode::ALL);

        let send = &results[0];
        assert_eq!(send.outcome, Outcome::Measured);
        assert!(send.packets_received > 0, "{send:?}");
        assert!(send.pps_sent > 0.0 && send.gbit_s > 0.0, "{send:?}");

        for r in &results {
            assert!(r.packets_received <= r.packets_sent, "{r:?}");
            assert!(r.seconds < 2.0, "mode overran its duration: {r:?}");
            match &r.outcome {
                Outcome::Measured => {
                    assert!(r.packets_sent > 0, "{r:?}");
                    assert!(r.seconds >= 0.2, "{r:?}");
                }
                Outcome::Unavailable(why) => assert_eq!(r.packets_sent, 0, "{why}"),
                Outcome::Failed(why) => panic!("{} failed: {why}", r.mode),
            }
        }

        let table = format_table(&results);
        assert_eq!(table.lines().count(), 1 + results.len());
        for mode in UdpMode::ALL {
            assert!(table.contains(mode.name()), "{table}");
        }
    }

    #[test]
    fn gso_segments_fit_one_datagram_and_the_kernel_limit() {
        let cfg = UdpBenchConfig::default();
        assert_eq!(cfg.effective_gso_segments(), 54);
        let small = UdpBenchConfig {
            packet_size: 100,
            ..cfg.clone()
        };
        assert_eq!(small.effective_gso_segments(), 64);
        let huge = UdpBenchConfig {
            packet_size: MAX_PAYLOAD,
            ..cfg
        };
        assert_eq!(huge.effective_gso_segments(), 1);
    }

    #[test]
    fn invalid_config_is_refused_before_sending() {
        for cfg in [
            UdpBenchConfig {
                packet_size: 0,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                packet_size: MAX_PAYLOAD + 1,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                batch: 0,
                ..short(vec![UdpMode::Send])
            },
            UdpBenchConfig {
                duration: Duration::ZERO,
                ..short(vec![UdpMode::Send])
            },
        ] {
            let err = run(&cfg).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in UdpMode::ALL {
            assert_eq!(mode.name().parse::<UdpMode>(), Ok(mode));
        }
        assert!("tcp".parse::<UdpMode>().is_err());
    }

    #[test]
    fn unavailable_mode_is_shown_without_figures() {
        let r = UdpResult {
            mode: UdpMode::Gso,
            outcome: Outcome::Unavailable("UDP GSO not supported here".into()),
            packets_sent: 0,
            packets_received: 0,
            seconds: 0.2,
            pps_sent: 0.0,
            pps_received: 0.0,
            gbit_s: 0.0,
        };
        let table = format_table(&[r]);
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("gso "), "{line}");
        assert!(
            line.ends_with("unavailable: UDP GSO not supported here"),
            "{line}"
        );
    }
}
