//! A peer that changes its ICE credentials or its address keeps its session.
//! ICE restart (WHIP/WHEP `PATCH`, RFC 9725 §4.3.2): new local and remote
//! credentials on the session's str0m `Rtc`, its new ufrag in the demux
//! table; the DTLS session, the SRTP keys and the bound addresses stay, so
//! media flows on while the peer checks with its new credentials, from where
//! it is or from a new address, which binds like any new flow. A move: the
//! session sends where str0m does (see `follow_selected_pair`).

use std::time::Instant;

use str0m::net::Protocol;
use str0m::stats::PeerStats;

use super::api::{IceRestart, ShardError};
use super::session::Session;
use super::Shard;
use crate::stats::Counters;

impl Shard {
    /// Put a restart's credentials in use and answer its caller.
    pub(super) fn ice_restart(&mut self, now: Instant, r: IceRestart) {
        let IceRestart {
            id,
            local,
            remote,
            reply,
        } = r;
        let Some(key) = self.sessions.key_of(id) else {
            return reply(Err(ShardError::NoSuchSession));
        };
        if !self.sessions.rekey_ufrag(key, &local.ufrag) {
            return reply(Err(ShardError::UfragInUse));
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return reply(Err(ShardError::NoSuchSession));
        };
        // Not str0m's SDP-driven restart: that flushes the candidate pairs,
        // the nominated one too, and with it the only path media has until
        // the peer nominates again. Checks with the old credentials fail from
        // now on (wrong ufrag, and a MESSAGE-INTEGRITY made with the old password).
        let mut api = s.rtc.direct_api();
        api.set_local_ice_credentials(local);
        api.set_remote_ice_credentials(remote);
        self.counters.ice_restarts += 1;
        reply(Ok(()));
        self.drive(key, now);
    }
}

/// Send to the address str0m's selected candidate pair names. str0m moves it
/// when the peer moved (a nominating check from a new address, see
/// third_party/README.md) and reports it in its stats once a second; on
/// sluice's own send path str0m sends nothing else that would tell. An ICE-TCP
/// pair is left to the transmits, which name its connection.
pub(super) fn follow_selected_pair(s: &mut Session, p: &PeerStats, counters: &mut Counters) {
    let Some(pair) = &p.selected_candidate_pair else {
        return;
    };
    let to = pair.remote.addr;
    if pair.protocol != Protocol::Udp || s.peer == Some(to) {
        return;
    }
    if s.connected && s.peer.is_some() {
        s.addr_changes += 1;
        counters.session_addr_changes += 1;
    }
    s.peer = Some(to);
}
