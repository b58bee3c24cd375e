//! What one remote party may take: concurrent HTTPS connections per source
//! address and in total, the rate of WHIP/WHEP POSTs, ICE restarts and room
//! joins per source address (token buckets), and the count of every refusal by reason for
//! `/metrics`. Every per-address table is bounded: idle entries are evicted and
//! the number of entries is capped.
//!
//! The source address is the TCP peer: behind a reverse proxy every client is
//! the proxy (no `X-Forwarded-For` is trusted).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Most source addresses a rate table remembers; beyond it, a new address is
/// refused until idle entries age out (the table never grows past this).
pub const MAX_TRACKED_ADDRS: usize = 65_536;

/// Why a request or connection was refused, as the `reason` label of `sluice_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A source address over `max_conns_per_ip` concurrent connections.
    ConnsPerIp,
    /// Over `max_conns` concurrent connections in total.
    ConnsTotal,
    /// A TLS handshake that failed or did not finish in time.
    TlsHandshake,
    /// A request body not received within its time.
    BodyTimeout,
    /// A connection that sent no request within its time, or stayed idle too long.
    HttpTimeout,
    /// WHIP/WHEP POSTs, ICE restarts or room joins over the per-address rate.
    Rate,
    /// A source address over `max_sessions_per_ip` sessions.
    SessionsPerIp,
    /// A room join over `max_room_peers`.
    RoomFull,
    /// A new room over `max_rooms`.
    Rooms,
    /// A room peer that did not read its messages (queue full).
    WsSlowReader,
    /// A room peer silent past `ws_timeout_secs`.
    WsTimeout,
    /// A room message over `ws_max_message`.
    WsMessageSize,
    /// Room messages over `ws_rate` per second.
    WsRate,
    /// A per-address table full of active addresses.
    TableFull,
}

impl Refusal {
    const ALL: [Refusal; 14] = [
        Refusal::ConnsPerIp,
        Refusal::ConnsTotal,
        Refusal::TlsHandshake,
        Refusal::BodyTimeout,
        Refusal::HttpTimeout,
        Refusal::Rate,
        Refusal::SessionsPerIp,
        Refusal::RoomFull,
        Refusal::Rooms,
        Refusal::WsSlowReader,
        Refusal::WsTimeout,
        Refusal::WsMessageSize,
        Refusal::WsRate,
        Refusal::TableFull,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnsPerIp => "conns_per_ip",
            Refusal::ConnsTotal => "conns_total",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::HttpTimeout => "http_timeout",
            Refusal::Rate => "rate",
            Refusal::SessionsPerIp => "sessions_per_ip",
            Refusal::RoomFull => "room_full",
            Refusal::Rooms => "rooms",
            Refusal::WsSlowReader => "ws_slow_reader",
            Refusal::WsTimeout => "ws_timeout",
            Refusal::WsMessageSize => "ws_message_size",
            Refusal::WsRate => "ws_rate",
            Refusal::TableFull => "table_full",
        }
    }
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Take one token; `Err(wait)` says when the next one comes.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.max(1e-9),
            ))
        }
    }

    /// Full again (so forgetting it changes nothing)?
    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate >= burst
    }
}

