//! Fan-out scheduling: packets due to local viewers, the run that takes a
//! stream's packets round its viewers, per-shard batches for viewers
//! elsewhere, the turn's send budget, and the datagram grouping that makes
//! GSO sends long.

use std::collections::VecDeque;
use std::time::Instant;

use str0m::media::MediaKind;

use super::api::CrossShard;
use crate::fanout::{FwdPacket, StreamShared};
use crate::ids::{ShardId, StreamId};
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

/// Rounds of its viewers during which a run takes in new packets.
const JOIN_ROUNDS: usize = 4;

/// Packets a shard keeps waiting for its own viewers (queued and in the
/// run). A shard behind its fan-out (a publisher sending more than its
/// viewers can be sent, or too many viewers for the core) would otherwise
/// queue without end: past 3/4 of this it drops video and keeps audio, as
/// the queues between shards do, and at it drops everything, counted in
/// `drop_local_backlog`. 8,192 packets of ~1,200 bytes are ~10 MiB.
pub(super) const LOCAL_BACKLOG: usize = 8192;

/// One packet of the run and the step at which it has been round every
/// viewer of the run.
pub(super) struct RunPacket {
    pub fwd: FwdPacket,
    pub end: usize,
    /// Viewers it was written to this turn.
    pub copies: u32,
}

/// The run being forwarded: packets of one stream going round the viewers
/// the stream had when the run started, one viewer per step.
///
/// A packet that arrives while the run is young (its first [`JOIN_ROUNDS`]
/// rounds) joins it where it stands: from the next viewer on it travels with
/// the packets already in the run (one visit, one GSO send for each
/// viewer), and it goes on round to the viewers before that. A paced
/// publisher's packets arrive a few milliseconds apart, each alone; when a
/// large fan-out falls behind, this turns the backlog into batches at once,
/// which is when cheaper copies matter. Each viewer still gets a stream's
/// packets in arrival order: a packet that joined at step `s` reaches the
/// viewer at position `p` at the first step from `s` on that lands on `p`,
/// never before the packets that were in the run earlier. Packets that
/// arrive later wait for the next run, which takes the viewers the stream
/// has by then, so the list of viewers a run uses is at most
/// `JOIN_ROUNDS + 1` rounds old.
#[derive(Default)]
pub(super) struct Run {
    pub stream: Option<StreamId>,
    /// The stream's local viewers when the run started.
    pub keys: Vec<u32>,
    pub packets: VecDeque<RunPacket>,
    /// Viewers visited since the run started.
    step: usize,
    /// `step` round the list: the index in `keys` of the next viewer.
    pos: usize,
    /// Packets join while `step` is below this.
    open_until: usize,
    /// A viewer left the stream since the run started: its key may since
    /// name another session, so each visit checks the viewer still watches.
    pub stale: bool,
}

impl Run {
    /// Start a run of `stream` over `keys`; the run must be empty.
    pub fn start(&mut self, stream: StreamId, keys: &[u32]) {
        debug_assert!(self.packets.is_empty());
        self.stream = Some(stream);
        self.keys.clear();
        self.keys.extend_from_slice(keys);
        self.step = 0;
        self.pos = 0;
        self.open_until = keys.len() * JOIN_ROUNDS;
        self.stale = false;
    }

    /// Whether `p` may join the run now.
    pub fn admits(&self, p: &FwdPacket) -> bool {
        self.stream == Some(p.stream)
            && (self.packets.is_empty() || self.step < self.open_until || self.keys.is_empty())
    }

    /// Add a packet admitted by [`Run::admits`].
    pub fn push(&mut self, fwd: FwdPacket) {
        self.packets.push_back(RunPacket {
            fwd,
            end: self.step + self.keys.len(),
            copies: 0,
        });
    }

    /// Viewers visited since the run started.
    #[inline]
    pub fn step(&self) -> usize {
        self.step
    }

    /// Let the packets that have been round leave the run, their copies
    /// recorded in `delays`; then the step at which the oldest one left
    /// will have been round, `None` if none is left. Until that step every
    /// packet in the run is due to each viewer visited.
    #[inline]
    pub fn retire(&mut self, delays: &mut Vec<ForwardDelay>) -> Option<usize> {
        while self.packets.front().is_some_and(|p| p.end <= self.step) {
            if let Some(p) = self.packets.pop_front() {
                record(&p, delays);
            }
        }
        self.packets.front().map(|p| p.end)
    }

    /// The next viewer to visit, the step moved on past it. Only while
    /// `step` is below what [`Run::retire`] returned.
    #[inline]
    pub fn advance(&mut self) -> u32 {
        let key = self.keys[self.pos];
        self.step += 1;
        self.pos += 1;
        if self.pos == self.keys.len() {
            self.pos = 0;
        }
        key
    }

    /// Record the copies this turn made of the packets still in the run.
    pub fn record_turn(&mut self, delays: &mut Vec<ForwardDelay>) {
        for p in self.packets.iter_mut() {
            record(p, delays);
            p.copies = 0;
        }
    }
}

