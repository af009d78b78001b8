//! Every header style against exact text, on decisions made by a real `MemoryLimiter` with a
//! `ManualClock`, and a property test that parses the structured fields back.

use std::time::Duration;

use ::http::{HeaderMap, StatusCode};
use proptest::prelude::*;

use super::partition::tests::base64_decode;
use super::sf::MAX_INTEGER;
use super::*;
use crate::{Alignment, Decision, ManualClock, MemoryLimiter, Quota};

/// 2027-01-15T08:29:37Z: 23 s before a minute ends, 1823 s before an hour ends.
const SAMPLE_NOW_MS: u64 = 1_800_001_777_000;
const SAMPLE_KEY: &str = "otr_your_key";

/// The header names the writers can emit, in the order they write them.
const ORDER: [&str; 8] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "ratelimit-policy",
    "ratelimit",
    "retry-after",
];

fn limiter_at(quotas: &[Quota], now_ms: u64) -> (MemoryLimiter<ManualClock>, ManualClock) {
    let clock = ManualClock::at_millis(now_ms);
    let mut builder = MemoryLimiter::builder(quotas[0]);
    for &quota in &quotas[1..] {
        builder = builder.quota(quota);
    }
    (builder.clock(clock.clone()).build().unwrap(), clock)
}

/// The samples of the module docs: 100 per minute and 1000 per hour; the 43rd request of the
/// minute (200) and the 101st (429), both at [`SAMPLE_NOW_MS`].
fn samples() -> (Decision, Decision) {
    let quotas = [
        Quota::per_minute(100).unwrap(),
        Quota::per_hour(1000).unwrap(),
    ];
    let (limiter, _clock) = limiter_at(&quotas, SAMPLE_NOW_MS);
    let decisions: Vec<Decision> = (0..101)
        .map(|_| limiter.check_sync(SAMPLE_KEY).unwrap())
        .collect();
    let (ok, denied) = (decisions[42], decisions[100]);
    assert!(ok.is_allowed() && !denied.is_allowed());
    (ok, denied)
}

/// The headers as `name: value` lines in writing order; fails on a header it does not know or
/// on a header with several values.
fn render(headers: &HeaderMap) -> String {
    let mut text = String::new();
    for name in ORDER {
        let mut values = headers.get_all(name).iter();
        if let Some(value) = values.next() {
            text += &format!("{name}: {}\n", value.to_str().unwrap());
        }
        assert!(values.next().is_none(), "{name} has several values");
    }
    assert_eq!(
        headers.keys().len(),
        text.lines().count(),
        "unexpected headers in {headers:?}"
    );
    text
}

fn written(decision: &Decision, style: HeaderStyle, pk: Option<&PartitionKey>) -> String {
    let mut headers = HeaderMap::new();
    write_headers(decision, style, pk, &mut headers);
    render(&headers)
}

fn ietf() -> HeaderStyle {
    HeaderStyle::ietf(IetfDraft::Draft10)
}

#[test]
fn x_ratelimit_style_exact() {
    let (ok, denied) = samples();
    assert_eq!(
        written(&ok, HeaderStyle::x_ratelimit(), None),
        "x-ratelimit-limit: 100\n\
         x-ratelimit-remaining: 57\n\
         x-ratelimit-reset: 1800001800\n"
    );
    assert_eq!(
        written(&denied, HeaderStyle::default(), None),
        "x-ratelimit-limit: 100\n\
         x-ratelimit-remaining: 0\n\
         x-ratelimit-reset: 1800001800\n\
         retry-after: 23\n"
    );
    // No partition key in this style: pk is ignored.
    let pk = PartitionKey::hash_of(SAMPLE_KEY);
    assert_eq!(
        written(&ok, HeaderStyle::x_ratelimit(), Some(&pk)),
        written(&ok, HeaderStyle::x_ratelimit(), None)
    );
}

#[test]
fn ietf_style_exact() {
    let (ok, denied) = samples();
    assert_eq!(
        written(&ok, ietf(), None),
        "ratelimit-policy: \"per-minute\";q=100;w=60, \"per-hour\";q=1000;w=3600\n\
         ratelimit: \"per-minute\";r=57;t=23, \"per-hour\";r=957;t=1823\n"
    );
    assert_eq!(
        written(&denied, ietf(), None),
        "ratelimit-policy: \"per-minute\";q=100;w=60, \"per-hour\";q=1000;w=3600\n\
         ratelimit: \"per-minute\";r=0;t=23, \"per-hour\";r=900;t=1823\n\
         retry-after: 23\n"
    );
}

