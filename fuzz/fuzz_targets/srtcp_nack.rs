//! sluice's own send path, as a viewer's RTCP drives it: SRTCP opened with
//! the session's keys, then reception reports, PLI/FIR and NACKs read, and
//! NACKs answered from the RTX cache.
//!
//! The sender has a video track with RTX and an audio track and has sent
//! some packets. Input: a sequence of operations, each `[op, len, bytes[len]]`:
//! - op 0: `bytes` as RTCP plaintext, sealed with the viewer's keys (reaches
//!   the parser behind authentication);
//! - op 1: `bytes` as a datagram as it is (not sealed);
//! - op 2: send media packets, sequence numbers from `bytes`;
//! - op 3: move the clock by `len` milliseconds and run sender reports.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::fuzzing::{ExtIds, Packet, SrtpSender, TrackInfo};
use sluice_dataplane::testkit::{Exported, SrtpSession};
use sluice_dataplane::Counters;
use str0m::crypto::dtls::SrtpProfile;

const VIDEO: u32 = 1000;
const RTX: u32 = 2000;
const AUDIO: u32 = 3000;

fn session(active: bool) -> SrtpSession {
    // Installs the crypto provider the key derivation uses.
    static PROVIDER: OnceLock<()> = OnceLock::new();
    PROVIDER.get_or_init(|| sluice_dataplane::crypto_provider().install_process_default());
    SrtpSession::new(&Exported {
        material: (0..56).collect(),
        profile: SrtpProfile::AEAD_AES_128_GCM,
        active,
    })
    .expect("GCM keys")
}

fuzz_target!(|data: &[u8]| {
    let mut sender = SrtpSender::new(session(false), 25);
    let mut viewer = session(true);
    let ext = ExtIds {
        mid: 1,
        audio_level: 2,
        video_orientation: 3,
    };
    sender.add_track(TrackInfo {
        ssrc: VIDEO,
        mid: "1".into(),
        cname: "cname".into(),
        ext,
        clock_rate: 90_000,
        video: true,
        rtx: Some((RTX, vec![(96, 97)])),
    });
    sender.add_track(TrackInfo {
        ssrc: AUDIO,
        mid: "0".into(),
        cname: "cname".into(),
        ext,
        clock_rate: 48_000,
        video: false,
        rtx: None,
    });
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let start = Instant::now();
    let mut now = start;
    let mut out = Vec::new();
    let mut counters = Counters::default();
    let payload: Arc<[u8]> = vec![0x90, 0xe0, 0x80, 0x01, 0x02, 0x20, 0x00, 7, 7, 7].into();
    let send = |sender: &mut SrtpSender, out: &mut Vec<_>, now, seq: u64| {
        for (ssrc, pt) in [(VIDEO, 96), (AUDIO, 111)] {
            let p = Packet {
                pt,
                seq,
                ts: seq as u32 * 3000,
                marker: seq % 3 == 0,
                audio_level: (ssrc == AUDIO).then_some((30, true)),
                video_orientation: (ssrc == VIDEO).then_some(1),
                payload: &payload,
                vp8: None,
                wallclock: now,
            };
            assert!(sender.send(now, ssrc, &p, dest, out));
        }
    };
    for seq in 1..=40 {
        send(&mut sender, &mut out, now, seq);
    }
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        out.clear();
        match op % 4 {
            0 if bytes.len() >= 8 => {
                let mut sealed = bytes.to_vec();
                viewer.protect_rtcp(&mut sealed);
                let unreadable = counters.rtcp_unreadable;
                sender.handle_rtcp(now, &sealed, dest, &mut out, &mut counters);
                assert_eq!(counters.rtcp_unreadable, unreadable, "sealed RTCP refused");
                for d in &out {
                    // Resends are RTP on a known SSRC, sealed: header + tag at least.
                    assert!(d.contents.len() >= 12 + 16);
                    let ssrc = u32::from_be_bytes(d.contents[8..12].try_into().unwrap());
                    assert!(ssrc == VIDEO || ssrc == RTX, "resent on {ssrc}");
                }
            }
            1 => sender.handle_rtcp(now, bytes, dest, &mut out, &mut counters),
            2 => {
                for pair in bytes.chunks_exact(2) {
                    let seq = u64::from(u16::from_be_bytes([pair[0], pair[1]]));
                    send(&mut sender, &mut out, now, seq);
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(*len) * 8);
                sender.sender_reports(now, dest, &mut out, &mut counters);
            }
        }
    }
    let sent = sender.sent(VIDEO).expect("video track");
    assert!(sent.packets >= 40);
});
