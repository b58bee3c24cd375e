//! End-to-end test over a veth pair between two network namespaces.
//! Needs root. Any setup problem fails the test with the reason.
//!
//!   ns sxdp-s-PID-TAG: veth xsPIDTAG 198.18.0.1/24, XdpSocket on queue 0
//!   ns sxdp-c-PID-TAG: veth xcPIDTAG 198.18.0.2/24, std UdpSocket 198.18.0.2:5000

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::frame::write_udp;
use super::sys::interface_mac;
use super::tests_netns::{in_netns, ip, Netns};
use super::{ifindex, AttachMode, BindMode, Queued, XdpConfig, XdpCounters, XdpProgram, XdpSocket};

const COUNT: usize = 1000;

/// Two namespaces joined by a veth pair; dropping it deletes both
/// namespaces (and with them the pair), also when an assertion panics.
struct Pair {
    s: Netns,
    c: Netns,
    s_if: String,
    c_if: String,
}

impl Pair {
    /// `tag` keeps the names of tests running in parallel apart.
    fn create(tag: char) -> Result<Pair, String> {
        let pid = std::process::id();
        let s = Netns::create("s", tag)?;
        let c = Netns::create("c", tag)?;
        let p = Pair {
            s,
            c,
            s_if: format!("xs{pid}{tag}"),
            c_if: format!("xc{pid}{tag}"),
        };
        let (sn, cn) = (p.s.name.as_str(), p.c.name.as_str());
        let (si, ci) = (p.s_if.as_str(), p.c_if.as_str());
        ip(&[
            "-n", sn, "link", "add", si, "type", "veth", "peer", "name", ci, "netns", cn,
        ])?;
        ip(&["-n", sn, "addr", "add", "198.18.0.1/24", "dev", si])?;
        ip(&["-n", cn, "addr", "add", "198.18.0.2/24", "dev", ci])?;
        // IPv6 benchmarking prefix (RFC 5180); nodad so it is usable at once.
        ip(&["-n", sn, "addr", "add", "2001:2::1/64", "dev", si, "nodad"])?;
        ip(&["-n", cn, "addr", "add", "2001:2::2/64", "dev", ci, "nodad"])?;
        ip(&["-n", sn, "link", "set", si, "up"])?;
        ip(&["-n", cn, "link", "set", ci, "up"])?;
        Ok(p)
    }

    fn link_show(&self) -> String {
        ip(&["-n", &self.s.name, "-d", "link", "show", "dev", &self.s_if]).unwrap_or_else(|e| e)
    }
}

/// Whether `ip -d link show` output lists an XDP program (`xdpgeneric`,
/// `xdp`, `xdpdrv` with `/id:N`, or a `prog/xdp` line). Token-wise, because
/// the peer's namespace name on the same line contains "xdp" too.
fn xdp_attached(shown: &str) -> bool {
    shown
        .split_whitespace()
        .any(|t| t == "prog/xdp" || (t.starts_with("xdp") && t.contains("/id:")))
}

