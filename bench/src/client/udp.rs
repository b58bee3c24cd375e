//! A session's loop over UDP: reads of its socket (with GRO, into a buffer
//! the sessions of a thread share), str0m's timeouts, and its output sent,
//! until the session ends or is stopped.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sluice_dataplane::is_rtp;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Input, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::counters::ViewerStats;
use super::role::{close, count_header, drain, next_wake, time_out, Role};
use super::{ClientError, ViewerMode};
use crate::gro;

pub(super) async fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    mut role: Role,
    stop: Arc<Notify>,
) -> Result<(), ClientError> {
    let local = socket.local_addr()?;
    let mut kick = false;
    // Whether str0m took input since its output was last drained; a count-only
    // viewer mostly does not, and then its last timeout still holds.
    let mut dirty = true;
    let mut timeout = Instant::now();
    // Datagrams str0m asked to send, sent after each drain.
    let mut outbox: Vec<Transmit> = Vec::new();
    loop {
        if dirty {
            dirty = false;
            let next = drain(&mut rtc, &mut role, &mut outbox);
            flush(&socket, &mut outbox).await;
            match next? {
                Some(t) => timeout = t,
                None => return Ok(()),
            }
        }
        let now = Instant::now();
        let Some(wake) = next_wake(&mut rtc, &mut role, now, timeout, &mut kick)? else {
            dirty = true;
            continue;
        };
        tokio::select! {
            r = socket.readable() => {
                r?;
                // Reading and handling a read never awaits, so it can use the
                // thread's buffer; the replies str0m makes wait in `outbox`.
                let alive = RECV_BUF.with_borrow_mut(|buf| {
                    receive(&socket, buf, &mut rtc, &mut role, local, &mut outbox, &mut timeout)
                });
                flush(&socket, &mut outbox).await;
                if !alive? {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                time_out(&mut rtc)?;
                dirty = true;
            }
            _ = stop.notified() => {
                // Let close_notify and BYE out.
                close(&mut rtc, &mut outbox);
                flush(&socket, &mut outbox).await;
                return Ok(());
            }
        }
    }
}

thread_local! {
    /// The receive buffer of the sessions running on this thread. A GRO read
    /// needs room for 64 KiB; one buffer per session would hold over 600 MiB
    /// at 10,000 viewers, while a session never awaits between reading into the
    /// buffer and handling what it read, so the sessions of a thread can
    /// share one.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; gro::RECV_BUFFER]);
}

/// Sends what str0m queued; a datagram that cannot be sent is dropped, as a
/// network would.
async fn flush(socket: &UdpSocket, outbox: &mut Vec<Transmit>) {
    for t in outbox.drain(..) {
        let _ = socket.send_to(&t.contents, t.destination).await;
    }
}

/// Reads what the socket has (for a connected count-only viewer up to
/// [`COUNT_BATCH`] more reads, otherwise one), splits GRO reads into their
/// datagrams and handles each as it would a datagram read on its own. Every
/// datagram str0m takes is followed by a drain of its output, as str0m
/// requires; `timeout` follows the last drain. Returns whether the session
/// goes on.
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    rtc: &mut Rtc,
    role: &mut Role,
    local: SocketAddr,
    outbox: &mut Vec<Transmit>,
    timeout: &mut Instant,
) -> Result<bool, ClientError> {
    let count_only = matches!(role, Role::View(v)
        if v.mode == ViewerMode::CountOnly && v.stats.connected.load(Ordering::Relaxed));
    // The count-only path must stay cheap: read what is queued now rather
    // than once per trip through the run loop, then yield.
    let reads = if count_only { 1 + COUNT_BATCH } else { 1 };
    for _ in 0..reads {
        let read = match socket.try_io(Interest::READABLE, || gro::recv(socket, buf)) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        };
        if let Role::View(v) = role {
            v.rx_unix_us = read.rx_unix_us;
        }
        for data in read.datagrams(buf) {
            let fed = match &*role {
                Role::View(v) if count_only => count_or_feed(rtc, &v.stats, local, read.src, data)?,
                _ => feed(rtc, local, read.src, data)?,
            };
            if fed {
                match drain(rtc, role, outbox)? {
                    Some(t) => *timeout = t,
                    None => return Ok(false),
                }
            }
        }
    }
    Ok(true)
}

