//! A process's scheduling from Linux procfs: how long its threads waited for
//! a CPU ([`runqueue_wait_seconds`]) and how many CPUs it may run on
//! ([`allowed_cpu_count`]).

use std::fs;
use std::io;
use std::path::Path;

use super::process::thread_gone;

/// Time the threads of process `pid` have spent runnable but waiting for a
/// CPU (the second field of `/proc/<pid>/task/*/schedstat`), in seconds. On a
/// shared machine this tells contention for the process's cores from its own
/// slowness. Threads that exit meanwhile are left out.
pub fn runqueue_wait_seconds(pid: u32) -> io::Result<f64> {
    let mut ns = 0u64;
    for entry in fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task"))? {
        let line = match fs::read_to_string(entry?.path().join("schedstat")) {
            Ok(line) => line,
            Err(e) if thread_gone(&e) => continue,
            Err(e) => return Err(e),
        };
        ns += parse_schedstat_wait(&line).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unexpected schedstat format")
        })?;
    }
    Ok(ns as f64 / 1e9)
}

/// Run-queue wait in nanoseconds from a `schedstat` line (`run wait slices`).
fn parse_schedstat_wait(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse().ok()
}

/// How many CPUs process `pid` may run on (`Cpus_allowed_list` in its status),
/// so that CPU time can be read as a share of what the process can get.
pub fn allowed_cpu_count(pid: u32) -> io::Result<usize> {
    let status = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(parse_cpu_list)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no Cpus_allowed_list in /proc/{pid}/status"),
            )
        })
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                count += b.checked_sub(a)? + 1;
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                count += 1;
            }
        }
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(
            parse_schedstat_wait("222761266 139680794 740\n"),
            Some(139680794)
        );
        assert_eq!(parse_schedstat_wait("12"), None);
        assert_eq!(parse_schedstat_wait("a b c"), None);
        assert!(runqueue_wait_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(runqueue_wait_seconds(u32::MAX).is_err());
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list(" 0-3,8,10-11\n"), Some(7));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn own_process_may_run_somewhere() {
        let n = allowed_cpu_count(std::process::id()).unwrap();
        assert!(n >= 1);
        assert!(allowed_cpu_count(u32::MAX).is_err());
    }
}
