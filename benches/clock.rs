//! What one clock read costs: ratewindow's clocks, std's `SystemTime::now` and, for reference,
//! governor's default (quanta) clock, which its limiter reads on every decision.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion, Throughput};
use ratewindow::{Clock, CoarseClock, SystemClock};

pub(crate) fn bench_all(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("SystemClock"), |b| {
        let clock = SystemClock;
        b.iter(|| black_box(black_box(&clock).now_ms()))
    });
    group.bench_function(BenchmarkId::from_parameter("CoarseClock"), |b| {
        let clock = CoarseClock;
        b.iter(|| black_box(black_box(&clock).now_ms()))
    });
    group.bench_function(BenchmarkId::from_parameter("SystemTime::now"), |b| {
        b.iter(|| black_box(SystemTime::now()))
    });
    group.bench_function(BenchmarkId::from_parameter("governor_quanta"), |b| {
        use governor::clock::Clock as _;
        let clock = governor::clock::DefaultClock::default();
        b.iter(|| black_box(black_box(&clock).now()))
    });
    group.finish();
}
