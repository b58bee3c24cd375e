//! ICE over TCP for one shard: RFC 6544 passive candidates, RFC 4571
//! framing (a two-byte length before each STUN, DTLS, SRTP or SRTCP
//! message).
//!
//! The shard core knows each connection by a flow address
//! ([`crate::packet::tcp_flow_addr`]) and treats its frames like datagrams;
//! this layer accepts, reads and deframes, frames what the core sends to a
//! flow address into that connection's write buffer, and writes each
//! buffer once per turn (one syscall per connection, not per packet).
//!
//! What a remote party can hold here is bounded: connections per shard and
//! per source address; a connection the core has not answered (no valid
//! STUN binding request yet) may send STUN only, holds no buffer beyond a
//! partial frame, and is closed after `auth_timeout`; every connection is
//! closed when silent for `idle_timeout` or when its writes make no
//! progress for `stall_timeout`; a write buffer past `queue_soft` bytes
//! marks the connection congested (the core then sends it audio only) and
//! past `queue_hard` drops what does not fit. Closes and drops are counted.
//!
//! The shard's write buffers together are bounded too, by `queue_total`:
//! without it, many authenticated viewers that never read could each hold
//! `queue_hard`. The total is kept as frames are queued, written and their
//! connections closed. A frame that would pass it is dropped
//! (`tcp_drop_budget`); past half of it, so is a frame for a connection
//! already past `queue_soft`, which leaves the other half to connections
//! that keep up. Frames the kernel takes at once are never queued and never
//! count; the rest of a frame the kernel cut is queued whatever the limits
//! (the stream must stay framed), so the total may pass the budget by at
//! most one frame per connection.
//!
//! No `unsafe` here: mio's safe epoll wrapper does the polling.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::packet::{is_tcp_flow, recycle, tcp_flow_addr, Datagram, BUFFER_CAPACITY};
use crate::stats::Counters;

/// The listener's token; connections use their slot index.
const LISTENER: Token = Token(usize::MAX);
/// The largest frame taken from a connection: any datagram a shard accepts.
const MAX_FRAME: usize = BUFFER_CAPACITY;
/// The largest frame before the connection is answered: a STUN binding request.
const MAX_PENDING_FRAME: usize = 1024;
/// Bytes read from one connection per turn before the others get their turn.
const READ_BUDGET: usize = 256 << 10;
/// Connections accepted per turn.
const ACCEPT_BUDGET: usize = 64;
/// Frames per `writev` (two iovecs each, far below `UIO_MAXIOV`).
const WRITEV_FRAMES: usize = 64;
/// The kernel send buffer of a connection: a second of an 2 Mbit/s viewer.
const SEND_BUFFER: usize = 256 << 10;

/// Limits of one shard's TCP listener.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Open connections per shard.
    pub max_conns: usize,
    /// Open connections per shard from one source address; 0 = no cap.
    pub max_per_ip: usize,
    /// A connection the core has not answered within this long is closed.
    pub auth_timeout: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Bytes waiting to be written past which the connection is congested.
    pub queue_soft: usize,
    /// Bytes waiting to be written past which new frames are dropped.
    pub queue_hard: usize,
    /// A connection whose writes make no progress this long is closed.
    pub stall_timeout: Duration,
    /// Bytes waiting to be written on all connections together past which
    /// new frames are dropped; past half of it, frames for a connection past
    /// `queue_soft` are. 0 = no budget.
    pub queue_total: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_conns: 4096,
            max_per_ip: 256,
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            queue_soft: 64 << 10,
            queue_hard: 512 << 10,
            stall_timeout: Duration::from_secs(10),
            queue_total: 64 << 20,
        }
    }
}

/// What the core must learn about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpNotice {
    /// The connection is gone: its flow address reaches no one.
    Closed(SocketAddr),
    /// Its write buffer passed the soft limit (`true`) or drained (`false`).
    Congested(SocketAddr, bool),
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy)]
enum Why {
    Eof,
    Unauthenticated,
    Idle,
    BadFrame,
    Stalled,
}