fn payload(i: usize) -> Vec<u8> {
    let len = match i {
        0 => 1,
        1 => 1400,
        _ => 1 + (i * 7919) % 1400,
    };
    let mut v: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
    let n = (i as u32).to_be_bytes();
    let k = len.min(4);
    v[..k].copy_from_slice(&n[4 - k..]);
    v
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

struct ServerResult {
    received: Vec<(SocketAddr, Vec<u8>)>,
    counters: XdpCounters,
    zerocopy: bool,
    zerocopy_error: Option<String>,
    mode: Option<AttachMode>,
}

struct Params {
    tag: char,
    v6: bool,
    bind: BindMode,
    attach: AttachMode,
    count: usize,
    /// Open the socket without a program and register it in one loaded and
    /// attached separately, as shards sharing one program do.
    shared: bool,
}

impl Params {
    fn server(&self) -> SocketAddr {
        if self.v6 {
            "[2001:2::1]:41000"
        } else {
            "198.18.0.1:41000"
        }
        .parse()
        .unwrap()
    }
    fn client(&self) -> SocketAddr {
        if self.v6 {
            "[2001:2::2]:5000"
        } else {
            "198.18.0.2:5000"
        }
        .parse()
        .unwrap()
    }
    fn plain(&self) -> SocketAddr {
        let mut a = self.server();
        a.set_port(7000);
        a
    }
}

/// IPv4, copy mode, generic (skb) attach, 1000 datagrams.
#[test]
fn xdp_echo_over_veth() {
    let r = run_echo(Params {
        tag: 'a',
        v6: false,
        bind: BindMode::Copy,
        attach: AttachMode::Skb,
        count: COUNT,
        shared: false,
    });
    assert_eq!(r.mode, Some(AttachMode::Skb));
    assert!(!r.zerocopy);
}

#[test]
fn xdp_echo_ipv6_over_veth() {
    let r = run_echo(Params {
        tag: 'b',
        v6: true,
        bind: BindMode::Copy,
        attach: AttachMode::Skb,
        count: 500,
        shared: false,
    });
    assert_eq!(r.mode, Some(AttachMode::Skb));
}

/// Auto modes: zero-copy is expected to fail on veth and fall back to copy;
/// native attach is tried first. Prints what the kernel accepted.
#[test]
fn xdp_echo_auto_modes_over_veth() {
    let r = run_echo(Params {
        tag: 'c',
        v6: false,
        bind: BindMode::Auto,
        attach: AttachMode::Auto,
        count: 500,
        shared: false,
    });
    eprintln!(
        "auto modes on veth: zerocopy={} ({:?}) attach={:?}",
        r.zerocopy, r.zerocopy_error, r.mode
    );
}

/// A socket registered in a program it does not own, as every shard's is.
#[test]
fn xdp_echo_with_shared_program_over_veth() {
    let r = run_echo(Params {
        tag: 'd',
        v6: true,
        bind: BindMode::Copy,
        attach: AttachMode::Skb,
        count: 300,
        shared: true,
    });
    assert_eq!(r.mode, Some(AttachMode::Skb));
}

fn run_echo(prm: Params) -> ServerResult {
    if let Err(e) = super::capability_check() {
        panic!("cannot run veth test: {e}");
    }
    let pair = Pair::create(prm.tag).unwrap_or_else(|e| panic!("cannot set up namespaces: {e}"));
    let prm = Arc::new(prm);
    let count = prm.count;

    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let client_done = Arc::new(AtomicBool::new(false));
    let done = client_done.clone();
    let ifname = pair.s_if.clone();

    let p = prm.clone();
    let server = in_netns(&pair.s.name, move || -> ServerResult {
        let cfg = XdpConfig {
            bind_mode: p.bind,
            attach_mode: p.attach,
            port_lo: 41000,
            port_hi: 41001,
            local_v4: Some("198.18.0.1".parse().unwrap()),
            local_v6: Some("2001:2::1".parse().unwrap()),
            local_port: 41000,
            ..XdpConfig::default()
        };
        let open = || -> std::io::Result<(XdpSocket, Option<AttachMode>)> {
            if !p.shared {
                let s = XdpSocket::open(&ifname, 0, cfg)?;
                let mode = s.attach_mode();
                return Ok((s, mode));
            }
            let cfg = XdpConfig {
                attach_program: false,
                ..cfg
            };
            let mut s = XdpSocket::open(&ifname, 0, cfg)?;
            let mut prog = XdpProgram::load(41000, 41001, 0, 1)?;
            let mode = prog.attach(ifindex(&ifname)?, p.attach)?;
            s.register_in(Arc::new(prog))?;
            Ok((s, Some(mode)))
        };
        let (mut sock, mode) = match open() {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("XdpSocket::open: {e}")));
                panic!("XdpSocket::open: {e}");
            }
        };
        assert_eq!(sock.queue(), 0);
        // No MAC is known for an address nobody sent from: the caller is
        // told so, to send through the kernel instead.
        let stranger: SocketAddr = if p.v6 {
            "[2001:2::77]:9"
        } else {
            "198.18.0.77:9"
        }
        .parse()
        .unwrap();
        assert_eq!(sock.queue_send(&stranger, b"x"), Queued::NoNeighbour);
        // Larger than the MTU: refused for good.
        assert_eq!(sock.queue_send(&p.client(), &[0u8; 1500]), Queued::Dropped);
        // A normal socket on another port must still get its traffic.
        let plain = UdpSocket::bind(p.plain()).expect("bind 7000");
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        ready_tx.send(Ok(())).unwrap();

        let mut received = Vec::with_capacity(p.count);
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(256);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done.load(Ordering::Acquire) && Instant::now() < deadline {
            if out.is_empty() {
                let _ = sock.wait_readable(20);
            }
            sock.recv_batch(&mut |src, p| {
                received.push((src, p.to_vec()));
                out.push((src, p.to_vec()));
            });
            if !out.is_empty() {
                sock.send_batch(&mut out);
            } else {
                sock.kick_tx();
            }
        }
        // The datagram to port 7000 was sent before the XDP traffic.
        let mut buf = [0u8; 64];
        let (n, from) = plain
            .recv_from(&mut buf)
            .expect("kernel socket on port 7000 got nothing");
        assert_eq!(&buf[..n], b"to-the-kernel");
        assert_eq!(from, p.client());
        ServerResult {
            received,
            counters: sock.counters(),
            zerocopy: sock.is_zerocopy(),
            zerocopy_error: sock.zerocopy_error().map(str::to_owned),
            mode,
        }
        // sock dropped here: slot emptied, program detached, socket closed.
    });

    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("server setup failed: {e}"),
        Err(_) => panic!("server setup failed: {:?}", server.join().err()),
    }
    let shown = pair.link_show();
    assert!(xdp_attached(&shown), "program not attached:\n{shown}");

    let p = prm.clone();
    let client = in_netns(&pair.c.name, move || -> Vec<Vec<u8>> {
        let sock = UdpSocket::bind(p.client()).expect("bind client");
        sock.send_to(b"to-the-kernel", p.plain())
            .expect("send to 7000");
        let reader = sock.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let got = Arc::new(AtomicUsize::new(0));
        let got_r = got.clone();
        let server = p.server();
        let rx = thread::spawn(move || {
            let mut echoes = Vec::with_capacity(count);
            let mut buf = vec![0u8; 2048];
            while echoes.len() < count {
                match reader.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        assert_eq!(from, server);
                        echoes.push(buf[..n].to_vec());
                        got_r.fetch_add(1, Ordering::Release);
                    }
                    Err(e) => {
                        eprintln!("client: stopped after {} echoes: {e}", echoes.len());
                        break;
                    }
                }
            }
            echoes
        });
        let dst = p.server();
        for i in 0..count {
            // Keep at most 64 datagrams in flight so no socket buffer on the
            // way can overflow; losses would then be real bugs.
            let t0 = Instant::now();
            while i - got.load(Ordering::Acquire) >= 64 {
                if t0.elapsed() > Duration::from_secs(5) {
                    break;
                }
                thread::sleep(Duration::from_micros(50));
            }
            sock.send_to(&payload(i), dst).expect("client send");
        }
        rx.join().unwrap()
    });

    let echoes = client.join().expect("client thread panicked");
    client_done.store(true, Ordering::Release);
    let res = server.join().expect("server thread panicked");

    eprintln!(
        "zerocopy={} attach={:?} counters={:?}",
        res.zerocopy, res.mode, res.counters
    );
    let expected: Vec<Vec<u8>> = (0..count).map(payload).collect();
    assert_eq!(
        res.received.len(),
        count,
        "server received {} of {count}",
        res.received.len()
    );
    for (src, _) in &res.received {
        assert_eq!(*src, prm.client());
    }
    let rx_payloads: Vec<Vec<u8>> = res.received.iter().map(|(_, p)| p.clone()).collect();
    assert!(
        sorted(rx_payloads.clone()) == sorted(expected.clone()),
        "server payloads differ"
    );
    // veth keeps order on a single queue; report rather than fail if not.
    if rx_payloads != expected {
        eprintln!("note: server saw datagrams out of order");
    }
    assert_eq!(
        echoes.len(),
        count,
        "client got {} echoes of {count}",
        echoes.len()
    );
    assert!(sorted(echoes) == sorted(expected), "echo payloads differ");
    assert_eq!(res.counters.rx_malformed, 0);
    assert_eq!(res.counters.no_neighbour, 1);
    assert_eq!(res.counters.tx_invalid, 1);
    assert_eq!(res.counters.tx_packets, count as u64);

    let shown = pair.link_show();
    assert!(
        !xdp_attached(&shown),
        "program still attached after drop:\n{shown}"
    );

    if !prm.v6 {
        checksums_are_verified_by_the_client(&pair);
    }
    res
}

