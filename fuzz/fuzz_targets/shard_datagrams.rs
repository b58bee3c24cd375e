//! A shard's datagram demux (STUN, DTLS, RTP, RTCP) and forward path with
//! real sessions: the testkit `Harness` connects one publisher and two
//! viewers over ICE and DTLS, then the input drives datagrams into the shard from the peers' addresses, from
//! unknown ones, and media the publisher seals itself with fuzzed payloads.
//!
//! Input: a sequence of operations, each `[op, len (2 bytes, big-endian),
//! bytes[len]]` (DTLS flights exceed 255 bytes); the low
//! three bits of `op` pick the operation, the rest is its parameter `p`:
//! - 0: `bytes` as a datagram from peer `p`;
//! - 1: `bytes` as a datagram from unknown address `p` (for `p >= 16`, as
//!   an ICE-TCP frame of a connection from that address);
//! - 2: a STUN binding request naming peer `p`'s ufrag, `bytes` as its
//!   further attributes, from a new address (a new flow of a known session;
//!   over ICE-TCP for `p >= 16`);
//! - 3: the publisher sends an RTP packet with payload `bytes` (VP8 or Opus
//!   by `p`'s low bit, marker by the next), sealed with its SRTP keys; cut
//!   to 1100 bytes, as str0m's send path panics past its datagram size;
//! - 4: the clock moves `len % 256` milliseconds, traffic is exchanged;
//! - 5: a command: cap a viewer's layer, request a keyframe, or end a
//!   session; or a TCP connection `p` closes or turns congested or not;
//! - 6, 7: as 0, from the publisher.

#![no_main]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::testkit::Harness;
use sluice_dataplane::{tcp_flow_addr, Command, SessionId};
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};

/// A connected harness: publisher 0, viewers 1 and 2.
fn connected() -> Harness {
    let mut h =
        Harness::with_config(|c| c.tcp_addrs = vec![SocketAddr::from(([10, 0, 0, 1], 40000))]);
    h.add_publisher();
    h.add_viewer();
    h.add_viewer();
    h.connect_all(Duration::from_secs(5));
    // Some media, so the viewers' tracks are bound and the caches warm.
    let d = h.publisher_datagrams(0, 8, 200);
    h.feed(0, &d);
    h.deliver_shard_output();
    h
}

/// The publisher's negotiated payload type for `codec` on `mid`.
fn pt(h: &Harness, mid: Mid, codec: Codec) -> Option<Pt> {
    let rtc = &h.peers[0].rtc;
    let remote = rtc.media(mid)?.remote_pts().to_vec();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
        .map(|p| p.pt())
}

fn stun_request(ufrag: &str, attrs: &[u8]) -> Vec<u8> {
    let user = format!("{ufrag}:fuzz");
    let mut body = Vec::new();
    body.extend_from_slice(&[0x00, 0x06]);
    body.extend_from_slice(&(user.len() as u16).to_be_bytes());
    body.extend_from_slice(user.as_bytes());
    while body.len() % 4 != 0 {
        body.push(0);
    }
    body.extend_from_slice(attrs);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(&[0x42; 12]);
    msg.extend_from_slice(&body);
    msg
}

/// Setting up sessions costs a DTLS handshake per peer: a harness is reused
/// for a few inputs, then replaced so state does not drift far from setup.
static HARNESS: Mutex<Option<(Harness, u32)>> = Mutex::new(None);
const RUNS_PER_HARNESS: u32 = 16;

fuzz_target!(|data: &[u8]| {
    let mut slot = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    if slot
        .as_ref()
        .is_none_or(|(_, runs)| *runs >= RUNS_PER_HARNESS)
    {
        *slot = Some((connected(), 0));
    }
    let (h, runs) = slot.as_mut().expect("harness");
    *runs += 1;
    let mut seq: u64 = 1000 + u64::from(*runs) * 1000;
    let mut rest = data;
    while let [op, hi, lo, tail @ ..] = rest {
        let len = u16::from_be_bytes([*hi, *lo]);
        let n = usize::from(len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let p = usize::from(op >> 3);
        match op & 7 {
            0 => {
                h.feed(p % h.peers.len(), &[bytes.to_vec()]);
            }
            1 => {
                let from = SocketAddr::from(([10, 9, 9, p as u8], 5000));
                if p >= 16 {
                    let flow = tcp_flow_addr(0, p as u64, 5000);
                    h.shard.handle_tcp_frame(h.now, flow, from, bytes);
                } else {
                    h.shard.handle_datagram(h.now, from, bytes);
                }
                h.shard.handle_timeout(h.now);
            }
            2 => {
                let ufrag = format!("u{:07}", 1 + p % h.peers.len());
                let from = SocketAddr::from(([10, 8, 0, p as u8], 6000 + *runs as u16));
                let stun = stun_request(&ufrag, bytes);
                if p >= 16 {
                    let flow = tcp_flow_addr(0, p as u64, from.port());
                    h.shard.handle_tcp_frame(h.now, flow, from, &stun);
                } else {
                    h.shard.handle_datagram(h.now, from, &stun);
                }
                h.shard.handle_timeout(h.now);
            }
            3 => {
                let (mid, codec) = if p & 1 == 0 {
                    (h.peers[0].video, Codec::Vp8)
                } else {
                    (h.peers[0].audio, Codec::Opus)
                };
                let Some(mid) = mid else { continue };
                let Some(pt) = pt(h, mid, codec) else {
                    continue;
                };
                seq += 1;
                let now = h.now;
                let peer = &mut h.peers[0];
                let mut direct = peer.rtc.direct_api();
                let Some(tx) = direct.stream_tx_by_mid(mid, None) else {
                    continue;
                };
                let s: SeqNo = seq.into();
                tx.write_rtp(
                    RtpWrite::new(
                        pt,
                        s,
                        (seq * 300) as u32,
                        now,
                        bytes[..n.min(1100)].to_vec(),
                    )
                    .marker(p & 2 != 0)
                    .ext_vals(ExtensionValues::default()),
                );
                // The publisher's output (its sealed packet) goes to the shard.
                h.exchange();
            }
            4 => h.advance(Duration::from_millis(u64::from(len & 0xff))),
            5 if p >= 24 => {
                let flow = tcp_flow_addr(0, u64::from(len % 32), 5000);
                match p % 3 {
                    0 => h.shard.tcp_closed(flow),
                    1 => h.shard.tcp_congested(h.now, flow, true),
                    _ => h.shard.tcp_congested(h.now, flow, false),
                }
                h.exchange();
            }
            5 => {
                let viewer = h.peers[1 + p % 2].id;
                let cmd = match p % 5 {
                    0 => Command::SetMaxLayer {
                        id: viewer,
                        mid: None,
                        max: Some((len % 4) as u8),
                    },
                    1 => Command::SetMaxLayer {
                        id: viewer,
                        mid: h.peers[1 + p % 2].video,
                        max: None,
                    },
                    2 => Command::RequestKeyframe(h.stream.id, None),
                    3 => Command::Unsubscribe {
                        id: viewer,
                        mid: h.peers[1 + p % 2].video.unwrap_or_else(|| Mid::from("1")),
                    },
                    _ => Command::RemoveSession(SessionId(u64::from(len % 4))),
                };
                h.shard.handle_command(h.now, cmd);
                h.exchange();
            }
            _ => {
                h.feed(0, &[bytes.to_vec()]);
            }
        }
        h.deliver_shard_output();
    }
});
