//! io_uring backend. Receive: one multishot `RecvMsg` on a provided-buffer ring,
//! so the kernel fills buffers as datagrams arrive and `recv` only reads the
//! completion queue. Send: one `SendMsg` per run of equal-sized datagrams to one
//! destination (UDP_SEGMENT when the run has more than one), submitted together
//! once per loop turn. The shard parks on the ring's fd, readable while
//! completions wait.
//!
//! The ring, its provided buffers and the sends in flight stay in one file:
//! they share the invariants its `unsafe` relies on. Tests: `uring/tests.rs`.
//!
//! Datagrams larger than a buffer slot are counted (`rx_packets`,
//! `drop_malformed`) and dropped; media datagrams fit with room to spare.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, RecvMsgOut};
use io_uring::{cqueue, opcode, IoUring};

use super::batch::{gso_refused, plan_runs, MsgHdr, Op, SendScratch};
use super::{wait_writable, Backend};
use crate::packet::Datagram;
use crate::stats::Counters;

/// Submission queue depth: the most sends in flight at once.
const SQ_ENTRIES: u32 = 256;
/// Room for a full round of sends plus a recv completion per buffer.
const CQ_ENTRIES: u32 = 1024;
/// Provided buffers (a power of two); together 512 KiB, not locked memory.
const BUF_COUNT: u16 = 256;
/// One datagram per slot: the `io_uring_recvmsg_out` header, the source
/// address and up to 2004 bytes of payload.
const BUF_SIZE: usize = 2048;
const BUF_GROUP: u16 = 0;
/// Completions handled per `recv` call.
const RECV_BATCH: usize = 64;
/// A send's user data is its round (31 bits) and its index in the round; the
/// recv's is this, which no send can have.
const RECV_USER_DATA: u64 = u64::MAX;

/// Room for the source address of either family in each received buffer.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();

/// Why the io_uring backend could not be set up; the caller falls back.
#[derive(Debug, thiserror::Error)]
pub enum UringSetupError {
    #[error("creating the ring: {0}")]
    Ring(io::Error),
    #[error("allocating the provided-buffer ring: {0}")]
    Buffers(io::Error),
    #[error("registering the provided-buffer ring (needs Linux 5.19+): {0}")]
    Register(io::Error),
    #[error("multishot recvmsg refused (needs Linux 6.0+): {0}")]
    Multishot(io::Error),
}

/// A shard socket driven through an io_uring (see the module docs).
pub struct UringBackend {
    ring: IoUring,
    bufs: BufRing,
    socket: UdpSocket,
    /// Template for the multishot recv: only the name and control lengths
    /// matter, and the kernel copies them when the request is armed.
    recv_hdr: Box<MsgHdr>,
    /// The multishot recv is (or may be) live in the kernel.
    armed: bool,
    /// Recv completions reaped while waiting for sends, handled by the next `recv`.
    stash: VecDeque<(i32, u32)>,
    /// Truncated datagrams (and their full sizes) not yet added to the counters.
    unreported: u64,
    unreported_bytes: u64,
    /// Truncated datagrams since the start.
    truncated: u64,
    gso: bool,
    /// GSO sends that went out (several datagrams in one).
    gso_sends: u64,
    /// The datagrams of the current send round: owned here until every send
    /// pointing into them has completed.
    inflight: Vec<Datagram>,
    plan: Vec<Op>,
    retry: Vec<Op>,
    results: Vec<Option<i32>>,
    /// Tags this round's sends, so a late completion is never taken for another's.
    round: u32,
    scratch: SendScratch,
    cqes: Vec<(u64, i32, u32)>,
}

