//! Prometheus text exposition of shard counters, sessions and streams. Per-session
//! series (whose labels carry session ids) go only to the admin: see [`shows_sessions`].

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sluice_dataplane::{Role, ShardHandle};

use crate::app::App;

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let sessions = shows_sessions(&app, &headers);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&app, sessions),
    )
        .into_response()
}

/// Per-session and per-track series are shown when `metrics_sessions` is on and
/// the request passes the admin check: the admin token when one is set, anyone
/// in open dev mode (no secret, no admin token), no one when a secret is set
/// without an admin token.
pub fn shows_sessions(app: &App, headers: &HeaderMap) -> bool {
    app.config.metrics_sessions && crate::authz::admin(app, headers).is_ok()
}

/// The whole exposition; `sessions` adds the per-session and per-track series.
pub fn render(app: &App, sessions: bool) -> String {
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
    shard_loop_metrics(&mut out, app);
    transport_metrics(&mut out, app);
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
    let streams = reg.streams();
    drop(reg);
    for s in &streams {
        let _ = writeln!(
            out,
            "sluice_stream_viewers{{stream=\"{}\"}} {}",
            label(&s.name),
            s.viewers
        );
    }
    family(
        &mut out,
        "sluice_stream_bitrate_bps",
        "gauge",
        "Publisher's RTP payload rate per stream, bits/s.",
    );
    for s in &streams {
        let _ = writeln!(
            out,
            "sluice_stream_bitrate_bps{{stream=\"{}\"}} {}",
            label(&s.name),
            s.bitrate_bps
        );
    }
    family(
        &mut out,
        "sluice_stream_received_bytes_total",
        "counter",
        "RTP payload bytes received from publishers per stream.",
    );
    for s in &streams {
        let _ = writeln!(
            out,
            "sluice_stream_received_bytes_total{{stream=\"{}\"}} {}",
            label(&s.name),
            s.bytes_in
        );
    }
    family(
        &mut out,
        "sluice_stream_layer_bitrate_bps",
        "gauge",
        "Simulcast layer rates per stream, bits/s.",
    );
    for s in &streams {
        for l in &s.layers {
            let _ = writeln!(
                out,
                "sluice_stream_layer_bitrate_bps{{stream=\"{}\",rid=\"{}\"}} {}",
                label(&s.name),
                label(&l.rid),
                l.bitrate_bps
            );
        }
    }
    if sessions {
        session_metrics(&mut out, app);
    }
    family(
        &mut out,
        "sluice_refused_total",
        "counter",
        "Connections, requests and room participants refused or closed over a limit, by reason.",
    );
    for (reason, n) in app.limits.refused() {
        let _ = writeln!(out, "sluice_refused_total{{reason=\"{reason}\"}} {n}");
    }
    if let Some(c) = &app.cluster {
        cluster_metrics(&mut out, c);
        relay_metrics(&mut out, app.relays.counts());
    }
    family(
        &mut out,
        "sluice_http_connections",
        "gauge",
        "Open HTTPS connections.",
    );
    let _ = writeln!(out, "sluice_http_connections {}", app.limits.connections());
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

/// Open ICE-TCP connections per shard, and connected sessions by transport
/// and address family.
fn transport_metrics(out: &mut String, app: &App) {
    shard_gauge(
        out,
        app,
        "sluice_shard_tcp_connections",
        "Open ICE-TCP connections on each shard (answered or not yet).",
        &|s| s.tcp_conns.load(Ordering::Relaxed),
    );
    shard_gauge(
        out,
        app,
        "sluice_shard_tcp_queued_bytes",
        "Bytes waiting in each shard's ICE-TCP write queues together (bounded by tcp_queue_budget_bytes).",
        &|s| s.tcp_queued.load(Ordering::Relaxed),
    );
    let mut by_role = [crate::transports::Split::default(); 2];
    for t in crate::transports::by_shard(app) {
        by_role[0] += t.publishers;
        by_role[1] += t.viewers;
    }
    let roles = [Role::Publisher, Role::Viewer];
    family(
        out,
        "sluice_sessions_by_transport",
        "gauge",
        "Sessions with a selected peer address, by role and transport (udp, tcp).",
    );
    for (role, s) in roles.iter().zip(&by_role) {
        for (t, n) in [("udp", s.udp), ("tcp", s.tcp)] {
            let r = role.as_str();
            let _ = writeln!(
                out,
                "sluice_sessions_by_transport{{role=\"{r}\",transport=\"{t}\"}} {n}"
            );
        }
    }
    family(
        out,
        "sluice_sessions_by_family",
        "gauge",
        "Sessions with a selected peer address, by role and the peer's address family.",
    );
    for (role, s) in roles.iter().zip(&by_role) {
        for (f, n) in [("ipv4", s.ipv4), ("ipv6", s.ipv6)] {
            let r = role.as_str();
            let _ = writeln!(
                out,
                "sluice_sessions_by_family{{role=\"{r}\",family=\"{f}\"}} {n}"
            );
        }
    }
}

/// The registry's calls and this node's view of the cluster.
fn cluster_metrics(out: &mut String, c: &crate::cluster::Cluster) {
    let stats = c.registry().stats();
    let one = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    };
    one(
        out,
        "sluice_registry_requests_total",
        "counter",
        "Calls to the cluster registry.",
        stats.requests().to_string(),
    );
    one(
        out,
        "sluice_registry_errors_total",
        "counter",
        "Cluster registry calls that failed or timed out.",
        stats.errors().to_string(),
    );
    family(
        out,
        "sluice_registry_latency_seconds",
        "summary",
        "Time taken by cluster registry calls.",
    );
    let _ = writeln!(
        out,
        "sluice_registry_latency_seconds_sum {:.6}",
        stats.latency_sum_secs()
    );
    let _ = writeln!(
        out,
        "sluice_registry_latency_seconds_count {}",
        stats.requests()
    );
    one(
        out,
        "sluice_cluster_nodes",
        "gauge",
        "Live nodes in the cluster at the last heartbeat.",
        c.nodes_seen().to_string(),
    );
    one(
        out,
        "sluice_cluster_claims_lost_total",
        "counter",
        "Stream and room claims found held by another node at renewal.",
        c.claims_lost().to_string(),
    );
    one(
        out,
        "sluice_cluster_registry_healthy",
        "gauge",
        "1 while the cluster registry answers.",
        u8::from(c.healthy()).to_string(),
    );
}

