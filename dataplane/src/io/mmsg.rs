//! Batched backend: recvmmsg (with GRO where the kernel offers it) and one GSO
//! `sendmsg` (UDP_SEGMENT) per run of equal-sized datagrams to one destination,
//! through quinn-udp, which owns the cmsg handling.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use super::{wait_writable, Backend};
use crate::shard::Datagram;
use crate::stats::Counters;

const BATCH: usize = 32;
const SLOT: usize = 65536;

pub struct MmsgBackend {
    socket: UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
    gso: Vec<u8>,
    max_segments: usize,
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
            gso: Vec::with_capacity(64 * 1500),
            max_segments,
        })
    }

    fn send_one(&self, t: &Transmit<'_>) -> io::Result<()> {
        let mut tries = 0;
        loop {
            match self.state.try_send(UdpSockRef::from(&self.socket), t) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 2 => {
                    tries += 1;
                    wait_writable(self.socket.as_raw_fd(), Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
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
        let mut i = 0;
        while i < out.len() {
            let dest = out[i].destination;
            let size = out[i].contents.len();
            // A run: same destination, same size; the last segment may be shorter.
            let mut j = i + 1;
            while j < out.len()
                && j - i < self.max_segments
                && out[j].destination == dest
                && out[j].contents.len() <= size
                && out[j - 1].contents.len() == size
            {
                j += 1;
            }
            let result = if j - i == 1 {
                self.send_one(&Transmit {
                    destination: dest,
                    ecn: None,
                    contents: &out[i].contents,
                    segment_size: None,
                    src_ip: None,
                })
            } else {
                let mut gso = std::mem::take(&mut self.gso);
                gso.clear();
                for d in &out[i..j] {
                    gso.extend_from_slice(&d.contents);
                }
                let r = self.send_one(&Transmit {
                    destination: dest,
                    ecn: None,
                    contents: &gso,
                    segment_size: Some(size),
                    src_ip: None,
                });
                self.gso = gso;
                r
            };
            let bytes: usize = out[i..j].iter().map(|d| d.contents.len()).sum();
            match result {
                Ok(()) => {
                    counters.tx_packets += (j - i) as u64;
                    counters.tx_bytes += bytes as u64;
                }
                Err(_) => counters.drop_send_error += (j - i) as u64,
            }
            i = j;
        }
        out.clear();
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
