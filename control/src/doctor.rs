//! `sluice doctor`: checks the host for what a forwarding appliance needs
//! (io_uring, locked memory, socket buffers, CPU frequency and isolation, NIC
//! interrupt and RPS spread, UDP GSO) and says what to change.
//!
//! Reading the host is kept apart from judging it, so the judging is tested
//! on fixture text. Kernel probes that need `unsafe` live in the dataplane
//! (`sluice_dataplane::probe`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use sluice_dataplane::probe;

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
    pub level: Level,
    pub name: String,
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

/// Online CPUs, from sysfs, else the count std sees.
fn online_cpus() -> Vec<usize> {
    read("/sys/devices/system/cpu/online")
        .and_then(|s| parse_cpu_list(&s).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n).collect()
        })
}

/// (cpu, governor) for every CPU with a cpufreq policy.
fn read_governors() -> Vec<(usize, String)> {
    let mut v: Vec<(usize, String)> = std::fs::read_dir("/sys/devices/system/cpu")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let cpu: usize = name.strip_prefix("cpu")?.parse().ok()?;
            let gov = read(e.path().join("cpufreq/scaling_governor"))?;
            Some((cpu, gov.trim().to_owned()))
        })
        .collect();
    v.sort();
    v
}

/// Interfaces backed by a device (so not lo, bridges, veths, ifb…), by name.
fn nic_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    v.sort();
    v
}

