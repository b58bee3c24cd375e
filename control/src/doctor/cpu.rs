//! CPU checks (frequency governor, isolated cores) and the sysfs CPU list and mask formats.

use std::collections::BTreeSet;

use super::check::{read, Check, Level};

/// Online CPUs, from sysfs, else the count std sees.
pub(super) fn online_cpus() -> Vec<usize> {
    read("/sys/devices/system/cpu/online")
        .and_then(|s| parse_cpu_list(&s).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n).collect()
        })
}

/// (cpu, governor) for every CPU with a cpufreq policy.
pub(super) fn read_governors() -> Vec<(usize, String)> {
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

pub(super) fn check_governor(govs: &[(usize, String)]) -> Check {
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

pub(super) fn check_isolated(isolated: Option<&str>, nohz_full: Option<&str>) -> Check {
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
}
