//! Tests of the ICE-TCP layer: framing, the write queue's limits, and the
//! shard's budget of queued bytes over real loopback connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

fn frames(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(&(p.len() as u16).to_be_bytes());
        v.extend_from_slice(p);
    }
    v
}

/// An answered connection over loopback whose far end nobody reads.
fn conn(serial: u64) -> (Conn, std::net::TcpStream) {
    let std_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(std_tcp.local_addr().unwrap()).unwrap();
    let (far, _) = std_tcp.accept().unwrap();
    let now = Instant::now();
    let c = Conn {
        stream: TcpStream::from_std(stream),
        real: "127.0.0.1:1".parse().unwrap(),
        flow: tcp_flow_addr(0, serial, 1),
        rbuf: Vec::new(),
        wbuf: Vec::new(),
        wpos: 0,
        answered: true,
        opened: now,
        last_rx: now,
        last_progress: now,
        congested: false,
        waiting: true,
        readable: false,
    };
    (c, far)
}

#[test]
fn frames_are_split_and_a_partial_one_is_left() {
    let buf = frames(&[&[0, 1, 2], &[1; 10], &[2; 5]]);
    let mut got = Vec::new();
    let (used, n) = deframe(&buf[..buf.len() - 2], 2048, false, &mut |f| {
        got.push(f.to_vec())
    })
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(used, 2 + 3 + 2 + 10);
    assert_eq!(got, vec![vec![0, 1, 2], vec![1; 10]]);
}

#[test]
fn the_rest_of_a_cut_frame_is_queued_and_the_limit_holds() {
    let (mut c, _far) = conn(1);
    let limits = TcpLimits {
        queue_hard: 100,
        ..TcpLimits::default()
    };
    let (mut total, mut counts) = (0, Counters::default());
    let mut q = Queuing {
        limits: &limits,
        total: &mut total,
        counts: &mut counts,
    };
    // Cut inside the length: its second byte and the data remain.
    q.queue(&mut c, &[7, 8, 9], 1);
    assert_eq!(c.wbuf, vec![3, 7, 8, 9]);
    // Cut inside the data.
    q.queue(&mut c, &[1, 2, 3, 4], 4);
    assert_eq!(c.wbuf, vec![3, 7, 8, 9, 3, 4]);
    // Whole, then over the limit: dropped and counted.
    q.queue(&mut c, &[5], 0);
    assert_eq!(c.wbuf, vec![3, 7, 8, 9, 3, 4, 0, 1, 5]);
    q.queue(&mut c, &[0; 100], 0);
    assert_eq!(c.wbuf.len(), 9);
    assert_eq!(total, 9);
    assert_eq!(counts.tcp_drop_queue_full, 1);
    assert_eq!(counts.tcp_drop_budget, 0);
}

#[test]
fn past_half_the_budget_only_connections_under_the_soft_limit_queue_more() {
    let limits = TcpLimits {
        queue_soft: 200,
        queue_hard: 1000,
        queue_total: 1000,
        ..TcpLimits::default()
    };
    let (mut a, _fa) = conn(1);
    let (mut b, _fb) = conn(2);
    let (mut c, _fc) = conn(3);
    let (mut total, mut counts) = (0, Counters::default());
    let mut q = Queuing {
        limits: &limits,
        total: &mut total,
        counts: &mut counts,
    };
    let frame = [1u8; 98];
    // `a` stalls: past its soft limit it may fill half the budget, no more.
    for _ in 0..6 {
        q.queue(&mut a, &frame, 0);
    }
    assert_eq!((a.queued(), q.counts.tcp_drop_budget), (500, 1));
    // `b` keeps up: under its soft limit it still queues past half...
    for _ in 0..4 {
        q.queue(&mut b, &frame, 0);
    }
    assert_eq!((b.queued(), q.counts.tcp_drop_budget), (300, 2));
    // ...and `c` up to the whole budget, not past it.
    for _ in 0..3 {
        q.queue(&mut c, &frame, 0);
    }
    assert_eq!((c.queued(), q.counts.tcp_drop_budget), (200, 3));
    // The rest of a cut frame goes in whatever the budget.
    q.queue(&mut c, &frame, 50);
    assert_eq!(c.queued(), 250);
    assert_eq!(*q.total, a.queued() + b.queued() + c.queued());
    assert_eq!(q.counts.tcp_drop_queue_full, 0);
}

#[test]
fn bad_frames_are_refused() {
    let mut sink = |_: &[u8]| {};
    // Empty frame.
    assert!(deframe(&[0, 0], 2048, true, &mut sink).is_err());
    // Over the limit.
    assert!(deframe(&frames(&[&[0; 1025]]), 1024, false, &mut sink).is_err());
    // Not STUN before the connection is answered; fine after.
    assert!(deframe(&frames(&[&[0x16; 20]]), 1024, false, &mut sink).is_err());
    assert!(deframe(&frames(&[&[0x16; 20]]), 1024, true, &mut sink).is_ok());
    // A length alone is not an error yet.
    assert_eq!(deframe(&[0x07], 2048, true, &mut sink), Ok((0, 0)));
}

