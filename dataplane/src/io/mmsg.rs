//! Batched backend: recvmmsg with GRO where the kernel offers it (through
//! quinn-udp, which owns the receive cmsg handling), and one `sendmmsg` per
//! turn carrying every destination's run of datagrams, each run one GSO
//! message (UDP_SEGMENT) when it holds several of equal size. Payloads are
//! sent from where they lie (one iovec each), never copied together.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use super::batch::{gso_refused, plan_runs, Op, SendScratch};
use super::{wait_writable, Backend};
use crate::packet::Datagram;
use crate::stats::Counters;

const BATCH: usize = 32;
/// Messages per `sendmmsg` (the kernel's UIO_MAXIOV).
const MAX_MSGS: usize = 1024;
const SLOT: usize = 65536;

pub struct MmsgBackend {
    socket: UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
    /// Whether sends still use UDP_SEGMENT (off after the kernel refused it).
    gso: bool,
    /// GSO sends that went out (several datagrams in one).
    gso_sends: u64,
    plan: Vec<Op>,
    retry: Vec<Op>,
    scratch: SendScratch,
}

impl MmsgBackend {
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let gro = state.gro_segments().max(1);
        let max_segments = state.max_gso_segments().clamp(1, 64);
        Ok(MmsgBackend {
            socket,
            state,
            bufs: (0..BATCH)
                .map(|_| vec![0u8; SLOT.max(gro * 1500)].into_boxed_slice())
                .collect(),
            meta: vec![RecvMeta::default(); BATCH],
            gso: max_segments > 1,
            gso_sends: 0,
            plan: Vec::new(),
            retry: Vec::new(),
            scratch: SendScratch::default(),
        })
    }

    /// One `sendmmsg` per chunk of ops (again for what a partial send left).
    /// Ops that must be tried again (GSO refused: one by one) go to `retry`.
    fn send_chunk(
        &mut self,
        ops: &[Op],
        out: &[Datagram],
        counters: &mut Counters,
        retry: &mut Vec<Op>,
    ) {
        self.scratch.fill(ops, out);
        let fd = self.socket.as_raw_fd();
        let mut k = 0;
        let mut blocked = 0;
        while k < ops.len() {
            let left = &mut self.scratch.hdrs[k..];
            // SAFETY: `left` is a live slice of initialised mmsghdrs whose
            // pointers refer to `self.scratch` and to the payloads in `out`,
            // all unmoved and alive for this call; the kernel writes only the
            // `msg_len` fields.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    left.as_mut_ptr() as *mut libc::mmsghdr,
                    left.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for op in &ops[k..k + r as usize] {
                    counters.tx_packets += (op.end - op.start) as u64;
                    counters.tx_sends += 1;
                    counters.tx_bytes += out[op.start..op.end]
                        .iter()
                        .map(|d| d.contents.len() as u64)
                        .sum::<u64>();
                    self.gso_sends += op.gso as u64;
                }
                k += r as usize;
                continue;
            }
            // The first remaining message failed.
            let err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let op = ops[k];
            match err {
                libc::EINTR => {}
                libc::EAGAIN | libc::ENOBUFS if blocked < 2 => {
                    blocked += 1;
                    wait_writable(fd, Duration::from_millis(5));
                }
                libc::EIO | libc::EINVAL if op.gso => {
                    gso_refused(&mut self.gso, op, err, retry);
                    k += 1;
                }
                _ => {
                    // Refused (unreachable destination, buffer full for long): count and go on.
                    counters.drop_send_error += (op.end - op.start) as u64;
                    k += 1;
                }
            }
        }
        self.scratch.clear();
    }
}

