//! What answering a viewer's offer costs the control thread: str0m's SDP
//! parse alone, and the whole answer (parse, session, answer SDP).
//!
//! `cargo bench -p sluice --bench negotiate`

// criterion_group! declares an undocumented public function.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::negotiate::Negotiator;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

/// A recvonly audio + video offer as str0m makes it (as `sluice-bench`'s
/// viewers send): 157 lines, most of them rtcp-fb, rtpmap, fmtp and extmap.
fn viewer_offer() -> String {
    let mut rtc = RtcConfig::new().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.apply().expect("offer").0.to_sdp_string()
}

fn negotiate(c: &mut Criterion) {
    let offer = viewer_offer();
    c.bench_function("parse viewer offer", |b| {
        b.iter(|| SdpOffer::from_sdp_string(std::hint::black_box(&offer)).expect("parses"))
    });
    let n = Negotiator::new().expect("negotiator");
    let addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let cands = vec![Candidate::host(addr, "udp").expect("candidate")];
    c.bench_function("answer viewer offer", |b| {
        b.iter(|| {
            n.answer(std::hint::black_box(&offer), false, &cands)
                .expect("answers")
        })
    });
}

criterion_group!(benches, negotiate);
criterion_main!(benches);