#[test]
fn ietf_style_with_partition_key_exact() {
    let (ok, denied) = samples();
    let pk = PartitionKey::hash_of(SAMPLE_KEY);
    let b64 = pk.as_base64();
    assert_eq!(
        written(&ok, ietf(), Some(&pk)),
        format!(
            "ratelimit-policy: \"per-minute\";q=100;w=60;pk=:{b64}:, \
             \"per-hour\";q=1000;w=3600;pk=:{b64}:\n\
             ratelimit: \"per-minute\";r=57;t=23;pk=:{b64}:, \
             \"per-hour\";r=957;t=1823;pk=:{b64}:\n"
        )
    );
    assert_eq!(
        written(&denied, ietf(), Some(&pk)),
        format!(
            "ratelimit-policy: \"per-minute\";q=100;w=60;pk=:{b64}:, \
             \"per-hour\";q=1000;w=3600;pk=:{b64}:\n\
             ratelimit: \"per-minute\";r=0;t=23;pk=:{b64}:, \
             \"per-hour\";r=900;t=1823;pk=:{b64}:\n\
             retry-after: 23\n"
        )
    );
    assert!(!written(&ok, ietf(), Some(&pk)).contains(SAMPLE_KEY));
}

#[test]
fn github_extras_exact() {
    let (ok, denied) = samples();
    let style = HeaderStyle::x_ratelimit().with_github_extras();
    assert_eq!(
        written(&ok, style, None),
        "x-ratelimit-limit: 100\n\
         x-ratelimit-remaining: 57\n\
         x-ratelimit-reset: 1800001800\n\
         x-ratelimit-used: 43\n\
         x-ratelimit-resource: per-minute\n"
    );
    assert_eq!(
        written(&denied, style, None),
        "x-ratelimit-limit: 100\n\
         x-ratelimit-remaining: 0\n\
         x-ratelimit-reset: 1800001800\n\
         x-ratelimit-used: 100\n\
         x-ratelimit-resource: per-minute\n\
         retry-after: 23\n"
    );
    assert_eq!(
        written(&denied, HeaderStyle::github_extras(), None),
        "x-ratelimit-used: 100\n\
         x-ratelimit-resource: per-minute\n\
         retry-after: 23\n"
    );
}

#[test]
fn every_style_at_once_exact() {
    let (_, denied) = samples();
    let style = HeaderStyle::ietf(IetfDraft::Draft10)
        .with_github_extras()
        .with_x_ratelimit();
    assert_eq!(
        written(&denied, style, None),
        "x-ratelimit-limit: 100\n\
         x-ratelimit-remaining: 0\n\
         x-ratelimit-reset: 1800001800\n\
         x-ratelimit-used: 100\n\
         x-ratelimit-resource: per-minute\n\
         ratelimit-policy: \"per-minute\";q=100;w=60, \"per-hour\";q=1000;w=3600\n\
         ratelimit: \"per-minute\";r=0;t=23, \"per-hour\";r=900;t=1823\n\
         retry-after: 23\n"
    );
}

#[test]
fn a_named_limiters_policies_start_with_its_name() {
    let quotas = [
        Quota::per_minute(100).unwrap(),
        Quota::per_hour(1000).unwrap(),
    ];
    let (free, _clock) = limiter_at(&quotas, SAMPLE_NOW_MS);
    let pro = free
        .plan("pro_2", [quotas[0], Quota::per_hour(5).unwrap()])
        .unwrap();
    for _ in 0..5 {
        pro.check_sync(SAMPLE_KEY).unwrap();
    }
    let denied = pro.check_sync(SAMPLE_KEY).unwrap();
    assert_eq!(denied.name(), Some("pro_2"));
    let style = HeaderStyle::ietf(IetfDraft::Draft10).with_github_extras();
    assert_eq!(
        written(&denied, style, None),
        "x-ratelimit-used: 5\n\
         x-ratelimit-resource: pro_2-per-hour\n\
         ratelimit-policy: \"pro_2-per-minute\";q=100;w=60, \"pro_2-per-hour\";q=5;w=3600\n\
         ratelimit: \"pro_2-per-minute\";r=95;t=23, \"pro_2-per-hour\";r=0;t=1823\n\
         retry-after: 1823\n"
    );
    // The plan shares the counters, not the name.
    assert_eq!(free.peek_sync(SAMPLE_KEY).unwrap().name(), None);
}