fn nic_checks() -> Vec<Check> {
    let nics = nic_names();
    if nics.is_empty() {
        return vec![Check::with(
            Level::Note,
            "nic",
            "no device-backed network interfaces",
            "IRQ and RPS checks skipped",
        )];
    }
    let cpus = online_cpus().len();
    let interrupts = read("/proc/interrupts").map(|t| parse_interrupts(&t));
    let mut out = Vec::new();
    for nic in &nics {
        let base = Path::new("/sys/class/net").join(nic);
        if read(base.join("operstate")).is_some_and(|s| s.trim() == "down") {
            out.push(Check::with(
                Level::Note,
                format!("nic {nic}"),
                "down",
                "IRQ and RPS checks skipped",
            ));
            continue;
        }
        let device = std::fs::canonicalize(base.join("device"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let mut names = vec![nic.clone()];
        names.extend(device);
        out.push(match &interrupts {
            Some(irqs) => check_irq_spread(nic, &names, irqs, cpus),
            None => Check::with(
                Level::Note,
                format!("irq spread {nic}"),
                "/proc/interrupts unreadable",
                "skipped",
            ),
        });
        let mut masks: Vec<String> = std::fs::read_dir(base.join("queues"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .map(|e| read(e.path().join("rps_cpus")).unwrap_or_default())
            .collect();
        masks.sort();
        out.push(check_rps(nic, &masks, cpus));
    }
    out
}

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

fn check_memlock(limit: Option<u64>, kernel: Option<(u32, u32)>) -> Check {
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
fn check_sysctl_min(key: &str, text: Option<&str>, want: u64) -> Check {
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

/// Whether the default media ports can be taken by ephemeral UDP sockets first.
fn check_media_ports(range: Option<&str>, reserved: Option<&str>, shards: usize) -> Check {
    const NAME: &str = "media ports";
    let first = DEFAULT_MEDIA_PORT as usize;
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
        "a UDP client may hold one when sluice starts; reserve them with \
         net.ipv4.ip_local_reserved_ports (tuning/99-sluice.conf)",
    )
}

fn check_governor(govs: &[(usize, String)]) -> Check {
    const NAME: &str = "cpu governor";
    if govs.is_empty() {
        return Check::with(
            Level::Note,
            NAME,
            "no cpufreq interface",
            "frequency is managed by the hypervisor or firmware; nothing to set here",
        );
    }
    let slow: Vec<usize> = govs
        .iter()
        .filter(|(_, g)| g != "performance")
        .map(|(c, _)| *c)
        .collect();
    if slow.is_empty() {
        return Check::ok(NAME, format!("performance on all {} CPUs", govs.len()));
    }
    let kinds: BTreeSet<&str> = govs
        .iter()
        .filter(|(_, g)| g != "performance")
        .map(|(_, g)| g.as_str())
        .collect();
    Check::with(
        Level::Warn,
        NAME,
        format!(
            "{} on CPUs {}",
            kinds.into_iter().collect::<Vec<_>>().join("/"),
            format_cpu_list(&slow)
        ),
        "cpupower frequency-set -g performance (frequency ramps add latency and jitter)",
    )
}

fn check_isolated(isolated: Option<&str>, nohz_full: Option<&str>) -> Check {
    const NAME: &str = "isolated cores";
    let iso = isolated
        .and_then(|s| parse_cpu_list(s).ok())
        .unwrap_or_default();
    if iso.is_empty() {
        return Check::with(
            Level::Note,
            NAME,
            "none",
            "for dedicated shard cores boot with isolcpus=, nohz_full=, rcu_nocbs= and \
             pass them with --cores (tuning/README.md)",
        );
    }
    let nohz = nohz_full
        .and_then(|s| parse_cpu_list(s).ok())
        .unwrap_or_default();
    let cores = iso
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // Isolated cores are left alone by the scheduler: only explicit pinning puts shards there.
    Check::ok(
        NAME,
        format!(
            "{} (nohz_full {}); pin shards there with --cores {cores}",
            format_cpu_list(&iso),
            if nohz.is_empty() {
                "none".into()
            } else {
                format_cpu_list(&nohz)
            }
        ),
    )
}

/// One row of /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    /// "38", or "LOC", "NMI"… for per-CPU system interrupts.
    pub irq: String,
    /// Interrupts served, one per CPU column.
    pub counts: Vec<u64>,
    /// Chip, hwirq, trigger and action names, as printed.
    pub desc: String,
}

impl IrqLine {
    fn is_device(&self) -> bool {
        self.irq.bytes().all(|b| b.is_ascii_digit())
    }

    /// The action (handler) name, e.g. "eth0-TxRx-0".
    fn action(&self) -> &str {
        self.desc.split_whitespace().last().unwrap_or("")
    }
}

/// Parsed /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupts {
    /// CPU numbers of the columns (from the "CPU0 CPU1 …" header).
    pub cpus: Vec<usize>,
    pub lines: Vec<IrqLine>,
}

pub fn parse_interrupts(text: &str) -> Interrupts {
    let mut rows = text.lines();
    let cpus: Vec<usize> = rows
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let lines = rows
        .filter_map(|row| {
            let (irq, rest) = row.trim_start().split_once(':')?;
            let mut counts = Vec::with_capacity(cpus.len());
            let mut rest = rest.trim_start();
            while counts.len() < cpus.len() {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                match rest[..end].parse::<u64>() {
                    Ok(n) => counts.push(n),
                    Err(_) => break,
                }
                rest = rest[end..].trim_start();
            }
            Some(IrqLine {
                irq: irq.trim().to_owned(),
                counts,
                desc: rest.trim_end().to_owned(),
            })
        })
        .collect();
    Interrupts { cpus, lines }
}

/// Whether `hay` holds `word` not glued to other letters or digits
/// ("virtio2" is in "virtio2-input.0" but not in "virtio21-input.0").
fn contains_word(hay: &str, word: &str) -> bool {
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    hay.match_indices(word).any(|(i, _)| {
        !glued(hay[..i].chars().next_back()) && !glued(hay[i + word.len()..].chars().next())
    })
}

/// Interrupts that carry packets, not link or configuration events (drivers
/// name the link vector after the bare interface, e.g. igb's "eth1").
fn is_queue_irq(action: &str, names: &[String]) -> bool {
    let a = action.to_ascii_lowercase();
    !names.iter().any(|n| n == action)
        && !["config", "async", "misc", "event", "lsc"]
            .iter()
            .any(|w| a.contains(w))
}

/// Are the queue interrupts of the NIC known by `names` (interface and device
/// names) served by more than one CPU?
fn check_irq_spread(nic: &str, names: &[String], irqs: &Interrupts, ncpus: usize) -> Check {
    let name = format!("irq spread {nic}");
    let queues: Vec<&IrqLine> = irqs
        .lines
        .iter()
        .filter(|l| l.is_device() && names.iter().any(|n| contains_word(&l.desc, n)))
        .filter(|l| is_queue_irq(l.action(), names))
        .collect();
    if queues.is_empty() {
        return Check::with(
            Level::Note,
            name,
            "no queue interrupts found in /proc/interrupts",
            "skipped (virtual or polled device)",
        );
    }
    let served: Vec<usize> = irqs
        .cpus
        .iter()
        .enumerate()
        .filter(|(col, _)| {
            queues
                .iter()
                .any(|l| l.counts.get(*col).is_some_and(|&n| n > 0))
        })
        .map(|(_, &cpu)| cpu)
        .collect();
    let value = format!(
        "{} queue IRQs served by CPUs {}",
        queues.len(),
        if served.is_empty() {
            "none yet".into()
        } else {
            format_cpu_list(&served)
        }
    );
    if queues.len() >= 2 && served.len() == 1 && ncpus > 1 {
        return Check::with(
            Level::Warn,
            name,
            value,
            format!(
                "spread them: tuning/irq-affinity.sh {nic} <cpus> --apply \
                 (and keep irqbalance off these IRQs)"
            ),
        );
    }
    Check::ok(name, value)
}

/// Are receive packets spread over CPUs, by RSS (enough queues) or by RPS?
/// `masks` holds each rx queue's rps_cpus text.
fn check_rps(nic: &str, masks: &[String], ncpus: usize) -> Check {
    let name = format!("rps {nic}");
    let steered: BTreeSet<usize> = masks.iter().flat_map(|m| parse_cpu_mask(m)).collect();
    let queues = masks.len();
    if ncpus <= 1 {
        return Check::ok(name, "one CPU: nothing to spread");
    }
    if !steered.is_empty() {
        return Check::ok(
            name,
            format!(
                "{queues} rx queue(s), RPS to CPUs {}",
                format_cpu_list(&steered.into_iter().collect::<Vec<_>>())
            ),
        );
    }
    if queues >= ncpus {
        return Check::ok(
            name,
            format!("{queues} rx queues for {ncpus} CPUs (RSS), RPS off"),
        );
    }
    Check::with(
        Level::Warn,
        name,
        format!("{queues} rx queue(s) for {ncpus} CPUs and RPS off"),
        format!(
            "one CPU takes all receive softirq work: tuning/irq-affinity.sh {nic} {} --apply",
            format_cpu_list(&(0..ncpus).collect::<Vec<_>>())
        ),
    )
}

/// Parse a kernel CPU list such as "0-3,8,10-11" (empty text = no CPUs).
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut out = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("{part:?} is not a CPU number or range"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{part:?}: range runs backwards"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The inverse of [`parse_cpu_list`] for a sorted list: `[0, 1, 2, 3, 8]` → `"0-3,8"`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Parse a kernel hex CPU mask such as "00000000,0000000f" (32-bit groups,
/// most significant first) into CPU numbers.
pub fn parse_cpu_mask(text: &str) -> Vec<usize> {
    let hex: String = text.trim().chars().filter(|&c| c != ',').collect();
    let mut out = Vec::new();
    for (nibble_idx, c) in hex.chars().rev().enumerate() {
        let Some(v) = c.to_digit(16) else {
            return Vec::new();
        };
        for bit in 0..4 {
            if v & (1 << bit) != 0 {
                out.push(nibble_idx * 4 + bit);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "\
           CPU0       CPU1       CPU2       CPU3
  24:          1          0          0          0  IO-APIC   5-edge      ACPI:Ged
  37:          0          0          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
  38:          0       7178          0          0 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
  39:       5099          0          0          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
  50:        900          0          0          0 IR-PCI-MSI 524288-edge      eth1-TxRx-0
  51:        800          0          0          0 IR-PCI-MSI 524289-edge      eth1-TxRx-1
  52:          0          0          0          0 IR-PCI-MSI 524290-edge      eth1
  60:         10         20         30         40 IR-PCI-MSI 1048576-edge    virtio21-input.0
 NMI:          0          0          0          0   Non-maskable interrupts
 ERR:          0
";

    #[test]
    fn cpu_list_parses_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("5\n").unwrap(), vec![5]);
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("2-3, 1").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn cpu_list_rejects_garbage_and_backward_ranges() {
        assert!(parse_cpu_list("0-x").is_err());
        assert!(parse_cpu_list("4-2").is_err());
    }

    #[test]
    fn cpu_list_round_trips_through_format() {
        let v = vec![0, 1, 2, 3, 8, 10, 11];
        assert_eq!(format_cpu_list(&v), "0-3,8,10-11");
        assert_eq!(parse_cpu_list(&format_cpu_list(&v)).unwrap(), v);
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn cpu_mask_reads_comma_separated_hex_groups() {
        assert_eq!(parse_cpu_mask("0\n"), Vec::<usize>::new());
        assert_eq!(parse_cpu_mask("f"), vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_mask("00000001,00000100"), vec![8, 32]);
        assert_eq!(parse_cpu_mask("zz"), Vec::<usize>::new());
    }

    #[test]
    fn interrupts_parse_header_counts_and_names() {
        let irqs = parse_interrupts(INTERRUPTS);
        assert_eq!(irqs.cpus, vec![0, 1, 2, 3]);
        let l38 = irqs.lines.iter().find(|l| l.irq == "38").unwrap();
        assert_eq!(l38.counts, vec![0, 7178, 0, 0]);
        assert_eq!(l38.action(), "virtio2-input.0");
        assert!(l38.is_device());
        let err = irqs.lines.iter().find(|l| l.irq == "ERR").unwrap();
        assert_eq!(err.counts, vec![0]);
        assert!(!err.is_device());
        let nmi = irqs.lines.iter().find(|l| l.irq == "NMI").unwrap();
        assert_eq!(nmi.desc, "Non-maskable interrupts");
    }

    #[test]
    fn device_name_matches_whole_words_only() {
        assert!(contains_word("1-edge virtio2-input.0", "virtio2"));
        assert!(!contains_word("1-edge virtio21-input.0", "virtio2"));
        assert!(!contains_word("xeth1-TxRx-0", "eth1"));
        assert!(contains_word("mlx5_comp0@pci:0000:3b:00.0", "0000:3b:00.0"));
    }

    #[test]
    fn irq_spread_counts_queue_irqs_and_skips_config() {
        let irqs = parse_interrupts(INTERRUPTS);
        let c = check_irq_spread("eth0", &["eth0".into(), "virtio2".into()], &irqs, 4);
        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.value, "2 queue IRQs served by CPUs 0-1");
    }

    #[test]
    fn irq_spread_warns_when_all_queues_hit_one_cpu() {
        let irqs = parse_interrupts(INTERRUPTS);
        let c = check_irq_spread("eth1", &["eth1".into()], &irqs, 4);
        assert_eq!(c.level, Level::Warn, "{c}");
        assert!(c.value.starts_with("2 queue IRQs served by CPUs 0"), "{c}");
        assert!(c.fix.unwrap().contains("irq-affinity.sh eth1"));
    }

    #[test]
    fn irq_spread_skips_a_nic_without_interrupts() {
        let irqs = parse_interrupts(INTERRUPTS);
        let c = check_irq_spread("veth9", &["veth9".into()], &irqs, 4);
        assert_eq!(c.level, Level::Note);
    }

    #[test]
    fn rps_off_with_fewer_queues_than_cpus_warns() {
        let c = check_rps("eth0", &["0\n".into()], 2);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.unwrap().contains("irq-affinity.sh eth0 0-1"));
        let c = check_rps("eth0", &["3\n".into()], 2);
        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.value, "1 rx queue(s), RPS to CPUs 0-1");
        let c = check_rps("eth0", &["0".into(), "0".into()], 2);
        assert_eq!(c.level, Level::Ok);
    }

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
    fn governor_names_the_slow_cpus() {
        let c = check_governor(&[
            (0, "performance".into()),
            (1, "powersave".into()),
            (2, "powersave".into()),
        ]);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.value, "powersave on CPUs 1-2");
        assert_eq!(check_governor(&[]).level, Level::Note);
        assert_eq!(
            check_governor(&[(0, "performance".into())]).level,
            Level::Ok
        );
    }

    #[test]
    fn isolated_cores_suggest_the_cores_flag() {
        let c = check_isolated(Some("2-3\n"), Some("2-3\n"));
        assert_eq!(c.level, Level::Ok);
        assert_eq!(
            c.value,
            "2-3 (nohz_full 2-3); pin shards there with --cores 2,3"
        );
        assert_eq!(check_isolated(Some("\n"), None).level, Level::Note);
    }

    #[test]
    fn media_ports_in_the_ephemeral_range_are_noted_unless_reserved() {
        let c = check_media_ports(Some("32768\t60999\n"), Some("\n"), 2);
        assert_eq!(c.level, Level::Note);
        let c = check_media_ports(Some("32768\t60999\n"), Some("40000-40063\n"), 2);
        assert_eq!(c.level, Level::Ok);
        let c = check_media_ports(Some("50000 60999"), None, 2);
        assert_eq!(c.level, Level::Ok);
    }

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
