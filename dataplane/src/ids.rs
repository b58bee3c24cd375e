//! Typed identifiers shared by the dataplane and the control plane.

use std::fmt;

/// Index of a dataplane shard (one pinned thread, one UDP socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Process-wide unique id of one WebRTC session (a WHIP publisher or a WHEP viewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Process-wide id of a named stream; the control plane interns stream names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which way media flows for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends media into the SFU (WHIP).
    Publisher,
    /// Receives a stream's media from the SFU (WHEP).
    Viewer,
}

impl Role {
    /// Lower-case name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Viewer => "viewer",
        }
    }
}

/// A 32-bit FNV-1a hash of a simulcast layer's rid: the tag that tells
/// layers apart in shared demand slots and in a viewer's rebasing.
#[inline]
pub(crate) fn rid_hash(rid: str0m::media::Rid) -> u32 {
    rid.as_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}
