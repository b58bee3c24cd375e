//! What the shard core exchanges with the runtime and the control plane:
//! its settings, commands, events and the errors commands answer with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{MediaKind, Mid, Rid};
use str0m::{IceCreds, Rtc};

use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::{Role, SessionId, ShardId, StreamId};
use crate::relay::{RelayDirection, RelayLinkId};

/// Static settings of a shard core.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This shard's id.
    pub id: ShardId,
    /// How many shards there are (the fan-out batch count).
    pub shard_count: usize,
    /// The address sessions were told (the ICE candidate); str0m matches it.
    pub local_addr: SocketAddr,
    /// Every UDP candidate address sessions are told (`local_addr` first):
    /// a datagram is handed to str0m as sent to the first of the source's
    /// address family.
    pub local_addrs: Vec<SocketAddr>,
    /// The shard's ICE-TCP candidate addresses (passive), the same way;
    /// empty when TCP is off.
    pub tcp_addrs: Vec<SocketAddr>,
    /// At most one keyframe request per stream in this interval.
    pub keyframe_throttle: Duration,
    /// A session that receives nothing for this long is removed.
    pub idle_timeout: Duration,
    /// A session that has not connected within this long is removed.
    pub setup_timeout: Duration,
    /// Hold a video frame's packets until its last one (RTP marker) arrives,
    /// at most this long, then fan the frame out in one visit per viewer.
    /// Zero forwards every packet as it arrives.
    pub frame_hold: Duration,
    /// Viewers that estimate no bandwidth send media through sluice's own
    /// RTP/SRTP path (`srtp_sender`) instead of str0m's.
    pub direct_send: bool,
    /// Retransmissions (RTX on NACK) a viewer on sluice's own send path may
    /// get, in percent of the media bytes sent to it (plus a 48 KiB burst,
    /// so one loss burst on a keyframe is repaired). str0m's path caps its own
    /// at 15% of what it sent in the last second.
    pub rtx_budget_percent: u32,
}

impl ShardConfig {
    /// Defaults for shard `id` of `shard_count`, sessions told `local_addr`.
    pub fn new(id: ShardId, shard_count: usize, local_addr: SocketAddr) -> Self {
        ShardConfig {
            id,
            shard_count,
            local_addr,
            local_addrs: vec![local_addr],
            tcp_addrs: Vec::new(),
            keyframe_throttle: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(30),
            setup_timeout: Duration::from_secs(30),
            frame_hold: Duration::ZERO,
            direct_send: true,
            rtx_budget_percent: 25,
        }
    }
}

/// A negotiated session handed to a shard by the control plane.
pub struct NewSession {
    /// The control plane's id for it.
    pub id: SessionId,
    /// Publisher or viewer.
    pub role: Role,
    /// A publisher's stream, or the one stream a WHEP viewer watches (its
    /// tracks bind by kind). `None` for a room's receive transport, whose
    /// tracks are bound one by one with [`Command::Subscribe`].
    pub stream: Option<Arc<StreamShared>>,
    /// Our ICE ufrag; a new flow's STUN USERNAME names it.
    pub ice_ufrag: String,
    /// The negotiated str0m session.
    pub rtc: Rtc,
    /// When we made the offer: the answer arrives later with [`Command::AcceptAnswer`].
    pub pending: Option<SdpPendingOffer>,
    /// Cap on the simulcast layer this viewer receives (0 = lowest).
    pub max_layer: Option<u8>,
    /// Cap on the VP8 temporal layer this viewer receives (0 = base only).
    pub max_temporal: Option<u8>,
}

/// Called once with the outcome of a command that needs an answer.
pub type Reply<T> = Box<dyn FnOnce(Result<T, ShardError>) + Send>;

/// Why a shard refused a command that needs an answer, grouped by fault.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The caller named a session this shard does not hold (it ended, or was
    /// placed elsewhere).
    #[error("no such session")]
    NoSuchSession,
    /// The caller asked out of turn: an offer is already waiting for its answer.
    #[error("an offer is already pending")]
    OfferPending,
    /// The caller sent an answer with no offer outstanding.
    #[error("no offer is pending")]
    NoOfferPending,
    /// Nothing was asked for that the session does not already have.
    #[error("nothing to offer")]
    NothingToOffer,
    /// The peer's answer did not fit the offer.
    #[error(transparent)]
    AnswerRejected(str0m::RtcError),
    /// The new ICE ufrag of a restart names another session on the shard.
    #[error("ICE ufrag already in use")]
    UfragInUse,
}

/// A new offer from the server side of a session and the mids it added.
#[derive(Debug, Clone)]
pub struct ServerOffer {
    /// The SDP offer.
    pub sdp: String,
    /// The media sections it adds, in order.
    pub mids: Vec<Mid>,
}

