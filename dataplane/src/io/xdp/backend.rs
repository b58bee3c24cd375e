//! The shard backend on AF_XDP: datagrams of the shard's port that arrive
//! on its queue come from the UMEM, and every send is written into the UMEM
//! with its Ethernet/IP/UDP headers and handed to the device in one kick per
//! turn. The shard's kernel UDP socket stays bound beside it: it holds the
//! port, receives what the program passes to the kernel (a packet of this
//! shard that arrived on another queue), and sends to destinations whose
//! link-layer address is not known yet (learned from the first frame a peer
//! sends, which in WebRTC always comes first).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{AttachMode, BindMode, Queued, XdpConfig, XdpCounters, XdpProgram, XdpSocket};
use crate::io::{make_backend, Backend, IoKind};
use crate::packet::Datagram;
use crate::stats::Counters;

/// While the AF_XDP ring is busy, the kernel socket is read every this many turns.
const KERNEL_READ_EVERY: u32 = 16;

/// Where and how the shards of one process use AF_XDP.
#[derive(Debug, Clone)]
pub struct XdpSettings {
    /// The interface whose queues the shards bind.
    pub interface: String,
    /// Shard i binds queue `queue_base + i`.
    pub queue_base: u32,
    /// Native (driver) or generic XDP; `Auto` tries native first.
    pub attach: AttachMode,
    /// Zero-copy, copy, or zero-copy where the driver allows it.
    pub bind: BindMode,
}

impl Default for XdpSettings {
    fn default() -> Self {
        XdpSettings {
            interface: String::new(),
            queue_base: 0,
            attach: AttachMode::Auto,
            bind: BindMode::Auto,
        }
    }
}

/// The program every shard's socket is registered in, attached to the
/// interface for as long as it lives (dropping it detaches it).
pub struct XdpAttachment {
    program: Arc<XdpProgram>,
    /// The attach mode the kernel accepted.
    pub mode: AttachMode,
}

impl XdpAttachment {
    /// Check that AF_XDP can run here, load the program for the shards'
    /// ports `port_lo..=port_hi` (shard i on `port_lo + i`) and attach it.
    pub fn attach(s: &XdpSettings, port_lo: u16, port_hi: u16) -> io::Result<XdpAttachment> {
        if s.interface.is_empty() {
            return Err(invalid(
                "io = xdp needs xdp_interface (the interface to bind)",
            ));
        }
        super::capability_check().map_err(io::Error::other)?;
        let ifindex = super::ifindex(&s.interface)
            .map_err(|e| io::Error::new(e.kind(), format!("xdp_interface {}: {e}", s.interface)))?;
        let shards = u32::from(port_hi - port_lo) + 1;
        let mut program = XdpProgram::load(port_lo, port_hi, s.queue_base, s.queue_base + shards)?;
        let mode = program.attach(ifindex, s.attach).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("attaching the XDP program to {}: {e}", s.interface),
            )
        })?;
        Ok(XdpAttachment {
            program: Arc::new(program),
            mode,
        })
    }
}

/// One shard's AF_XDP socket and its kernel UDP socket.
pub struct XdpBackend {
    xsk: XdpSocket,
    kernel: Box<dyn Backend>,
    kernel_fd: RawFd,
    /// Sends with no known link-layer address, for the kernel socket.
    fallback: Vec<Datagram>,
    /// Received this turn through each path (published with the sends).
    rx_xsk: u64,
    rx_kernel: u64,
    /// Receive calls so far, to pace reads of the kernel socket.
    turns: u32,
    /// The socket's counters as last added to the shard's.
    last: XdpCounters,
}

