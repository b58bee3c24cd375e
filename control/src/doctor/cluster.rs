//! The cluster checks: the registry answers within its timeout, and the advertised
//! address is one of this host's (so other nodes reaching it reach this process).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use super::check::{Check, Level};
use crate::cluster::{Registry, RegistryError};
use crate::config::Config;

/// Every cluster check for `config`; none without `cluster.redis_url`.
pub fn cluster_checks(config: &Config) -> Vec<Check> {
    let Some(url) = &config.cluster.redis_url else {
        return Vec::new();
    };
    let ping = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegistryError::Unavailable(e.to_string()))
        .and_then(|rt| {
            rt.block_on(async {
                let r = Registry::redis(url)?;
                r.ping().await
            })
        });
    let advertise = config.cluster_advertise();
    vec![
        check_registry(ping),
        check_advertise(&advertise, resolve(&advertise), local_ips),
    ]
}

fn check_registry(ping: Result<(), RegistryError>) -> Check {
    match ping {
        Ok(()) => Check::ok("cluster registry", "Redis answers PING"),
        Err(e) => Check::with(
            Level::Fail,
            "cluster registry",
            e.to_string(),
            "start redis-server or fix cluster.redis_url (host, port, password, rediss:// for TLS)",
        ),
    }
}

/// The advertised URL's host and port, resolved.
fn resolve(url: &str) -> Result<Vec<SocketAddr>, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_string()
    } else {
        format!("{hostport}:443")
    };
    with_port
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("{hostport} does not resolve: {e}"))
}

/// Whether this host can bind `ip` (so it is one of its addresses).
fn local_ips(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn check_advertise(
    url: &str,
    resolved: Result<Vec<SocketAddr>, String>,
    is_local: impl Fn(IpAddr) -> bool,
) -> Check {
    let name = "cluster advertise";
    let fix = "set cluster.advertise to https://<an address of this host other nodes reach>:<listen port>";
    match resolved {
        Err(e) => Check::with(Level::Fail, name, e, fix),
        Ok(addrs) if addrs.is_empty() => {
            Check::with(Level::Fail, name, format!("{url} resolves to nothing"), fix)
        }
        Ok(addrs) => match addrs.iter().find(|a| is_local(a.ip())) {
            Some(a) if a.ip().is_loopback() => Check::with(
                Level::Warn,
                name,
                format!("{url} is loopback ({})", a.ip()),
                "only nodes on this host can reach it; advertise a routable address for a multi-host cluster",
            ),
            Some(a) => Check::ok(name, format!("{url} is this host ({})", a.ip())),
            None => Check::with(
                Level::Fail,
                name,
                format!("{url} resolves to {addrs:?}, none of them this host's"),
                fix,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_registry_fails_and_says_what_to_fix() {
        let c = check_registry(Err(RegistryError::Unavailable("refused".into())));
        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("redis_url"));
    }

    #[test]
    fn an_advertised_address_of_another_host_fails() {
        let addr: SocketAddr = "192.0.2.7:8443".parse().unwrap();
        let c = check_advertise("https://192.0.2.7:8443", Ok(vec![addr]), |_| false);
        assert_eq!(c.level, Level::Fail);
        let c = check_advertise("https://192.0.2.7:8443", Ok(vec![addr]), |_| true);
        assert_eq!(c.level, Level::Ok);
    }

    #[test]
    fn advertised_urls_resolve_with_their_port_or_443() {
        assert_eq!(
            resolve("https://127.0.0.2:9443").unwrap(),
            vec!["127.0.0.2:9443".parse().unwrap()]
        );
        assert_eq!(
            resolve("https://127.0.0.2").unwrap(),
            vec!["127.0.0.2:443".parse().unwrap()]
        );
        assert!(resolve("http://127.0.0.2").is_err());
    }
}
