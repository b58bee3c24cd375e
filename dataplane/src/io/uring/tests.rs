//! Tests of the io_uring backend against real sockets on loopback.

use super::*;
use crate::io::{bind_udp, Waker};
use socket2::SockAddr;
use std::time::Instant;

/// io_uring may be disabled (sysctl, seccomp, container): a test that
/// needs it then fails, saying so.
fn require_uring() {
    if let Err(e) = IoUring::new(8) {
        panic!("io_uring unavailable on this host, so this test cannot run: {e}");
    }
}

fn loopback() -> UdpSocket {
    bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap()
}

fn backend(sock: UdpSocket) -> UringBackend {
    UringBackend::new(sock).expect("io_uring works here, so the backend must set up")
}

/// A backend on loopback with its recv armed (nothing queued yet), and its address.
fn armed_receiver() -> (UringBackend, SocketAddr) {
    let mut rx = backend(loopback());
    let dest = rx.socket.local_addr().unwrap();
    assert_eq!(rx.recv(&mut |_, _| {}).unwrap(), 0);
    (rx, dest)
}

/// One datagram to `dest` from a socket of its own.
fn send_one(dest: SocketAddr, payload: &[u8]) {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(payload, dest)
        .unwrap();
}

/// How long the shard loop's park on `rx` lasts, at most `timeout`.
fn parked_for(rx: &UringBackend, timeout: Duration) -> Duration {
    let waker = Waker::new().unwrap();
    let start = Instant::now();
    waker.prepare_park();
    waker.park(&[rx.fd()], timeout);
    start.elapsed()
}

/// What one `recv` hands out.
fn recv_all(rx: &mut UringBackend) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    rx.recv(&mut |_, d| got.push(d.to_vec())).unwrap();
    got
}

/// Receive into `got` until it holds `want` datagrams or 5 s pass,
/// parking on the backend's fd as the shard loop does.
fn recv_until(b: &mut UringBackend, got: &mut Vec<(SocketAddr, Vec<u8>)>, want: usize) {
    let waker = Waker::new().unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < until {
        let n = b.recv(&mut |src, d| got.push((src, d.to_vec()))).unwrap();
        if n == 0 {
            waker.prepare_park();
            waker.park(&[b.fd()], Duration::from_millis(100));
        }
    }
}

fn datagram(dest: SocketAddr, seq: u32, len: usize) -> Datagram {
    let mut contents = vec![0u8; len.max(4)];
    contents[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in contents.iter_mut().enumerate().skip(4) {
        *b = (seq as usize * 31 + i) as u8;
    }
    Datagram {
        destination: dest,
        contents,
    }
}

/// Batches of mixed sizes, with runs of equal sizes (GSO) between them.
fn mixed_batches(dest: SocketAddr, total: u32) -> Vec<Vec<Datagram>> {
    let sizes = [
        1200, 1200, 1200, 1200, 1187, 60, 1400, 1400, 200, 5, 1472, 900, 900,
    ];
    let mut batches = Vec::new();
    let mut seq = 0;
    while seq < total {
        let batch: Vec<Datagram> = (0..40.min(total - seq))
            .map(|k| datagram(dest, seq + k, sizes[((seq + k) as usize) % sizes.len()]))
            .collect();
        seq += batch.len() as u32;
        batches.push(batch);
    }
    batches
}

/// Send 400 datagrams from `sender` to `receiver` and check that each
/// arrives whole, in order when `ordered`.
fn send_and_check(
    sender: &mut UringBackend,
    receiver: &mut UringBackend,
    from: SocketAddr,
    ordered: bool,
) {
    let dest = receiver.socket.local_addr().unwrap();
    let mut counters = Counters::default();
    let mut got = Vec::new();
    let mut sent = Vec::new();
    for mut batch in mixed_batches(dest, 400) {
        let want = got.len() + batch.len();
        sent.extend(batch.iter().map(|d| d.contents.clone()));
        sender.send(&mut batch, &mut counters);
        assert!(batch.is_empty(), "send clears the batch");
        recv_until(receiver, &mut got, want);
    }
    let bytes: u64 = sent.iter().map(|d| d.len() as u64).sum();
    assert_eq!(counters.tx_packets, 400);
    assert_eq!(counters.tx_bytes, bytes);
    assert_eq!(counters.drop_send_error, 0);
    assert_eq!(got.len(), 400, "all datagrams arrive");
    assert!(got.iter().all(|(src, _)| *src == from));
    let mut got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
    if !ordered {
        got.sort();
        sent.sort();
    }
    assert!(
        got == sent,
        "every datagram arrives whole (ordered: {ordered})"
    );
}

#[test]
fn mixed_size_datagrams_arrive_whole_between_two_uring_backends() {
    require_uring();
    let (a, b) = (loopback(), loopback());
    let from = a.local_addr().unwrap();
    let (mut tx, mut rx) = (backend(a), backend(b));
    send_and_check(&mut tx, &mut rx, from, true);
    assert!(tx.gso_enabled(), "loopback takes UDP_SEGMENT");
    assert!(
        tx.gso_sends > 20,
        "runs went out as GSO sends: {}",
        tx.gso_sends
    );
}

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
#[test]
fn refused_gso_falls_back_to_single_sends_without_loss() {
    require_uring();
    let a = loopback();
    crate::io::tests::refuse_gso(&a);
    let from = a.local_addr().unwrap();
    let (mut tx, mut rx) = (backend(a), backend(loopback()));
    // The turn in which GSO is refused resends its runs after the rest.
    send_and_check(&mut tx, &mut rx, from, false);
    assert!(!tx.gso_enabled(), "GSO was refused and turned off");
}

#[test]
fn oversize_datagram_is_counted_and_dropped_and_the_next_arrives() {
    require_uring();
    let mut rx = backend(loopback());
    let dest = rx.socket.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(&[7u8; 3000], dest).unwrap();
    peer.send_to(&[], dest).unwrap();
    peer.send_to(&[9u8; 1500], dest).unwrap();
    let mut got = Vec::new();
    recv_until(&mut rx, &mut got, 2);
    let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, vec![0, 1500]);
    assert_eq!(rx.truncated(), 1);
    let mut counters = Counters::default();
    rx.send(&mut Vec::new(), &mut counters);
    assert_eq!(counters.drop_malformed, 1);
    assert_eq!(counters.rx_packets, 1);
    assert_eq!(counters.rx_bytes, 3000);
}

