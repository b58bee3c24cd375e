//! Destination MAC lookup for transmitted frames.
//!
//! The primary source is learning: every received frame tells us which MAC
//! the peer's IP arrives from (the peer itself when on-link, otherwise the
//! router in front of it), and replies go back the same way. In WebRTC the
//! peer always sends first (STUN binding requests), so by the time we answer
//! we have normally learned its MAC.
//!
//! The fallback is the kernel's neighbour table, dumped over rtnetlink
//! (RTM_GETNEIGH) for both IPv4 and IPv6 and cached. The dump is repeated at
//! most once per second, and only when a lookup misses, so a burst of
//! packets to an unknown destination costs one dump, not one per packet.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Upper bound for learned entries; beyond it new peers fall back to the
/// kernel table instead of growing memory without limit.
const MAX_LEARNED: usize = 65536;
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub struct NeighCache {
    ifindex: u32,
    learned: HashMap<IpAddr, [u8; 6]>,
    kernel: HashMap<IpAddr, [u8; 6]>,
    last_refresh: Option<Instant>,
    refreshes: u64,
}

impl NeighCache {
    pub fn new(ifindex: u32) -> Self {
        NeighCache {
            ifindex,
            learned: HashMap::with_capacity(1024),
            kernel: HashMap::with_capacity(64),
            last_refresh: None,
            refreshes: 0,
        }
    }

    /// Remember that `ip` is reached through `mac`. Multicast / broadcast
    /// source MACs are never valid unicast next hops and are ignored.
    #[inline]
    pub fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if mac[0] & 1 != 0 {
            return;
        }
        if let Some(m) = self.learned.get_mut(&ip) {
            *m = mac;
        } else if self.learned.len() < MAX_LEARNED {
            self.learned.insert(ip, mac);
        }
    }

    /// Find the MAC for `ip`: learned first, then the cached kernel table,
    /// refreshing that table if it is older than a second.
    #[inline]
    pub fn lookup(&mut self, ip: &IpAddr) -> Option<[u8; 6]> {
        if let Some(m) = self.learned.get(ip) {
            return Some(*m);
        }
        if let Some(m) = self.kernel.get(ip) {
            return Some(*m);
        }
        let stale = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL);
        if stale {
            self.refresh();
            return self.kernel.get(ip).copied();
        }
        None
    }

    /// Number of kernel table dumps done so far (for tests and stats).
    #[cfg(test)]
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    pub fn refresh(&mut self) {
        self.last_refresh = Some(Instant::now());
        self.refreshes += 1;
        // A failed dump keeps the old table: stale entries are better than
        // none, and the next refresh is at most a second away.
        if let Ok(entries) = dump_neighbours(self.ifindex) {
            self.kernel.clear();
            self.kernel.extend(entries);
        }
    }
}

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
// Neighbour states whose link-layer address can be used.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80; // REACHABLE STALE DELAY PROBE PERMANENT

#[repr(C)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
struct NdMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    state: u16,
    flags: u8,
    ty: u8,
}

#[repr(C)]
struct Request {
    hdr: NlMsgHdr,
    nd: NdMsg,
}

fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}
fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Dump the kernel neighbour table (IPv4 ARP and IPv6 ND) for one interface.
pub fn dump_neighbours(ifindex: u32) -> io::Result<Vec<(IpAddr, [u8; 6])>> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        hdr: NlMsgHdr {
            len: size_of::<Request>() as u32,
            ty: RTM_GETNEIGH,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        nd: NdMsg {
            family: libc::AF_UNSPEC as u8,
            pad1: 0,
            pad2: 0,
            ifindex: 0,
            state: 0,
            flags: 0,
            ty: 0,
        },
    };
    // SAFETY: `req` is a live repr(C) value; we pass its exact size. A null
    // destination address sends to the kernel on an unconnected netlink socket.
    let r = unsafe {
        libc::send(
            fd.as_raw_fd(),
            &req as *const Request as *const libc::c_void,
            size_of::<Request>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + size_of::<NlMsgHdr>() <= data.len() {
            let len = rd_u32(data, off) as usize;
            let ty = rd_u16(data, off + 4);
            if len < size_of::<NlMsgHdr>() || off + len > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad netlink length",
                ));
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = rd_u32(data, off + 16) as i32;
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                RTM_NEWNEIGH => {
                    let msg = &data[off + size_of::<NlMsgHdr>()..off + len];
                    if let Some(e) = parse_neigh(msg, ifindex) {
                        out.push(e);
                    }
                }
                _ => {}
            }
            off += align4(len);
        }
    }
}

fn parse_neigh(msg: &[u8], ifindex: u32) -> Option<(IpAddr, [u8; 6])> {
    if msg.len() < size_of::<NdMsg>() {
        return None;
    }
    let family = msg[0] as i32;
    let idx = rd_u32(msg, 4);
    let state = rd_u16(msg, 8);
    if idx != ifindex || state & NUD_USABLE == 0 {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    let mut off = size_of::<NdMsg>();
    while off + 4 <= msg.len() {
        let alen = rd_u16(msg, off) as usize;
        let aty = rd_u16(msg, off + 2) & 0x3fff;
        if alen < 4 || off + alen > msg.len() {
            break;
        }
        let v = &msg[off + 4..off + alen];
        match (aty, family, v.len()) {
            (NDA_DST, libc::AF_INET, 4) => {
                ip = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
            }
            (NDA_DST, libc::AF_INET6, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(v);
                ip = Some(IpAddr::V6(Ipv6Addr::from(a)));
            }
            (NDA_LLADDR, _, 6) => {
                let mut m = [0u8; 6];
                m.copy_from_slice(v);
                mac = Some(m);
            }
            _ => {}
        }
        off += align4(alen);
    }
    Some((ip?, mac?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_entries_win_and_multicast_is_ignored() {
        let mut c = NeighCache::new(0);
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        c.learn(ip, [0x01, 0, 0x5e, 0, 0, 1]);
        assert!(c.learned.is_empty());
        c.learn(ip, [2, 0, 0, 0, 0, 9]);
        assert_eq!(c.lookup(&ip), Some([2, 0, 0, 0, 0, 9]));
    }

    #[test]
    fn misses_refresh_at_most_once_per_second() {
        // ifindex 0 matches no neighbour, so every lookup misses.
        let mut c = NeighCache::new(0);
        let ip: IpAddr = "198.18.0.99".parse().unwrap();
        for _ in 0..100 {
            assert_eq!(c.lookup(&ip), None);
        }
        assert_eq!(c.refreshes(), 1);
    }

    #[test]
    fn parses_a_netlink_neighbour_message() {
        let mut m = Vec::new();
        m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0x02u16.to_ne_bytes()); // REACHABLE
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NDA_DST.to_ne_bytes());
        m.extend_from_slice(&[198, 18, 0, 2]);
        m.extend_from_slice(&10u16.to_ne_bytes());
        m.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        m.extend_from_slice(&[2, 1, 2, 3, 4, 5, 0, 0]);
        assert_eq!(
            parse_neigh(&m, 7),
            Some(("198.18.0.2".parse().unwrap(), [2, 1, 2, 3, 4, 5]))
        );
        assert_eq!(parse_neigh(&m, 8), None);
    }
}
