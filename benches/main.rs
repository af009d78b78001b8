//! Criterion benchmarks: ratewindow's `MemoryLimiter` against governor's keyed limiter, plus the
//! cost of a clock read. `cargo bench --bench benches`. With `--features redis`, also the Redis
//! backend against a raw `INCR`, an `INCR` + `PEXPIREAT` pipeline and a 3-line `INCRBY` script
//! on a redis-server (and a Redis Cluster) the bench spawns itself, ending with a summary table
//! per group: `cargo bench --bench benches --features redis -- redis` (about 4 minutes). With
//! `--features tower`, also the tower layer's overhead per request:
//! `cargo bench --bench benches --features tower -- layer`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

mod clock;
#[cfg(all(feature = "tower", feature = "http"))]
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;

/// Short, bounded runs: the whole suite finishes in a few minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

fn bench_all(c: &mut Criterion) {
    memory::bench_all(c);
    clock::bench_all(c);
    #[cfg(feature = "redis")]
    redis::bench_all(c);
    #[cfg(all(feature = "tower", feature = "http"))]
    layer::bench_all(c);
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_all
}
criterion_main!(benches);
