//! Per-thread CPU time and resident memory of a process read from Linux procfs
//! ([`ProcSnapshot`]), and what it spent between two readings
//! ([`diff_snapshots`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

/// CPU time of one thread at the moment of a [`ProcSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name (`comm`, at most 15 bytes).
    pub name: String,
    /// User plus system CPU time since the thread started, in seconds.
    pub cpu_seconds: f64,
}

/// CPU time per thread and resident memory of one process at one instant.
#[derive(Debug, Clone)]
pub struct ProcSnapshot {
    /// Process id the snapshot was read from.
    pub pid: u32,
    /// When the snapshot was read.
    pub taken_at: Instant,
    /// Threads alive at that instant.
    pub threads: Vec<ThreadCpu>,
    /// Resident set size (VmRSS) in bytes; 0 for processes without one.
    pub rss_bytes: u64,
}

impl ProcSnapshot {
    /// Reads `/proc/<pid>/task/*/stat` and `/proc/<pid>/status`.
    ///
    /// Threads that exit while the snapshot is being read are left out.
    pub fn read(pid: u32) -> io::Result<ProcSnapshot> {
        let root = Path::new("/proc").join(pid.to_string());
        let taken_at = Instant::now();
        let ticks = clock_ticks_per_second();
        let mut threads = Vec::new();
        for entry in fs::read_dir(root.join("task"))? {
            let entry = entry?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let line = match fs::read_to_string(entry.path().join("stat")) {
                Ok(line) => line,
                // A thread that exited meanwhile reads as ENOENT or ESRCH.
                Err(e) if thread_gone(&e) => continue,
                Err(e) => return Err(e),
            };
            let (name, cpu_ticks) = parse_stat_line(&line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected format in /proc/{pid}/task/{tid}/stat"),
                )
            })?;
            threads.push(ThreadCpu {
                tid,
                name,
                cpu_seconds: cpu_ticks as f64 / ticks,
            });
        }
        threads.sort_by_key(|t| t.tid);
        let status = fs::read_to_string(root.join("status"))?;
        Ok(ProcSnapshot {
            pid,
            taken_at,
            threads,
            rss_bytes: parse_vm_rss(&status).unwrap_or(0),
        })
    }

    /// Sum of the CPU time of the threads alive at the snapshot, in seconds.
    pub fn total_cpu_seconds(&self) -> f64 {
        self.threads.iter().map(|t| t.cpu_seconds).sum()
    }
}

/// CPU time spent by the threads of one name between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedCpu {
    /// Thread name shared by the group.
    pub name: String,
    /// Threads of that name alive at the later snapshot.
    pub threads: usize,
    /// CPU seconds they spent between the snapshots.
    pub cpu_seconds: f64,
}

/// What a process did between two [`ProcSnapshot`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcDelta {
    /// Wall time between the snapshots.
    pub wall_seconds: f64,
    /// CPU seconds spent, all groups together.
    pub cpu_seconds: f64,
    /// Per thread name, the busiest first.
    pub by_name: Vec<NamedCpu>,
    /// RSS at the later snapshot.
    pub rss_bytes: u64,
}

impl ProcDelta {
    /// Average number of cores kept busy between the snapshots.
    pub fn cores(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.cpu_seconds / self.wall_seconds
        } else {
            0.0
        }
    }
}

/// CPU time per thread name between `before` and `after` (same process).
///
/// Threads are matched by id; a thread new in `after` counts from zero, and
/// the time of threads that exited in between is not seen by either snapshot.
pub fn diff_snapshots(before: &ProcSnapshot, after: &ProcSnapshot) -> ProcDelta {
    let earlier: HashMap<u32, &ThreadCpu> = before.threads.iter().map(|t| (t.tid, t)).collect();
    let mut groups: Vec<NamedCpu> = Vec::new();
    for thread in &after.threads {
        let base = match earlier.get(&thread.tid) {
            // A reused tid shows as a different name or a clock that went back.
            Some(old) if old.name == thread.name && old.cpu_seconds <= thread.cpu_seconds => {
                old.cpu_seconds
            }
            _ => 0.0,
        };
        let spent = thread.cpu_seconds - base;
        match groups.iter_mut().find(|g| g.name == thread.name) {
            Some(group) => {
                group.threads += 1;
                group.cpu_seconds += spent;
            }
            None => groups.push(NamedCpu {
                name: thread.name.clone(),
                threads: 1,
                cpu_seconds: spent,
            }),
        }
    }
    groups.sort_by(|a, b| {
        b.cpu_seconds
            .total_cmp(&a.cpu_seconds)
            .then(a.name.cmp(&b.name))
    });
    ProcDelta {
        wall_seconds: after
            .taken_at
            .saturating_duration_since(before.taken_at)
            .as_secs_f64(),
        cpu_seconds: groups.iter().map(|g| g.cpu_seconds).sum(),
        by_name: groups,
        rss_bytes: after.rss_bytes,
    }
}

