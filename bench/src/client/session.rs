//! Starting sessions and holding them: a WHIP publisher or a WHEP viewer is
//! offered, signalled and launched, and its [`SessionHandle`] stops it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::{Rtc, RtcConfig};
use tokio::sync::Notify;

use super::connect::{launch, prepare, rtc_config, with_shared_cert, Conn};
use super::counters::{PublisherStats, ViewerStats};
use super::payload::{TRACK_AUDIO, TRACK_VIDEO};
use super::publisher::{PubState, TrackTx};
use super::role::{Role, ViewState};
use super::signal::{check_candidates, delete_resource, signal};
use super::{ClientError, Endpoint, MediaSpec, SessionOptions, ViewerMode};
use crate::pacer::Pacer;

/// A running session; dropping it does not stop it, `close` does.
pub struct SessionHandle<S> {
    /// Counters the session updates as it runs.
    pub stats: Arc<S>,
    /// The resource URL of the `Location` header, DELETEd on close.
    pub location: Option<String>,
    /// Local address of the session's UDP socket.
    pub local_addr: SocketAddr,
    /// The socket receives with UDP GRO: asked for and accepted by the kernel.
    pub udp_gro: bool,
    /// Over TCP: while set, the session reads nothing from its connection.
    pub paused: Arc<AtomicBool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
    http: reqwest::Client,
    endpoint: Endpoint,
}

impl<S> SessionHandle<S> {
    /// Stop media, DELETE the resource, and wait for the task.
    pub async fn close(self) -> Result<(), ClientError> {
        self.stop.notify_one();
        let r = self.task.await;
        if let Some(loc) = &self.location {
            let mut req = self.http.delete(loc);
            if let Some(t) = &self.endpoint.token {
                req = req.bearer_auth(t);
            }
            let _ = req.send().await;
        }
        match r {
            Ok(r) => r,
            Err(e) => Err(ClientError::Rtc(format!("task: {e}"))),
        }
    }

    /// Stop without telling the server (as a vanished client would).
    pub async fn vanish(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the session has ended (closed by either side or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Start a WHIP publisher of synthetic media on 127.0.0.1.
pub async fn publish(
    http: &reqwest::Client,
    ep: &Endpoint,
    spec: MediaSpec,
) -> Result<SessionHandle<PublisherStats>, ClientError> {
    publish_with(http, ep, spec, &SessionOptions::default()).await
}

/// Start a WHIP publisher of synthetic media.
pub async fn publish_with(
    http: &reqwest::Client,
    ep: &Endpoint,
    spec: MediaSpec,
    opts: &SessionOptions,
) -> Result<SessionHandle<PublisherStats>, ClientError> {
    let mut rtc = rtc_config(spec.video_codec).build(Instant::now());
    let conn = prepare(&mut rtc, opts).await?;
    let mut api = rtc.sdp_api();
    let audio_mid = spec
        .audio
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let video_mid = spec
        .video
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Rtc("nothing to offer".into()))?;
    let stats = Arc::new(PublisherStats::default());
    let state = PubState {
        pacer: Pacer::new((spec.bitrate as f64 * spec.pacing_factor) as u64),
        spec,
        audio: audio_mid.map(|m| TrackTx::new(m, TRACK_AUDIO)),
        video: video_mid.map(|m| TrackTx::new(m, TRACK_VIDEO)),
        stats: stats.clone(),
    };
    let offered = Offered {
        rtc,
        conn,
        offer: offer.to_sdp_string(),
        pending,
    };
    establish(http, ep, offered, opts, Role::Pub(Box::new(state)), stats).await
}

/// A session's str0m with its offer made and its connection prepared.
struct Offered {
    rtc: Rtc,
    conn: Conn,
    offer: String,
    pending: SdpPendingOffer,
}

/// Post the offer, accept the answer and run the session as `role`; the
/// server's resource is deleted again when the answer's candidates or the
/// connection to them fail.
async fn establish<S>(
    http: &reqwest::Client,
    ep: &Endpoint,
    o: Offered,
    opts: &SessionOptions,
    role: Role,
    stats: Arc<S>,
) -> Result<SessionHandle<S>, ClientError> {
    let Offered {
        mut rtc,
        conn,
        offer,
        pending,
    } = o;
    let (answer_sdp, location) = signal(http, ep, offer).await?;
    if let Err(e) = check_candidates(&answer_sdp, opts) {
        delete_resource(http, ep, location.as_deref()).await;
        return Err(e);
    }
    let answer =
        SdpAnswer::from_sdp_string(&answer_sdp).map_err(|e| ClientError::Answer(e.to_string()))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| ClientError::Rtc(e.to_string()))?;
    let stop = Arc::new(Notify::new());
    let paused = Arc::new(AtomicBool::new(false));
    let launched = match launch(
        rtc,
        conn,
        &answer_sdp,
        opts,
        role,
        stop.clone(),
        paused.clone(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            delete_resource(http, ep, location.as_deref()).await;
            return Err(e);
        }
    };
    Ok(SessionHandle {
        stats,
        location,
        local_addr: launched.local,
        udp_gro: launched.udp_gro,
        paused,
        stop,
        task: launched.task,
        http: http.clone(),
        endpoint: ep.clone(),
    })
}

/// Start a WHEP viewer on 127.0.0.1.
pub async fn view(
    http: &reqwest::Client,
    ep: &Endpoint,
    mode: ViewerMode,
) -> Result<SessionHandle<ViewerStats>, ClientError> {
    view_with(http, ep, mode, &SessionOptions::default()).await
}

/// Start a WHEP viewer.
pub async fn view_with(
    http: &reqwest::Client,
    ep: &Endpoint,
    mode: ViewerMode,
    opts: &SessionOptions,
) -> Result<SessionHandle<ViewerStats>, ClientError> {
    let started = Instant::now();
    // Offer both codecs so any publisher can be watched.
    let mut rtc = with_shared_cert(RtcConfig::new())
        .set_rtp_mode(true)
        .set_stats_interval(None)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .build(Instant::now());
    let conn = prepare(&mut rtc, opts).await?;
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Rtc("nothing to offer".into()))?;
    let stats = Arc::new(ViewerStats::default());
    let state = ViewState {
        mode,
        stats: stats.clone(),
        started,
        rx_unix_us: None,
    };
    let offered = Offered {
        rtc,
        conn,
        offer: offer.to_sdp_string(),
        pending,
    };
    establish(http, ep, offered, opts, Role::View(state), stats).await
}
