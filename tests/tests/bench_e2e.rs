//! sluice-bench against an in-process sluice over loopback: a small fan-out
//! run and a small ramp, read back through the JSON report and the SVG plot.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use sluice_bench::client::{MediaSpec, Transport};
use sluice_bench::fanout::{self, FanoutConfig, RampConfig, Target, DEFAULT_WHEP, DEFAULT_WHIP};
use sluice_bench::{plot, report};
use sluice_tests::{empties_then_stops, start};

fn config(base: String, stream: &str, viewers: usize) -> FanoutConfig {
    FanoutConfig {
        target: Target {
            base,
            stream: stream.into(),
            whip_template: DEFAULT_WHIP.into(),
            whep_template: DEFAULT_WHEP.into(),
            token: None,
            insecure: true,
            bind_ip: None,
            extra_media_ips: Vec::new(),
        },
        viewers,
        streams: 1,
        udp_gro: true,
        media: MediaSpec::default(),
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        // One decrypting viewer in five.
        sample_percent: 20.0,
        setup_concurrency: 4,
        setup_timeout: Duration::from_secs(15),
        // The server runs in this process.
        server_pid: Some(std::process::id()),
        ramp: None,
        worker_threads: 2,
        spin: false,
        progress: false,
        viewer_transport: Transport::Udp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_five_viewers_delivers_without_loss_and_reports_json() {
    let server = start(1, |_| {}).await;
    let cfg = config(server.url(), "bench-e2e", 5);
    let run = fanout::run(&cfg, Arc::new(AtomicBool::new(false)))
        .await
        .expect("fan-out run");

    let text = serde_json::to_string_pretty(&run).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(json["setup"]["attempted"], 5, "{text}");
    assert_eq!(json["setup"]["connected"], 5, "{text}");
    assert!(json["setup"]["rate_per_second"].as_f64().unwrap() > 0.0);
    assert!(json["setup"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let m = &json["measurement"];
    assert_eq!(m["viewers"], 5, "{text}");
    assert_eq!(m["sample_viewers"], 1, "{text}");
    assert!(m["published_packets"].as_u64().unwrap() > 0, "{text}");
    assert!(m["delivered_packets"].as_u64().unwrap() > 0, "{text}");
    assert!(m["delivered_pps"].as_f64().unwrap() > 0.0, "{text}");
    let loss = m["loss_percent"].as_f64().unwrap();
    assert!(loss < 1.0, "loss {loss}%: {text}");
    assert!(m["loss_per_viewer_percent"]["max"].as_f64().unwrap() < 1.0);
    assert_eq!(m["silent_viewers"], 0, "{text}");
    assert_eq!(m["corrupt_payloads"], 0, "{text}");
    assert!(m["latency_ms"]["samples"].as_u64().unwrap() > 0, "{text}");
    assert!(m["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{text}");
    let server_cpu = &m["server"];
    assert!(server_cpu["cpu_seconds"].as_f64().unwrap() > 0.0, "{text}");
    assert!(server_cpu["packets_per_cpu_second"].as_f64().unwrap() > 0.0);
    assert!(server_cpu["rss_bytes"].as_u64().unwrap() > 0);
    assert!(server_cpu["threads"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "shard-0"));
    assert!(json["ramp"].is_null());

    let table = report::format_fanout(&run);
    assert!(table.contains("5/5 connected"), "{table}");

    // The run DELETEs what it created.
    empties_then_stops(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_spread_over_several_streams_get_their_own_streams_media() {
    let server = start(1, |_| {}).await;
    let mut cfg = config(server.url(), "multi", 6);
    cfg.streams = 3;
    // The runtime's threads spin instead of sleeping in epoll: media still flows.
    cfg.spin = true;
    let run = fanout::run(&cfg, Arc::new(AtomicBool::new(false)))
        .await
        .expect("fan-out run");
    let text = serde_json::to_string_pretty(&run).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(json["settings"]["streams"], 3, "{text}");
    assert_eq!(json["setup"]["connected"], 6, "{text}");
    let m = &json["measurement"];
    // Each viewer is held to what its own stream published: full delivery
    // is only possible if every stream reached its two viewers.
    let delivery = m["delivery_percent"].as_f64().unwrap();
    assert!(
        (99.0..=101.0).contains(&delivery),
        "delivery {delivery}%: {text}"
    );
    assert!(
        m["loss_per_viewer_percent"]["max"].as_f64().unwrap() < 1.0,
        "{text}"
    );
    assert_eq!(m["silent_viewers"], 0, "{text}");
    assert_eq!(m["corrupt_payloads"], 0, "{text}");
    assert!(m["latency_ms"]["samples"].as_u64().unwrap() > 0, "{text}");
    empties_then_stops(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_steps_up_to_the_viewer_limit_and_plots() {
    let server = start(1, |_| {}).await;
    let mut cfg = config(server.url(), "bench-ramp", 4);
    cfg.warmup = Duration::from_millis(500);
    cfg.ramp = Some(RampConfig {
        step: 2,
        step_duration: Duration::from_secs(1),
        max_loss_percent: 5.0,
        max_server_load: 1.5,
        retries: 0,
    });
    let run = fanout::run(&cfg, Arc::new(AtomicBool::new(false)))
        .await
        .expect("ramp run");
    let ramp = run.ramp.as_ref().expect("ramp report");
    let viewers: Vec<usize> = ramp.steps.iter().map(|s| s.viewers).collect();
    assert_eq!(viewers, vec![2, 4], "stopped: {}", ramp.stop_reason);
    assert_eq!(ramp.held_viewers, 4, "stopped: {}", ramp.stop_reason);
    assert!(
        ramp.stop_reason.contains("--viewers 4"),
        "{}",
        ramp.stop_reason
    );
    assert!(ramp.steps.iter().all(|s| s.delivered_packets > 0));
    assert_eq!(run.measurement.as_ref().map(|m| m.viewers), Some(4));

    let path = std::env::temp_dir().join(format!("sluice-ramp-{}.svg", std::process::id()));
    plot::write_ramp_svg(&path, ramp, "e2e ramp").expect("plot");
    let svg = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("e2e ramp") && svg.contains("Latency"));
    server.shutdown().await;
}
