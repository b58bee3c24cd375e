//! `sluice doctor`: checks the host for what a forwarding appliance needs (io_uring, locked
//! memory, socket buffers, CPU frequency and isolation, NIC IRQ/RPS spread, UDP GSO), and
//! the configured media addresses against it (announced addresses, ICE-TCP).

// Reading the host is kept apart from judging it, so the judging is tested on fixture
// text. Kernel probes that need `unsafe` live in the dataplane (`sluice_dataplane::probe`).

mod check;
mod cluster;
mod cpu;
mod host;
mod media;
mod nic;
mod xdp;

use sluice_dataplane::probe;

use check::read;
pub use check::{Check, Level};
use cpu::{check_governor, check_isolated, read_governors};
pub use cpu::{format_cpu_list, parse_cpu_list, parse_cpu_mask};
pub use host::parse_kernel_version;
use host::{
    check_media_ports, check_memlock, check_sysctl_min, WANT_NETDEV_BACKLOG, WANT_SOCKET_BUFFER,
};
use nic::nic_checks;
pub use nic::{parse_interrupts, Interrupts, IrqLine};

/// Run every check against this host, print one line each, and return the
/// exit status: 1 if any check failed outright, else 0.
pub fn run() -> i32 {
    run_with(&crate::Config::default())
}

/// [`run`] plus the checks `config` calls for: its media addresses and ICE-TCP
/// ports, and the cluster's (with `cluster.redis_url`).
pub fn run_with(config: &crate::Config) -> i32 {
    let mut checks = collect();
    checks.extend(media_checks(config));
    checks.extend(cluster::cluster_checks(config));
    for c in &checks {
        println!("{c}");
    }
    exit_status(&checks)
}

fn media_checks(config: &crate::Config) -> Vec<Check> {
    let local = media::parse_local_addrs(
        &read("/proc/net/fib_trie").unwrap_or_default(),
        &read("/proc/net/if_inet6").unwrap_or_default(),
    );
    let mut out = media::check_announced(&config.announce_ip, &local);
    let (shards, _) = crate::app::plan_cores(config);
    out.push(check_media_ports(
        read("/proc/sys/net/ipv4/ip_local_port_range").as_deref(),
        read("/proc/sys/net/ipv4/ip_local_reserved_ports").as_deref(),
        config.media_port,
        shards,
    ));
    out.push(media::check_ice_tcp(config.media_tcp_base(), shards));
    out.push(xdp::check_xdp(
        sluice_dataplane::xdp_capability_check(),
        &config.io,
        &config.xdp_interface,
        !config.xdp_interface.is_empty()
            && std::path::Path::new("/sys/class/net")
                .join(&config.xdp_interface)
                .exists(),
        config.media_bind_ip(),
        &local,
    ));
    out.extend(media::check_dual_stack(
        config.media_bind_ip(),
        &config.announce_ip,
        read("/proc/sys/net/ipv6/bindv6only").as_deref(),
    ));
    out
}

fn exit_status(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.level == Level::Fail))
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
    fn only_a_failed_check_makes_the_exit_status_nonzero() {
        let mut v = vec![Check::with(Level::Warn, "a", "b", "c")];
        assert_eq!(exit_status(&v), 0);
        v.push(Check::with(Level::Fail, "d", "e", "f"));
        assert_eq!(exit_status(&v), 1);
    }
}
