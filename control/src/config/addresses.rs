//! The announced media addresses: `announce_ip` as one address or a list (TOML
//! string or array, flag and variable comma-separated), their checks, and the
//! media bind address they imply. Its tests also pin the media TCP keys.

use std::collections::HashSet;
use std::net::IpAddr;

/// `announce_ip` in TOML: one address as a string, several as an array; a
/// single address is written back as a string, so one-address files print as
/// they were written.
pub mod one_or_many {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged, expecting = "an IP address or an array of IP addresses")]
    enum OneOrMany {
        One(IpAddr),
        Many(Vec<IpAddr>),
    }

    /// Serialize as a string when there is one address, else as an array.
    pub fn serialize<S: Serializer>(ips: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
        match ips {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    /// Read a string or an array of strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(ip) => vec![ip],
            OneOrMany::Many(v) => v,
        })
    }
}

/// One address of a comma-separated flag or variable, spaces around it allowed.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let t = s.trim();
    t.parse()
        .map_err(|_| format!("{t:?} is not an IP address (use e.g. 203.0.113.7 or 2001:db8::7)"))
}

/// What is wrong with a list of announced addresses, if anything: it must name
/// at least one address, none unspecified, none twice.
pub fn check_announce(ips: &[IpAddr]) -> Result<(), String> {
    if ips.is_empty() {
        return Err("name at least one address clients reach this host on".into());
    }
    if let Some(ip) = ips.iter().find(|ip| ip.to_canonical().is_unspecified()) {
        return Err(format!(
            "{ip} cannot be put in ICE candidates: announce the addresses clients reach \
             (to listen on every interface, set media_bind instead)"
        ));
    }
    let mut seen = HashSet::new();
    if let Some(ip) = ips.iter().find(|ip| !seen.insert(ip.to_canonical())) {
        return Err(format!("{ip} is listed twice"));
    }
    Ok(())
}

/// The media bind address when `media_bind` is unset: a lone loopback
/// announce address itself (a development box stays private), else every
/// interface: `::` (dual-stack) when an announced address is IPv6, else `0.0.0.0`.
pub fn default_bind(ips: &[IpAddr]) -> IpAddr {
    match ips {
        [one] if one.is_loopback() => *one,
        _ if ips.iter().any(|ip| ip.to_canonical().is_ipv6()) => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0, 0, 0, 0]),
    }
}