/// The relay's links and streams; its packets are the shards' `relay_*` counters.
fn relay_metrics(out: &mut String, c: crate::relay::book::RelayCounts) {
    family(
        out,
        "sluice_relay_links",
        "gauge",
        "Relay links to other nodes, by direction.",
    );
    let _ = writeln!(out, "sluice_relay_links{{direction=\"in\"}} {}", c.links_in);
    let _ = writeln!(
        out,
        "sluice_relay_links{{direction=\"out\"}} {}",
        c.links_out
    );
    family(
        out,
        "sluice_relay_pulls",
        "gauge",
        "Streams this node pulls from an upstream node.",
    );
    let _ = writeln!(out, "sluice_relay_pulls {}", c.pulls);
    family(
        out,
        "sluice_relay_served",
        "gauge",
        "(stream, downstream node) pairs this node relays to.",
    );
    let _ = writeln!(out, "sluice_relay_served {}", c.served);
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One duration histogram per shard, in [`TURN_BUCKETS`].
///
/// [`TURN_BUCKETS`]: sluice_dataplane::TURN_BUCKETS
fn shard_histogram(
    out: &mut String,
    app: &App,
    name: &str,
    help: &str,
    of: impl Fn(&ShardHandle) -> &sluice_dataplane::TurnHistogram,
) {
    use sluice_dataplane::TURN_BUCKETS;
    family(out, name, "histogram", help);
    for s in &app.dataplane.shards {
        let (counts, sum) = of(s).cumulative();
        for (i, c) in counts.iter().enumerate() {
            let le = TURN_BUCKETS
                .get(i)
                .map(|b| format!("{b}"))
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "{name}_bucket{{shard=\"{}\",le=\"{le}\"}} {c}", s.id);
        }
        let _ = writeln!(out, "{name}_sum{{shard=\"{}\"}} {sum:.6}", s.id);
        let _ = writeln!(
            out,
            "{name}_count{{shard=\"{}\"}} {}",
            s.id,
            counts.last().copied().unwrap_or(0)
        );
    }
}

/// A gauge with one series per shard, the value `f` reads off its handle.
fn shard_gauge(
    out: &mut String,
    app: &App,
    name: &str,
    help: &str,
    f: &dyn Fn(&ShardHandle) -> usize,
) {
    family(out, name, "gauge", help);
    for s in &app.dataplane.shards {
        let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.id, f(s));
    }
}

/// Loop turn times, forwarding delay and queue depths of each shard.
fn shard_loop_metrics(out: &mut String, app: &App) {
    shard_histogram(
        out,
        app,
        "sluice_shard_loop_turn_seconds",
        "Time taken by busy event loop turns (idle turns are not counted).",
        |s| &s.turns,
    );
    shard_histogram(
        out,
        app,
        "sluice_shard_forward_delay_seconds",
        "Per forwarded packet copy: from the packet's arrival at the publisher's shard to the end of the send that carried it (time waiting in the socket before that is not included).",
        |s| &s.forward_delay,
    );
    shard_gauge(
        out,
        app,
        "sluice_shard_fanout_queue_depth",
        "Fan-out batches from other shards waiting in each shard's queue.",
        &|s| s.fanout_depth(),
    );
    shard_gauge(
        out,
        app,
        "sluice_shard_fanout_queue_capacity",
        "Fan-out queue capacity; batches beyond it are dropped and counted.",
        &|s| s.fanout_capacity,
    );
    shard_gauge(
        out,
        app,
        "sluice_shard_command_queue_depth",
        "Control commands waiting for each shard.",
        &|s| s.command_depth(),
    );
}

