//! The sluice dataplane: shards of Sans-IO str0m sessions, each on a pinned
//! thread with its own UDP socket, forwarding media to viewers on any shard.
//!
//! Knows nothing of HTTP, tokio or configuration files. What the control
//! plane, the bench and the tests use is re-exported here; the modules are
//! private.

// `fuzzing` re-exports crate-private items that were never documented as an API.
#![cfg_attr(feature = "fuzzing", allow(missing_docs))]

mod codec;
mod dtls;
mod dtls_key;
mod extensions;
mod fanout;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzzing;
mod ids;
#[allow(unsafe_code)]
mod io;
mod packet;
mod relay;
mod runtime;
mod shard;
mod srtp;
mod srtp_sender;
mod stats;
mod stun;
#[cfg(feature = "testkit")]
pub mod testkit;
mod timer;

pub use codec::Vp8Temporal;
pub use dtls::crypto_provider;
pub use extensions::forwarding as forwarding_extensions;
pub use fanout::{FwdPacket, StreamShared, MAX_SHARDS};
pub use ids::{Role, SessionId, ShardId, StreamId};
pub use io::tcp::{TcpLimits, TcpMedia, TcpNotice};
pub use io::xdp::{
    capability_check as xdp_capability_check, AttachMode as XdpAttach, BindMode as XdpBind,
    XdpSettings,
};
pub use io::{
    allowed_cpus, bind_udp, disable_transparent_huge_pages, make_backend, probe, set_int_option,
    set_thread_cpus, set_thread_nice, Backend, IoKind, Waker,
};
pub use packet::{is_rtcp, is_rtp, is_tcp_flow, recycle, tcp_flow_addr, Datagram};
pub use relay::{RelayDirection, RelayLinkId, RELAY_IDLE, RELAY_KEY_LEN};
pub use runtime::{Dataplane, DataplaneConfig, ShardHandle};
pub use shard::{
    CloseReason, Command, CrossShard, ForwardDelay, IceRestart, NewSession, Reply, ServerOffer,
    Shard, ShardConfig, ShardError, ShardEvent,
};
pub use stats::{
    ByteTotals, Counters, SessionStats, SessionStatsTable, SharedCounters, TrackStats,
    TurnHistogram, TURN_BUCKETS,
};

/// Re-exported so the control plane builds sessions with the same str0m.
pub use str0m;
