//! DTLS handshakes take their turn with forwarding.
//!
//! A handshake datagram costs the shard far more than a forwarded copy: the
//! client's second flight is an ECDHE, the verification of its
//! CertificateVerify and the key schedule, about 0.1–0.3 ms. A turn took
//! every datagram the socket held, so a join storm could put dozens of them
//! ahead of the fan-out of a packet already read: viewers already watching
//! saw p99 go from under 3 ms to 12–210 ms while 1,000 others joined
//! (BENCHMARKS.md, "A join storm waits its turn"). Now a turn hands str0m at
//! most [`HANDSHAKE_BUDGET`] handshake datagrams; the rest wait here, in
//! arrival order, for the next turns. The queue is bounded in datagrams and
//! in bytes: past it a datagram is dropped and counted, and the peer's DTLS
//! retransmits it.

use std::collections::VecDeque;
use std::net::SocketAddr;

use str0m::net::Protocol;

use crate::ids::SessionId;

/// Handshake datagrams a turn hands str0m, deferred ones first.
pub(super) const HANDSHAKE_BUDGET: usize = 2;

/// Deferred handshake datagrams a shard holds at most.
pub(super) const HANDSHAKE_QUEUE: usize = 256;

/// Bytes of deferred handshake datagrams a shard holds at most: 256 of a
/// browser's (at most a path MTU each), but not 256 of 64 KiB.
pub(super) const HANDSHAKE_QUEUE_BYTES: usize = 512 * 1024;

/// Deferred datagrams one session may hold: a client's flight, resent a few
/// times, is far fewer; one peer (or a sender forging its address) cannot
/// take the queue from everyone else joining.
pub(super) const HANDSHAKE_QUEUE_PER_SESSION: usize = 16;

/// A handshake datagram kept for a later turn.
pub(super) struct Deferred {
    pub key: u32,
    /// The session it came for: a key freed and reused since names another.
    pub id: SessionId,
    /// How it reached the shard, as str0m is told (see `flow::Via`).
    pub proto: Protocol,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// The turn's handshake budget and the datagrams waiting for one.
#[derive(Default)]
pub(super) struct Handshakes {
    queue: VecDeque<Deferred>,
    bytes: usize,
    spent: usize,
}

/// What became of a handshake datagram offered to the budget.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Hand it to str0m now.
    Now,
    /// Kept for a later turn.
    Deferred,
    /// The queue is full: dropped.
    Dropped,
}

impl Handshakes {
    /// A datagram of `len` bytes for session `id` (at `key`), whose
    /// handshake is under way: now, if this turn has budget and nothing
    /// older waits; else queued, if there is room, in all and for the session.
    pub fn admit(
        &mut self,
        key: u32,
        id: SessionId,
        len: usize,
        d: impl FnOnce() -> Deferred,
    ) -> Admit {
        if self.queue.is_empty() && self.spent < HANDSHAKE_BUDGET {
            self.spent += 1;
            return Admit::Now;
        }
        if self.queue.len() >= HANDSHAKE_QUEUE || self.bytes + len > HANDSHAKE_QUEUE_BYTES {
            return Admit::Dropped;
        }
        let held = self.queue.iter().filter(|q| q.key == key && q.id == id);
        if held.count() >= HANDSHAKE_QUEUE_PER_SESSION {
            return Admit::Dropped;
        }
        self.bytes += len;
        self.queue.push_back(d());
        Admit::Deferred
    }

    /// A new turn: its budget, spent first on what waits.
    pub fn next_turn(&mut self) {
        self.spent = 0;
    }

    /// The next waiting datagram, while the turn has budget.
    pub fn next_deferred(&mut self) -> Option<Deferred> {
        if self.spent >= HANDSHAKE_BUDGET {
            return None;
        }
        let d = self.queue.pop_front()?;
        self.bytes -= d.data.len();
        self.spent += 1;
        Some(d)
    }

    /// Whether datagrams wait for a turn.
    pub fn backlog(&self) -> bool {
        !self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(n: u8, len: usize) -> Deferred {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut data = vec![n; len];
        data[0] = 22;
        Deferred {
            key: u32::from(n),
            id: SessionId(u64::from(n)),
            proto: Protocol::Udp,
            from: a,
            to: a,
            data,
        }
    }

    fn deferred(n: u8) -> Deferred {
        sized(n, 2)
    }

    /// `d` offered to `h` as the shard offers a datagram.
    fn offer(h: &mut Handshakes, d: Deferred) -> Admit {
        let (key, id, len) = (d.key, d.id, d.data.len());
        h.admit(key, id, len, || d)
    }

    /// Handshakes whose turn has spent its budget on datagrams handed over now.
    fn budget_spent() -> Handshakes {
        let mut h = Handshakes::default();
        for _ in 0..HANDSHAKE_BUDGET {
            assert_eq!(offer(&mut h, deferred(0)), Admit::Now);
        }
        h
    }

    #[test]
    fn a_turn_takes_its_budget_then_defers_in_order_and_the_next_turns_go_first() {
        let mut h = budget_spent();
        assert_eq!(offer(&mut h, deferred(1)), Admit::Deferred);
        assert_eq!(offer(&mut h, deferred(2)), Admit::Deferred);
        assert_eq!(offer(&mut h, deferred(3)), Admit::Deferred);
        assert!(h.backlog());
        h.next_turn();
        // Budget left but older datagrams wait: a new one queues behind them.
        assert_eq!(h.next_deferred().map(|d| d.key), Some(1));
        assert_eq!(offer(&mut h, deferred(4)), Admit::Deferred);
        assert_eq!(h.next_deferred().map(|d| d.key), Some(2));
        assert!(h.next_deferred().is_none(), "the turn's budget is spent");
        h.next_turn();
        assert_eq!(h.next_deferred().map(|d| d.key), Some(3));
        assert_eq!(h.next_deferred().map(|d| d.key), Some(4));
        assert!(!h.backlog());
        h.next_turn();
        assert_eq!(offer(&mut h, deferred(5)), Admit::Now);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut h = budget_spent();
        // From as many sessions, none past its own share.
        for n in 0..HANDSHAKE_QUEUE {
            assert_eq!(offer(&mut h, deferred(n as u8)), Admit::Deferred);
        }
        assert_eq!(offer(&mut h, deferred(2)), Admit::Dropped);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let mut h = budget_spent();
        let big = 60 * 1024;
        let fit = HANDSHAKE_QUEUE_BYTES / big;
        for _ in 0..fit {
            assert_eq!(offer(&mut h, sized(1, big)), Admit::Deferred);
        }
        assert_eq!(offer(&mut h, sized(2, big)), Admit::Dropped);
        // Taking one out makes room for one again.
        h.next_turn();
        assert!(h.next_deferred().is_some());
        assert_eq!(offer(&mut h, sized(3, big)), Admit::Deferred);
    }

    #[test]
    fn one_session_cannot_take_the_whole_queue() {
        let mut h = budget_spent();
        for _ in 0..HANDSHAKE_QUEUE_PER_SESSION {
            assert_eq!(offer(&mut h, deferred(1)), Admit::Deferred);
        }
        assert_eq!(offer(&mut h, deferred(1)), Admit::Dropped);
        // Another session still gets its place.
        assert_eq!(offer(&mut h, deferred(2)), Admit::Deferred);
        // A reused key with a new session id is another session.
        let mut reused = deferred(1);
        reused.id = SessionId(99);
        assert_eq!(offer(&mut h, reused), Admit::Deferred);
    }
}