struct Conn {
    stream: TcpStream,
    real: SocketAddr,
    flow: SocketAddr,
    /// A partial frame carried to the next read.
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The core has sent to it: it passed an authenticated ICE check.
    answered: bool,
    opened: Instant,
    last_rx: Instant,
    last_progress: Instant,
    congested: bool,
    /// The kernel took less than was queued: wait for a writable event.
    waiting: bool,
    /// Edge-triggered readiness not yet drained.
    readable: bool,
}

impl Conn {
    fn queued(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

/// One shard's ICE-TCP listener and connections.
pub struct TcpMedia {
    shard: u16,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    limits: TcpLimits,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_flow: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, usize>,
    /// Bytes waiting in every connection's write buffer.
    queued: usize,
    serial: u64,
    scratch: Box<[u8]>,
    ready: Vec<usize>,
    dirty: Vec<usize>,
    notices: Vec<TcpNotice>,
    counts: Counters,
    spare: Vec<Datagram>,
    staged: Vec<(usize, Datagram)>,
    last_sweep: Option<Instant>,
}

impl TcpMedia {
    /// Listen on `addr` for shard `shard`.
    pub fn bind(addr: SocketAddr, shard: u16, limits: TcpLimits) -> io::Result<TcpMedia> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(std);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(TcpMedia {
            shard,
            poll,
            events: Events::with_capacity(256),
            listener,
            limits,
            conns: Vec::new(),
            free: Vec::new(),
            by_flow: HashMap::new(),
            per_ip: HashMap::new(),
            queued: 0,
            serial: 0,
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            ready: Vec::new(),
            dirty: Vec::new(),
            notices: Vec::new(),
            counts: Counters::default(),
            spare: Vec::new(),
            staged: Vec::new(),
            last_sweep: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A descriptor that polls readable when a connection has work.
    pub fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.by_flow.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.by_flow.is_empty()
    }

    /// Bytes waiting in the write buffers of all connections.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Is there work left from an earlier turn (data not yet read, writes
    /// not yet flushed)?
    pub fn pending(&self) -> bool {
        !self.ready.is_empty() || !self.dirty.is_empty()
    }

    /// Accept, read and deframe what is waiting (without blocking); each
    /// frame goes to `f` with the connection's flow and real addresses.
    /// Returns the number of frames and events handled.
    pub fn poll(
        &mut self,
        now: Instant,
        f: &mut dyn FnMut(SocketAddr, SocketAddr, &[u8]),
    ) -> usize {
        let mut work = 0;
        if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("tcp poll: {e}");
            }
        }
        let mut accept = false;
        for ev in self.events.iter() {
            work += 1;
            if ev.token() == LISTENER {
                accept = true;
                continue;
            }
            let i = ev.token().0;
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !c.readable {
                c.readable = true;
                self.ready.push(i);
            }
            if ev.is_writable() && c.queued() > 0 {
                self.dirty.push(i);
            }
        }
        if accept {
            self.accept(now);
        }
        let ready = std::mem::take(&mut self.ready);
        for &i in &ready {
            work += self.read(i, now, f);
        }
        let mut ready = ready;
        ready.retain(|&i| {
            self.conns
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.readable)
        });
        self.ready = ready;
        self.sweep(now);
        work
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, real) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: try again next turn.
                    tracing::warn!("tcp accept: {e}");
                    return;
                }
            };
            let ip = real.ip().to_canonical();
            let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
            let limits = &self.limits;
            if self.by_flow.len() >= limits.max_conns
                || (limits.max_per_ip > 0 && from_ip >= limits.max_per_ip)
            {
                self.counts.tcp_refused += 1;
                continue;
            }
            let i = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.free.push(i);
                self.counts.tcp_refused += 1;
                continue;
            }
            let _ = stream.set_nodelay(true);
            // A bounded kernel queue: media older than this is worth less
            // than the congestion signal a full queue gives.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
            self.serial += 1;
            let flow = tcp_flow_addr(self.shard, self.serial, real.port());
            self.conns[i] = Some(Conn {
                stream,
                real,
                flow,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                answered: false,
                opened: now,
                last_rx: now,
                last_progress: now,
                congested: false,
                waiting: false,
                // The peer may have written before we registered.
                readable: true,
            });
            self.ready.push(i);
            self.by_flow.insert(flow, i);
            *self.per_ip.entry(ip).or_default() += 1;
            self.counts.tcp_accepted += 1;
        }
    }

    /// Read connection `i` up to the turn's budget; returns frames handled.
    fn read(
        &mut self,
        i: usize,
        now: Instant,
        f: &mut dyn FnMut(SocketAddr, SocketAddr, &[u8]),
    ) -> usize {
        let mut frames = 0;
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return frames;
            };
            if budget == 0 {
                return frames;
            }
            let n = match c.stream.read(&mut self.scratch[..budget.min(64 << 10)]) {
                Ok(0) => return frames + self.close(i, Why::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return frames;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return frames + self.close(i, Why::Eof),
            };
            budget -= n;
            c.last_rx = now;
            let max = if c.answered {
                MAX_FRAME
            } else {
                MAX_PENDING_FRAME
            };
            let (flow, real, answered) = (c.flow, c.real, c.answered);
            let result = if c.rbuf.is_empty() {
                let r = deframe(&self.scratch[..n], max, answered, &mut |d| {
                    f(flow, real, d);
                });
                if let Ok((used, _)) = r {
                    c.rbuf.extend_from_slice(&self.scratch[used..n]);
                }
                r
            } else {
                c.rbuf.extend_from_slice(&self.scratch[..n]);
                let r = deframe(&c.rbuf, max, answered, &mut |d| f(flow, real, d));
                if let Ok((used, _)) = r {
                    c.rbuf.drain(..used);
                }
                r
            };
            match result {
                Ok((_, k)) => {
                    frames += k;
                    self.counts.tcp_frames_in += k as u64;
                }
                Err(()) => return frames + self.close(i, Why::BadFrame),
            }
        }
    }

    /// Take the datagrams in `out` that go to a connection and send them:
    /// each connection's run in one `writev` (length headers and the
    /// datagrams' own buffers, no copy) when its queue is empty; what the
    /// kernel does not take, and what comes while it is full, waits in the
    /// connection's queue. Then connections that became writable are
    /// flushed. UDP datagrams stay in `out`, in order.
    pub fn take_sends(&mut self, out: &mut Vec<Datagram>, now: Instant) {
        if out.iter().any(|d| is_tcp_flow(&d.destination)) {
            let mut staged = std::mem::take(&mut self.staged);
            for d in std::mem::take(out) {
                if !is_tcp_flow(&d.destination) {
                    out.push(d);
                    continue;
                }
                match self.by_flow.get(&d.destination) {
                    Some(&i) => staged.push((i, d)),
                    None => {
                        self.counts.tcp_drop_no_conn += 1;
                        self.spare.push(d);
                    }
                }
            }
            // Stable: each connection's frames keep their order.
            staged.sort_by_key(|(i, _)| *i);
            let mut at = 0;
            while at < staged.len() {
                let i = staged[at].0;
                let end = at + staged[at..].iter().take_while(|(j, _)| *j == i).count();
                self.send_run(i, &staged[at..end], now);
                at = end;
            }
            self.spare.extend(staged.drain(..).map(|(_, d)| d));
            self.staged = staged;
            recycle(&mut self.spare);
        }
        self.flush(now);
    }

    /// Send one connection's frames of this turn.
    fn send_run(&mut self, i: usize, run: &[(usize, Datagram)], now: Instant) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        c.answered = true;
        self.counts.tcp_frames_out += run.len() as u64;
        let mut q = Queuing {
            limits: &self.limits,
            total: &mut self.queued,
            counts: &mut self.counts,
        };
        if c.queued() > 0 {
            for (_, d) in run {
                q.queue(c, &d.contents, 0);
            }
            congestion(c, &self.limits, &mut self.notices, &mut self.counts);
            return;
        }
        let mut k = 0;
        while k < run.len() {
            let n = (run.len() - k).min(WRITEV_FRAMES);
            let mut heads = [[0u8; 2]; WRITEV_FRAMES];
            let mut total = 0;
            for j in 0..n {
                let len = run[k + j].1.contents.len();
                heads[j] = (len as u16).to_be_bytes();
                total += 2 + len;
            }
            let mut iov = [IoSlice::new(&[]); 2 * WRITEV_FRAMES];
            for j in 0..n {
                iov[2 * j] = IoSlice::new(&heads[j]);
                iov[2 * j + 1] = IoSlice::new(&run[k + j].1.contents);
            }
            let written = match c.stream.write_vectored(&iov[..2 * n]) {
                Ok(w) => {
                    q.counts.tcp_writes += 1;
                    c.last_progress = now;
                    w
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(i, Why::Eof);
                    return;
                }
            };
            if written == total {
                k += n;
                continue;
            }
            // The kernel took part: the rest waits, the frame it cut first.
            let mut skip = written;
            for (_, d) in &run[k..] {
                let size = 2 + d.contents.len();
                if skip >= size {
                    skip -= size;
                    continue;
                }
                q.queue(c, &d.contents, skip);
                skip = 0;
            }
            c.waiting = true;
            congestion(c, &self.limits, &mut self.notices, &mut self.counts);
            return;
        }
    }

    fn flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &i in &dirty {
            let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let mut failed = false;
            while c.queued() > 0 {
                match c.stream.write(&c.wbuf[c.wpos..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        self.counts.tcp_writes += 1;
                        c.wpos += n;
                        self.queued -= n;
                        c.last_progress = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                self.close(i, Why::Eof);
                continue;
            }
            c.waiting = c.queued() > 0;
            if c.queued() == 0 {
                // Drained: frames go straight to the kernel again, so the
                // queue's memory goes back.
                c.wbuf = Vec::new();
                c.wpos = 0;
                c.last_progress = now;
            } else if c.wpos > c.wbuf.len() / 2 {
                c.wbuf.drain(..c.wpos);
                c.wpos = 0;
            }
            congestion(c, &self.limits, &mut self.notices, &mut self.counts);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Close connections past their limits, about once a second.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        let l = &self.limits;
        let mut close = Vec::new();
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let why = if !c.answered && now.saturating_duration_since(c.opened) >= l.auth_timeout {
                Some(Why::Unauthenticated)
            } else if now.saturating_duration_since(c.last_rx) >= l.idle_timeout {
                Some(Why::Idle)
            } else if c.queued() > 0
                && now.saturating_duration_since(c.last_progress) >= l.stall_timeout
            {
                Some(Why::Stalled)
            } else {
                None
            };
            if let Some(w) = why {
                close.push((i, w));
            }
        }
        for (i, w) in close {
            self.close(i, w);
        }
    }

    /// Close connection `i`; returns 1 (an event handled).
    fn close(&mut self, i: usize, why: Why) -> usize {
        let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) else {
            return 0;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.queued -= c.queued();
        self.by_flow.remove(&c.flow);
        let ip = c.real.ip().to_canonical();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        self.free.push(i);
        let counter = match why {
            Why::Eof => &mut self.counts.tcp_closed_by_peer,
            Why::Unauthenticated => &mut self.counts.tcp_closed_unanswered,
            Why::Idle => &mut self.counts.tcp_closed_idle,
            Why::BadFrame => &mut self.counts.tcp_closed_bad_frame,
            Why::Stalled => &mut self.counts.tcp_closed_stalled,
        };
        *counter += 1;
        self.notices.push(TcpNotice::Closed(c.flow));
        1
    }

    /// The next thing the core must learn.
    pub fn poll_notice(&mut self) -> Option<TcpNotice> {
        if self.notices.is_empty() {
            None
        } else {
            Some(self.notices.remove(0))
        }
    }

    /// Add what this layer counted since the last call to `into`.
    pub fn take_counts(&mut self, into: &mut Counters) {
        // Only the tcp_* counters are ever set here.
        into.add(&std::mem::take(&mut self.counts));
    }
}

