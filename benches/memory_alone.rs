//! The in-memory cases of `benches/memory.rs` in a binary of their own: the same calls as in the
//! `benches` binary, from a caller that has nothing else to inline, so the two binaries together
//! show whether the decision's speed depends on its caller. `cargo bench --bench memory`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "memory.rs"]
mod memory;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory::bench_all
}
criterion_main!(benches);