impl UringBackend {
    /// Set up the ring and the provided buffers, and check that the kernel
    /// takes a multishot recvmsg on `socket`. Nothing is left armed: the recv
    /// is armed by the first `recv`, on the thread that will run the loop, so
    /// the kernel's completion work lands on that thread.
    pub fn new(socket: UdpSocket) -> Result<Self, UringSetupError> {
        // Completion work for arriving datagrams runs at our next syscall
        // instead of interrupting the loop (5.19+; older kernels refuse the flags).
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })
            .map_err(UringSetupError::Ring)?;
        let bufs = BufRing::new(BUF_COUNT, BUF_SIZE).map_err(UringSetupError::Buffers)?;
        // SAFETY: the ring memory is a live, page-aligned mapping of
        // `BUF_COUNT` entries owned by `bufs`, which outlives its registration:
        // `Drop` unregisters it (or leaks the mapping) before `bufs` is dropped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), BUF_COUNT, BUF_GROUP, 0)
        }
        .map_err(UringSetupError::Register)?;
        // SAFETY: an all-zero msghdr is valid: null pointers with zero lengths.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut b = UringBackend {
            ring,
            bufs,
            socket,
            recv_hdr: Box::new(MsgHdr(hdr)),
            armed: false,
            stash: VecDeque::new(),
            unreported: 0,
            unreported_bytes: 0,
            truncated: 0,
            gso: true,
            gso_sends: 0,
            inflight: Vec::new(),
            plan: Vec::new(),
            retry: Vec::new(),
            results: Vec::new(),
            round: 0,
            scratch: SendScratch::default(),
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
        };
        b.check_multishot().map_err(UringSetupError::Multishot)?;
        Ok(b)
    }

    /// Datagrams dropped so far because they did not fit a buffer slot.
    #[cfg(test)]
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Whether sends still use UDP_SEGMENT (off after the kernel refused it).
    #[cfg(test)]
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    fn check_multishot(&mut self) -> io::Result<()> {
        self.arm()?;
        // A kernel without multishot recvmsg fails the request at submission.
        self.collect_cqes(false);
        self.take_recv_error()?;
        if self.armed {
            self.cancel_recv()?;
            self.collect_cqes(false);
            self.take_recv_error()?;
        }
        Ok(())
    }

    /// A recv error reaped during setup, other than the cancellation itself.
    fn take_recv_error(&mut self) -> io::Result<()> {
        let fatal = self
            .stash
            .iter()
            .find(|&&(res, _)| res < 0 && res != -libc::ECANCELED && res != -libc::ENOBUFS);
        match fatal {
            Some(&(res, _)) => Err(io::Error::from_raw_os_error(-res)),
            None => Ok(()),
        }
    }

    fn arm(&mut self) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(
            Fd(self.socket.as_raw_fd()),
            &self.recv_hdr.0 as *const libc::msghdr,
            BUF_GROUP,
        )
        // Report a truncated datagram's full length, for the byte counter.
        .flags(libc::MSG_TRUNC as u32)
        .build()
        .user_data(RECV_USER_DATA);
        // SAFETY: the msghdr is boxed in `self` and outlives the request (the
        // kernel also copies it when arming); the buffers it will fill belong
        // to the registered group, whose memory `self.bufs` keeps mapped.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    fn cancel_recv(&mut self) -> io::Result<()> {
        match self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::user_data(RECV_USER_DATA))
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Move every completion out of the queue: recv ones onto the stash (their
    /// buffers stay ours until handled), send ones into `results` when
    /// `sends` is set. Returns the number of send completions.
    fn collect_cqes(&mut self, sends: bool) -> usize {
        self.cqes.clear();
        self.cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut n = 0;
        for &(ud, res, flags) in &self.cqes {
            if ud == RECV_USER_DATA {
                if !cqueue::more(flags) {
                    self.armed = false;
                }
                self.stash.push_back((res, flags));
            } else if sends && (ud >> 32) as u32 == self.round {
                if let Some(r) = self.results.get_mut(ud as u32 as usize) {
                    *r = Some(res);
                    n += 1;
                }
            }
        }
        n
    }

    /// Handle one recv completion. Returns whether a datagram went to `f`.
    fn handle_recv(
        &mut self,
        res: i32,
        flags: u32,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> io::Result<bool> {
        if res < 0 {
            return match -res {
                // The ring ran dry (re-armed once buffers are back) or we cancelled.
                libc::ENOBUFS | libc::ECANCELED => Ok(false),
                // ICMP errors from a previous send surface here; they are not fatal.
                libc::ECONNREFUSED => Ok(false),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return Ok(false);
        };
        let len = (res as usize).min(BUF_SIZE);
        // SAFETY: the kernel selected buffer `bid` for this completion and
        // wrote `len` bytes into it; it is not handed out again until
        // `recycle` below, and the mapping lives as long as `self.bufs`.
        let buf = unsafe { self.bufs.buffer(bid, len) };
        let mut delivered = false;
        if let Ok(msg) = RecvMsgOut::parse(buf, &self.recv_hdr.0) {
            if msg.is_payload_truncated() {
                self.unreported += 1;
                self.truncated += 1;
                self.unreported_bytes += msg.incoming_payload_len() as u64;
            } else if let Some(src) = parse_sockaddr(msg.name_data()) {
                f(src, msg.payload_data());
                delivered = true;
            }
        }
        self.bufs.recycle(bid);
        Ok(delivered)
    }

    /// Submit `ops` as one batch and wait for all of their completions,
    /// leaving each result in `self.results`.
    fn submit_round(&mut self, ops: &[Op]) {
        self.results.clear();
        self.results.resize(ops.len(), None);
        self.round = (self.round + 1) & 0x7fff_ffff;
        let tag = (self.round as u64) << 32;
        self.scratch.fill(ops, &self.inflight);
        let fd = self.socket.as_raw_fd();
        let mut queued = 0;
        {
            let mut sq = self.ring.submission();
            for (k, hdr) in self.scratch.hdrs.iter().enumerate() {
                let entry = opcode::SendMsg::new(Fd(fd), &hdr.0.msg_hdr as *const libc::msghdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(tag | k as u64);
                // SAFETY: the msghdr, its iovecs, address and cmsg live in
                // `self.scratch`, and the payloads in `self.inflight`; neither
                // is touched until every completion of this round is reaped
                // below, which `wait_sends` does before returning.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
                queued += 1;
            }
        }
        for r in self.results.iter_mut().skip(queued) {
            *r = Some(-libc::EBUSY);
        }
        self.wait_sends(queued);
        self.scratch.clear();
    }

    /// Submit what is queued and reap until `want` send completions are in.
    fn wait_sends(&mut self, want: usize) {
        let mut got = 0;
        let mut failures = 0;
        while got < want {
            match self.ring.submit_and_wait(want - got) {
                Ok(_) => failures = 0,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    failures += 1;
                    if failures > 100 {
                        // Sends may still be in flight, pointing into the
                        // payloads and descriptors: leak them rather than free
                        // them under the kernel. What did not complete counts
                        // as refused.
                        tracing::error!("io_uring: cannot reap send completions: {e}");
                        for d in &mut self.inflight {
                            mem::forget(mem::take(&mut d.contents));
                        }
                        mem::forget(mem::take(&mut self.scratch));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            got += self.collect_cqes(true);
        }
    }
}

impl Backend for UringBackend {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn recv(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        if !self.armed && self.stash.is_empty() {
            self.arm()?;
        }
        if self.stash.len() < RECV_BATCH {
            self.collect_cqes(false);
            if self.stash.is_empty() && self.ring.submission().taskrun() {
                // Datagrams are waiting on completion work that only a syscall runs.
                self.ring.submit()?;
                self.collect_cqes(false);
            }
        }
        // Completions that deliver nothing (errors, truncated datagrams) do not
        // count against the batch: a call that returns fewer than a batch has
        // emptied the stash, so parking on the ring cannot strand one there.
        let mut n = 0;
        let mut first_err = None;
        while n < RECV_BATCH {
            let Some((res, flags)) = self.stash.pop_front() else {
                break;
            };
            match self.handle_recv(res, flags, f) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.bufs.publish();
        if !self.armed {
            if let Err(e) = self.arm() {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }

    fn send(&mut self, out: &mut Vec<Datagram>, counters: &mut Counters) {
        if self.unreported > 0 {
            counters.rx_packets += self.unreported;
            counters.rx_bytes += self.unreported_bytes;
            counters.drop_malformed += self.unreported;
            self.unreported = 0;
            self.unreported_bytes = 0;
        }
        if out.is_empty() {
            return;
        }
        // The payloads stay here, unmoved, until their sends have completed;
        // `out` gets the previous round's (empty) vector back.
        mem::swap(out, &mut self.inflight);
        plan_runs(&self.inflight, self.gso, &mut self.plan);
        let mut pending = mem::take(&mut self.plan);
        let mut retry = mem::take(&mut self.retry);
        while !pending.is_empty() {
            retry.clear();
            let mut blocked = false;
            for chunk in pending.chunks(SQ_ENTRIES as usize) {
                self.submit_round(chunk);
                for (op, res) in chunk.iter().zip(&self.results) {
                    let dgs = &self.inflight[op.start..op.end];
                    let count = dgs.len() as u64;
                    let Some(res) = *res else {
                        // Never completed (the ring failed): its payload was leaked.
                        counters.drop_send_error += count;
                        continue;
                    };
                    if res >= 0 {
                        self.gso_sends += op.gso as u64;
                        counters.tx_packets += count;
                        counters.tx_sends += 1;
                        counters.tx_bytes +=
                            dgs.iter().map(|d| d.contents.len() as u64).sum::<u64>();
                    } else if (res == -libc::EAGAIN || res == -libc::EBUSY) && op.tries < 2 {
                        blocked = true;
                        retry.push(Op {
                            tries: op.tries + 1,
                            ..*op
                        });
                    } else if op.gso && (res == -libc::EIO || res == -libc::EINVAL) {
                        gso_refused(&mut self.gso, *op, -res, &mut retry);
                    } else {
                        counters.drop_send_error += count;
                    }
                }
            }
            if blocked {
                wait_writable(self.socket.as_raw_fd(), Duration::from_millis(5));
            }
            mem::swap(&mut pending, &mut retry);
        }
        self.plan = pending;
        self.retry = retry;
        crate::packet::recycle(&mut self.inflight);
    }

    fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// A send reaps every completion in the ring, those of datagrams that
    /// arrived meanwhile too: they wait in the stash, and the ring's fd no
    /// longer shows them.
    fn holds_input(&self) -> bool {
        !self.stash.is_empty()
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        // The kernel may write into the buffers until the recv is cancelled and
        // may read the ring until it is unregistered; closing the ring does
        // both only later, asynchronously. If either fails, leak the memory.
        let cancelled = !self.armed || self.cancel_recv().is_ok();
        let unregistered =
            cancelled && self.ring.submitter().unregister_buf_ring(BUF_GROUP).is_ok();
        if !unregistered {
            tracing::warn!("io_uring: could not release the receive buffers; leaking them");
            self.bufs.leak();
        }
    }
}

/// Source address from the name field of a received buffer.
fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family as libc::c_int {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// `struct io_uring_buf`: one descriptor of the provided-buffer ring. The
/// `resv` field of entry 0 is the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(mem::size_of::<RawBuf>() == 16);

/// The provided-buffer ring and its buffers, in one anonymous mapping: the
/// ring first (page-aligned, as the kernel requires), then `count` slots.
struct BufRing {
    base: NonNull<u8>,
    map_len: usize,
    ring_len: usize,
    count: u16,
    slot: usize,
    /// Our tail: entries before it are (or will be, once published) the kernel's.
    tail: u16,
    leaked: bool,
}

// SAFETY: the mapping is owned by this value alone; the kernel's access to it
// is tied to the io_uring instance, not to a thread.
unsafe impl Send for BufRing {}

impl BufRing {
    fn new(count: u16, slot: usize) -> io::Result<Self> {
        assert!(count.is_power_of_two());
        // SAFETY: sysconf has no pointer arguments.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let ring_len = (count as usize * mem::size_of::<RawBuf>()).next_multiple_of(page);
        let map_len = ring_len + count as usize * slot;
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            base: NonNull::new(p as *mut u8).expect("mmap returned null"),
            map_len,
            ring_len,
            count,
            slot,
            tail: 0,
            leaked: false,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    fn slot_ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid < self.count);
        // SAFETY: `bid < count`, so the slot lies inside the mapping.
        unsafe {
            self.base
                .as_ptr()
                .add(self.ring_len + bid as usize * self.slot)
        }
    }

    /// The first `len` bytes of slot `bid`.
    ///
    /// # Safety
    /// The kernel must have handed `bid` to us (a completion selected it) and
    /// it must not have been recycled since.
    unsafe fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        // SAFETY: the slot is inside the live mapping, `len <= slot` is the
        // caller's completion length clamped to the slot, and per the contract
        // the kernel does not write to it while we hold the slice.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(bid), len.min(self.slot)) }
    }

    /// Hand slot `bid` back to the kernel (visible after `publish`).
    fn recycle(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        let addr = self.slot_ptr(bid) as u64;
        // SAFETY: `idx < count` entries lie in the ring part of the mapping.
        // The kernel reads only entries between its head and the published
        // tail, and this one is at or past our tail, so it is not being read.
        // Fields are written through raw pointers so that `resv` (the tail, in
        // entry 0) is never covered by a reference.
        unsafe {
            let e = (self.base.as_ptr() as *mut RawBuf).add(idx);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.slot as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make recycled slots visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at offset 14 of entry 0, inside the
        // mapping and 2-aligned (the mapping is page-aligned). The kernel reads
        // it with acquire semantics; we are its only writer.
        let tail = unsafe {
            AtomicU16::from_ptr(ptr::addr_of_mut!(
                (*(self.base.as_ptr() as *mut RawBuf)).resv
            ))
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// Never unmap: the kernel may still use the memory.
    fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: unmaps exactly the mapping made in `new`; no slices into it
        // outlive `&self` borrows, and the kernel has let go of it (see
        // `UringBackend::drop`).
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}

#[cfg(test)]
mod tests;