/// Per-session and per-track series from the shards' stats tables.
fn session_metrics(out: &mut String, app: &App) {
    let sessions = app.sessions_with_stats();
    let measured: Vec<_> = sessions
        .iter()
        .filter_map(|s| s.stats.as_ref().map(|st| (s, st)))
        .collect();
    let id = |s: &crate::registry::SessionInfo| {
        format!(
            "session=\"{}\",role=\"{}\",stream=\"{}\"",
            s.id,
            s.role,
            label(&s.stream)
        )
    };
    family(
        out,
        "sluice_session_bitrate_bps",
        "gauge",
        "RTP payload rate per session and direction (in = from the peer), bits/s.",
    );
    for (s, st) in &measured {
        let l = id(s);
        let _ = writeln!(
            out,
            "sluice_session_bitrate_bps{{{l},direction=\"in\"}} {}",
            st.bitrate_in_bps
        );
        let _ = writeln!(
            out,
            "sluice_session_bitrate_bps{{{l},direction=\"out\"}} {}",
            st.bitrate_out_bps
        );
    }
    family(
        out,
        "sluice_session_loss_ratio",
        "gauge",
        "Fraction of packets lost per session and direction over the last interval.",
    );
    for (s, st) in &measured {
        let l = id(s);
        for (dir, v) in [("in", st.loss_in), ("out", st.loss_out)] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "sluice_session_loss_ratio{{{l},direction=\"{dir}\"}} {v}"
                );
            }
        }
    }
    family(
        out,
        "sluice_session_rtt_seconds",
        "gauge",
        "Round-trip time per session.",
    );
    for (s, st) in &measured {
        if let Some(ms) = st.rtt_ms {
            let _ = writeln!(out, "sluice_session_rtt_seconds{{{}}} {}", id(s), ms / 1e3);
        }
    }
    family(
        out,
        "sluice_session_bwe_bps",
        "gauge",
        "Bandwidth estimate toward the peer (TWCC), bits/s.",
    );
    for (s, st) in &measured {
        if let Some(b) = st.bwe_bps {
            let _ = writeln!(out, "sluice_session_bwe_bps{{{}}} {b}", id(s));
        }
    }
    let tracks: Vec<_> = measured
        .iter()
        .flat_map(|(s, st)| st.tracks.iter().map(move |t| (*s, t)))
        .collect();
    let tl = |s: &crate::registry::SessionInfo, t: &sluice_dataplane::TrackStats| {
        format!(
            "{},mid=\"{}\",rid=\"{}\",kind=\"{}\",direction=\"{}\"",
            id(s),
            label(&t.mid),
            label(t.rid.as_deref().unwrap_or("")),
            t.kind.unwrap_or(""),
            t.direction
        )
    };
    family(
        out,
        "sluice_track_bitrate_bps",
        "gauge",
        "Rate per track (RTP, with retransmissions), bits/s.",
    );
    for (s, t) in &tracks {
        let _ = writeln!(
            out,
            "sluice_track_bitrate_bps{{{}}} {}",
            tl(s, t),
            t.bitrate_bps
        );
    }
    for (name, help, get) in [
        (
            "sluice_track_packets_total",
            "RTP packets per track, with retransmissions.",
            (|t| t.packets) as fn(&sluice_dataplane::TrackStats) -> u64,
        ),
        (
            "sluice_track_nacks_total",
            "NACKs per track: sent to a publisher (in) or received from a viewer (out).",
            |t| t.nacks,
        ),
        (
            "sluice_track_plis_total",
            "PLIs per track: sent to a publisher (in) or received from a viewer (out).",
            |t| t.plis,
        ),
    ] {
        family(out, name, "counter", help);
        for (s, t) in &tracks {
            let _ = writeln!(out, "{name}{{{}}} {}", tl(s, t), get(t));
        }
    }
    family(
        out,
        "sluice_track_loss_ratio",
        "gauge",
        "Fraction lost per track, from the last receiver report.",
    );
    for (s, t) in &tracks {
        if let Some(v) = t.loss {
            let _ = writeln!(out, "sluice_track_loss_ratio{{{}}} {v}", tl(s, t));
        }
    }
    family(
        out,
        "sluice_track_layer_info",
        "gauge",
        "Simulcast layer forwarded to a viewer's track, the one wanted and the cap (-1 none).",
    );
    for (s, t) in &tracks {
        if t.layer.is_some() || t.target_layer.is_some() {
            let _ = writeln!(
                out,
                "sluice_track_layer_info{{{},layer=\"{}\",target=\"{}\",max=\"{}\"}} 1",
                tl(s, t),
                label(t.layer.as_deref().unwrap_or("")),
                label(t.target_layer.as_deref().unwrap_or("")),
                t.max_layer.map(|m| m as i32).unwrap_or(-1)
            );
        }
    }
}
