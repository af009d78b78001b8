//! A spray of 10 million unique keys against a `MemoryLimiter` capped at 1 million, run as the
//! `key_spray` example in a process of its own: this binary's resident memory is shared with
//! every test running in parallel, the child's is the limiter's alone.

use std::collections::HashMap;
use std::process::Command;

use crate::support::example_binary;

const KEYS: u64 = 10_000_000;
const MAX_KEYS: u64 = 1_000_000;
/// The bound on the child's peak resident memory, per key of the cap. One quota's entry is a
/// 16-byte key id and an 8-byte counter plus a control byte in a hash table at most 8/7 full
/// after rounding its buckets up to a power of two: 25 bytes times at most 16/7, 57 bytes.
const PEAK_BYTES_PER_CAPPED_KEY: u64 = 64;
/// The process without the table: code, stacks, allocator metadata (about 2.5 MB measured).
const BASELINE_BYTES: u64 = 16 << 20;

#[test]
fn ten_million_keys_stay_within_the_key_cap_in_memory_and_in_decisions() {
    let binary = example_binary("key_spray", "");
    let output = Command::new(&binary)
        .args([KEYS.to_string(), MAX_KEYS.to_string()])
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The child checks every decision itself: resident keys' exact counts, admitted or
    // `CapacityExhausted` for every sprayed key, room again once the windows end.
    assert!(
        output.status.success(),
        "key_spray failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let figures: HashMap<&str, f64> = stdout
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name, value.parse().ok()?))
        })
        .collect();
    let figure = |name: &str| {
        *figures
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
    };
    assert_eq!(figure("keys") as u64, KEYS);
    // With 1 000 resident keys, the rest of the cap went to sprayed keys, and the others were
    // refused.
    let admitted = figure("admitted") as u64;
    assert!(admitted <= MAX_KEYS - 1_000, "{stdout}");
    assert!(admitted >= MAX_KEYS * 9 / 10, "{stdout}");
    assert_eq!(admitted + figure("refused") as u64, KEYS, "{stdout}");
    assert!(figure("tracked") as u64 <= MAX_KEYS, "{stdout}");
    let peak = figure("peak_rss") as u64;
    let bound = BASELINE_BYTES + PEAK_BYTES_PER_CAPPED_KEY * MAX_KEYS;
    assert!(
        peak <= bound,
        "peak RSS {peak} bytes above the bound of {bound}:\n{stdout}"
    );
    assert!(
        figure("bytes_per_key") <= PEAK_BYTES_PER_CAPPED_KEY as f64,
        "{stdout}"
    );
}
