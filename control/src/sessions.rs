//! Placing and ending sessions for WHIP/WHEP, rooms and admin: place = capacity check →
//! least-loaded shard → negotiate → register → AddSession; end = unregister + RemoveSession.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_dataplane::str0m::media::{MediaKind, Mid};
use sluice_dataplane::{Command, NewSession, Role, SessionId, ShardId, StreamShared};
use tokio::sync::Mutex;

use crate::app::App;
use crate::icefrag::{self, IceSession};
use crate::negotiate::NegotiateError;
use crate::registry::{Capability, Max, RegisterError, SessionEntry};

/// Why a session could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The stream has a publisher already.
    #[error("stream {0:?} is already published")]
    AlreadyPublished(String),
    /// `max_sessions` reached.
    #[error("server at capacity")]
    AtCapacity,
    /// `max_sessions_per_ip` reached for the source address.
    #[error("too many sessions from this address")]
    SessionsPerIp,
    /// The chosen shard does not exist (the dataplane has none).
    #[error("no shard")]
    NoShard,
    /// The offer could not be answered, or no offer could be made.
    #[error(transparent)]
    Negotiate(#[from] NegotiateError),
    /// The chosen shard stopped taking commands.
    #[error("dataplane shard stopped")]
    ShardStopped,
}

impl PlaceError {
    fn registering(e: RegisterError, stream: &str) -> PlaceError {
        match e {
            RegisterError::AlreadyPublished => PlaceError::AlreadyPublished(stream.to_string()),
            RegisterError::AtCapacity => PlaceError::AtCapacity,
            RegisterError::SessionsPerIp => PlaceError::SessionsPerIp,
        }
    }
}

/// A negotiated, registered session that its shard does not know yet:
/// [`Placed::start`] hands it over, [`Placed::cancel`] forgets it.
pub struct Placed {
    /// The session's id.
    pub id: SessionId,
    /// The shard it is placed on.
    pub shard: ShardId,
    /// The random half of its resource URL (see [`Placed::resource_name`]).
    pub key: u64,
    /// The stream's shared state; `None` for a session of no single stream.
    pub stream: Option<Arc<StreamShared>>,
    session: Box<NewSession>,
}

impl Placed {
    /// The last segment of the session's resource URL: its id and its key, 32 hex digits.
    pub fn resource_name(&self) -> String {
        format!("{}{:016x}", self.id, self.key)
    }

    /// The entity tag of the session's ICE credentials (WHIP/WHEP `ETag`).
    pub fn etag(&self) -> String {
        icefrag::etag(&self.session.ice_ufrag)
    }

    /// Hand the session to its shard, capped at simulcast layer `max_layer`
    /// and VP8 temporal layer `max_temporal`. When the shard has stopped,
    /// the registration is undone.
    pub fn start(
        mut self,
        app: &App,
        max_layer: Option<u8>,
        max_temporal: Option<u8>,
    ) -> Result<(), PlaceError> {
        self.session.max_layer = max_layer;
        self.session.max_temporal = max_temporal;
        let sent = app
            .dataplane
            .shard(self.shard)
            .is_some_and(|h| h.send(Command::AddSession(self.session)));
        if !sent {
            app.registry().remove(self.id);
            return Err(PlaceError::ShardStopped);
        }
        Ok(())
    }

    /// Forget the session before any shard has seen it.
    pub fn cancel(self, app: &App) {
        app.registry().remove(self.id);
    }
}

/// Place a session of `stream` in `role` that answers `offer`, created by the
/// token whose digest is `owner` from `source`; returns it with the answer.
pub fn answer(
    app: &App,
    stream: &str,
    role: Role,
    offer: &str,
    owner: Option<[u8; 32]>,
    source: Option<IpAddr>,
) -> Result<(Placed, String), PlaceError> {
    let max = Max {
        sessions: app.config.max_sessions,
        per_source: app.config.max_sessions_per_ip,
    };
    let (shard, simulcast) = {
        let reg = app.registry();
        reg.check(stream, role, source, max)
            .map_err(|e| PlaceError::registering(e, stream))?;
        // Estimation costs CPU and pacing; only simulcast viewers need it.
        let simulcast = role == Role::Viewer && reg.stream_has_layers(stream);
        (reg.least_loaded(app.dataplane.shards.len()), simulcast)
    };
    let handle = app.dataplane.shard(shard).ok_or(PlaceError::NoShard)?;
    let publish = role == Role::Publisher;
    let n = app
        .negotiator
        .answer_with(offer, publish, simulcast, &handle.candidates())?;
    let id = SessionId(app.negotiator.random_u64());
    let capability = Capability {
        key: app.negotiator.random_u64(),
        owner,
    };
    let key = capability.key;
    let ice = IceSession::new(offer, &n.answer, &n.ufrag).map(|i| Arc::new(Mutex::new(i)));
    // Registering re-checks under the lock: a racing publisher is refused here.
    let mut e = entry(id, role, stream, shard, capability, source);
    e.ice = ice;
    let shared = app
        .registry()
        .register(e, max)
        .map_err(|e| PlaceError::registering(e, stream))?;
    let session = Box::new(NewSession {
        id,
        role,
        stream: Some(shared.clone()),
        ice_ufrag: n.ufrag,
        rtc: n.rtc,
        pending: None,
        max_layer: None,
        max_temporal: None,
    });
    let placed = Placed {
        id,
        shard,
        key,
        stream: Some(shared),
        session,
    };
    Ok((placed, n.answer))
}

/// Place a viewer session, listed under `label` but in no stream, that offers
/// to send media of `kinds` (a room's receive transport); returns it with the
/// offer and the offered mids.
pub fn offer(
    app: &App,
    label: String,
    kinds: &[MediaKind],
) -> Result<(Placed, String, Vec<Mid>), PlaceError> {
    let max = Max {
        sessions: app.config.max_sessions,
        per_source: 0,
    };
    let shard = app.registry().least_loaded(app.dataplane.shards.len());
    let handle = app.dataplane.shard(shard).ok_or(PlaceError::NoShard)?;
    let offered = app.negotiator.offer(kinds, &handle.candidates())?;
    let id = SessionId(app.negotiator.random_u64());
    app.registry()
        .register_unindexed(
            entry(id, Role::Viewer, &label, shard, Capability::default(), None),
            max,
        )
        .map_err(|e| PlaceError::registering(e, &label))?;
    let session = Box::new(NewSession {
        id,
        role: Role::Viewer,
        stream: None,
        ice_ufrag: offered.ufrag,
        rtc: offered.rtc,
        pending: Some(offered.pending),
        max_layer: None,
        max_temporal: None,
    });
    let placed = Placed {
        id,
        shard,
        key: 0,
        stream: None,
        session,
    };
    Ok((placed, offered.sdp, offered.mids))
}

fn entry(
    id: SessionId,
    role: Role,
    stream: &str,
    shard: ShardId,
    capability: Capability,
    source: Option<IpAddr>,
) -> SessionEntry {
    SessionEntry {
        id,
        role,
        stream: stream.to_string(),
        shard,
        created: SystemTime::now(),
        connected: false,
        capability,
        source,
        ice: None,
    }
}

/// Forget a session now and tell its shard to close it.
pub fn end(app: &App, id: SessionId, shard: ShardId) {
    if let Some(e) = app.registry().remove(id) {
        app.session_ended(e.role);
    }
    if let Some(h) = app.dataplane.shard(shard) {
        h.send(Command::RemoveSession(id));
    }
}