#[test]
fn three_quotas_odd_windows_and_a_repeated_one() {
    // 2027-01-15T08:00:00.250Z; windows named in ms and s, then a window repeated.
    let quotas = [
        Quota::from_millis(5, 1_500).unwrap(),
        Quota::from_millis(20, 90_000).unwrap(),
        Quota::per_day(1_000).unwrap(),
    ];
    let now = 1_800_000_000_250;
    let (limiter, _) = limiter_at(&quotas, now);
    limiter.check_n_sync("k", 3).unwrap();
    let ok = limiter.check_sync("k").unwrap();
    // 1.5 s windows end at multiples of 1500 ms: 1_800_000_001_500, 1.25 s away -> t=2, w=2.
    // 90 s windows: 1_800_000_000_000 is a multiple of 90_000 (20_000_000_000 windows), so the
    // window ends 90 s after it: t=90 (89.75 s rounded up). The day ends 2027-01-16T00:00Z.
    assert_eq!(
        written(&ok, ietf().with_x_ratelimit().with_github_extras(), None),
        "x-ratelimit-limit: 5\n\
         x-ratelimit-remaining: 1\n\
         x-ratelimit-reset: 1800000002\n\
         x-ratelimit-used: 4\n\
         x-ratelimit-resource: per-1500ms\n\
         ratelimit-policy: \"per-1500ms\";q=5;w=2, \"per-90s\";q=20;w=90, \
         \"per-day\";q=1000;w=86400\n\
         ratelimit: \"per-1500ms\";r=1;t=2, \"per-90s\";r=16;t=90, \
         \"per-day\";r=996;t=57600\n"
    );
    let denied = limiter.check_n_sync("k", 2).unwrap();
    assert_eq!(
        written(&denied, ietf(), None),
        "ratelimit-policy: \"per-1500ms\";q=5;w=2, \"per-90s\";q=20;w=90, \
         \"per-day\";q=1000;w=86400\n\
         ratelimit: \"per-1500ms\";r=1;t=2, \"per-90s\";r=16;t=90, \
         \"per-day\";r=996;t=57600\n\
         retry-after: 2\n"
    );

    let repeated = [
        Quota::per_minute(10).unwrap(),
        Quota::per_hour(100).unwrap(),
        Quota::per_minute(5).unwrap(),
    ];
    let (limiter, _) = limiter_at(&repeated, SAMPLE_NOW_MS);
    let ok = limiter.check_sync("k").unwrap();
    assert_eq!(
        written(&ok, ietf().with_github_extras(), None),
        "x-ratelimit-used: 1\n\
         x-ratelimit-resource: per-minute-2\n\
         ratelimit-policy: \"per-minute\";q=10;w=60, \"per-hour\";q=100;w=3600, \
         \"per-minute-2\";q=5;w=60\n\
         ratelimit: \"per-minute\";r=9;t=23, \"per-hour\";r=99;t=1823, \
         \"per-minute-2\";r=4;t=23\n"
    );
}

#[test]
fn retry_after_follows_the_quota_that_blocks_longest() {
    // The crate docs' scenario: 2 per second and 3 per hour; the fourth request is denied by
    // the hour, though the per-second quota has room again.
    let quotas = [Quota::per_second(2).unwrap(), Quota::per_hour(3).unwrap()];
    let (limiter, clock) = limiter_at(&quotas, 1_800_000_000_000);
    limiter.check_sync("k").unwrap();
    limiter.check_sync("k").unwrap();
    let by_second = limiter.check_sync("k").unwrap();
    assert_eq!(
        written(&by_second, ietf().with_x_ratelimit(), None),
        "x-ratelimit-limit: 2\n\
         x-ratelimit-remaining: 0\n\
         x-ratelimit-reset: 1800000001\n\
         ratelimit-policy: \"per-second\";q=2;w=1, \"per-hour\";q=3;w=3600\n\
         ratelimit: \"per-second\";r=0;t=1, \"per-hour\";r=1;t=3600\n\
         retry-after: 1\n"
    );
    clock.advance(Duration::from_secs(1));
    limiter.check_sync("k").unwrap();
    let by_hour = limiter.check_sync("k").unwrap();
    assert_eq!(
        written(
            &by_hour,
            ietf().with_x_ratelimit().with_github_extras(),
            None
        ),
        "x-ratelimit-limit: 3\n\
         x-ratelimit-remaining: 0\n\
         x-ratelimit-reset: 1800003600\n\
         x-ratelimit-used: 3\n\
         x-ratelimit-resource: per-hour\n\
         ratelimit-policy: \"per-second\";q=2;w=1, \"per-hour\";q=3;w=3600\n\
         ratelimit: \"per-second\";r=1;t=1, \"per-hour\";r=0;t=3599\n\
         retry-after: 3599\n"
    );
}

