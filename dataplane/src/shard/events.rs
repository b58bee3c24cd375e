//! What a session's str0m reports (connection, SRTP keys, media added, keyframe
//! requests, bandwidth estimates, publisher RTP, stats) and what the shard
//! does with each.

use std::sync::Arc;
use std::time::Instant;

use str0m::crypto::dtls::SrtpProfile;
use str0m::rtp::Extension;

use str0m::bwe::BweKind;
use str0m::{Event, IceConnectionState};

use super::api::{CloseReason, ShardEvent};
use super::track::{send_stream, set_rtx_cache, ViewerTrack};
use super::{ingest, report, restart, Shard};
use crate::fanout::SourceInfo;
use crate::ids::Role;
use crate::srtp::{Exported, SrtpSession};
use crate::srtp_sender::SrtpSender;

impl Shard {
    pub(super) fn handle_event(&mut self, key: u32, now: Instant, event: Event) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        match event {
            Event::Connected => {
                s.connected = true;
                let id = s.id;
                match (s.role, s.stream.clone()) {
                    (Role::Publisher, Some(stream)) => {
                        let params = s.rtc.codec_config().params().to_vec();
                        stream.set_source(Some(Arc::new(SourceInfo {
                            publisher_tag: s.publisher_tag,
                            params,
                        })));
                        stream.set_publisher(Some(self.cfg.id));
                    }
                    (Role::Viewer, _) => {
                        let subs = s.subscriptions.clone();
                        for stream in subs {
                            self.request_keyframe(now, &stream, None);
                        }
                    }
                    _ => {}
                }
                self.events.push(ShardEvent::Connected { id });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.counters.sessions_timed_out += 1;
                self.close_session(key, CloseReason::Timeout);
            }
            Event::Closed => self.close_session(key, CloseReason::Closed),
            Event::MediaAdded(m)
                if s.role == Role::Viewer
                    && m.direction.is_sending()
                    && !s.viewer_tracks.iter().any(|t| t.mid == m.mid) =>
            {
                let mut t = ViewerTrack::new(m.mid, m.kind, s.stream.is_some());
                t.max_layer = s.initial_max_layer;
                t.max_temporal = s.initial_max_temporal;
                t.ssrc = send_stream(&mut s.rtc, m.mid, s.sender.is_some());
                t.sync_demand(&s.subscriptions, s.stream.as_ref());
                s.viewer_tracks.push(t);
            }
            Event::KeyframeRequest(req) if s.role == Role::Viewer => {
                // Ask the publisher of whatever this mid forwards.
                let source = s
                    .viewer_tracks
                    .iter()
                    .find(|t| t.mid == req.mid)
                    .and_then(|t| t.source.map(|x| x.stream));
                let stream = s
                    .subscriptions
                    .iter()
                    .find(|x| Some(x.id) == source)
                    .or(s.stream.as_ref())
                    .cloned();
                if let Some(stream) = stream {
                    self.request_keyframe(now, &stream, None);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                s.estimate = Some(estimate.as_u64());
            }
            Event::RtpPacket(pkt) if s.role == Role::Publisher => {
                ingest::handle_publisher_rtp(
                    s,
                    key,
                    pkt,
                    &self.cfg,
                    &mut self.egress,
                    &mut self.holding,
                    &mut self.counters,
                );
            }
            Event::PeerStats(p) => {
                restart::follow_selected_pair(s, &p, &mut self.counters);
                report::record_peer_stats(s, &p);
            }
            Event::MediaIngressStats(m) => report::record_ingress(s, &m),
            Event::MediaEgressStats(m) => report::record_egress(s, &m),
            _ => {}
        }
    }
}

impl Shard {
    /// DTLS has given a session its SRTP keys: a viewer that estimates no
    /// bandwidth, with a GCM profile, moves to sluice's own SRTP sender.
    pub(super) fn adopt_keys(&mut self, key: u32, e: &Exported) {
        match e.profile {
            SrtpProfile::AEAD_AES_128_GCM => self.counters.srtp_aes128_gcm += 1,
            SrtpProfile::AEAD_AES_256_GCM => self.counters.srtp_aes256_gcm += 1,
            _ => self.counters.srtp_aes_cm += 1,
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.role != Role::Viewer || s.sender.is_some() || !self.cfg.direct_send {
            return;
        }
        // Viewers that estimate bandwidth need str0m's transport-wide
        // sequence numbers and pacing on every packet.
        let estimating = s.viewer_tracks.iter().any(|t| {
            s.rtc.media(t.mid).is_some_and(|m| {
                m.remote_extmap()
                    .id_of(Extension::TransportSequenceNumber)
                    .is_some()
            })
        });
        if estimating {
            return;
        }
        let Some(srtp) = SrtpSession::new(e) else {
            self.counters.direct_refused += 1;
            return;
        };
        s.sender = Some(Box::new(SrtpSender::new(srtp, self.cfg.rtx_budget_percent)));
        self.counters.direct_sessions += 1;
        // str0m sends nothing on these streams: its RTX caches may go.
        for t in &s.viewer_tracks {
            let mut api = s.rtc.direct_api();
            if let Some(tx) = t.ssrc.and_then(|x| api.stream_tx(&x)) {
                set_rtx_cache(tx, true);
            }
        }
    }
}
