//! Heap a viewer session keeps on the shard, counted by a wrapping global
//! allocator: live bytes grow with 50 count-only viewers watching a stream,
//! then the viewers' own client-side sessions are dropped, and what is left
//! is the shard's (the harness's sessions are configured by the testkit, not
//! by the control plane, so the figure is not the server's; BENCHMARKS.md has
//! the whole server's and the heap profile this guards).

// A counting allocator is a GlobalAlloc, which only unsafe code implements.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sluice_dataplane::testkit::Harness;

struct Live;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

/// One second of a publisher's video, 4 packets of 900 bytes every 20 ms.
fn one_second(h: &mut Harness, publisher: usize) {
    for _ in 0..50 {
        let d = h.publisher_datagrams(publisher, 4, 900);
        h.feed(publisher, &d);
        sluice_dataplane::recycle(h.shard.transmits());
        h.advance(Duration::from_millis(20));
    }
}

#[test]
fn a_count_only_viewer_keeps_under_60_kib_of_heap_on_the_shard() {
    let mut h = Harness::new();
    let publisher = h.add_publisher();
    h.connect_all(Duration::from_secs(5));
    one_second(&mut h, publisher);
    let before = LIVE.load(Ordering::Relaxed);
    let viewers = 50;
    for _ in 0..viewers {
        let v = h.add_viewer();
        h.peers[v].count_only = true;
    }
    h.connect_all(Duration::from_secs(5));
    one_second(&mut h, publisher);
    one_second(&mut h, publisher);
    assert_eq!(h.shard.counters().direct_sessions, viewers as u64);
    // The viewers' own str0m sessions are the client's, not the shard's.
    h.peers.truncate(h.peers.len() - viewers);
    let after = LIVE.load(Ordering::Relaxed);
    let per_viewer = (after - before) as f64 / viewers as f64 / 1024.0;
    println!("{per_viewer:.1} KiB of heap per viewer on the shard");
    assert!(
        per_viewer > 4.0,
        "{per_viewer:.1} KiB: the count missed the sessions"
    );
    // 83.0 KiB before the handshake state and str0m's idle buffers were
    // cut, 55.0 after (BENCHMARKS.md, "Memory per viewer: handshake state,
    // idle buffers").
    assert!(per_viewer <= 60.0, "{per_viewer:.1} KiB of heap per viewer");
}