/// Instructions from the control plane or from other shards.
pub enum Command {
    /// Place a negotiated session on this shard.
    AddSession(Box<NewSession>),
    /// End a session (DELETE, kick).
    RemoveSession(SessionId),
    /// A viewer somewhere wants a keyframe of this stream's publisher (on this
    /// shard), of one simulcast layer or of every video track.
    RequestKeyframe(StreamId, Option<Rid>),
    /// Cap the simulcast layer a viewer receives (0 = lowest); `None` = no cap.
    /// `mid` `None` applies to every video track of the session.
    SetMaxLayer {
        /// The viewer session.
        id: SessionId,
        /// The track, or every video track.
        mid: Option<Mid>,
        /// The highest layer index, or no cap.
        max: Option<u8>,
    },
    /// Cap the VP8 temporal layer a viewer receives (0 = the base layer,
    /// the lowest frame rate); `None` = no cap. `mid` as for `SetMaxLayer`.
    SetMaxTemporal {
        /// The viewer session.
        id: SessionId,
        /// The track, or every video track.
        mid: Option<Mid>,
        /// The highest temporal layer id, or no cap.
        max: Option<u8>,
    },
    /// Bind a sending `mid` of a receive session to a publisher's track.
    Subscribe {
        /// The receive session.
        id: SessionId,
        /// Its sending media section.
        mid: Mid,
        /// Audio or video.
        kind: MediaKind,
        /// The publisher's stream.
        stream: Arc<StreamShared>,
        /// The publisher's media section to forward.
        source_mid: Mid,
    },
    /// Stop forwarding to `mid`; it may be bound again later.
    Unsubscribe {
        /// The receive session.
        id: SessionId,
        /// Its media section.
        mid: Mid,
    },
    /// Renegotiate: add sending media of these kinds; replies with the offer.
    AddMedia {
        /// The session.
        id: SessionId,
        /// One new sending media section per entry.
        kinds: Vec<MediaKind>,
        /// Called with the offer.
        reply: Reply<ServerOffer>,
    },
    /// Open one end of a relay link to another node (`relay` module).
    RelayOpen {
        /// The control plane's id for the link.
        link: RelayLinkId,
        /// The peer node's media address (its shard's socket).
        peer: SocketAddr,
        /// The link's key material, [`crate::RELAY_KEY_LEN`] bytes.
        material: Vec<u8>,
        /// Which end this shard is.
        direction: RelayDirection,
    },
    /// Carry (sending end) or feed (receiving end) a stream on a link, as `tag`.
    RelayAddStream {
        /// The link.
        link: RelayLinkId,
        /// The stream's tag on the link, the same at both ends.
        tag: u32,
        /// The local stream.
        stream: Arc<StreamShared>,
    },
    /// Stop carrying or feeding the stream of `tag`.
    RelayRemoveStream {
        /// The link.
        link: RelayLinkId,
        /// The stream's tag on the link.
        tag: u32,
    },
    /// Close a relay link.
    RelayClose(RelayLinkId),
    /// Complete an offer this side made.
    AcceptAnswer {
        /// The session.
        id: SessionId,
        /// The peer's answer.
        answer: SdpAnswer,
        /// Called once the answer is applied.
        reply: Reply<()>,
    },
    /// Restart a session's ICE with new credentials (WHIP/WHEP `PATCH`).
    IceRestart(Box<IceRestart>),
}

/// An ICE restart (RFC 9725 §4.3.2): the session answers checks with new
/// local credentials and expects the peer's new ones; its DTLS session, SRTP
/// keys and bound addresses stay, and the old credentials stop working.
pub struct IceRestart {
    /// The session.
    pub id: SessionId,
    /// Its new local credentials; the ufrag must name no other session.
    pub local: IceCreds,
    /// The peer's new credentials.
    pub remote: IceCreds,
    /// Called once the new credentials are in use.
    pub reply: Reply<()>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Removed on request (DELETE, kick, shutdown).
    Removed,
    /// No traffic within the idle timeout, or ICE reported disconnection.
    Timeout,
    /// Never connected within the setup timeout.
    SetupTimeout,
    /// The peer closed DTLS, or str0m reported an error.
    Closed,
}

/// What a shard tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// A session's ICE and DTLS are up.
    Connected {
        /// The session.
        id: SessionId,
    },
    /// A session ended.
    Closed {
        /// The session.
        id: SessionId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A relay link heard nothing authentic from its peer within
    /// [`crate::RELAY_IDLE`] and closed.
    RelayClosed {
        /// The link.
        link: RelayLinkId,
    },
    /// A publisher's loudest audio level (RFC 6464, -dBov: 0 loudest, 127 silence)
    /// over the last interval, with voice activity if the sender flags it.
    AudioLevel {
        /// The publisher session.
        id: SessionId,
        /// RFC 6464 -dBov: 0 loudest, 127 silence.
        level: u8,
        /// The sender flagged voice activity.
        voice: bool,
    },
}

/// Messages for other shards, produced by the core and sent by the runtime.
#[derive(Debug)]
pub enum CrossShard {
    /// Packets for viewers on that shard.
    Fanout(ShardId, Vec<FwdPacket>),
    /// A keyframe request for the stream's publisher, on that shard.
    Keyframe(ShardId, StreamId, Option<Rid>),
}
