//! Shard counters: kept as plain integers in the Sans-IO core, published once
//! per loop turn to atomics that the control plane reads for /metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Counters owned by one shard's core.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)*
        }

        /// The published copy of [`Counters`], readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $(pub $name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Overwrite with the core's latest values.
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }

            /// Read a consistent-enough copy.
            pub fn snapshot(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Counters {
            /// (name, help, value) of every counter, for exposition.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name),)*]
            }
        }
    };
}

counters! {
    rx_packets: "datagrams received",
    rx_bytes: "bytes received",
    tx_packets: "datagrams sent",
    tx_bytes: "bytes sent",
    rtp_in: "RTP packets received from publishers (after SRTP)",
    rtp_forwarded: "RTP packets written to viewers",
    drop_malformed: "datagrams dropped: not STUN/DTLS/RTP/RTCP",
    drop_unknown_flow: "datagrams dropped: from an address no session owns",
    drop_session_error: "datagrams a session rejected",
    drop_fanout_full: "fan-out batches dropped: destination shard's queue full",
    drop_no_codec: "packets dropped: the viewer did not negotiate the codec",
    drop_send_error: "datagrams the kernel refused to send",
    fanout_batches_out: "fan-out batches sent to other shards",
    fanout_packets_in: "packets received from other shards",
    keyframe_requests: "keyframe requests (PLI) sent to publishers",
    layer_switch_requests: "simulcast layer changes asked for by viewers",
    sessions_added: "sessions placed on this shard",
    sessions_removed: "sessions removed from this shard",
    sessions_timed_out: "sessions removed for silence or failed setup",
    loop_turns: "event loop turns",
}
