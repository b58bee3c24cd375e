//! SDP offer/answer as WHIP, WHEP and rooms run it: a client's offer
//! answered by the control plane's `Negotiator` (publish or view, with or
//! without bandwidth estimation), and a client's answer to the offer of a
//! room's receive transport.
//!
//! Every text is also parsed with and without the parser's direct reader of
//! common attribute lines (third_party/README.md), which must agree.
//!
//! Input: first byte picks the path (bit 0 publish, bit 1 estimate, bit 2
//! treat the text as the answer to a receive-transport offer); the rest is
//! the SDP text.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::negotiate::{NegotiateError, Negotiator};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::MediaKind;

fn negotiator() -> &'static Negotiator {
    static N: OnceLock<Negotiator> = OnceLock::new();
    N.get_or_init(|| {
        sluice_fuzz::abort_on_uncaught_panics();
        Negotiator::new().expect("negotiator")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(rest) else {
        return;
    };
    if let Err(e) = str0m::_internal_sdp_check::direct_reader_agrees(sdp) {
        panic!("the SDP parsers disagree on {sdp:?}\n{e}");
    }
    let n = negotiator();
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let cand = [str0m::Candidate::host(addr, "udp").expect("candidate")];
    if flags & 4 != 0 {
        let mut offered = n
            .offer(&[MediaKind::Audio, MediaKind::Video], &cand)
            .expect("offer");
        if let Ok(answer) = SdpAnswer::from_sdp_string(sdp) {
            let _ = offered.rtc.sdp_api().accept_answer(offered.pending, answer);
        }
        return;
    }
    let (publish, estimate) = (flags & 1 != 0, flags & 2 != 0);
    match n.answer_with(sdp, publish, estimate, &cand) {
        Ok(neg) => {
            // An accepted offer was SDP, and the answer is SDP str0m reads back.
            assert!(SdpOffer::from_sdp_string(sdp).is_ok());
            assert!(
                SdpAnswer::from_sdp_string(&neg.answer).is_ok(),
                "answer does not parse: {}",
                neg.answer
            );
            assert_eq!(neg.ufrag.len(), 8);
        }
        Err(e @ (NegotiateError::Malformed(_) | NegotiateError::Unsupported(_))) => {
            // Reasons are one line: they go into HTTP bodies and room errors.
            assert!(!e.reason().contains('\n'), "{e:?}");
        }
    }
});
