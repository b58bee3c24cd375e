//! The io backends alone, without the SFU core: a source on CPU 1 sends
//! `--rate` datagrams a second to a backend's socket; the backend's loop on
//! CPU 0 (recv, fan out, send, park when idle, as a shard does) sends a copy
//! of each to `--fanout` distinct addresses, drained on CPU 1. Reports the
//! loop thread's CPU time per datagram sent, per backend, rounds interleaved.
//!
//! cargo run --release -p sluice-dataplane --example io_compare -- \
//!     [--fanout 50] [--rate 2000] [--size 1200] [--secs 3] [--rounds 5] [--io std,mmsg,uring]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::Counters;
use sluice_dataplane::Datagram;
use sluice_dataplane::{bind_udp, make_backend, set_thread_cpus, IoKind, Waker};

struct Args {
    fanout: usize,
    rate: u64,
    size: usize,
    secs: u64,
    rounds: usize,
    io: Vec<IoKind>,
}

fn parse_args() -> Args {
    let mut a = Args {
        fanout: 50,
        rate: 2000,
        size: 1200,
        secs: 3,
        rounds: 5,
        io: vec![IoKind::Std, IoKind::Mmsg, IoKind::Uring],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        let bad = || -> ! {
            eprintln!("bad value {v:?} for {}", pair[0]);
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--fanout" => a.fanout = v.parse().unwrap_or_else(|_| bad()),
            "--rate" => a.rate = v.parse().unwrap_or_else(|_| bad()),
            "--size" => a.size = v.parse().unwrap_or_else(|_| bad()),
            "--secs" => a.secs = v.parse().unwrap_or_else(|_| bad()),
            "--rounds" => a.rounds = v.parse().unwrap_or_else(|_| bad()),
            "--io" => {
                a.io = v
                    .split(',')
                    .map(|s| IoKind::parse(s).unwrap_or_else(|| bad()))
                    .collect()
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    a.fanout = a.fanout.clamp(1, 250);
    a
}

/// CPU time of the calling thread, from the scheduler (nanoseconds).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

struct Trial {
    name: &'static str,
    sent: u64,
    received_by_sink: u64,
    cpu_ns: u64,
    turns: u64,
}

fn trial(kind: IoKind, a: &Args) -> Trial {
    let sock = bind_udp("127.0.0.1:0".parse().unwrap(), 8 << 20).unwrap();
    let target = sock.local_addr().unwrap();
    // One sink bound to every loopback address: each viewer a distinct address.
    let sink = bind_udp("0.0.0.0:0".parse().unwrap(), 8 << 20).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let dests: Vec<SocketAddr> = (0..a.fanout)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i as u8)), sink_port))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));

    let sink_thread = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let _ = set_thread_cpus(&[1]);
            let mut buf = [0u8; 2048];
            sink.set_nonblocking(false).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (rate, size, secs) = (a.rate, a.size, a.secs);
    let source_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = set_thread_cpus(&[1]);
            let src = UdpSocket::bind("127.0.0.1:0").unwrap();
            let payload = vec![0x80u8; size];
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let _ = src.send_to(&payload, target);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    let fanout = dests.clone();
    let forwarder = std::thread::spawn(move || {
        let _ = set_thread_cpus(&[0]);
        let mut backend = make_backend(kind, sock);
        let name = backend.name();
        let waker = Waker::new().unwrap();
        let mut out: Vec<Datagram> = Vec::new();
        let mut counters = Counters::default();
        let mut turns = 0u64;
        let until = Instant::now() + Duration::from_secs(secs);
        let cpu0 = thread_cpu_ns();
        while Instant::now() < until {
            turns += 1;
            let n = backend
                .recv(&mut |_, d| {
                    for &dest in &fanout {
                        out.push(Datagram {
                            destination: dest,
                            contents: d.to_vec(),
                        });
                    }
                })
                .unwrap_or(0);
            backend.send(&mut out, &mut counters);
            if n == 0 {
                waker.prepare_park();
                waker.park(&[backend.fd()], Duration::from_millis(10));
            }
        }
        let cpu = thread_cpu_ns() - cpu0;
        (name, counters.tx_packets, cpu, turns)
    });
    let (name, sent, cpu_ns, turns) = forwarder.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    source_thread.join().unwrap();
    sink_thread.join().unwrap();
    Trial {
        name,
        sent,
        received_by_sink: received.load(Ordering::Relaxed),
        cpu_ns,
        turns,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a = parse_args();
    println!(
        "fan-out {} x {} B at {} datagrams/s in ({} out), {} s per trial, {} rounds",
        a.fanout,
        a.size,
        a.rate,
        a.rate * a.fanout as u64,
        a.secs,
        a.rounds
    );
    let mut per_kind: Vec<Vec<f64>> = vec![Vec::new(); a.io.len()];
    let mut names = vec![""; a.io.len()];
    for round in 1..=a.rounds {
        for (k, &kind) in a.io.iter().enumerate() {
            let t = trial(kind, &a);
            assert_eq!(t.name, kind.as_str(), "backend fell back");
            let ns = t.cpu_ns as f64 / t.sent.max(1) as f64;
            println!(
                "round {round} {:<5} sent {:>8} ({:.0}/s) sink got {:>5.1}%  turns/s {:>6.0}  cpu {:>5.1}%  {:>6.0} ns/datagram",
                t.name,
                t.sent,
                t.sent as f64 / a.secs as f64,
                100.0 * t.received_by_sink as f64 / t.sent.max(1) as f64,
                t.turns as f64 / a.secs as f64,
                100.0 * t.cpu_ns as f64 / (a.secs as f64 * 1e9),
                ns
            );
            per_kind[k].push(ns);
            names[k] = t.name;
        }
    }
    let medians: Vec<f64> = per_kind.iter_mut().map(|v| median(v)).collect();
    let base = medians[0];
    println!("median ns per datagram sent (ratio to {}):", names[0]);
    for (k, m) in medians.iter().enumerate() {
        let (lo, hi) = (
            per_kind[k].first().copied().unwrap_or(0.0),
            per_kind[k].last().copied().unwrap_or(0.0),
        );
        println!(
            "  {:<5} {:>6.0} ns  (min {:.0}, max {:.0})  x{:.2}",
            names[k],
            m,
            lo,
            hi,
            m / base
        );
    }
}
