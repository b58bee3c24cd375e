//! Heap allocations on the Sans-IO forward path in steady state, counted by a
//! wrapping global allocator.
//!
//! Nothing may be allocated per forwarded packet: viewers are sent to by
//! sluice's own SRTP sender (`srtp_sender`), which writes each datagram into a
//! buffer the io backend recycled after sending an earlier one. str0m
//! allocates the payload `Arc` and some bookkeeping of each packet it
//! receives from the publisher; the bound below allows exactly that.

// A counting allocator is a GlobalAlloc, which only unsafe code implements.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_dataplane::testkit::Harness;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forwarding_allocates_nothing_per_forwarded_packet_in_steady_state() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    let viewers = 20;
    for _ in 0..viewers {
        let v = h.add_viewer();
        h.peers[v].count_only = true;
    }
    h.connect_all(Duration::from_secs(5));
    // Warm up queues, caches and scratch buffers.
    for _ in 0..20 {
        let d = h.publisher_datagrams(publisher, 8, 1100);
        h.feed(publisher, &d);
        // As an io backend does once the datagrams are sent.
        sluice_dataplane::recycle(h.shard.transmits());
        h.now += Duration::from_millis(1);
    }
    let turns = 50;
    let per_turn = 8;
    let mut measured = 0;
    let mut forwarded = 0;
    for _ in 0..turns {
        let d = h.publisher_datagrams(publisher, per_turn, 1100);
        let before_fwd = h.shard.counters().rtp_forwarded;
        let before = ALLOCS.load(Ordering::Relaxed);
        let produced = h.feed(publisher, &d);
        measured += ALLOCS.load(Ordering::Relaxed) - before;
        forwarded += h.shard.counters().rtp_forwarded - before_fwd;
        assert!(produced >= per_turn * viewers, "{produced}");
        // As an io backend does once the datagrams are sent.
        sluice_dataplane::recycle(h.shard.transmits());
        h.now += Duration::from_millis(1);
    }
    let received = (turns * per_turn) as u64;
    assert_eq!(forwarded, received * viewers as u64);
    let per_packet = measured as f64 / forwarded as f64;
    // Per received packet the payload Arc and str0m's own bookkeeping on the
    // publisher side; nothing per forwarded packet: each is written into a
    // buffer the io backend gave back after its send.
    let allowed = 3 * received;
    println!("allocations: {measured} for {forwarded} forwarded packets ({per_packet:.3} each)");
    assert!(
        measured <= allowed,
        "{measured} allocations for {forwarded} forwarded packets ({per_packet:.3} each), allowed {allowed}"
    );
}
