//! Prometheus text exposition of shard counters, sessions and streams.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sluice_dataplane::Role;

use crate::server::App;

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&app),
    )
        .into_response()
}

/// The whole exposition.
pub fn render(app: &App) -> String {
    let mut out = String::with_capacity(4096);
    let snaps: Vec<_> = app
        .dataplane
        .shards
        .iter()
        .map(|s| (s.id, s.io, s.counters.snapshot()))
        .collect();
    if let Some((_, _, first)) = snaps.first() {
        for (i, (name, help, _)) in first.fields().into_iter().enumerate() {
            let _ = writeln!(out, "# HELP sluice_shard_{name}_total {help}");
            let _ = writeln!(out, "# TYPE sluice_shard_{name}_total counter");
            for (id, _, c) in &snaps {
                let v = c.fields()[i].2;
                let _ = writeln!(out, "sluice_shard_{name}_total{{shard=\"{id}\"}} {v}");
            }
        }
    }
    let _ = writeln!(out, "# HELP sluice_shard_sessions Sessions on each shard.");
    let _ = writeln!(out, "# TYPE sluice_shard_sessions gauge");
    for s in &app.dataplane.shards {
        let p = s.publishers.load(Ordering::Relaxed);
        let v = s.viewers.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluice_shard_sessions{{shard=\"{}\",role=\"publisher\"}} {p}",
            s.id
        );
        let _ = writeln!(
            out,
            "sluice_shard_sessions{{shard=\"{}\",role=\"viewer\"}} {v}",
            s.id
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_shard_info Shard placement and io backend."
    );
    let _ = writeln!(out, "# TYPE sluice_shard_info gauge");
    for s in &app.dataplane.shards {
        let core = s
            .core
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into());
        let _ = writeln!(
            out,
            "sluice_shard_info{{shard=\"{}\",io=\"{}\",core=\"{core}\",addr=\"{}\"}} 1",
            s.id, s.io, s.addr
        );
    }
    let reg = app.registry();
    let _ = writeln!(out, "# HELP sluice_sessions Registered sessions by role.");
    let _ = writeln!(out, "# TYPE sluice_sessions gauge");
    for role in [Role::Publisher, Role::Viewer] {
        let _ = writeln!(
            out,
            "sluice_sessions{{role=\"{}\"}} {}",
            role.as_str(),
            reg.count_by_role(role)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_streams Streams with a publisher or viewers."
    );
    let _ = writeln!(out, "# TYPE sluice_streams gauge");
    let _ = writeln!(out, "sluice_streams {}", reg.stream_count());
    let _ = writeln!(out, "# HELP sluice_stream_viewers Viewers per stream.");
    let _ = writeln!(out, "# TYPE sluice_stream_viewers gauge");
    for s in reg.streams() {
        let _ = writeln!(
            out,
            "sluice_stream_viewers{{stream=\"{}\"}} {}",
            s.name, s.viewers
        );
    }
    drop(reg);
    let _ = writeln!(out, "# HELP sluice_draining 1 while the server drains.");
    let _ = writeln!(out, "# TYPE sluice_draining gauge");
    let _ = writeln!(out, "sluice_draining {}", app.is_draining() as u8);
    let _ = writeln!(out, "# HELP sluice_uptime_seconds Seconds since start.");
    let _ = writeln!(out, "# TYPE sluice_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "sluice_uptime_seconds {:.3}",
        app.started.elapsed().as_secs_f64()
    );
    if let Some((cpu, rss)) = process_usage() {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time."
        );
        let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
        let _ = writeln!(out, "process_cpu_seconds_total {cpu:.3}");
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory.");
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    out
}

/// (CPU seconds, RSS bytes) of this process from /proc.
fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime [11], stime [12], rss pages [21].
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some(((utime + stime) / 100.0, rss_pages * 4096))
}