fn udp_csum_errors(ns: &str) -> u64 {
    let out = ip(&["netns", "exec", ns, "cat", "/proc/net/snmp"]).expect("read snmp");
    let mut lines = out.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let vals: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == "InCsumErrors")
        .expect("InCsumErrors");
    vals[i].parse().unwrap()
}

/// The echo check above relies on the client kernel dropping datagrams with
/// a wrong UDP checksum. Prove that it does on this path: inject one frame
/// with a corrupted checksum and one correct frame (both built by
/// `write_udp`, sent through AF_PACKET like AF_XDP copy mode would) and see
/// that only the correct one arrives and the error counter moves.
fn checksums_are_verified_by_the_client(pair: &Pair) {
    let c_if = pair.c_if.clone();
    let client_mac = in_netns(&pair.c.name, move || interface_mac(&c_if).unwrap())
        .join()
        .unwrap();
    let before = udp_csum_errors(&pair.c.name);
    let (ready_tx, ready_rx) = mpsc::channel();
    let client = in_netns(&pair.c.name, move || {
        let sock = UdpSocket::bind("198.18.0.2:5001").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    ready_rx.recv().unwrap();
    let s_if = pair.s_if.clone();
    in_netns(&pair.s.name, move || {
        let ifindex = ifindex(&s_if).unwrap();
        let mac = interface_mac(&s_if).unwrap();
        // SAFETY: plain socket(2) call; closed at the end of this closure.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        for (payload, corrupt) in [(&b"bad-checksum"[..], true), (&b"good-checksum"[..], false)] {
            let mut f = [0u8; 128];
            let n = write_udp(
                &mut f,
                mac,
                client_mac,
                "198.18.0.1:41000".parse().unwrap(),
                "198.18.0.2:5001".parse().unwrap(),
                payload,
                1,
                64,
            )
            .unwrap();
            if corrupt {
                f[14 + 20 + 6] ^= 0x55;
            }
            // SAFETY: sockaddr_ll is plain data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&client_mac);
            // SAFETY: f holds n initialized bytes; sll is a live sockaddr_ll.
            let r = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr() as *const libc::c_void,
                    n,
                    0,
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                r,
                n as isize,
                "AF_PACKET send: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fd is ours and not used afterwards.
        unsafe { libc::close(fd) };
    })
    .join()
    .unwrap();
    let got = client.join().unwrap();
    assert_eq!(
        got,
        vec![b"good-checksum".to_vec()],
        "client should get only the good frame"
    );
    assert_eq!(
        udp_csum_errors(&pair.c.name),
        before + 1,
        "bad checksum was not counted"
    );
}