/// The budget of the tests below: a fraction of what eight connections
/// could hold at their own hard limit (4 MiB).
const BUDGET: usize = 1 << 20;
/// Frames sent to a connection per turn, and their size.
const RUN: usize = 64;
const FRAME: usize = 1000;

fn budget_limits() -> TcpLimits {
    TcpLimits {
        queue_soft: 16 << 10,
        queue_total: BUDGET,
        ..TcpLimits::default()
    }
}

/// A shard's TCP layer on loopback and `n` clients that have each sent a
/// STUN-like frame, with their flow addresses.
fn shard_with_clients(n: usize) -> (TcpMedia, Vec<(std::net::TcpStream, SocketAddr)>) {
    let mut m = TcpMedia::bind("127.0.0.1:0".parse().unwrap(), 0, budget_limits()).unwrap();
    let at = m.local_addr().unwrap();
    let mut clients: Vec<_> = (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(at).unwrap();
            s.write_all(&frames(&[&[0; 20]])).unwrap();
            s
        })
        .collect();
    let mut flows = HashMap::new();
    let until = Instant::now() + Duration::from_secs(10);
    while flows.len() < n && Instant::now() < until {
        m.poll(Instant::now(), &mut |flow, real, _| {
            flows.insert(real, flow);
        });
    }
    assert_eq!(flows.len(), n, "every client's frame was read");
    let with_flows = clients
        .drain(..)
        .map(|s| {
            let flow = flows[&s.local_addr().unwrap()];
            (s, flow)
        })
        .collect();
    (m, with_flows)
}

/// One turn of the shard's loop: `RUN` frames to each of `to`, then the writes.
fn turn(m: &mut TcpMedia, to: &[SocketAddr]) {
    let mut out: Vec<Datagram> = to
        .iter()
        .flat_map(|&flow| {
            (0..RUN).map(move |_| Datagram {
                destination: flow,
                contents: vec![0x80; FRAME],
            })
        })
        .collect();
    let now = Instant::now();
    m.take_sends(&mut out, now);
    m.poll(now, &mut |_, _, _| {});
    while m.poll_notice().is_some() {}
}

/// The total the layer keeps, checked against its connections' queues.
fn checked_total(m: &TcpMedia) -> usize {
    let sum: usize = m.conns.iter().flatten().map(Conn::queued).sum();
    assert_eq!(m.queued(), sum, "the running total is every queue's sum");
    m.queued()
}

#[test]
fn many_stalled_connections_stay_within_the_shard_budget() {
    let (mut m, clients) = shard_with_clients(8);
    let flows: Vec<_> = clients.iter().map(|(_, f)| *f).collect();
    // 4 MiB to each: far more than the kernel's buffers and its queue hold.
    for _ in 0..64 {
        turn(&mut m, &flows);
        assert!(checked_total(&m) <= BUDGET + flows.len() * (2 + FRAME));
    }
    // Stalled, they are past their soft limit: they fill half the budget
    // (the last frame each tried did not fit), no more.
    let total = checked_total(&m);
    let soft = budget_limits().queue_soft;
    assert!(
        total > BUDGET / 2 - (2 + FRAME),
        "half was reached: {total}"
    );
    assert!(total <= BUDGET / 2 + flows.len() * (soft + 2 * (2 + FRAME)));
    let mut counts = Counters::default();
    m.take_counts(&mut counts);
    assert!(counts.tcp_drop_budget > 0, "{counts:?}");
    // Closing gives their bytes back.
    drop(clients);
    let until = Instant::now() + Duration::from_secs(10);
    while !m.is_empty() && Instant::now() < until {
        m.poll(Instant::now(), &mut |_, _, _| {});
    }
    assert!(m.is_empty(), "{} connections left", m.len());
    assert_eq!(m.queued(), 0);
}

#[test]
fn a_reading_connection_gets_every_frame_while_stalled_ones_hold_the_budget() {
    let (mut m, mut clients) = shard_with_clients(9);
    let (reader, healthy) = clients.pop().unwrap();
    let stalled: Vec<_> = clients.iter().map(|(_, f)| *f).collect();
    let got = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let read = {
        let (got, stop) = (got.clone(), stop.clone());
        let mut reader = reader;
        reader
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        got.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    };
    for _ in 0..64 {
        turn(&mut m, &stalled);
    }
    let held = checked_total(&m);
    assert!(
        held > BUDGET / 2 - (2 + FRAME),
        "the stalled hold half: {held}"
    );
    // Each turn, frames for the stalled ones and a run for the reader, which
    // reads it before the next.
    let mut sent = 0;
    for _ in 0..32 {
        turn(&mut m, &stalled);
        turn(&mut m, &[healthy]);
        sent += RUN * (2 + FRAME);
        let until = Instant::now() + Duration::from_secs(10);
        while got.load(Ordering::Relaxed) < sent && Instant::now() < until {
            turn(&mut m, &[]);
        }
        assert_eq!(got.load(Ordering::Relaxed), sent, "every frame arrived");
    }
    let mut counts = Counters::default();
    m.take_counts(&mut counts);
    assert!(counts.tcp_drop_budget > 0, "{counts:?}");
    stop.store(true, Ordering::Relaxed);
    read.join().unwrap();
}