#[test]
fn writing_replaces_existing_values() {
    let (ok, denied) = samples();
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-limit", "7".parse().unwrap());
    headers.append("ratelimit", "\"stale\";r=1".parse().unwrap());
    headers.append("ratelimit", "\"stale\";r=2".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    write_headers(&ok, ietf().with_x_ratelimit(), None, &mut headers);
    write_headers(&denied, ietf().with_x_ratelimit(), None, &mut headers);
    assert_eq!(headers.get_all("ratelimit").iter().count(), 1);
    assert_eq!(headers["x-ratelimit-limit"], "100");
    assert_eq!(
        headers["ratelimit"],
        r#""per-minute";r=0;t=23, "per-hour";r=900;t=1823"#
    );
    assert_eq!(headers["content-type"], "application/json");
}

#[test]
fn rejection_parts_are_a_429_with_the_headers_and_none_when_allowed() {
    let (allowed, denied) = samples();
    let pk = PartitionKey::hash_of(SAMPLE_KEY);
    for style in [
        HeaderStyle::x_ratelimit(),
        ietf(),
        HeaderStyle::github_extras().with_ietf(IetfDraft::Draft10),
    ] {
        let (status, headers) = rejection_parts(&denied, style, Some(&pk)).expect("denied");
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(render(&headers), written(&denied, style, Some(&pk)));
        assert_eq!(rejection_parts(&allowed, style, Some(&pk)), None);
    }
}

#[test]
fn header_name_constants() {
    let names = [
        X_RATELIMIT_LIMIT,
        X_RATELIMIT_REMAINING,
        X_RATELIMIT_RESET,
        X_RATELIMIT_USED,
        X_RATELIMIT_RESOURCE,
        RATELIMIT_POLICY,
        RATELIMIT,
        RETRY_AFTER,
    ];
    assert_eq!(names.map(|n| n.to_string()), ORDER.map(String::from));
    assert_eq!(X_RATELIMIT_LIMIT, crate::headers::X_RATELIMIT_LIMIT);
}

/// The samples in the module docs are exactly what the writers produce: the README's header
/// style table is copied from them.
#[test]
fn module_docs_show_the_real_output() {
    let docs: String = include_str!("mod.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    let (ok, denied) = samples();
    let pk = PartitionKey::hash_of(SAMPLE_KEY);
    let styles = [
        (HeaderStyle::x_ratelimit(), None),
        (ietf(), None),
        (HeaderStyle::x_ratelimit().with_github_extras(), None),
        (ietf(), Some(&pk)),
    ];
    for (style, pk) in styles {
        for (decision, status) in [(&ok, "200 OK"), (&denied, "429 Too Many Requests")] {
            let block = format!(
                "```text\nHTTP/1.1 {status}\n{}```\n",
                written(decision, style, pk)
            );
            assert!(
                docs.contains(&block),
                "module docs lack the {style} sample (pk: {pk:?}):\n{block}"
            );
        }
    }
}

/// A member of a structured-field list as the writers produce it: `"name";k=v;k=v`.
#[derive(Debug)]
struct Member {
    name: String,
    params: Vec<(String, String)>,
}

impl Member {
    fn integer(&self, key: &str) -> u64 {
        let value = self
            .param(key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"));
        assert!(value.len() <= 15 && value.bytes().all(|b| b.is_ascii_digit()));
        value.parse().unwrap()
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny parser for the subset of RFC 9651 lists the writers emit: members separated by
/// `, `, each an sf-string followed by `;key=value` parameters.
fn parse_list(value: &str) -> Vec<Member> {
    value
        .split(", ")
        .map(|member| {
            let mut parts = member.split(';');
            let name = parts.next().unwrap();
            assert!(name.len() >= 2 && name.starts_with('"') && name.ends_with('"'));
            let name = &name[1..name.len() - 1];
            assert!(!name.contains(['"', '\\', ',']));
            let params = parts
                .map(|param| {
                    let (key, value) = param.split_once('=').unwrap();
                    (key.to_owned(), value.to_owned())
                })
                .collect();
            Member {
                name: name.to_owned(),
                params,
            }
        })
        .collect()
}

fn byte_sequence(value: &str) -> Vec<u8> {
    let inner = value.strip_prefix(':').and_then(|v| v.strip_suffix(':'));
    base64_decode(inner.expect("an sf byte sequence")).expect("valid base64")
}

const WINDOWS: [u64; 9] = [
    1, 250, 1_000, 1_500, 60_000, 90_000, 300_000, 3_600_000, 86_400_000,
];

proptest! {
    /// Whatever the quotas, clock and traffic, the IETF fields parse back to exactly the
    /// decision's numbers, names are unique, `Retry-After` is never below the `t` of a quota
    /// that denied, and the X-RateLimit headers agree with the decision.
    #[test]
    fn structured_fields_parse_back_to_the_decision(
        quotas in proptest::collection::vec((0..WINDOWS.len(), 1..40u64), 1..=3),
        staggered in any::<bool>(),
        start_ms in 1_600_000_000_000..1_900_000_000_000u64,
        traffic in proptest::collection::vec((0..3_000u64, 1..4u64), 0..60),
        key in "[a-z0-9_]{1,12}",
        with_pk in any::<bool>(),
    ) {
        let quotas: Vec<Quota> = quotas
            .iter()
            .map(|&(w, limit)| Quota::from_millis(limit, WINDOWS[w]).unwrap())
            .collect();
        let min_limit = quotas.iter().map(Quota::limit).min().unwrap();
        let clock = ManualClock::at_millis(start_ms);
        let mut builder = MemoryLimiter::builder(quotas[0]);
        for &quota in &quotas[1..] {
            builder = builder.quota(quota);
        }
        let alignment = if staggered { Alignment::Staggered } else { Alignment::Epoch };
        let limiter = builder.alignment(alignment).clock(clock.clone()).build().unwrap();
        let mut decision = limiter.peek_sync(&key).unwrap();
        for (advance_ms, cost) in traffic {
            clock.advance(Duration::from_millis(advance_ms));
            decision = limiter.check_n_sync(&key, cost.min(min_limit)).unwrap();
        }

        let pk = PartitionKey::hash_of(&key);
        let style = HeaderStyle::x_ratelimit()
            .with_ietf(IetfDraft::Draft10)
            .with_github_extras();
        let mut headers = HeaderMap::new();
        write_headers(&decision, style, with_pk.then_some(&pk), &mut headers);
        let text = |name: &str| headers[name].to_str().unwrap().to_owned();

        let policy = parse_list(&text("ratelimit-policy"));
        let limits = parse_list(&text("ratelimit"));
        let states = decision.quotas();
        let names: Vec<PolicyName> = policy_names(&decision).collect();
        prop_assert_eq!(policy.len(), states.len());
        prop_assert_eq!(limits.len(), states.len());
        let now = decision.decided_at_ms();
        for (i, state) in states.iter().enumerate() {
            let (p, l) = (&policy[i], &limits[i]);
            prop_assert_eq!(&p.name, names[i].as_str());
            prop_assert_eq!(&l.name, names[i].as_str());
            prop_assert!(names[..i].iter().all(|other| other != &names[i]), "{:?}", names);
            prop_assert_eq!(p.integer("q"), state.limit().min(MAX_INTEGER));
            let window_ms = state.window().as_millis() as u64;
            prop_assert_eq!(p.integer("w"), window_ms.div_ceil(1000));
            prop_assert!(p.integer("w") * 1000 >= window_ms);
            prop_assert_eq!(l.integer("r"), state.remaining());
            let t = l.integer("t");
            let to_reset = state.window_end_ms() - now;
            prop_assert!(t >= 1 && t * 1000 >= to_reset && (t - 1) * 1000 < to_reset);
            for member in [p, l] {
                let keys: Vec<&str> = member.params.iter().map(|(k, _)| k.as_str()).collect();
                if with_pk {
                    prop_assert_eq!(&keys[2..], ["pk"]);
                    let bytes = byte_sequence(member.param("pk").unwrap());
                    prop_assert_eq!(bytes, base64_decode(pk.as_base64()).unwrap());
                } else {
                    prop_assert_eq!(keys.len(), 2);
                }
            }
        }

        prop_assert_eq!(text("x-ratelimit-limit"), decision.limit().to_string());
        prop_assert_eq!(text("x-ratelimit-remaining"), decision.remaining().to_string());
        prop_assert_eq!(text("x-ratelimit-reset"), decision.reset_epoch_secs().to_string());
        prop_assert_eq!(text("x-ratelimit-used"), decision.binding().used().to_string());
        let binding = decision.binding_index();
        prop_assert_eq!(text("x-ratelimit-resource"), names[binding].to_string());

        match decision.retry_after_secs() {
            None => prop_assert!(!headers.contains_key("retry-after")),
            Some(secs) => {
                prop_assert_eq!(text("retry-after"), secs.to_string());
                for (index, member) in limits.iter().enumerate() {
                    let violated = decision.denied_by(index);
                    if violated || member.integer("r") == 0 {
                        prop_assert!(secs >= member.integer("t"), "{} < {:?}", secs, member);
                    }
                }
            }
        }
    }
}
