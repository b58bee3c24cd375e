//! Simulcast layer choice: which layer each viewer track should get, from
//! its cap and the viewer's bandwidth estimate, held against flapping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Rid};

use super::session::Session;
use crate::fanout::StreamShared;

/// How often each viewer's simulcast layer choice is revisited.
pub(super) const LAYER_EVAL_INTERVAL: Duration = Duration::from_millis(500);
/// A layer choice stands at least this long unless the viewer's cap changes.
const LAYER_HOLD: Duration = Duration::from_secs(3);

/// The layer to forward: the highest allowed by the viewer's cap whose rate
/// fits the bandwidth estimate (with headroom for audio and overhead); the
/// lowest when none fits. `layers` is sorted by rate, lowest first.
pub(super) fn choose_layer(
    layers: &[(Rid, u64)],
    max_layer: Option<u8>,
    estimate: Option<u64>,
) -> Option<Rid> {
    let top = match max_layer {
        Some(m) => (m as usize).min(layers.len().checked_sub(1)?),
        None => layers.len().checked_sub(1)?,
    };
    let allowed = &layers[..=top];
    match estimate {
        Some(est) => allowed
            .iter()
            .rev()
            .find(|(_, bps)| (*bps as f64) * 1.15 + 64_000.0 <= est as f64)
            .or(allowed.first())
            .map(|l| l.0),
        None => allowed.last().map(|l| l.0),
    }
}

/// A keyframe request for a layer a viewer track switches to.
pub(super) struct LayerRequest {
    pub stream: Arc<StreamShared>,
    pub rid: Rid,
}

/// Re-pick each simulcast track's layer; collect keyframe requests for switches.
pub(super) fn evaluate_layers(s: &mut Session, now: Instant, requests: &mut Vec<LayerRequest>) {
    let mut want_min = 0u64;
    let mut want_max = 0u64;
    for t in &mut s.viewer_tracks {
        if t.kind != MediaKind::Video {
            continue;
        }
        let Some(source) = t.source else {
            continue;
        };
        let Some(stream) = s.subscriptions.iter().find(|x| x.id == source.stream) else {
            continue;
        };
        let layers = stream.layers();
        if layers.is_empty() {
            continue;
        }
        want_min += layers[0].1;
        want_max += layers[layers.len() - 1].1;
        let target = choose_layer(&layers, t.max_layer, s.estimate);
        // Hold a choice a while unless the cap changed, so estimate noise and
        // keyframe-inflated rates do not make the layer flap.
        let held = t
            .target_since
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_HOLD);
        if target != t.target && (!held || t.cap_changed) {
            t.target = target;
            t.target_since = Some(now);
        }
        t.cap_changed = false;
        // Until the switch happens, keep asking (the publisher side throttles).
        if let Some(rid) = t.target {
            if t.layer != Some(rid) {
                requests.push(LayerRequest {
                    stream: stream.clone(),
                    rid,
                });
            }
        }
    }
    if s.estimate.is_some() && want_max > 0 {
        // Keep the estimator probing toward the top layer.
        s.rtc.bwe().set_bitrate(
            Bitrate::from(want_min),
            Bitrate::from((want_max as f64 * 1.3) as u64 + 128_000),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_choice_follows_cap_and_estimate() {
        let l = [
            (Rid::from("q"), 150_000),
            (Rid::from("h"), 500_000),
            (Rid::from("f"), 1_500_000),
        ];
        assert_eq!(choose_layer(&l, None, None), Some(Rid::from("f")));
        assert_eq!(choose_layer(&l, Some(0), None), Some(Rid::from("q")));
        assert_eq!(choose_layer(&l, Some(7), None), Some(Rid::from("f")));
        assert_eq!(choose_layer(&l, None, Some(300_000)), Some(Rid::from("q")));
        assert_eq!(
            choose_layer(&l, None, Some(1_000_000)),
            Some(Rid::from("h"))
        );
        assert_eq!(
            choose_layer(&l, None, Some(5_000_000)),
            Some(Rid::from("f"))
        );
        assert_eq!(
            choose_layer(&l, Some(1), Some(5_000_000)),
            Some(Rid::from("h"))
        );
        // Nothing fits: the lowest layer rather than nothing.
        assert_eq!(choose_layer(&l, None, Some(10_000)), Some(Rid::from("q")));
        assert_eq!(choose_layer(&[], None, None), None);
    }
}