/// What queuing a frame checks and changes: the limits, the shard's total
/// of queued bytes and the drop counters.
struct Queuing<'a> {
    limits: &'a TcpLimits,
    total: &'a mut usize,
    counts: &'a mut Counters,
}

impl Queuing<'_> {
    /// Queue frame `data` on `c` from byte `from` of the frame (its two
    /// length bytes count). A whole frame (`from` 0) is dropped and counted
    /// when it would pass the connection's `queue_hard` or the shard's
    /// budget; the rest of a cut one is always queued.
    fn queue(&mut self, c: &mut Conn, data: &[u8], from: usize) {
        let size = 2 + data.len() - from;
        if from == 0 {
            if c.queued() + size > self.limits.queue_hard {
                self.counts.tcp_drop_queue_full += 1;
                return;
            }
            if over_budget(c.queued(), size, *self.total, self.limits) {
                self.counts.tcp_drop_budget += 1;
                return;
            }
        }
        let head = (data.len() as u16).to_be_bytes();
        if from < 2 {
            c.wbuf.extend_from_slice(&head[from..]);
            c.wbuf.extend_from_slice(data);
        } else {
            c.wbuf.extend_from_slice(&data[from - 2..]);
        }
        *self.total += size;
    }
}

/// Would `size` more bytes for a connection holding `queued` pass the
/// shard's budget, or, from one past `queue_soft`, take from the half of it
/// kept for connections that keep up?
fn over_budget(queued: usize, size: usize, total: usize, limits: &TcpLimits) -> bool {
    let budget = limits.queue_total;
    budget > 0
        && (total + size > budget || (queued > limits.queue_soft && total + size > budget / 2))
}