/// Per-address limits and refusal counters of one server.
pub struct Limits {
    max_conns_per_ip: usize,
    max_conns: usize,
    rate: f64,
    burst: f64,
    conns: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    refused: [AtomicU64; Refusal::ALL.len()],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limits {
    /// Limits from `config`.
    pub fn new(config: &Config) -> Limits {
        Limits {
            max_conns_per_ip: config.max_conns_per_ip,
            max_conns: config.max_conns,
            rate: config.signal_rate,
            burst: config.signal_burst,
            conns: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
            refused: Default::default(),
        }
    }

    /// Count a refusal.
    pub fn refuse(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by reason.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Concurrent HTTPS connections now.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admit a connection from `ip`; the permit gives its place back when dropped.
    /// The table holds only addresses with a connection open.
    pub fn admit_conn(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut conns = lock(&self.conns);
        if self.max_conns > 0 && self.total.load(Ordering::Relaxed) >= self.max_conns {
            return Err(Refusal::ConnsTotal);
        }
        let n = conns.entry(ip).or_insert(0);
        if self.max_conns_per_ip > 0 && *n >= self.max_conns_per_ip {
            return Err(Refusal::ConnsPerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit {
            limits: self.clone(),
            ip,
        })
    }

    /// Take one WHIP/WHEP POST, ICE restart or room join from `ip` out of its bucket;
    /// `Err(wait)` when over the rate (or when the table is full of active addresses).
    pub fn take_signal(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst.max(1.0));
        let mut b = lock(&self.buckets);
        if !b.contains_key(&ip) && b.len() >= MAX_TRACKED_ADDRS {
            // Full buckets carry no state: forget them to make room.
            b.retain(|_, v| !v.is_full(rate, burst, now));
            if b.len() >= MAX_TRACKED_ADDRS {
                self.refuse(Refusal::TableFull);
                return Err(Duration::from_secs(1));
            }
        }
        let r = b
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(rate, burst, now);
        if r.is_err() {
            self.refuse(Refusal::Rate);
        }
        r
    }

    /// Addresses a rate table remembers now.
    pub fn tracked_addrs(&self) -> usize {
        lock(&self.buckets).len()
    }
}

/// A place among the connections; dropping it frees the place.
pub struct ConnPermit {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut conns = lock(&self.limits.conns);
        if let Some(n) = conns.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.ip);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, total: usize, rate: f64, burst: f64) -> Arc<Limits> {
        Arc::new(Limits::new(&Config {
            max_conns_per_ip: per_ip,
            max_conns: total,
            signal_rate: rate,
            signal_burst: burst,
            ..Config::default()
        }))
    }

    #[test]
    fn connections_are_capped_per_address_and_in_total_and_freed_on_drop() {
        let l = limits(2, 3, 0.0, 0.0);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let p1 = l.admit_conn(a).unwrap();
        let _p2 = l.admit_conn(a).unwrap();
        assert_eq!(l.admit_conn(a).err(), Some(Refusal::ConnsPerIp));
        let _p3 = l.admit_conn(b).unwrap();
        assert_eq!(l.admit_conn(b).err(), Some(Refusal::ConnsTotal));
        drop(p1);
        assert_eq!(l.connections(), 2);
        assert!(l.admit_conn(b).is_ok());
        assert!(lock(&l.conns).len() <= 2);
    }

    #[test]
    fn the_signal_rate_is_a_token_bucket_per_address() {
        let l = limits(0, 0, 10.0, 3.0);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        for _ in 0..3 {
            l.take_signal(a, t).unwrap();
        }
        let wait = l.take_signal(a, t).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(
            l.take_signal(b, t).is_ok(),
            "another address has its own bucket"
        );
        assert!(l.take_signal(a, t + Duration::from_millis(100)).is_ok());
        assert!(l.refused().contains(&("rate", 1)));
    }

    #[test]
    fn the_rate_table_forgets_idle_addresses_and_never_passes_its_cap() {
        let l = limits(0, 0, 1.0, 1.0);
        let t = Instant::now();
        for i in 0..MAX_TRACKED_ADDRS as u32 {
            l.take_signal(IpAddr::from(i.to_be_bytes()), t).unwrap();
        }
        let late: IpAddr = [255, 255, 255, 255].into();
        assert!(l.take_signal(late, t).is_err(), "full of active addresses");
        assert_eq!(l.tracked_addrs(), MAX_TRACKED_ADDRS);
        // A second later every bucket is full again and may be forgotten.
        assert!(l.take_signal(late, t + Duration::from_secs(2)).is_ok());
        assert_eq!(l.tracked_addrs(), 1);
    }
}
