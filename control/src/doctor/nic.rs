//! NIC checks: queue interrupts spread over CPUs (/proc/interrupts) and RPS.

use std::collections::BTreeSet;
use std::path::Path;

use super::check::{read, Check, Level};
use super::cpu::{format_cpu_list, online_cpus, parse_cpu_mask};

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

pub(super) fn nic_checks() -> Vec<Check> {
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
    /// One entry per numbered IRQ row.
    pub lines: Vec<IrqLine>,
}

/// Parse /proc/interrupts text; rows without per-CPU counts are skipped.
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
}