/// Mark `c` congested past the soft limit, and clear it once it has drained
/// to a quarter of that.
fn congestion(
    c: &mut Conn,
    limits: &TcpLimits,
    notices: &mut Vec<TcpNotice>,
    counts: &mut Counters,
) {
    let queued = c.queued();
    if !c.congested && queued > limits.queue_soft {
        c.congested = true;
        counts.tcp_congested += 1;
        notices.push(TcpNotice::Congested(c.flow, true));
    } else if c.congested && queued < limits.queue_soft / 4 {
        c.congested = false;
        notices.push(TcpNotice::Congested(c.flow, false));
    }
}

/// Split `buf` into RFC 4571 frames, handing each to `f`. Returns the bytes
/// used (whole frames) and the frame count, or `Err` for a frame no peer
/// should send: empty, over `max`, or (before the connection is answered)
/// not STUN.
fn deframe(
    buf: &[u8],
    max: usize,
    answered: bool,
    f: &mut dyn FnMut(&[u8]),
) -> Result<(usize, usize), ()> {
    let mut at = 0;
    let mut n = 0;
    while let Some(head) = buf.get(at..at + 2) {
        let len = u16::from_be_bytes([head[0], head[1]]) as usize;
        if len == 0 || len > max {
            return Err(());
        }
        let Some(frame) = buf.get(at + 2..at + 2 + len) else {
            break;
        };
        // RFC 7983: STUN starts with 0..=3.
        if !answered && frame[0] > 3 {
            return Err(());
        }
        f(frame);
        n += 1;
        at += 2 + len;
    }
    Ok((at, n))
}

#[cfg(test)]
mod tests;
