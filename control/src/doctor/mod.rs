//! `sluice doctor`: checks the host for what a forwarding appliance needs (io_uring, locked
//! memory, socket buffers, CPU frequency and isolation, NIC IRQ/RPS spread, UDP GSO).

// Reading the host is kept apart from judging it, so the judging is tested on fixture
// text. Kernel probes that need `unsafe` live in the dataplane (`sluice_dataplane::io::probe`).

mod cpu;
mod host;
mod nic;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use sluice_dataplane::io::probe;

use cpu::{check_governor, check_isolated, online_cpus, read_governors};
pub use cpu::{format_cpu_list, parse_cpu_list, parse_cpu_mask};
pub use host::parse_kernel_version;
use host::{check_media_ports, check_memlock, check_sysctl_min};
use nic::nic_checks;
pub use nic::{parse_interrupts, Interrupts, IrqLine};

/// Socket buffer maximum a shard asks for (the dataplane's default buffer).
const WANT_SOCKET_BUFFER: u64 = 8 << 20;
/// Packets the kernel may queue per CPU before the stack drops them.
const WANT_NETDEV_BACKLOG: u64 = 5000;
/// Locked memory for io_uring rings and registered buffers (the unit's LimitMEMLOCK).
const WANT_MEMLOCK: u64 = 64 << 20;
/// First kernel that charges io_uring memory to the cgroup instead of RLIMIT_MEMLOCK.
const MEMCG_URING_KERNEL: (u32, u32) = (5, 12);
/// UDP port of shard 0 unless configured otherwise.
const DEFAULT_MEDIA_PORT: u16 = 40000;
/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine as it is.
    Ok,
    /// Informational: nothing is wrong, but there is something to know.
    Note,
    /// Works, but slower or less robust than it could be.
    Warn,
    /// sluice cannot run as configured.
    Fail,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// How it came out.
    pub level: Level,
    /// What was checked.
    pub name: String,
    /// What was found.
    pub value: String,
    /// What to change; shown after the value.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, value: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name: name.into(),
            value: value.into(),
            fix: None,
        }
    }

    fn with(
        level: Level,
        name: impl Into<String>,
        value: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            level,
            name: name.into(),
            value: value.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {}: {}", self.level.tag(), self.name, self.value)?;
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// Run every check against this host, print one line each, and return the
/// exit status: 1 if any check failed outright, else 0.
pub fn run() -> i32 {
    let checks = collect();
    for c in &checks {
        println!("{c}");
    }
    exit_status(&checks)
}

fn exit_status(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.level == Level::Fail))
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn collect() -> Vec<Check> {
    let mut out = Vec::new();
    let release = read("/proc/sys/kernel/osrelease");
    let kernel = release.as_deref().and_then(parse_kernel_version);
    out.push(match &release {
        Some(r) => Check::ok("kernel", r.trim()),
        None => Check::with(
            Level::Note,
            "kernel",
            "unknown",
            "/proc/sys/kernel/osrelease is unreadable; is /proc mounted?",
        ),
    });
    out.push(match probe::io_uring_available() {
        Ok(()) => Check::ok("io_uring", "available"),
        Err(e) => Check::with(
            Level::Warn,
            "io_uring",
            e,
            "io auto falls back to the mmsg backend (about 10% more CPU per packet)",
        ),
    });
    out.push(check_memlock(probe::memlock_limit(), kernel));
    out.push(match probe::udp_gso_available() {
        Ok(()) => Check::ok("udp gso", "UDP_SEGMENT accepted"),
        Err(e @ probe::GsoProbeError::Bind(_)) => Check::with(
            Level::Fail,
            "udp gso",
            e.to_string(),
            "sluice needs UDP sockets: check seccomp/AppArmor and RestrictAddressFamilies",
        ),
        Err(e) => Check::with(
            Level::Warn,
            "udp gso",
            e.to_string(),
            "each datagram costs one send; use a 4.18+ kernel",
        ),
    });
    for (key, want) in [
        ("rmem_max", WANT_SOCKET_BUFFER),
        ("wmem_max", WANT_SOCKET_BUFFER),
        ("netdev_max_backlog", WANT_NETDEV_BACKLOG),
    ] {
        let text = read(format!("/proc/sys/net/core/{key}"));
        out.push(check_sysctl_min(
            &format!("net.core.{key}"),
            text.as_deref(),
            want,
        ));
    }
    out.push(check_media_ports(
        read("/proc/sys/net/ipv4/ip_local_port_range").as_deref(),
        read("/proc/sys/net/ipv4/ip_local_reserved_ports").as_deref(),
        online_cpus().len(),
    ));
    out.push(check_governor(&read_governors()));
    out.push(check_isolated(
        read("/sys/devices/system/cpu/isolated").as_deref(),
        read("/sys/devices/system/cpu/nohz_full").as_deref(),
    ));
    out.extend(nic_checks());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_have_the_documented_shape() {
        let ok = Check::ok("udp gso", "UDP_SEGMENT accepted");
        assert_eq!(ok.to_string(), "ok   udp gso: UDP_SEGMENT accepted");
        let warn = Check::with(Level::Warn, "x", "1", "do y");
        assert_eq!(warn.to_string(), "warn x: 1 — do y");
    }

    #[test]
    fn only_a_failed_check_makes_the_exit_status_nonzero() {
        let mut v = vec![Check::with(Level::Warn, "a", "b", "c")];
        assert_eq!(exit_status(&v), 0);
        v.push(Check::with(Level::Fail, "d", "e", "f"));
        assert_eq!(exit_status(&v), 1);
    }
}
