//! AF_XDP socket with its UMEM, four rings and the XDP filter program.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use super::frame;
use super::neigh::NeighCache;
use super::prog::{AttachMode, XdpProgram};
use super::ring::Ring;
use super::sys::{ctx, cvt, ifindex, interface_mac, setsockopt};

/// Size of one UMEM frame; every received or transmitted frame fits in one.
pub const FRAME_SIZE: u32 = 2048;

/// How the socket is bound to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Copy packets between driver buffers and the UMEM. Works everywhere.
    Copy,
    /// Driver DMAs straight into the UMEM. Needs driver support (not veth).
    ZeroCopy,
    /// Try zero-copy, fall back to copy.
    Auto,
}

/// Settings of one [`XdpSocket`].
#[derive(Clone, Debug)]
pub struct XdpConfig {
    /// UMEM frames of FRAME_SIZE bytes; half feed RX, half are for TX.
    pub frame_count: u32,
    /// Entries of each of the four rings (power of two, <= frame_count / 2).
    pub ring_size: u32,
    /// Copy or zero-copy binding to the queue.
    pub bind_mode: BindMode,
    /// Where the program runs, when this socket attaches one.
    pub attach_mode: AttachMode,
    /// Lowest destination UDP port of the program this socket attaches; the
    /// shard on queue `queue_base + i` owns port `port_lo + i`.
    pub port_lo: u16,
    /// Highest destination UDP port of the program (inclusive).
    pub port_hi: u16,
    /// The queue of the shard owning `port_lo`.
    pub queue_base: u32,
    /// IPv4 source address written into transmitted packets; without it
    /// IPv4 datagrams are refused as invalid.
    pub local_v4: Option<Ipv4Addr>,
    /// IPv6 source address written into transmitted packets; without it
    /// IPv6 datagrams are refused as invalid.
    pub local_v6: Option<Ipv6Addr>,
    /// Source UDP port written into transmitted packets.
    pub local_port: u16,
    /// Largest IP packet we transmit (interface MTU).
    pub mtu: usize,
    /// IPv4 TTL / IPv6 hop limit of transmitted packets.
    pub ttl: u8,
    /// Maximum descriptors handled per recv_batch call.
    pub batch: u32,
    /// Attach the filter program. Off when another component owns the
    /// program and only registers this socket in its map.
    pub attach_program: bool,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frame_count: 4096,
            ring_size: 2048,
            bind_mode: BindMode::Auto,
            attach_mode: AttachMode::Auto,
            port_lo: 0,
            port_hi: 0,
            queue_base: 0,
            local_v4: None,
            local_v6: None,
            local_port: 0,
            mtu: 1500,
            ttl: 64,
            batch: 64,
            attach_program: true,
        }
    }
}

/// What an [`XdpSocket`] did, from its own counts and the kernel's
/// XDP_STATISTICS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Valid UDP datagrams received.
    pub rx_packets: u64,
    /// Received frames that did not parse as UDP over IPv4/IPv6.
    pub rx_malformed: u64,
    /// Kernel dropped frames because our RX ring was full.
    pub rx_dropped_ring_full: u64,
    /// Kernel dropped frames for other reasons (no fill buffer, too large).
    pub rx_dropped_other: u64,
    /// Frames published on the TX ring.
    pub tx_packets: u64,
    /// send_batch stopped early: TX ring or free frames exhausted.
    pub tx_ring_full: u64,
    /// Datagrams refused because no MAC is known for the destination
    /// ([`Queued::NoNeighbour`]; the caller may send them another way).
    pub no_neighbour: u64,
    /// Datagrams refused: no local address of the destination's family, or too
    /// large for the MTU.
    pub tx_invalid: u64,
    /// Kernel found the fill ring empty when a frame arrived.
    pub fill_ring_empty: u64,
}