impl Backend for MmsgBackend {
    fn name(&self) -> &'static str {
        "mmsg"
    }

    fn recv(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> =
            self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.meta)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(0),
            Err(e) => return Err(e),
        };
        drop(slices);
        let mut count = 0;
        for i in 0..n {
            let m = self.meta[i];
            let buf = &self.bufs[i][..m.len];
            if buf.is_empty() {
                // An empty datagram is still a datagram: count and drop it upstream.
                count += 1;
                f(m.addr, buf);
                continue;
            }
            // GRO may coalesce several datagrams of `stride` bytes into one buffer.
            for seg in buf.chunks(m.stride.max(1)) {
                count += 1;
                f(m.addr, seg);
            }
        }
        Ok(count)
    }

    fn send(&mut self, out: &mut Vec<Datagram>, counters: &mut Counters) {
        if out.is_empty() {
            return;
        }
        plan_runs(out, self.gso, &mut self.plan);
        let mut pending = std::mem::take(&mut self.plan);
        let mut retry = std::mem::take(&mut self.retry);
        while !pending.is_empty() {
            retry.clear();
            for chunk in pending.chunks(MAX_MSGS) {
                self.send_chunk(chunk, out, counters, &mut retry);
            }
            std::mem::swap(&mut pending, &mut retry);
        }
        self.plan = pending;
        self.retry = retry;
        crate::packet::recycle(out);
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bind_udp;

    fn loopback() -> UdpSocket {
        bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap()
    }

    /// Datagrams `seq..` to `dest`: runs of equal sizes (GSO runs) and odd sizes.
    fn datagram(dest: SocketAddr, seq: u32, len: usize) -> Datagram {
        let mut contents = vec![(seq % 251) as u8; len.max(4)];
        contents[..4].copy_from_slice(&seq.to_be_bytes());
        Datagram {
            destination: dest,
            contents,
        }
    }

    fn drain(sock: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            let n = sock.recv(&mut buf).expect("datagram within 2 s");
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// One turn's output interleaving two destinations, in runs: every
    /// datagram arrives whole and in order per destination.
    fn send_to_two(tx: &mut MmsgBackend) -> Counters {
        let (r1, r2) = (loopback(), loopback());
        let (d1, d2) = (r1.local_addr().unwrap(), r2.local_addr().unwrap());
        let mut out = Vec::new();
        let mut want1 = Vec::new();
        let mut want2 = Vec::new();
        let mut seq = 0;
        for round in 0..20 {
            for (dest, want) in [(d1, &mut want1), (d2, &mut want2)] {
                // A run of equal sizes, then a shorter last one, then an odd size.
                for len in [1200, 1200, 1200, 700, 90 + round] {
                    let d = datagram(dest, seq, len);
                    want.push(d.contents.clone());
                    out.push(d);
                    seq += 1;
                }
            }
        }
        let mut counters = Counters::default();
        tx.send(&mut out, &mut counters);
        assert!(out.is_empty(), "send clears the batch");
        assert_eq!(drain(&r1, want1.len()), want1);
        assert_eq!(drain(&r2, want2.len()), want2);
        assert_eq!(counters.tx_packets, seq as u64);
        assert_eq!(counters.drop_send_error, 0);
        counters
    }

    #[test]
    fn one_sendmmsg_carries_gso_runs_to_several_destinations_intact() {
        let mut tx = MmsgBackend::new(loopback()).unwrap();
        assert!(tx.gso, "loopback takes UDP_SEGMENT");
        send_to_two(&mut tx);
        // 20 rounds × 2 destinations, each with one run of 4 (3 × 1200 + 700).
        assert_eq!(tx.gso_sends, 40);
    }

    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    #[test]
    fn refused_gso_falls_back_to_single_sends_without_loss() {
        let a = loopback();
        crate::io::tests::refuse_gso(&a);
        let mut tx = MmsgBackend::new(a).unwrap();
        let r1 = loopback();
        let d1 = r1.local_addr().unwrap();
        let mut out: Vec<Datagram> = (0..8).map(|s| datagram(d1, s, 1000)).collect();
        let want: Vec<Vec<u8>> = out.iter().map(|d| d.contents.clone()).collect();
        let mut counters = Counters::default();
        tx.send(&mut out, &mut counters);
        assert!(!tx.gso, "GSO was refused and turned off");
        assert_eq!(drain(&r1, 8), want, "resent one by one, in order");
        assert_eq!(counters.tx_packets, 8);
        assert_eq!(counters.drop_send_error, 0);
        // Later turns send singly from the start.
        send_to_two(&mut tx);
    }
}
