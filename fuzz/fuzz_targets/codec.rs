//! Codec payload parsing of the forward path: keyframe detection for VP8,
//! H.264, VP9 and AV1, the VP8 descriptor's temporal layer, and its picture
//! ids read, rebased across simulcast layer switches and pictures left out,
//! and written back; and a viewer's sequence numbers, closing up behind
//! packets left out, with packets reordered.
//!
//! Input: a sequence of packets, each `[tag, len, payload[len]]`; `tag`'s low
//! bits pick the simulcast layer the packet comes from, bit 2 leaves it out,
//! and `len` moves its sequence number against the previous one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::fuzzing::{
    is_keyframe, vp8_numbering, vp8_patch, vp8_rewrite, vp8_temporal, Rebase, Vp8Ids, Vp8Rebase,
};
use str0m::format::Codec;

fuzz_target!(|data: &[u8]| {
    let mut rebase = Vp8Rebase::default();
    let mut seqs = Rebase::new();
    let mut seq = 1_000u64;
    let mut mapped: Vec<(u64, u64)> = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        for codec in [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1, Codec::Opus] {
            let _ = is_keyframe(codec, payload);
        }
        if let Some(t) = vp8_temporal(payload) {
            assert!(t.tid <= 3);
        }
        // Mostly forward, sometimes back (reordered), within one source.
        seq = seq.wrapping_add(u64::from(*len % 8)).wrapping_sub(2);
        if tag & 4 != 0 {
            seqs.skip(1, seq, 0, 3000);
            rebase.skip(u32::from(tag & 3), payload);
            continue;
        }
        if let Some((out, _)) = seqs.map(1, seq, 0, 3000) {
            // Distinct inputs never share an output, and outputs keep the
            // inputs' order.
            for &(i, o) in &mapped {
                assert_eq!(i == seq, o == out, "{seq} -> {out} against {i} -> {o}");
                assert_eq!(i < seq, o < out, "{seq} -> {out} against {i} -> {o}");
            }
            mapped.push((seq, out));
        }
        let (pid, tl0) = vp8_numbering(payload);
        if let Some(ids) = rebase.rebase(u32::from(tag & 3), payload) {
            // What the rebase gives fits the field it goes into.
            if let (Some(out), Some((_, wide))) = (ids.picture_id, pid) {
                assert!(out <= if wide { 0x7fff } else { 0x7f });
            }
            assert_eq!(ids.picture_id.is_some(), pid.is_some());
            assert_eq!(ids.tl0.is_some(), tl0.is_some());
            check_rewrite(payload, ids);
            let _ = vp8_patch(ids, payload);
        }
        // Arbitrary ids too, as the direct send path writes what it is given.
        let ids = Vp8Ids {
            picture_id: Some(u16::from(*tag) << 7 | u16::from(*len)),
            tl0: Some(*len),
        };
        check_rewrite(payload, ids);
        let _ = vp8_patch(ids, payload);
    }
});

/// The rewrite changes the ids where `vp8_numbering` reads them, and nothing else.
fn check_rewrite(payload: &[u8], ids: Vp8Ids) {
    let mut copy = payload.to_vec();
    vp8_rewrite(&mut copy, ids);
    assert_eq!(copy.len(), payload.len());
    let (before_pid, before_tl0) = vp8_numbering(payload);
    let (after_pid, after_tl0) = vp8_numbering(&copy);
    match (before_pid, ids.picture_id) {
        (Some((_, wide)), Some(want)) => {
            let mask = if wide { 0x7fff } else { 0x7f };
            assert_eq!(after_pid, Some((want & mask, wide)));
        }
        _ => assert_eq!(after_pid, before_pid),
    }
    match (before_tl0, ids.tl0) {
        (Some(_), Some(want)) => assert_eq!(after_tl0, Some(want)),
        _ => assert_eq!(after_tl0, before_tl0),
    }
    // The ids sit in the first five bytes; the rest is never touched.
    assert_eq!(copy.get(5..), payload.get(5..));
}
