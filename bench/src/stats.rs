//! Measurement primitives for the load generator: RTP sequence accounting
//! ([`SeqTracker`]), latency histograms ([`Histogram`]), min/median/max of
//! repeated runs ([`summarize`]) and per-thread CPU time and RSS of a process
//! read from Linux procfs ([`ProcSnapshot`], [`diff_snapshots`]).
//!
//! Everything here is plain data with bounded memory; only the procfs readings
//! ([`ProcSnapshot::read`], [`runqueue_wait_seconds`], [`allowed_cpu_count`])
//! touch the operating system.
//!
//! The pieces are in submodules: `seq` accounts sequence numbers, `histogram`
//! holds latency distributions, `summary` summarizes repeated runs, `process`
//! reads a process's threads and memory, and `sched` its waits for a CPU and
//! the CPUs it may run on.

mod histogram;
mod process;
mod sched;
mod seq;
mod summary;

pub use histogram::Histogram;
pub use process::{diff_snapshots, NamedCpu, ProcDelta, ProcSnapshot, ThreadCpu};
pub use sched::{allowed_cpu_count, runqueue_wait_seconds};
pub use seq::{SeqTracker, SEQ_WINDOW};
pub use summary::{summarize, Summary};
