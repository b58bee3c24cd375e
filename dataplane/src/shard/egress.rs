//! Fan-out scheduling: packets due to local viewers this turn, per-shard
//! batches for viewers elsewhere, the turn's send budget and where a cut
//! run resumes, and the datagram grouping that makes GSO sends long.

use std::time::Instant;

use super::api::CrossShard;
use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::ShardId;
use crate::packet::{is_rtp, Datagram};
use crate::stats::Counters;

/// Datagrams a turn writes before it lets the runtime send them (see
/// `Shard::flush_pending`): about a millisecond of fan-out.
pub(super) const TURN_SEND_BUDGET: usize = 128;

/// One packet this turn forwarded: when the publisher's shard received it
/// and to how many local viewers it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardDelay {
    /// When the publisher's shard received the packet.
    pub received: Instant,
    /// Viewers on this shard it was written to.
    pub copies: u32,
}

/// A run at the front of `pending` cut short by the turn's send budget.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    /// The run's length, frozen: packets of its stream that arrive later
    /// are a new run.
    pub len: usize,
    /// The index in `fwd_keys` of the next viewer to visit.
    pub next_viewer: usize,
}

/// The shard's outgoing fan-out state.
pub(super) struct Egress {
    /// Packets due to local viewers this turn, from local publishers and other shards.
    pub pending: Vec<FwdPacket>,
    /// Per destination shard, the batch being built this turn.
    out_batches: Vec<Vec<FwdPacket>>,
    /// Viewers of the run being forwarded, as they were when it started.
    pub fwd_keys: Vec<u32>,
    pub resume: Option<Resume>,
    /// Per packet of the run being forwarded, the viewers it was written to.
    pub copies: Vec<u32>,
    /// This turn's forwarded packets.
    pub delays: Vec<ForwardDelay>,
}

impl Egress {
    pub fn new(shards: usize) -> Self {
        Egress {
            pending: Vec::new(),
            out_batches: (0..shards).map(|_| Vec::new()).collect(),
            fwd_keys: Vec::new(),
            resume: None,
            copies: Vec::new(),
            delays: Vec::new(),
        }
    }

    /// Queue a publisher's packet for the local viewers of its stream and
    /// for every other shard that has some.
    #[inline]
    pub fn route(&mut self, own: ShardId, stream: &StreamShared, fwd: FwdPacket) {
        for (shard, batch) in self.out_batches.iter_mut().enumerate() {
            let sid = ShardId(shard as u16);
            if stream.viewers_on(sid) == 0 {
                continue;
            }
            if sid == own {
                self.pending.push(fwd.clone());
            } else {
                batch.push(fwd.clone());
            }
        }
    }

    /// A batch of packets from a publisher on another shard.
    pub fn take_fanout(&mut self, batch: Vec<FwdPacket>) {
        if self.pending.is_empty() {
            self.pending = batch;
        } else {
            self.pending.extend(batch);
        }
    }

    /// Hand this turn's non-empty per-shard batches to `cross`.
    pub fn flush_out_batches(&mut self, cross: &mut Vec<CrossShard>, counters: &mut Counters) {
        for (shard, batch) in self.out_batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                let cap = batch.capacity();
                let b = std::mem::replace(batch, Vec::with_capacity(cap.min(1024)));
                cross.push(CrossShard::Fanout(ShardId(shard as u16), b));
                counters.fanout_batches_out += 1;
            }
        }
    }

    /// Record the run's packets that reached at least one viewer.
    #[inline]
    pub fn record_delays(&mut self, packets: &[FwdPacket]) {
        for (p, &n) in packets.iter().zip(&self.copies) {
            if n > 0 {
                self.delays.push(ForwardDelay {
                    received: p.received,
                    copies: n,
                });
            }
        }
    }
}

/// Make each RTP stream's datagrams in one viewer's output contiguous, keeping
/// their order within the stream (a stable insertion sort on the SSRC; other
/// datagrams go last). str0m's pacer alternates between a viewer's audio and
/// video queues, which splits what could be one GSO send (one destination,
/// equal sizes) into several; order across streams means nothing to RTP.
#[inline]
pub(super) fn group_by_ssrc(out: &mut [Datagram]) {
    fn key(d: &Datagram) -> u64 {
        let b = &d.contents;
        if is_rtp(b) {
            u64::from(u32::from_be_bytes([b[8], b[9], b[10], b[11]]))
        } else {
            u64::MAX
        }
    }
    for i in 1..out.len() {
        let k = key(&out[i]);
        let mut j = i;
        while j > 0 && key(&out[j - 1]) > k {
            j -= 1;
        }
        if j < i {
            out[j..=i].rotate_right(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn grouping_by_ssrc_keeps_each_streams_order() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let rtp = |ssrc: u32, seq: u8, len: usize| {
            let mut b = vec![0u8; len];
            b[0] = 0x80;
            b[1] = 96;
            b[3] = seq;
            b[8..12].copy_from_slice(&ssrc.to_be_bytes());
            Datagram {
                destination: to,
                contents: b,
            }
        };
        let rtcp = Datagram {
            destination: to,
            contents: vec![0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7, 0],
        };
        let mut out = vec![
            rtp(7, 1, 1200),
            rtp(3, 1, 100),
            rtcp,
            rtp(7, 2, 1200),
            rtp(3, 2, 100),
            rtp(7, 3, 500),
        ];
        group_by_ssrc(&mut out);
        let got: Vec<(u32, u8, usize)> = out
            .iter()
            .map(|d| {
                let b = &d.contents;
                if b[1] == 200 {
                    (0, 0, b.len())
                } else {
                    (
                        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                        b[3],
                        b.len(),
                    )
                }
            })
            .collect();
        assert_eq!(
            got,
            [
                (3, 1, 100),
                (3, 2, 100),
                (7, 1, 1200),
                (7, 2, 1200),
                (7, 3, 500),
                (0, 0, 13)
            ]
        );
    }
}