struct Umem {
    base: NonNull<u8>,
    len: usize,
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: base/len describe the anonymous mapping made in `open`; the
        // socket that pinned it is closed before this runs (field order).
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

/// An AF_XDP socket bound to one RX/TX queue of an interface, with its own
/// UMEM (half the frames feed RX, half are the TX pool) and destination MAC
/// cache. Not `Sync`: one thread drives it.
pub struct XdpSocket {
    // Field order is drop order: detach the program, unmap the rings, close
    // the socket, then release the UMEM the kernel had pinned. `Drop` empties
    // the map slot first.
    prog: Option<XdpProgram>,
    shared: Option<Arc<XdpProgram>>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    umem: Umem,
    free_tx: Vec<u64>,
    neigh: NeighCache,
    counters: XdpCounters,
    cfg: XdpConfig,
    queue: u32,
    mac: [u8; 6],
    zerocopy: bool,
    zerocopy_error: Option<String>,
    ip_id: u16,
    pending_tx: u32,
}

/// Outcome of [`XdpSocket::queue_send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// On the TX ring (sent at the next `flush`).
    Yes,
    /// Not queued: no MAC is known for the destination yet (counted in
    /// `no_neighbour`). The kernel can resolve it, so the caller should send
    /// this datagram through its regular UDP socket.
    NoNeighbour,
    /// Not queued and never will be on this socket: no local address of the
    /// destination's family, or larger than the MTU (counted in
    /// `tx_invalid`).
    Dropped,
    /// No TX slot or free frame; try again after completions.
    Full,
}

// SAFETY: all raw pointers point into mappings owned by the XdpSocket and
// are only used through &mut self, so moving it to another thread is sound.
unsafe impl Send for XdpSocket {}