/// What keeps an announced address from reaching sockets bound to `bind`, if
/// anything: an IPv4 bind takes no IPv6 traffic, and a specific IPv6 bind no
/// IPv4 traffic (only `::` takes both).
pub fn check_bind(bind: IpAddr, ips: &[IpAddr]) -> Result<(), String> {
    let v6 = |ip: &IpAddr| ip.to_canonical().is_ipv6();
    let unreachable = match bind {
        IpAddr::V4(_) => ips.iter().find(|ip| v6(ip)),
        IpAddr::V6(b) if b.is_unspecified() => None,
        IpAddr::V6(_) => ips.iter().find(|ip| !v6(ip)),
    };
    match unreachable {
        Some(ip) => Err(format!(
            "media_bind {bind} cannot receive media sent to the announced {ip}: \
             bind :: to serve IPv4 and IPv6, or announce addresses of one family"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    struct Doc {
        #[serde(with = "one_or_many")]
        announce_ip: Vec<IpAddr>,
    }

    #[test]
    fn toml_takes_a_string_or_an_array_and_writes_one_address_as_a_string() {
        let one: Doc = toml::from_str("announce_ip = \"203.0.113.7\"").unwrap();
        assert_eq!(one.announce_ip, ips(&["203.0.113.7"]));
        assert_eq!(
            toml::to_string(&one).unwrap().trim(),
            "announce_ip = \"203.0.113.7\""
        );
        let many: Doc =
            toml::from_str("announce_ip = [\"203.0.113.7\", \"10.0.0.5\", \"2001:db8::7\"]")
                .unwrap();
        assert_eq!(
            many.announce_ip,
            ips(&["203.0.113.7", "10.0.0.5", "2001:db8::7"])
        );
        let back: Doc = toml::from_str(&toml::to_string(&many).unwrap()).unwrap();
        assert_eq!(back.announce_ip, many.announce_ip);
        let e = toml::from_str::<Doc>("announce_ip = \"example.com\"").unwrap_err();
        assert!(e.message().contains("IP address"), "{e}");
        let e = toml::from_str::<Doc>("announce_ip = 7").unwrap_err();
        assert!(e.message().contains("IP address"), "{e}");
    }

    #[test]
    fn flag_pieces_are_trimmed_addresses() {
        assert_eq!(parse_ip(" 2001:db8::7 "), Ok(ips(&["2001:db8::7"])[0]));
        let e = parse_ip("203.0.113").unwrap_err();
        assert!(e.contains("\"203.0.113\" is not an IP address"), "{e}");
    }

    #[test]
    fn an_announce_list_needs_an_address_and_no_unspecified_or_repeated_one() {
        check_announce(&ips(&["203.0.113.7", "2001:db8::7"])).unwrap();
        assert!(check_announce(&[]).unwrap_err().contains("at least one"));
        for bad in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            let e = check_announce(&ips(&["203.0.113.7", bad])).unwrap_err();
            assert!(e.contains("media_bind"), "{bad}: {e}");
        }
        let e = check_announce(&ips(&["10.0.0.5", "203.0.113.7", "10.0.0.5"])).unwrap_err();
        assert_eq!(e, "10.0.0.5 is listed twice");
        // The same IPv4 address written as IPv4-mapped IPv6 is the same address.
        assert!(check_announce(&ips(&["10.0.0.5", "::ffff:10.0.0.5"])).is_err());
    }

    #[test]
    fn the_default_bind_is_a_lone_loopback_address_or_the_wildcard_of_the_families() {
        assert_eq!(default_bind(&ips(&["127.0.0.1"])), ips(&["127.0.0.1"])[0]);
        assert_eq!(default_bind(&ips(&["::1"])), ips(&["::1"])[0]);
        assert_eq!(default_bind(&ips(&["203.0.113.7"])), ips(&["0.0.0.0"])[0]);
        assert_eq!(default_bind(&ips(&["2001:db8::7"])), ips(&["::"])[0]);
        let both = ips(&["127.0.0.1", "::1"]);
        assert_eq!(default_bind(&both), ips(&["::"])[0]);
        assert_eq!(
            default_bind(&ips(&["203.0.113.7", "10.0.0.5"])),
            ips(&["0.0.0.0"])[0]
        );
    }

    #[test]
    fn a_bind_address_must_take_every_announced_family() {
        let mixed = ips(&["203.0.113.7", "2001:db8::7"]);
        check_bind(ips(&["::"])[0], &mixed).unwrap();
        let e = check_bind(ips(&["0.0.0.0"])[0], &mixed).unwrap_err();
        assert!(e.contains("2001:db8::7") && e.contains("bind ::"), "{e}");
        let e = check_bind(ips(&["2001:db8::1"])[0], &mixed).unwrap_err();
        assert!(e.contains("203.0.113.7"), "{e}");
        // A NATed host binds its private address and announces its public one.
        check_bind(ips(&["10.0.0.5"])[0], &ips(&["203.0.113.7"])).unwrap();
    }

    // The keys as `Config` reads, checks and prints them.

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn announce_ip_is_a_string_or_an_array_and_the_first_is_primary() {
        let one = parse("announce_ip = \"203.0.113.7\"\n");
        assert_eq!(one.announce_ip, vec![IpAddr::from([203, 0, 113, 7])]);
        assert!(one.to_toml().contains("announce_ip = \"203.0.113.7\"\n"));
        let many = parse("announce_ip = [\"2001:db8::7\", \"10.0.0.5\"]\nmedia_bind = \"::\"\n");
        many.validate().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(many.primary_announce_ip(), v6);
        assert_eq!(many.cluster_advertise(), "https://[2001:db8::7]:8443");
        let back = parse(&many.to_toml());
        assert_eq!(back.announce_ip, many.announce_ip);
    }

    #[test]
    fn a_bad_announce_list_is_an_error_naming_the_key() {
        for (text, want) in [
            ("announce_ip = []", "at least one"),
            (
                "announce_ip = [\"203.0.113.7\", \"0.0.0.0\"]",
                "0.0.0.0 cannot",
            ),
            ("announce_ip = [\"::1\", \"::1\"]", "::1 is listed twice"),
        ] {
            let e = parse(text).validate().unwrap_err().to_string();
            assert!(
                e.starts_with("announce_ip: ") && e.contains(want),
                "{text}: {e}"
            );
        }
        let e = parse("announce_ip = [\"127.0.0.1\", \"::1\"]\nmedia_bind = \"127.0.0.1\"")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("media_bind: ") && e.contains("::1"), "{e}");
    }

    #[test]
    fn media_tcp_port_follows_media_port_unless_set_and_0_turns_it_off() {
        let c = Config::default();
        assert_eq!((c.media_tcp_port, c.media_tcp_base()), (None, Some(40000)));
        assert!(
            c.to_toml().contains("\nmedia_tcp_port = 40000\n"),
            "effective value printed"
        );
        let moved = parse("media_port = 50000\n");
        assert_eq!(moved.media_tcp_base(), Some(50000));
        let own = parse("media_port = 50000\nmedia_tcp_port = 443\n");
        assert_eq!(own.media_tcp_base(), Some(443));
        let off = parse("media_tcp_port = 0\n");
        assert_eq!(off.media_tcp_base(), None);
        assert!(off.to_toml().contains("\nmedia_tcp_port = 0\n"));
        // Ephemeral UDP ports (tests): TCP takes ephemeral ports too.
        let eph = parse("media_port = 0\n");
        assert_eq!(eph.media_tcp_base(), Some(0));
        let text = eph.to_toml();
        assert!(!text.contains("\nmedia_tcp_port ="), "{text}");
        assert!(text.contains("# media_tcp_port unset"), "{text}");
        assert_eq!(parse(&text).media_tcp_base(), Some(0));
    }

    #[test]
    fn tcp_caps_and_the_idle_timeout_reach_the_tcp_limits() {
        let c = parse(
            "tcp_max_conns_per_shard = 10\ntcp_max_conns_per_ip = 0\ntcp_queue_budget_bytes = 2097152\nidle_timeout_secs = 7.5\n",
        );
        let l = c.tcp_limits();
        assert_eq!((l.max_conns, l.max_per_ip, l.queue_total), (10, 0, 2 << 20));
        assert_eq!(l.idle_timeout, Duration::from_millis(7500));
        let d = sluice_dataplane::TcpLimits::default();
        assert_eq!(
            (l.queue_hard, l.stall_timeout),
            (d.queue_hard, d.stall_timeout)
        );
        let d = Config::default().tcp_limits();
        assert_eq!(
            (d.max_conns, d.max_per_ip, d.queue_total),
            (4096, 256, 64 << 20)
        );
        let e = parse("tcp_max_conns_per_shard = 0").validate().unwrap_err();
        assert!(e.to_string().contains("media_tcp_port = 0"), "{e}");
        let e = parse("tcp_queue_budget_bytes = 65536")
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with("tcp_queue_budget_bytes:"), "{e}");
        parse("tcp_queue_budget_bytes = 0").validate().unwrap();
    }
}