/// Reads a count-only viewer makes per wake-up after the first, before yielding.
const COUNT_BATCH: usize = 64;

/// Hands a datagram to str0m; returns whether it took it.
fn feed(
    rtc: &mut Rtc,
    local: SocketAddr,
    src: SocketAddr,
    data: &[u8],
) -> Result<bool, ClientError> {
    match Receive::new(Protocol::Udp, src, local, data) {
        Ok(r) => {
            rtc.handle_input(Input::Receive(Instant::now(), r))
                .map_err(|e| ClientError::Rtc(e.to_string()))?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Count an RTP datagram from its header, or hand anything else (RTCP, STUN,
/// DTLS) to str0m; returns whether str0m took input.
fn count_or_feed(
    rtc: &mut Rtc,
    stats: &ViewerStats,
    local: SocketAddr,
    src: SocketAddr,
    data: &[u8],
) -> Result<bool, ClientError> {
    if is_rtp(data) {
        count_header(stats, data);
        return Ok(false);
    }
    feed(rtc, local, src, data)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::connect::{bind, rtc_config};
    use crate::client::role::ViewState;
    use crate::client::{SessionOptions, VideoCodec};

    /// An RTP packet of `len` bytes: version 2, payload type 96, `seq`, SSRC 7.
    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 96;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&7u32.to_be_bytes());
        p
    }

    /// A session's socket takes a GSO send as one GRO read, and a count-only
    /// viewer counts each datagram in it as it would separate ones.
    #[tokio::test]
    async fn count_only_viewer_counts_each_datagram_of_a_gro_read() {
        let (socket, gro_on) = bind(&SessionOptions::default()).await.unwrap();
        assert!(gro_on, "the kernel refused UDP_GRO");
        let local = socket.local_addr().unwrap();
        let sender = gro::test_support::loopback_sender();
        let sent = [rtp(10, 1200), rtp(11, 1200), rtp(12, 1200), rtp(13, 400)];
        gro::test_support::send_gso(&sender, local, &sent);

        let stats = Arc::new(ViewerStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        let mut role = Role::View(ViewState {
            mode: ViewerMode::CountOnly,
            stats: stats.clone(),
            started: Instant::now(),
            rx_unix_us: None,
        });
        let mut rtc = rtc_config(VideoCodec::Vp8).build(Instant::now());
        let mut outbox = Vec::new();
        let mut timeout = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), socket.readable())
            .await
            .expect("the send arrives")
            .unwrap();
        let alive = RECV_BUF
            .with_borrow_mut(|buf| {
                receive(
                    &socket,
                    buf,
                    &mut rtc,
                    &mut role,
                    local,
                    &mut outbox,
                    &mut timeout,
                )
            })
            .unwrap();
        assert!(alive);
        assert_eq!(stats.packets.load(Ordering::Relaxed), 4);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 3 * 1200 + 400);
        assert_eq!(stats.loss(), (0, 4));
        assert!(outbox.is_empty(), "RTP is counted, not handed to str0m");
    }

    /// Without GRO (`--no-gro`) the kernel cuts a GSO send up before the
    /// session reads it: one datagram per read, as before GRO was used.
    #[tokio::test]
    async fn without_gro_a_gso_send_arrives_as_separate_datagrams() {
        let opts = SessionOptions {
            udp_gro: false,
            ..SessionOptions::default()
        };
        let (socket, gro_on) = bind(&opts).await.unwrap();
        assert!(!gro_on);
        let sender = gro::test_support::loopback_sender();
        let sent = [rtp(1, 1000), rtp(2, 1000), rtp(3, 200)];
        gro::test_support::send_gso(&sender, socket.local_addr().unwrap(), &sent);
        let mut buf = vec![0u8; gro::RECV_BUFFER];
        for want in &sent {
            let read = tokio::time::timeout(
                Duration::from_secs(2),
                socket.async_io(Interest::READABLE, || gro::recv(&socket, &mut buf)),
            )
            .await
            .expect("the send arrives")
            .unwrap();
            assert_eq!(read.segment_size, None);
            assert_eq!(&buf[..read.len], &want[..]);
        }
    }
}
