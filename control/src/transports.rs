//! Connected sessions counted by transport (UDP, ICE-TCP) and address family,
//! from the shards' session stats, for `/metrics`, the admin API and the dashboard.

use std::net::SocketAddr;

use serde::Serialize;
use sluice_dataplane::{Role, SessionId};

use crate::app::App;

/// Sessions with a selected peer address, by transport and by address family.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Split {
    /// Over UDP.
    pub udp: usize,
    /// Over ICE-TCP.
    pub tcp: usize,
    /// From an IPv4 address (IPv4-mapped IPv6 included).
    pub ipv4: usize,
    /// From an IPv6 address.
    pub ipv6: usize,
}

impl Split {
    /// Count one session that reaches its peer over `transport` at `remote`.
    pub fn add(&mut self, transport: &str, remote: Option<SocketAddr>) {
        match transport {
            "udp" => self.udp += 1,
            "tcp" => self.tcp += 1,
            _ => return,
        }
        match remote.map(|r| r.ip().to_canonical()) {
            Some(ip) if ip.is_ipv6() => self.ipv6 += 1,
            Some(_) => self.ipv4 += 1,
            None => {}
        }
    }
}

impl std::ops::AddAssign for Split {
    fn add_assign(&mut self, o: Split) {
        self.udp += o.udp;
        self.tcp += o.tcp;
        self.ipv4 += o.ipv4;
        self.ipv6 += o.ipv6;
    }
}

/// Connected sessions of one shard, by role.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardTransports {
    /// Publishers' sessions.
    pub publishers: Split,
    /// Viewers' sessions (WHEP and room receive transports).
    pub viewers: Split,
}

/// Every shard's connected sessions, in shard order. Sessions a shard lists
/// that the registry no longer holds (ending) are left out.
pub fn by_shard(app: &App) -> Vec<ShardTransports> {
    let seen: Vec<Vec<(SessionId, &'static str, Option<SocketAddr>)>> = app
        .dataplane
        .shards
        .iter()
        .map(|s| {
            let table = s.session_stats.lock().unwrap_or_else(|e| e.into_inner());
            table
                .iter()
                .filter(|(_, st)| !st.transport.is_empty())
                .map(|(id, st)| (*id, st.transport, st.remote))
                .collect()
        })
        .collect();
    let reg = app.registry();
    seen.into_iter()
        .map(|sessions| {
            let mut t = ShardTransports::default();
            for (id, transport, remote) in sessions {
                match reg.session(id).map(|e| e.role) {
                    Some(Role::Publisher) => t.publishers.add(transport, remote),
                    Some(Role::Viewer) => t.viewers.add(transport, remote),
                    None => {}
                }
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_count_by_transport_and_canonical_family() {
        let mut s = Split::default();
        s.add("udp", Some("192.0.2.1:5000".parse().unwrap()));
        s.add("tcp", Some("[2001:db8::1]:5000".parse().unwrap()));
        // A dual-stack socket sees IPv4 peers as IPv4-mapped IPv6.
        s.add("udp", Some("[::ffff:192.0.2.2]:5000".parse().unwrap()));
        // Not connected yet: no transport, not counted.
        s.add("", None);
        assert_eq!(
            s,
            Split {
                udp: 2,
                tcp: 1,
                ipv4: 2,
                ipv6: 1
            }
        );
    }
}