impl XdpSocket {
    /// Open an AF_XDP socket on `ifname` queue `queue`. With
    /// `cfg.attach_program` it also loads the filter for
    /// `cfg.port_lo..=cfg.port_hi` (queues from `cfg.queue_base` up to
    /// `queue`), registers itself and attaches it; without, it receives
    /// nothing until it is registered in a program with [`Self::register_in`].
    pub fn open(ifname: &str, queue: u32, cfg: XdpConfig) -> io::Result<XdpSocket> {
        if !cfg.ring_size.is_power_of_two() || cfg.ring_size * 2 > cfg.frame_count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring_size must be a power of two and at most frame_count / 2",
            ));
        }
        if cfg.port_lo > cfg.port_hi {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port_lo > port_hi",
            ));
        }
        let ifindex = ifindex(ifname)?;
        let mac = interface_mac(ifname).map_err(ctx("SIOCGIFHWADDR"))?;
        let mut sock = match cfg.bind_mode {
            BindMode::Copy => Self::open_retry(ifindex, queue, &cfg, false)?,
            BindMode::ZeroCopy => Self::open_retry(ifindex, queue, &cfg, true)?,
            // A failed bind may leave the UMEM half attached, so the
            // fallback starts again with a fresh socket.
            BindMode::Auto => match Self::open_once(ifindex, queue, &cfg, true) {
                Ok(s) => s,
                Err(e) => {
                    let mut s = Self::open_retry(ifindex, queue, &cfg, false)?;
                    s.zerocopy_error = Some(e.to_string());
                    s
                }
            },
        };
        sock.mac = mac;
        if cfg.attach_program {
            if queue < cfg.queue_base {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "queue below queue_base",
                ));
            }
            let mut prog = XdpProgram::load(cfg.port_lo, cfg.port_hi, cfg.queue_base, queue + 1)?;
            prog.register(queue, sock.fd.as_raw_fd())
                .map_err(ctx("XSKMAP update"))?;
            prog.attach(ifindex, cfg.attach_mode)
                .map_err(ctx("BPF_LINK_CREATE"))?;
            sock.prog = Some(prog);
        }
        Ok(sock)
    }

    /// A socket that was just closed keeps its queue until the kernel's
    /// deferred cleanup runs, and bind fails with EBUSY meanwhile. Retry for
    /// a bounded time so a restart on the same queue works.
    fn open_retry(ifindex: u32, queue: u32, cfg: &XdpConfig, zerocopy: bool) -> io::Result<Self> {
        let start = std::time::Instant::now();
        loop {
            match Self::open_once(ifindex, queue, cfg, zerocopy) {
                Err(e)
                    if e.kind() == io::ErrorKind::ResourceBusy
                        && start.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn open_once(ifindex: u32, queue: u32, cfg: &XdpConfig, zerocopy: bool) -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
            .map_err(ctx("socket(AF_XDP)"))?;
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();

        let len = cfg.frame_count as usize * FRAME_SIZE as usize;
        // SAFETY: anonymous private mapping with a null hint has no
        // preconditions; failure is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let umem = Umem {
            base: NonNull::new(p as *mut u8).expect("mmap returned null"),
            len,
        };
        let reg = libc::xdp_umem_reg {
            addr: p as u64,
            len: len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg).map_err(ctx("XDP_UMEM_REG"))?;
        let n = cfg.ring_size as libc::c_int;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &n)
            .map_err(ctx("XDP_UMEM_FILL_RING"))?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, &n)
            .map_err(ctx("XDP_UMEM_COMPLETION_RING"))?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_RX_RING, &n).map_err(ctx("XDP_RX_RING"))?;
        setsockopt(raw, libc::SOL_XDP, libc::XDP_TX_RING, &n).map_err(ctx("XDP_TX_RING"))?;

        // SAFETY: xdp_mmap_offsets is plain data; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off and optlen are live and optlen holds off's size.
        cvt(unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                &mut off as *mut _ as *mut libc::c_void,
                &mut optlen,
            )
        })
        .map_err(ctx("XDP_MMAP_OFFSETS"))?;
        if optlen as usize != size_of::<libc::xdp_mmap_offsets>() {
            // Pre-5.4 kernels return the layout without the flags word.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "kernel too old: XDP_MMAP_OFFSETS without ring flags",
            ));
        }
        let size = cfg.ring_size;
        let rx =
            Ring::map(raw, size, &off.rx, libc::XDP_PGOFF_RX_RING).map_err(ctx("mmap rx ring"))?;
        let tx =
            Ring::map(raw, size, &off.tx, libc::XDP_PGOFF_TX_RING).map_err(ctx("mmap tx ring"))?;
        let mut fill = Ring::map(
            raw,
            size,
            &off.fr,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        )
        .map_err(ctx("mmap fr ring"))?;
        let comp = Ring::map(
            raw,
            size,
            &off.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )
        .map_err(ctx("mmap cr ring"))?;

        // Frames [0, ring_size) live in the fill/RX cycle; the rest are the
        // TX pool. RX frames go straight back to the fill ring after use, so
        // the fill ring can never overflow.
        let got = fill.free_slots(size);
        debug_assert_eq!(got, size);
        for i in 0..size {
            fill.push(i as u64 * FRAME_SIZE as u64);
        }
        fill.submit();
        let free_tx: Vec<u64> = (size..cfg.frame_count)
            .map(|i| i as u64 * FRAME_SIZE as u64)
            .collect();

        let mut flags = libc::XDP_USE_NEED_WAKEUP;
        flags |= if zerocopy {
            libc::XDP_ZEROCOPY
        } else {
            libc::XDP_COPY
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: sa is a live sockaddr_xdp and we pass its size.
        cvt(unsafe {
            libc::bind(
                raw,
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map_err(ctx("bind(AF_XDP)"))?;

        Ok(XdpSocket {
            prog: None,
            shared: None,
            fill,
            comp,
            rx,
            tx,
            fd,
            umem,
            free_tx,
            neigh: NeighCache::new(ifindex),
            counters: XdpCounters::default(),
            cfg: cfg.clone(),
            queue,
            mac: [0; 6],
            zerocopy,
            zerocopy_error: None,
            ip_id: 0,
            pending_tx: 0,
        })
    }

    /// Put this socket into `prog`'s map slot for its queue, so the program
    /// (attached by whoever owns it) redirects this queue's datagrams here.
    /// The socket keeps `prog` alive and empties the slot again when dropped,
    /// which releases the kernel's hold on the queue at once.
    pub fn register_in(&mut self, prog: Arc<XdpProgram>) -> io::Result<()> {
        if self.shared.is_some() || self.prog.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "socket already registered",
            ));
        }
        prog.register(self.queue, self.fd.as_raw_fd())
            .map_err(ctx("XSKMAP update"))?;
        self.shared = Some(prog);
        Ok(())
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn is_zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Why a zero-copy bind was refused when BindMode::Auto fell back to copy.
    pub fn zerocopy_error(&self) -> Option<&str> {
        self.zerocopy_error.as_deref()
    }

    /// Mode the filter program was attached in, if this socket attached one
    /// or is registered in one.
    #[cfg_attr(not(test), allow(dead_code))] // for the shard backend
    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.prog
            .as_ref()
            .or(self.shared.as_deref())
            .and_then(|p| p.mode())
    }

    /// The queue the socket is bound to.
    #[cfg_attr(not(test), allow(dead_code))] // for the shard backend
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Wait until RX has data or `timeout_ms` passes. Returns true if readable.
    #[cfg(test)]
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is a live pollfd and we pass a count of one.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }

    /// Local counters merged with the kernel's XDP_STATISTICS (one
    /// getsockopt).
    pub fn counters(&self) -> XdpCounters {
        let mut c = self.counters;
        // SAFETY: xdp_statistics is plain data; all-zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: st and len are live and len holds st's size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                &mut st as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            c.rx_dropped_ring_full = st.rx_ring_full;
            c.rx_dropped_other = st.rx_dropped;
            c.fill_ring_empty = st.rx_fill_ring_empty_descs;
        }
        c
    }

    #[inline]
    fn frame(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if end > self.umem.len as u64 {
            return None;
        }
        // SAFETY: [addr, end) is inside the UMEM mapping (checked above). The
        // frame came from the RX ring, so the kernel has finished writing it
        // and will not reuse it before we put it back on the fill ring, which
        // happens after this borrow ends.
        Some(unsafe {
            std::slice::from_raw_parts(self.umem.base.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// Receive up to `cfg.batch` packets without blocking. Each valid UDP
    /// payload is passed to `f` with its source address; the frame is
    /// returned to the kernel right after. Returns the number of frames taken
    /// from the RX ring (including malformed ones).
    pub fn recv_batch(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> usize {
        self.reap_completions();
        let n = self.rx.available(self.cfg.batch);
        if n == 0 {
            self.wake_fill_if_needed();
            return 0;
        }
        // Every RX frame came from the fill ring, which holds ring_size
        // entries, so there is always room to return it.
        let room = self.fill.free_slots(n);
        debug_assert!(room >= n);
        for k in 0..n {
            let d = self.rx.read(k);
            match self.frame(d.addr, d.len).map(frame::parse_udp) {
                Some(Ok(p)) => {
                    self.counters.rx_packets += 1;
                    self.neigh.learn(p.src.ip(), p.src_mac);
                    // Re-borrow the frame: learning needed &mut self.
                    let frame = self.frame(d.addr, d.len).unwrap_or(&[]);
                    f(p.src, &frame[p.payload_off..p.payload_off + p.payload_len]);
                }
                _ => self.counters.rx_malformed += 1,
            }
            // In aligned mode the descriptor address may point past the frame
            // start (headroom); the frame itself starts at the chunk boundary.
            self.fill.push(d.addr & !(FRAME_SIZE as u64 - 1));
        }
        self.rx.release(n);
        self.fill.submit();
        self.wake_fill_if_needed();
        n as usize
    }

    fn wake_fill_if_needed(&mut self) {
        if self.fill.needs_wakeup() {
            // SAFETY: zero-length recvfrom on our own socket; null buffers are
            // allowed with a zero length.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
    }

    /// Move completed TX frames back to the free list.
    pub fn reap_completions(&mut self) -> u32 {
        let n = self.comp.available(u32::MAX);
        for k in 0..n {
            let a = self.comp.read(k);
            self.free_tx.push(a & !(FRAME_SIZE as u64 - 1));
        }
        if n > 0 {
            self.comp.release(n);
        }
        n
    }

    fn local_for(&self, dst: &SocketAddr) -> Option<SocketAddr> {
        match dst {
            SocketAddr::V4(_) => self
                .cfg
                .local_v4
                .map(|a| SocketAddr::new(IpAddr::V4(a), self.cfg.local_port)),
            SocketAddr::V6(_) => self
                .cfg
                .local_v6
                .map(|a| SocketAddr::new(IpAddr::V6(a), self.cfg.local_port)),
        }
    }

    /// Send queued datagrams. Packets that were put on the TX ring or
    /// refused (no neighbour, invalid) are removed from the front of `out`;
    /// whatever did not fit stays for the next call. Returns the number put
    /// on the TX ring.
    #[cfg(test)]
    pub fn send_batch(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> usize {
        self.reap_completions();
        let mut consumed = 0;
        let mut sent = 0;
        for (dst, payload) in out.iter() {
            match self.queue_send(dst, payload) {
                Queued::Yes => sent += 1,
                Queued::NoNeighbour | Queued::Dropped => {}
                Queued::Full => break,
            }
            consumed += 1;
        }
        out.drain(..consumed);
        self.flush();
        sent
    }

    /// Build one datagram into a free frame and put it on the TX ring
    /// without telling the kernel yet; call `flush` after a batch. This is
    /// the allocation-free path: the payload is copied straight from the
    /// caller's buffer into the UMEM.
    pub fn queue_send(&mut self, dst: &SocketAddr, payload: &[u8]) -> Queued {
        let Some(src) = self.local_for(dst) else {
            self.counters.tx_invalid += 1;
            return Queued::Dropped;
        };
        let ip_len = frame::header_len(dst) - frame::ETH_HLEN + payload.len();
        if ip_len > self.cfg.mtu {
            self.counters.tx_invalid += 1;
            return Queued::Dropped;
        }
        let Some(dmac) = self.neigh.lookup(&dst.ip()) else {
            self.counters.no_neighbour += 1;
            return Queued::NoNeighbour;
        };
        if self.tx.free_slots(1) == 0 {
            self.counters.tx_ring_full += 1;
            return Queued::Full;
        }
        let addr = match self.free_tx.pop() {
            Some(a) => a,
            None => {
                // Completions may have arrived since the last reap.
                self.reap_completions();
                match self.free_tx.pop() {
                    Some(a) => a,
                    None => {
                        self.counters.tx_ring_full += 1;
                        return Queued::Full;
                    }
                }
            }
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        // SAFETY: addr is a frame from our free list: inside the UMEM, not
        // on any ring, so neither the kernel nor another borrow uses it.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                self.umem.base.as_ptr().add(addr as usize),
                FRAME_SIZE as usize,
            )
        };
        match frame::write_udp(
            buf,
            self.mac,
            dmac,
            src,
            *dst,
            payload,
            self.ip_id,
            self.cfg.ttl,
        ) {
            Some(len) => {
                self.tx.push(libc::xdp_desc {
                    addr,
                    len: len as u32,
                    options: 0,
                });
                self.pending_tx += 1;
                Queued::Yes
            }
            None => {
                self.free_tx.push(addr);
                self.counters.tx_invalid += 1;
                Queued::Dropped
            }
        }
    }

    /// Publish queued TX descriptors and kick the kernel.
    pub fn flush(&mut self) {
        if self.pending_tx > 0 {
            self.tx.submit();
            self.counters.tx_packets += self.pending_tx as u64;
            self.pending_tx = 0;
        }
        self.kick_tx();
    }

    /// Ask the kernel to process the TX ring. In copy mode transmission
    /// happens inside this syscall, a bounded batch at a time (EAGAIN means
    /// more is left), so we repeat while work remains.
    pub fn kick_tx(&mut self) {
        for _ in 0..(self.cfg.ring_size / 16 + 2) {
            if self.tx.outstanding() == 0 {
                return;
            }
            if self.zerocopy && !self.tx.needs_wakeup() {
                return;
            }
            // SAFETY: zero-length sendto on our own socket with null buffers,
            // which AF_XDP uses purely as a doorbell.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EBUSY) => {}
                    Some(libc::ENOBUFS) => {
                        self.reap_completions();
                    }
                    _ => return,
                }
            }
            self.reap_completions();
        }
    }

    /// The socket's descriptor, to poll: readable when the RX ring has
    /// frames.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for XdpSocket {
    fn drop(&mut self) {
        if let Some(p) = self.prog.as_mut() {
            let _ = p.detach();
            // The XSKMAP holds a reference to the socket. Without this the
            // socket (and its claim on the queue) lives until the kernel frees
            // the program and then the map, which happens later from deferred
            // work, and a new socket on the same queue would get EBUSY.
            let _ = p.unregister(self.queue);
        }
        if let Some(p) = self.shared.as_ref() {
            let _ = p.unregister(self.queue);
        }
    }
}