/// Whether a procfs read failed because the thread exited meanwhile.
pub(super) fn thread_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The `sysconf` call behind `clock_ticks_per_second`, the module's only
/// `unsafe` code.
#[allow(unsafe_code)]
mod sys {
    /// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc`; zero or
    /// negative when the system does not say.
    pub(super) fn clock_ticks() -> libc::c_long {
        // SAFETY: sysconf takes no pointers and only reads a system constant.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
    }
}

fn clock_ticks_per_second() -> f64 {
    let ticks = sys::clock_ticks();
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Thread name and utime + stime in clock ticks from a `stat` line.
///
/// The name is in parentheses and may itself contain spaces and parentheses,
/// so the fields are counted from the last `)`.
fn parse_stat_line(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    // Fields after the name start at field 3 (state); utime and stime are 14 and 15.
    let mut fields = line.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// VmRSS in bytes from the text of `/proc/<pid>/status`.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn stat_line_with_parentheses_in_name_parses() {
        let line = "4242 (we (ird) name) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat_line(line),
            Some(("we (ird) name".to_string(), 300))
        );
        assert_eq!(parse_stat_line("4242 (short) R 1 2"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn snapshot_of_own_process_has_threads_and_memory() {
        let snap = ProcSnapshot::read(std::process::id()).unwrap();
        assert!(!snap.threads.is_empty());
        assert!(snap.rss_bytes > 0);
        assert!(snap.threads.iter().any(|t| t.tid == std::process::id()));
        assert!(snap.total_cpu_seconds() >= 0.0);
    }

    #[test]
    fn snapshot_of_missing_process_is_an_error() {
        // Above the kernel's PID_MAX_LIMIT (2^22), so no such process can exist.
        assert!(ProcSnapshot::read(u32::MAX).is_err());
    }

    #[test]
    fn diff_attributes_cpu_to_the_busy_thread_name() {
        let pid = std::process::id();
        let before = ProcSnapshot::read(pid).unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (busy_tx, busy_rx) = mpsc::channel::<bool>();
        let spinner = std::thread::Builder::new()
            .name("stats-spin".into())
            .spawn(move || {
                // Spin until procfs shows 50 ms of CPU for this thread, or give up.
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut x = 0u64;
                let reached = loop {
                    for i in 0..100_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                    let snap = ProcSnapshot::read(pid).unwrap();
                    let cpu: f64 = snap
                        .threads
                        .iter()
                        .filter(|t| t.name == "stats-spin")
                        .map(|t| t.cpu_seconds)
                        .sum();
                    if cpu >= 0.05 {
                        break true;
                    }
                    if Instant::now() > deadline {
                        break false;
                    }
                };
                busy_tx.send(reached).unwrap();
                // Stay alive until the second snapshot is taken.
                done_rx.recv().ok();
            })
            .unwrap();
        assert!(
            busy_rx.recv().unwrap(),
            "spinner never accumulated CPU time"
        );
        let after = ProcSnapshot::read(pid).unwrap();
        done_tx.send(()).unwrap();
        spinner.join().unwrap();

        let delta = diff_snapshots(&before, &after);
        let spin = delta
            .by_name
            .iter()
            .find(|g| g.name == "stats-spin")
            .unwrap();
        assert_eq!(spin.threads, 1);
        assert!(spin.cpu_seconds >= 0.05, "{spin:?}");
        assert!(delta.cpu_seconds >= spin.cpu_seconds);
        assert!(delta.wall_seconds > 0.0);
        assert!(delta.cores() > 0.0);
    }
}
