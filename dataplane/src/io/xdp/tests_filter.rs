//! Runs the generated XDP filter in the kernel with BPF_PROG_TEST_RUN on
//! hand-made frames. Needs root (CAP_BPF); fails with the reason otherwise.
//!
//! The program is loaded with XDP_DROP as the action for matching packets
//! when no socket is registered, so a return of DROP means "would have been
//! redirected" and PASS means "left to the kernel".

use std::net::SocketAddr;

use super::bpf::{XDP_DROP, XDP_PASS};
use super::frame::{write_udp, ETH_HLEN, IPV4_HLEN};
use super::tests_netns::{in_netns, ip, Netns};
use super::XdpProgram;

fn check_caps() {
    if let Err(e) = super::capability_check() {
        panic!("cannot run filter tests: {e}");
    }
}

/// Ports 41000..=41001 on queues from 0: only 41000 matches on queue 0.
fn load() -> XdpProgram {
    check_caps();
    XdpProgram::load_with_miss_action(41000, 41001, 0, 2, XDP_DROP)
        .unwrap_or_else(|e| panic!("program load failed: {e}"))
}

fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    let mut buf = vec![0u8; 2048];
    let mac_a = [2, 0, 0, 0, 0, 1];
    let mac_b = [2, 0, 0, 0, 0, 2];
    let n = write_udp(&mut buf, mac_a, mac_b, src, dst, payload, 1, 64).unwrap();
    buf.truncate(n);
    buf
}

fn v4(port: u16) -> Vec<u8> {
    udp("198.18.0.2:5000", &format!("198.18.0.1:{port}"), b"payload")
}

fn v6(port: u16) -> Vec<u8> {
    udp(
        "[2001:2::2]:5000",
        &format!("[2001:2::1]:{port}"),
        b"payload",
    )
}

#[test]
fn filter_matches_only_udp_port_range() {
    let p = load();
    // Without a context the frame arrives on queue 0 (of loopback).
    let run = |f: &[u8]| p.test_run(f, None).expect("test run");

    // 41001 is in the range but belongs to the shard on queue 1.
    for (port, want) in [
        (40999, XDP_PASS),
        (41000, XDP_DROP),
        (41001, XDP_PASS),
        (41002, XDP_PASS),
        (7000, XDP_PASS),
    ] {
        assert_eq!(run(&v4(port)), want, "ipv4 port {port}");
        assert_eq!(run(&v6(port)), want, "ipv6 port {port}");
    }

    // IPv4 with 8 bytes of options: the UDP header moves, IHL says where.
    let base = v4(41000);
    let mut opt = base[..ETH_HLEN + IPV4_HLEN].to_vec();
    opt.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
    opt.extend_from_slice(&base[ETH_HLEN + IPV4_HLEN..]);
    opt[ETH_HLEN] = 0x47;
    assert_eq!(run(&opt), XDP_DROP, "ipv4 with options, matching port");
    // Same frame, but the port in the place it would be without options is
    // not looked at: make the real port non-matching.
    let mut opt2 = opt.clone();
    let dport_off = ETH_HLEN + 28 + 2;
    opt2[dport_off..dport_off + 2].copy_from_slice(&7000u16.to_be_bytes());
    assert_eq!(run(&opt2), XDP_PASS, "ipv4 with options, other port");

    // TCP to the same port.
    let mut tcp = v4(41000);
    tcp[ETH_HLEN + 9] = 6;
    assert_eq!(run(&tcp), XDP_PASS, "tcp");

    // Fragments go to the kernel for reassembly.
    let mut frag = v4(41000);
    frag[ETH_HLEN + 6] = 0x20; // MF
    assert_eq!(run(&frag), XDP_PASS, "first fragment");
    let mut frag = v4(41000);
    frag[ETH_HLEN + 7] = 0x10; // offset
    assert_eq!(run(&frag), XDP_PASS, "later fragment");

    // IHL below 5 is invalid.
    let mut bad = v4(41000);
    bad[ETH_HLEN] = 0x44;
    assert_eq!(run(&bad), XDP_PASS, "ihl 4");

    // Truncated: IPv4 header cut short, UDP header cut short.
    assert_eq!(run(&v4(41000)[..ETH_HLEN + 10]), XDP_PASS, "short ipv4");
    assert_eq!(
        run(&v4(41000)[..ETH_HLEN + IPV4_HLEN + 3]),
        XDP_PASS,
        "short udp"
    );
    assert_eq!(run(&v6(41000)[..ETH_HLEN + 30]), XDP_PASS, "short ipv6");

    // IPv6 with a hop-by-hop header first is not parsed.
    let mut hbh = v6(41000);
    hbh[ETH_HLEN + 6] = 0;
    assert_eq!(run(&hbh), XDP_PASS, "ipv6 extension header");

    // ARP request.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    assert_eq!(run(&arp), XDP_PASS, "arp");

    // ICMP echo.
    let mut icmp = v4(41000);
    icmp[ETH_HLEN + 9] = 1;
    assert_eq!(run(&icmp), XDP_PASS, "icmp");
}