/// Completions that deliver nothing must not end a `recv` early: the loop
/// would park with a datagram reaped but never handed over.
#[test]
fn a_run_of_oversize_datagrams_does_not_hide_the_next_one() {
    require_uring();
    let (mut rx, dest) = armed_receiver();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..2 * RECV_BATCH {
        peer.send_to(&[1u8; 3000], dest).unwrap();
    }
    peer.send_to(b"after", dest).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    let n = rx.recv(&mut |_, d| got.push(d.to_vec())).unwrap();
    assert_eq!((n, got), (1, vec![b"after".to_vec()]));
    assert_eq!(rx.truncated(), 2 * RECV_BATCH as u64);
}

#[test]
fn more_datagrams_than_buffers_all_arrive_after_the_ring_runs_dry() {
    require_uring();
    let (mut rx, dest) = armed_receiver();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let n = 3 * BUF_COUNT as u32;
    for seq in 0..n {
        peer.send_to(&seq.to_be_bytes(), dest).unwrap();
    }
    let mut got = Vec::new();
    recv_until(&mut rx, &mut got, n as usize);
    let seqs: Vec<u32> = got
        .iter()
        .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
}

#[test]
fn parked_loop_wakes_when_a_datagram_arrives() {
    require_uring();
    let (mut rx, dest) = armed_receiver();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        send_one(dest, b"wake");
    });
    let woke = parked_for(&rx, Duration::from_secs(5));
    sender.join().unwrap();
    assert!(woke < Duration::from_secs(2), "parked for {woke:?}");
    assert_eq!(recv_all(&mut rx), vec![b"wake".to_vec()]);
}

/// The kernel may take a datagram off the socket before the loop parks
/// (its completion work runs on any syscall): the socket is then not
/// readable, but the park must still end at once.
#[test]
fn park_returns_at_once_for_a_datagram_taken_before_parking() {
    require_uring();
    let (mut rx, dest) = armed_receiver();
    send_one(dest, b"early");
    std::thread::sleep(Duration::from_millis(20));
    let parked = parked_for(&rx, Duration::from_secs(3));
    assert!(parked < Duration::from_secs(1), "parked for {parked:?}");
    assert_eq!(recv_all(&mut rx), vec![b"early".to_vec()]);
}

/// A send reaps every completion in the ring, a datagram's too: the
/// datagram then waits in the backend, where the ring's fd no longer shows
/// it, so the backend must say it holds input until `recv` hands it out
/// (else the loop parks with it until its next timer, as it did after the
/// last send of a fan-out: a paced frame's last packet was late by up to the
/// time to the publisher's next packet).
#[test]
fn a_datagram_reaped_by_a_send_is_held_input_until_recv_takes_it() {
    require_uring();
    let (mut rx, dest) = armed_receiver();
    assert!(!rx.holds_input());
    send_one(dest, b"late");
    std::thread::sleep(Duration::from_millis(20));
    let sink = loopback();
    let mut out = vec![datagram(sink.local_addr().unwrap(), 1, 100)];
    let mut counters = Counters::default();
    rx.send(&mut out, &mut counters);
    assert_eq!(counters.tx_packets, 1);
    assert!(
        rx.holds_input(),
        "the send reaped the datagram's completion: it is held, not in the ring"
    );
    // Parking on the ring alone would not end for it.
    assert!(
        parked_for(&rx, Duration::from_millis(200)) >= Duration::from_millis(150),
        "the ring's fd showed a datagram the backend already holds"
    );
    assert_eq!(recv_all(&mut rx), vec![b"late".to_vec()]);
    assert!(!rx.holds_input());
}

#[test]
fn parse_sockaddr_reads_both_families() {
    for addr in ["192.0.2.7:5004", "[2001:db8::1]:443"] {
        let a: SocketAddr = addr.parse().unwrap();
        let s = SockAddr::from(a);
        // SAFETY: `as_ptr` points at a live storage of at least `len` bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, s.len() as usize) };
        assert_eq!(parse_sockaddr(bytes), Some(a));
    }
    assert_eq!(parse_sockaddr(&[0, 0]), None);
}
