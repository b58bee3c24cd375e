//! Criterion: the Sans-IO forward path (SRTP in, decrypt once, fan out, SRTP
//! out) per forwarded packet, for several viewer counts. No sockets.

// criterion_group! declares an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_dataplane::testkit::Harness;

const PER_TURN: usize = 8;

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for viewers in [10usize, 100, 500] {
        let mut h = Harness::new();
        let publisher = h.add_publisher();
        for _ in 0..viewers {
            let v = h.add_viewer();
            h.peers[v].count_only = true;
        }
        h.connect_all(Duration::from_secs(30));
        group.throughput(Throughput::Elements((PER_TURN * viewers) as u64));
        group.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = h.publisher_datagrams(publisher, PER_TURN, 1100);
                    let t = Instant::now();
                    h.feed(publisher, &d);
                    total += t.elapsed();
                    h.shard.transmits().clear();
                    h.now += Duration::from_millis(1);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