impl XdpBackend {
    /// Open shard `shard`'s socket on queue `queue_base + shard` of the
    /// attached interface and register it in the program; `socket` is the
    /// shard's bound UDP socket, whose address is the source of every send.
    pub fn open(
        s: &XdpSettings,
        att: &XdpAttachment,
        shard: u32,
        socket: UdpSocket,
    ) -> io::Result<XdpBackend> {
        let local = socket.local_addr()?;
        let (v4, v6) = match local.ip() {
            IpAddr::V4(a) if !a.is_unspecified() => (Some(a), None),
            IpAddr::V6(a) if !a.is_unspecified() => (a.to_ipv4_mapped(), Some(a)),
            _ => {
                return Err(invalid(
                    "io = xdp needs media_bind set to an address of xdp_interface \
                     (it is the source address of every packet sluice builds)",
                ))
            }
        };
        let queue = s.queue_base + shard;
        let cfg = XdpConfig {
            bind_mode: s.bind,
            attach_mode: att.mode,
            port_lo: local.port(),
            port_hi: local.port(),
            local_v4: v4,
            local_v6: v6,
            local_port: local.port(),
            attach_program: false,
            ..XdpConfig::default()
        };
        let mut xsk = XdpSocket::open(&s.interface, queue, cfg).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("AF_XDP socket on {} queue {queue}: {e}", s.interface),
            )
        })?;
        // The socket keeps the program alive and empties its slot when it closes.
        xsk.register_in(att.program.clone())?;
        tracing::info!(
            interface = %s.interface,
            queue,
            attach = att.mode.as_str(),
            zerocopy = xsk.is_zerocopy(),
            why_not = xsk.zerocopy_error().unwrap_or(""),
            "AF_XDP socket bound"
        );
        let kernel = make_backend(IoKind::Mmsg, socket);
        let kernel_fd = kernel.fd();
        Ok(XdpBackend {
            xsk,
            kernel,
            kernel_fd,
            fallback: Vec::new(),
            rx_xsk: 0,
            rx_kernel: 0,
            turns: 0,
            last: XdpCounters::default(),
        })
    }

    /// Add what changed since the last call to the shard's counters.
    fn publish(&mut self, counters: &mut Counters) {
        let now = self.xsk.counters();
        let d = |a: u64, b: u64| a.saturating_sub(b);
        counters.xdp_rx += std::mem::take(&mut self.rx_xsk);
        counters.xdp_kernel_rx += std::mem::take(&mut self.rx_kernel);
        counters.xdp_tx_full += d(now.tx_ring_full, self.last.tx_ring_full);
        counters.xdp_tx_invalid += d(now.tx_invalid, self.last.tx_invalid);
        counters.xdp_rx_ring_full += d(now.rx_dropped_ring_full, self.last.rx_dropped_ring_full);
        counters.xdp_fill_empty += d(now.fill_ring_empty, self.last.fill_ring_empty);
        counters.xdp_rx_malformed += d(now.rx_malformed, self.last.rx_malformed);
        self.last = now;
    }
}

impl Backend for XdpBackend {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn recv(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        // In copy mode the kernel sends inside the kick, a bounded batch at a
        // time: what the last turn left on the TX ring goes now.
        self.xsk.kick_tx();
        let n = self.xsk.recv_batch(f);
        self.rx_xsk += n as u64;
        // The kernel socket carries only what arrived on another queue (or
        // what the program could not take): read it when the ring was empty,
        // and every few turns while it is busy, not with a system call each turn.
        self.turns = self.turns.wrapping_add(1);
        if n > 0 && !self.turns.is_multiple_of(KERNEL_READ_EVERY) {
            return Ok(n);
        }
        let k = self.kernel.recv(f)?;
        self.rx_kernel += k as u64;
        Ok(n + k)
    }

    fn send(&mut self, out: &mut Vec<Datagram>, counters: &mut Counters) {
        let mut queued = 0u64;
        for d in out.iter_mut() {
            let mut r = self.xsk.queue_send(&d.destination, &d.contents);
            if r == Queued::Full {
                // Push what is on the ring to the device, then take its frames back.
                self.xsk.flush();
                counters.tx_sends += 1;
                r = self.xsk.queue_send(&d.destination, &d.contents);
            }
            match r {
                Queued::Yes => {
                    queued += 1;
                    counters.tx_bytes += d.contents.len() as u64;
                }
                Queued::NoNeighbour => self.fallback.push(Datagram {
                    destination: d.destination,
                    contents: std::mem::take(&mut d.contents),
                }),
                // Counted by the socket (published below).
                Queued::Full | Queued::Dropped => {}
            }
        }
        if queued > 0 {
            self.xsk.flush();
            counters.tx_sends += 1;
            counters.tx_packets += queued;
            counters.xdp_tx += queued;
        }
        crate::packet::recycle(out);
        if !self.fallback.is_empty() {
            counters.xdp_kernel_tx += self.fallback.len() as u64;
            self.kernel.send(&mut self.fallback, counters);
        }
        self.publish(counters);
    }

    fn fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }

    fn holds_input(&self) -> bool {
        self.kernel.holds_input()
    }

    fn extra_fd(&self) -> Option<RawFd> {
        Some(self.kernel_fd)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

impl AttachMode {
    /// The mode named by `s`: `auto`, `drv` (native) or `skb` (generic).
    pub fn parse(s: &str) -> Option<AttachMode> {
        match s {
            "auto" => Some(AttachMode::Auto),
            "drv" | "native" => Some(AttachMode::Drv),
            "skb" | "generic" => Some(AttachMode::Skb),
            _ => None,
        }
    }

    /// The name [`AttachMode::parse`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Drv => "drv",
            AttachMode::Skb => "skb",
        }
    }
}

impl BindMode {
    /// The mode named by `s`: `auto`, `copy` or `zerocopy`.
    pub fn parse(s: &str) -> Option<BindMode> {
        match s {
            "auto" => Some(BindMode::Auto),
            "copy" => Some(BindMode::Copy),
            "zerocopy" | "zero-copy" => Some(BindMode::ZeroCopy),
            _ => None,
        }
    }
}
