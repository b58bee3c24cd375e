//! Kernel, locked-memory, socket-buffer and media-port checks.

use super::check::{Check, Level};
use super::cpu::parse_cpu_list;

/// Socket buffer maximum a shard asks for (the dataplane's default buffer).
pub(super) const WANT_SOCKET_BUFFER: u64 = 8 << 20;
/// Packets the kernel may queue per CPU before the stack drops them.
pub(super) const WANT_NETDEV_BACKLOG: u64 = 5000;
/// Locked memory for io_uring rings and registered buffers (the unit's LimitMEMLOCK).
const WANT_MEMLOCK: u64 = 64 << 20;
/// First kernel that charges io_uring memory to the cgroup instead of RLIMIT_MEMLOCK.
const MEMCG_URING_KERNEL: (u32, u32) = (5, 12);
fn fmt_bytes(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 10 && v.is_multiple_of(1 << 10) {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} B")
    }
}

/// "6.18.44-fc-v669" → (6, 18).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn check_memlock(limit: Option<u64>, kernel: Option<(u32, u32)>) -> Check {
    const NAME: &str = "RLIMIT_MEMLOCK";
    let Some(limit) = limit else {
        return Check::with(Level::Warn, NAME, "unreadable", "getrlimit failed");
    };
    if limit >= WANT_MEMLOCK {
        return Check::ok(NAME, fmt_bytes(limit));
    }
    let fix = "LimitMEMLOCK=64M in the systemd unit, or memlock in /etc/security/limits.conf";
    if kernel.is_some_and(|k| k >= MEMCG_URING_KERNEL) {
        Check::with(
            Level::Note,
            NAME,
            format!(
                "{} (io_uring is charged to the cgroup on this kernel)",
                fmt_bytes(limit)
            ),
            format!("needed only for registered buffers: {fix}"),
        )
    } else {
        Check::with(
            Level::Warn,
            NAME,
            format!("{} < {}", fmt_bytes(limit), fmt_bytes(WANT_MEMLOCK)),
            fix,
        )
    }
}

/// A numeric sysctl that should be at least `want`.
pub(super) fn check_sysctl_min(key: &str, text: Option<&str>, want: u64) -> Check {
    let conf = "tuning/99-sluice.conf into /etc/sysctl.d/, then sysctl --system";
    let Some(v) = text.and_then(|t| t.trim().parse::<u64>().ok()) else {
        return Check::with(Level::Note, key, "unreadable", "skipped");
    };
    let shown = if want >= 1 << 20 {
        fmt_bytes(v)
    } else {
        v.to_string()
    };
    if v >= want {
        Check::ok(key, shown)
    } else {
        let want_shown = if want >= 1 << 20 {
            fmt_bytes(want)
        } else {
            want.to_string()
        };
        Check::with(
            Level::Warn,
            key,
            format!("{shown} < {want_shown}"),
            format!("sysctl -w {key}={want}, or install {conf}"),
        )
    }
}

/// Whether the media ports (shard 0 on `first`) can be taken by ephemeral
/// sockets first.
pub(super) fn check_media_ports(
    range: Option<&str>,
    reserved: Option<&str>,
    first: u16,
    shards: usize,
) -> Check {
    const NAME: &str = "media ports";
    if first == 0 {
        return Check::ok(NAME, "ephemeral (media_port is 0)");
    }
    let first = first as usize;
    let last = first + shards.max(1) - 1;
    let span = format!("{first}-{last}");
    let Some((lo, hi)) = range.and_then(|r| {
        let mut it = r.split_whitespace().map(|x| x.parse::<usize>().ok());
        Some((it.next()??, it.next()??))
    }) else {
        return Check::with(
            Level::Note,
            NAME,
            "ip_local_port_range unreadable",
            "skipped",
        );
    };
    if last < lo || first > hi {
        return Check::ok(
            NAME,
            format!("{span} outside the ephemeral range {lo}-{hi}"),
        );
    }
    let reserved = reserved
        .and_then(|r| parse_cpu_list(r).ok())
        .unwrap_or_default();
    if (first..=last).all(|p| reserved.binary_search(&p).is_ok()) {
        return Check::ok(NAME, format!("{span} reserved"));
    }
    Check::with(
        Level::Note,
        NAME,
        format!("{span} lie in the ephemeral range {lo}-{hi}"),
        "a client socket may hold one when sluice starts; reserve them with \
         net.ipv4.ip_local_reserved_ports (tuning/99-sluice.conf)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_buffer_below_eight_mib_warns_with_the_sysctl() {
        let c = check_sysctl_min("net.core.rmem_max", Some("4194304\n"), WANT_SOCKET_BUFFER);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.value, "4 MiB < 8 MiB");
        assert!(c.fix.unwrap().contains("net.core.rmem_max=8388608"));
        let c = check_sysctl_min("net.core.rmem_max", Some("16777216"), WANT_SOCKET_BUFFER);
        assert_eq!(c.level, Level::Ok);
        let c = check_sysctl_min("net.core.netdev_max_backlog", Some("1000"), 5000);
        assert_eq!(c.value, "1000 < 5000");
    }

    #[test]
    fn memlock_matters_only_before_memcg_accounting() {
        let old = check_memlock(Some(8 << 20), Some((5, 10)));
        assert_eq!(old.level, Level::Warn);
        let new = check_memlock(Some(8 << 20), Some((6, 1)));
        assert_eq!(new.level, Level::Note);
        assert_eq!(check_memlock(Some(u64::MAX), None).value, "unlimited");
        assert_eq!(check_memlock(Some(64 << 20), None).level, Level::Ok);
    }

    #[test]
    fn kernel_version_parses_major_minor() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    #[test]
    fn media_ports_in_the_ephemeral_range_are_noted_unless_reserved() {
        const DEFAULT_MEDIA_PORT: u16 = 40000;
        let c = check_media_ports(Some("32768\t60999\n"), None, 61000, 2);
        assert!(c.to_string().contains("61000-61001 outside"), "{c}");
        let c = check_media_ports(Some("32768\t60999\n"), None, 0, 2);
        assert_eq!(c.level, Level::Ok, "{c}");
        let c = check_media_ports(Some("32768\t60999\n"), Some("\n"), DEFAULT_MEDIA_PORT, 2);
        assert_eq!(c.level, Level::Note);
        let c = check_media_ports(
            Some("32768\t60999\n"),
            Some("40000-40063\n"),
            DEFAULT_MEDIA_PORT,
            2,
        );
        assert_eq!(c.level, Level::Ok);
        let c = check_media_ports(Some("50000 60999"), None, DEFAULT_MEDIA_PORT, 2);
        assert_eq!(c.level, Level::Ok);
    }
}