/// A datagram is redirected only on the queue of the shard owning its port
/// (`dport - port_lo == rx_queue_index - queue_base`); on any other queue,
/// and on queues below `queue_base`, it goes to the kernel. The frames are
/// run as received on each RX queue of a veth with four queues.
#[test]
fn filter_redirects_a_port_only_on_its_shards_queue() {
    check_caps();
    let ns = Netns::create("q", 'f').unwrap_or_else(|e| panic!("cannot set up namespace: {e}"));
    let (a, b) = (
        format!("xq{}f", std::process::id()),
        format!("xr{}f", std::process::id()),
    );
    #[rustfmt::skip]
    ip(&[
        "-n", &ns.name, "link", "add", &a, "numtxqueues", "4", "numrxqueues", "4",
        "type", "veth", "peer", "name", &b, "numtxqueues", "4", "numrxqueues", "4",
    ])
    .unwrap_or_else(|e| panic!("cannot create veth with 4 queues: {e}"));
    in_netns(&ns.name, move || {
        let ifindex = super::ifindex(&a).expect("ifindex");
        // Shards 0..3 on queues 1..4 owning ports 41000..41002.
        let p = XdpProgram::load_with_miss_action(41000, 41002, 1, 4, XDP_DROP)
            .unwrap_or_else(|e| panic!("program load failed: {e}"));
        for queue in 0..4u32 {
            for port in 40999..=41003u16 {
                let owner = (41000..=41002)
                    .contains(&port)
                    .then(|| u32::from(port - 41000) + 1);
                let want = if owner == Some(queue) {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                for (family, f) in [("ipv4", v4(port)), ("ipv6", v6(port))] {
                    let got = p
                        .test_run(&f, Some((ifindex, queue)))
                        .unwrap_or_else(|e| panic!("test run on queue {queue}: {e}"));
                    assert_eq!(got, want, "{family} port {port} on queue {queue}");
                }
            }
        }
        // The kernel refuses a queue the interface does not have, so the
        // runs above really saw the queues they name.
        assert!(p.test_run(&v4(41000), Some((ifindex, 4))).is_err());
    })
    .join()
    .expect("filter checks failed");
}

#[test]
fn production_program_passes_when_no_socket_is_bound() {
    check_caps();
    let p = XdpProgram::load(41000, 41001, 0, 1).expect("load");
    let f = udp("198.18.0.2:5000", "198.18.0.1:41000", b"x");
    assert_eq!(p.test_run(&f, None).unwrap(), XDP_PASS);
    assert!(p.id().unwrap() > 0);
}

#[test]
fn load_rejects_a_map_too_small_for_the_queues() {
    assert!(XdpProgram::load(41000, 41001, 2, 2).is_err());
    assert!(XdpProgram::load(41001, 41000, 0, 1).is_err());
}

#[test]
fn capability_check_passes_as_root() {
    assert_eq!(super::capability_check(), Ok(()));
}