fn record(p: &RunPacket, delays: &mut Vec<ForwardDelay>) {
    if p.copies > 0 {
        delays.push(ForwardDelay {
            received: p.fwd.received,
            copies: p.copies,
        });
    }
}

/// The shard's outgoing fan-out state.
pub(super) struct Egress {
    /// Packets due to local viewers, from local publishers and other
    /// shards, in arrival order, not yet in the run.
    pub pending: Vec<FwdPacket>,
    /// Per destination shard, the batch being built this turn.
    out_batches: Vec<Vec<FwdPacket>>,
    pub run: Run,
    /// Streams that lost a local viewer since the run last looked (see
    /// [`Run::stale`]); kept apart from the run, which is out of its place
    /// while it goes round.
    pub left: Vec<StreamId>,
    /// This turn's forwarded packets.
    pub delays: Vec<ForwardDelay>,
    /// Packets refused by [`LOCAL_BACKLOG`] since the shard last counted.
    pub shed: u64,
}

impl Egress {
    pub fn new(shards: usize) -> Self {
        Egress {
            pending: Vec::new(),
            out_batches: (0..shards).map(|_| Vec::new()).collect(),
            run: Run::default(),
            left: Vec::new(),
            delays: Vec::new(),
            shed: 0,
        }
    }

    /// Mark `run` stale if its stream lost a viewer since it last looked.
    pub fn note_left(&mut self, run: &mut Run) {
        if self.left.drain(..).any(|s| Some(s) == run.stream) {
            run.stale = true;
        }
    }

    /// Whether packets wait for local viewers.
    pub fn backlog(&self) -> bool {
        !self.pending.is_empty() || !self.run.packets.is_empty()
    }

    /// Queue a publisher's packet for the local viewers of its stream and
    /// for every other shard that has some.
    #[inline]
    pub fn route(&mut self, own: ShardId, stream: &StreamShared, fwd: FwdPacket) {
        let local = stream.viewers_on(own) > 0 && self.admit_local(&fwd);
        for (shard, batch) in self.out_batches.iter_mut().enumerate() {
            let sid = ShardId(shard as u16);
            if sid == own {
                if local {
                    self.pending.push(fwd.clone());
                }
            } else if stream.viewers_on(sid) > 0 {
                batch.push(fwd.clone());
            }
        }
    }

    /// A batch of packets from a publisher on another shard.
    pub fn take_fanout(&mut self, batch: Vec<FwdPacket>) {
        for p in batch {
            if self.admit_local(&p) {
                self.pending.push(p);
            }
        }
    }

