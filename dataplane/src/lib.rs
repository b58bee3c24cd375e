//! The sluice dataplane: shards of Sans-IO str0m sessions, each on a pinned
//! thread with its own UDP socket, forwarding media to viewers on any shard.
//!
//! Knows nothing of HTTP, tokio or configuration files.

pub mod codec;
pub mod dtls;
pub mod extensions;
pub mod fanout;
pub mod ids;
pub mod io;
pub mod packet;
pub mod runtime;
pub mod shard;
pub mod srtp;
pub mod srtp_sender;
pub mod stats;
pub mod stun;
pub mod testkit;
pub mod timer;

pub use fanout::{FwdPacket, StreamShared};
pub use ids::{Role, SessionId, ShardId, StreamId};
pub use io::IoKind;
pub use packet::{is_rtcp, is_rtp, recycle, Datagram};
pub use runtime::{Dataplane, DataplaneConfig, ShardHandle};
pub use shard::{CloseReason, Command, NewSession, Shard, ShardConfig, ShardEvent};
pub use stats::{Counters, SharedCounters};

/// Re-exported so the control plane builds sessions with the same str0m.
pub use str0m;
