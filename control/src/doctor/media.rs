//! The configured media addresses: announced addresses this host does not own,
//! ICE-TCP on or off and its ports, and dual-stack binds the kernel would not allow.

use std::net::{IpAddr, Ipv6Addr};

use super::check::{Check, Level};

/// The host's own addresses: IPv4 from /proc/net/fib_trie (its `/32 host LOCAL`
/// entries), IPv6 from /proc/net/if_inet6.
pub(super) fn parse_local_addrs(fib_trie: &str, if_inet6: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !out.contains(ip)) {
                out.push(ip);
            }
        }
    }
    for line in if_inet6.lines() {
        let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) else {
            continue;
        };
        if let Ok(v) = u128::from_str_radix(hex, 16) {
            out.push(IpAddr::V6(Ipv6Addr::from(v)));
        }
    }
    out
}

/// One line per announced address that none of `local` is: a warning, since
/// clients can reach it only when a NAT or load balancer forwards it here.
pub(super) fn check_announced(announced: &[IpAddr], local: &[IpAddr]) -> Vec<Check> {
    const NAME: &str = "announce_ip";
    if local.is_empty() {
        return vec![Check::with(
            Level::Note,
            NAME,
            "the host's addresses are unreadable",
            "skipped: /proc/net/fib_trie and /proc/net/if_inet6 could not be read",
        )];
    }
    let owned = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        ip.is_loopback() || local.iter().any(|l| l.to_canonical() == ip)
    };
    let foreign: Vec<Check> = announced
        .iter()
        .filter(|ip| !owned(ip))
        .map(|ip| {
            Check::with(
                Level::Warn,
                NAME,
                format!("{ip} is not an address of this host's interfaces"),
                "fine behind a cloud NAT or 1:1 forwarding (the public address is not local \
                 there) if UDP and TCP to the media ports reach this host; otherwise fix the address",
            )
        })
        .collect();
    if foreign.is_empty() {
        let list: Vec<String> = announced.iter().map(|ip| ip.to_string()).collect();
        return vec![Check::ok(
            NAME,
            format!("{} on this host's interfaces", list.join(", ")),
        )];
    }
    foreign
}

/// Whether ICE-TCP is on and on which ports, for `shards` shards.
pub(super) fn check_ice_tcp(tcp_base: Option<u16>, shards: usize) -> Check {
    const NAME: &str = "ice-tcp";
    match tcp_base {
        None => Check::with(
            Level::Note,
            NAME,
            "off (media_tcp_port = 0)",
            "viewers whose networks block UDP cannot connect; set media_tcp_port to turn it on",
        ),
        Some(0) => Check::ok(NAME, "on, ephemeral ports (media_port is 0)"),
        Some(base) => {
            let last = base as usize + shards.max(1) - 1;
            Check::ok(
                NAME,
                format!("on, TCP {base}-{last} (shard i on {base}+i); open them in the firewall"),
            )
        }
    }
}

/// A wildcard IPv6 bind serves announced IPv4 addresses only as a dual-stack
/// socket, which `net.ipv6.bindv6only = 1` forbids.
pub(super) fn check_dual_stack(
    bind: IpAddr,
    announced: &[IpAddr],
    bindv6only: Option<&str>,
) -> Option<Check> {
    let wildcard_v6 = matches!(bind, IpAddr::V6(b) if b.is_unspecified());
    let wants_v4 = announced.iter().any(|ip| ip.to_canonical().is_ipv4());
    if !(wildcard_v6 && wants_v4) {
        return None;
    }
    const NAME: &str = "dual-stack media";
    Some(match bindv6only.map(str::trim) {
        Some("0") => Check::ok(NAME, "bind :: takes IPv4 and IPv6"),
        Some("1") => Check::with(
            Level::Fail,
            NAME,
            "net.ipv6.bindv6only = 1: the :: bind takes no IPv4 traffic",
            "sysctl -w net.ipv6.bindv6only=0, or announce IPv6 addresses only",
        ),
        _ => Check::with(
            Level::Note,
            NAME,
            "net.ipv6.bindv6only unreadable",
            "skipped",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n     +-- 192.0.2.0/24 2 0 2\n        +-- 192.0.2.0/30 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
    const IF_INET6: &str = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\nfd000000000000000000000000000002 04 40 00 82     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_addresses_come_from_fib_trie_and_if_inet6() {
        let got = parse_local_addrs(FIB_TRIE, IF_INET6);
        assert_eq!(
            got,
            vec![
                ip("127.0.0.1"),
                ip("192.0.2.2"),
                ip("fe80::fc:ff:fe00:1"),
                ip("fd00::2"),
                ip("::1")
            ]
        );
    }

    #[test]
    fn an_announced_address_the_host_lacks_is_a_warning_that_names_nat() {
        let local = parse_local_addrs(FIB_TRIE, IF_INET6);
        let ok = check_announced(&[ip("192.0.2.2"), ip("fd00::2"), ip("127.0.0.5")], &local);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].level, Level::Ok);
        let mixed = check_announced(
            &[ip("192.0.2.2"), ip("203.0.113.7"), ip("2001:db8::7")],
            &local,
        );
        assert_eq!(mixed.len(), 2, "{mixed:?}");
        assert!(mixed.iter().all(|c| c.level == Level::Warn));
        assert!(mixed[0].value.starts_with("203.0.113.7 "), "{:?}", mixed[0]);
        assert!(mixed[1].value.starts_with("2001:db8::7 "), "{:?}", mixed[1]);
        assert!(mixed[0].fix.as_deref().unwrap().contains("NAT"));
        let unknown = check_announced(&[ip("203.0.113.7")], &[]);
        assert_eq!(unknown[0].level, Level::Note);
    }

    #[test]
    fn ice_tcp_reports_on_with_its_ports_or_off() {
        let on = check_ice_tcp(Some(40000), 4);
        assert_eq!(on.level, Level::Ok);
        assert!(on.value.contains("TCP 40000-40003"), "{on}");
        assert!(check_ice_tcp(Some(0), 4).value.contains("ephemeral"));
        let off = check_ice_tcp(None, 4);
        assert_eq!(off.level, Level::Note);
        assert!(off.value.starts_with("off"), "{off}");
    }

    #[test]
    fn a_dual_stack_bind_fails_when_the_kernel_makes_v6_sockets_v6_only() {
        let both = [ip("203.0.113.7"), ip("2001:db8::7")];
        let c = check_dual_stack(ip("::"), &both, Some("1\n")).unwrap();
        assert_eq!(c.level, Level::Fail);
        let c = check_dual_stack(ip("::"), &both, Some("0\n")).unwrap();
        assert_eq!(c.level, Level::Ok);
        assert!(check_dual_stack(ip("::"), &[ip("2001:db8::7")], Some("1")).is_none());
        assert!(check_dual_stack(ip("0.0.0.0"), &[ip("203.0.113.7")], Some("1")).is_none());
    }
}
