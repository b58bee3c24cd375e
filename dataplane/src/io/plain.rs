//! The portable backend: one `recv_from` / `send_to` per datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::{wait_writable, Backend};
use crate::packet::Datagram;
use crate::stats::Counters;

const RECV_BATCH: usize = 64;

pub struct StdBackend {
    socket: UdpSocket,
    buf: Box<[u8; 65536]>,
}

impl StdBackend {
    pub fn new(socket: UdpSocket) -> Self {
        StdBackend {
            socket,
            buf: Box::new([0; 65536]),
        }
    }
}

impl Backend for StdBackend {
    fn name(&self) -> &'static str {
        "std"
    }

    fn recv(&mut self, f: &mut dyn FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let mut n = 0;
        while n < RECV_BATCH {
            match self.socket.recv_from(&mut self.buf[..]) {
                Ok((len, src)) => {
                    n += 1;
                    f(src, &self.buf[..len]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from a previous send surface here; they are not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn send(&mut self, out: &mut Vec<Datagram>, counters: &mut Counters) {
        for d in out.iter() {
            let mut tries = 0;
            loop {
                match self.socket.send_to(&d.contents, d.destination) {
                    Ok(n) => {
                        counters.tx_packets += 1;
                        counters.tx_sends += 1;
                        counters.tx_bytes += n as u64;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 2 => {
                        tries += 1;
                        wait_writable(self.socket.as_raw_fd(), Duration::from_millis(5));
                    }
                    Err(_) => {
                        counters.drop_send_error += 1;
                        break;
                    }
                }
            }
        }
        crate::packet::recycle(out);
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