    /// Whether a packet for this shard's own viewers may wait for them:
    /// past 3/4 of [`LOCAL_BACKLOG`] only audio may, at it nothing; what is
    /// refused is counted in `shed`.
    fn admit_local(&mut self, p: &FwdPacket) -> bool {
        let waiting = self.pending.len() + self.run.packets.len();
        if waiting >= LOCAL_BACKLOG
            || (waiting >= LOCAL_BACKLOG / 4 * 3 && p.kind != MediaKind::Audio)
        {
            self.shed += 1;
            return false;
        }
        true
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

    use str0m::media::MediaKind;

    use super::*;

    fn fwd(stream: u32, seq: u64) -> FwdPacket {
        FwdPacket::for_test(StreamId(stream), MediaKind::Video, seq)
    }

    /// Steps the run `n` times (or until it is done), noting what each
    /// visited viewer gets: every packet still in the run.
    fn go(run: &mut Run, n: usize, got: &mut Vec<(u32, Vec<u64>)>) -> bool {
        let mut delays = Vec::new();
        for _ in 0..n {
            if run.retire(&mut delays).is_none() {
                return false;
            }
            let key = run.advance();
            got.push((key, run.packets.iter().map(|p| p.fwd.seq).collect()));
        }
        true
    }

    #[test]
    fn a_packet_joining_a_run_travels_with_it_then_goes_on_round() {
        let mut run = Run::default();
        run.start(StreamId(1), &[10, 11, 12, 13]);
        assert!(run.admits(&fwd(1, 1)));
        run.push(fwd(1, 1));
        let mut got = Vec::new();
        assert!(go(&mut run, 2, &mut got));
        // Packet 2 arrives after two viewers had packet 1.
        assert!(run.admits(&fwd(1, 2)));
        assert!(!run.admits(&fwd(2, 9)), "another stream waits its turn");
        run.push(fwd(1, 2));
        assert!(!go(&mut run, 10, &mut got));
        assert_eq!(
            got,
            [
                (10, vec![1]),
                (11, vec![1]),
                (12, vec![1, 2]),
                (13, vec![1, 2]),
                (10, vec![2]),
                (11, vec![2]),
            ]
        );
        // Each viewer had each packet once, in order.
        for key in 10..14 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|g| g.0 == key)
                .flat_map(|g| g.1.clone())
                .collect();
            assert_eq!(seqs, [1, 2], "viewer {key}");
        }
    }

    #[test]
    fn after_its_join_rounds_a_run_takes_no_more_and_the_next_run_has_todays_viewers() {
        let mut run = Run::default();
        run.start(StreamId(1), &[10, 11]);
        let mut got = Vec::new();
        // A packet arrives at every step, so the run would never end if it
        // took them all: a viewer that joined meanwhile would wait forever.
        let mut seq = 0;
        while run.admits(&fwd(1, seq + 1)) {
            seq += 1;
            run.push(fwd(1, seq));
            go(&mut run, 1, &mut got);
        }
        assert_eq!(seq as usize, 2 * JOIN_ROUNDS);
        // What is in the run finishes its round; nothing more joins.
        assert!(!go(&mut run, 100, &mut got));
        for key in [10, 11] {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|g| g.0 == key)
                .flat_map(|g| g.1.clone())
                .collect();
            let want: Vec<u64> = (1..=seq).collect();
            assert_eq!(seqs, want, "viewer {key}: each once, in order");
        }
        // The next packet starts a run over the viewers the stream has now.
        assert!(run.admits(&fwd(1, seq + 1)));
        run.start(StreamId(1), &[11, 12]);
        run.push(fwd(1, seq + 1));
        got.clear();
        go(&mut run, 5, &mut got);
        assert_eq!(got, [(11, vec![seq + 1]), (12, vec![seq + 1])]);
    }

    #[test]
    fn a_viewer_leaving_the_runs_stream_makes_the_run_check_each_viewer() {
        let mut e = Egress::new(1);
        let mut run = Run::default();
        run.start(StreamId(1), &[10, 11]);
        e.left.push(StreamId(2));
        e.note_left(&mut run);
        assert!(!run.stale && e.left.is_empty(), "another stream's viewer");
        e.left.extend([StreamId(2), StreamId(1)]);
        e.note_left(&mut run);
        assert!(run.stale && e.left.is_empty());
        run.start(StreamId(1), &[11]);
        assert!(!run.stale, "a new run has today's viewers");
    }

    #[test]
    fn a_shard_far_behind_its_own_viewers_drops_video_then_everything_and_counts() {
        let own = ShardId(0);
        let stream = StreamShared::new(StreamId(1), "s");
        stream.add_viewer(own);
        let mut e = Egress::new(1);
        let audio = |seq| FwdPacket::for_test(StreamId(1), MediaKind::Audio, seq);
        for seq in 0..(LOCAL_BACKLOG / 4 * 3) as u64 {
            e.route(own, &stream, fwd(1, seq));
        }
        assert_eq!((e.pending.len(), e.shed), (LOCAL_BACKLOG / 4 * 3, 0));
        // Past 3/4: video is refused, audio still queued.
        e.route(own, &stream, fwd(1, 1));
        e.route(own, &stream, audio(2));
        assert_eq!(e.shed, 1);
        assert_eq!(e.pending.last().map(|p| p.kind), Some(MediaKind::Audio));
        // What waits in the run counts too; at the limit nothing is queued,
        // from this shard's publishers or from other shards.
        let mut run = std::mem::take(&mut e.run);
        run.start(StreamId(1), &[10]);
        for p in e.pending.drain(..LOCAL_BACKLOG / 4) {
            run.push(p);
        }
        e.run = run;
        while e.pending.len() + e.run.packets.len() < LOCAL_BACKLOG {
            e.route(own, &stream, audio(3));
        }
        let shed = e.shed;
        e.route(own, &stream, audio(4));
        e.take_fanout(vec![audio(5), fwd(1, 6)]);
        assert_eq!(e.shed, shed + 3);
        assert_eq!(e.pending.len() + e.run.packets.len(), LOCAL_BACKLOG);
    }

    #[test]
    fn a_run_without_viewers_ends_at_once_and_records_no_copies() {
        let mut run = Run::default();
        run.start(StreamId(1), &[]);
        run.push(fwd(1, 1));
        assert!(run.admits(&fwd(1, 2)));
        run.push(fwd(1, 2));
        let mut delays = Vec::new();
        assert_eq!(run.retire(&mut delays), None);
        assert!(run.packets.is_empty() && delays.is_empty());
    }

    #[test]
    fn copies_are_recorded_when_a_packet_leaves_the_run_or_the_turn_ends() {
        let mut run = Run::default();
        run.start(StreamId(1), &[10, 11, 12]);
        run.push(fwd(1, 1));
        let mut delays = Vec::new();
        for _ in 0..2 {
            assert_eq!(run.retire(&mut delays), Some(3));
            run.advance();
            run.packets[0].copies += 1;
        }
        run.record_turn(&mut delays);
        assert_eq!(delays.iter().map(|d| d.copies).collect::<Vec<_>>(), [2]);
        run.retire(&mut delays);
        run.advance();
        run.packets[0].copies += 1;
        assert_eq!(run.retire(&mut delays), None);
        assert_eq!(delays.iter().map(|d| d.copies).collect::<Vec<_>>(), [2, 1]);
    }

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
