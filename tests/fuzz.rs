//! Fuzzing with proptest: arbitrary text into every parser, arbitrary keys into the in-memory
//! key ids, arbitrary decisions into the header writers. Nothing may panic, and each test
//! states the invariant it checks. (Redis key escaping is fuzzed next to it, in
//! `src/redis/keys.rs`: injective, and the hash tag is the escaped key.)
//!
//! The default case counts keep this module to a few seconds in a debug build. A long pass:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --all-features --test lib fuzz
//! ```

use proptest::prelude::*;
use ratewindow::{ConfigError, Error, MAX_KEY_LEN, ManualClock, MemoryLimiter, Quota};

const MAX_WINDOW_MS: u64 = 1 << 40;

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

// Parsers.

/// Text near the quota grammar, and any text at all.
fn quota_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t]?[0-9]{0,22}[ ]?/[ ]?[0-9]{0,22}(ms|s|m|h|d|sec|min|hour|day|x|S|µs|)[ \t]?",
        "[0-9/a-z +\\-_.]{0,16}",
        any::<String>(),
    ]
}

/// A well-formed `<limit>/<count><unit>` as (limit, count, unit in ms), in u128 and saturated,
/// from first principles; `None` if the text is not of that form.
fn quota_model(text: &str) -> Option<(u128, u128, u128)> {
    let (limit, window) = text.trim().split_once('/')?;
    let (limit, window) = (limit.trim(), window.trim());
    let split = window.find(|c: char| !c.is_ascii_digit())?;
    let (count, unit) = window.split_at(split);
    let unit_ms: u128 = match unit {
        "ms" => 1,
        "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        _ => return None,
    };
    let count = if count.is_empty() { 1 } else { number(count)? };
    Some((number(limit)?, count, unit_ms))
}

/// Decimal digits as a number, saturated far above u64::MAX.
fn number(digits: &str) -> Option<u128> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    Some(if significant.len() > 30 {
        u128::MAX
    } else {
        significant.parse().unwrap_or(0)
    })
}

proptest! {
    #![proptest_config(cases(2_000))]

    /// `Quota::from_str` on any text: never a panic; a quota exactly when the u128 model says
    /// the text is well formed with a limit of 1 to u64::MAX and a window of 1 ms to 2^40 ms;
    /// otherwise a typed quota error. A parsed quota's text form parses back to it.
    #[test]
    fn quota_text_parses_exactly_as_the_grammar_says(text in quota_text()) {
        let parsed = text.parse::<Quota>();
        let max = u128::from(u64::MAX);
        match (&parsed, quota_model(&text)) {
            (Ok(quota), Some((limit, count, unit))) => {
                prop_assert_eq!(u128::from(quota.limit()), limit);
                prop_assert_eq!(u128::from(quota.window_ms()), count * unit);
                prop_assert_eq!(quota.to_string().parse::<Quota>(), Ok(*quota));
            }
            // Numbers past u64 are spec errors; then the window's overflow, then the quota's
            // own checks in order: limit, window, length.
            (Err(ConfigError::InvalidQuotaSpec { .. }), Some((limit, count, _))) => {
                prop_assert!(limit > max || count > max, "{:?}", text);
            }
            (Err(ConfigError::WindowTooLong { .. }), Some((limit, count, unit))) => {
                prop_assert!(count * unit > max || (limit > 0 && count * unit > u128::from(MAX_WINDOW_MS)));
            }
            (Err(ConfigError::ZeroLimit), Some((0, count, unit))) => prop_assert!(count * unit <= max),
            (Err(ConfigError::ZeroWindow), Some((_, 0, _))) => {}
            (Err(ConfigError::InvalidQuotaSpec { .. }), None) => {}
            (other, model) => prop_assert!(false, "{:?}: {:?}, model {:?}", text, other, model),
        }
        if let Err(err) = &parsed {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    /// Every valid quota's text form parses back to the same quota.
    #[test]
    fn every_quota_round_trips_through_its_text_form(
        limit in prop_oneof![Just(1u64), Just(u64::MAX), any::<u64>().prop_map(|l| l.max(1))],
        window_ms in prop_oneof![
            1..=MAX_WINDOW_MS,
            prop::sample::select(vec![1, 1_000, 60_000, 3_600_000, 86_400_000, MAX_WINDOW_MS]),
            (1..=12_725u64).prop_map(|days| days * 86_400_000),
        ],
    ) {
        let quota = Quota::from_millis(limit, window_ms).unwrap();
        prop_assert_eq!(quota.to_string().parse::<Quota>(), Ok(quota));
    }
}

// In-memory key ids.

/// Keys near the 15-byte boundary where ids switch from verbatim to fingerprinted, keys of
/// control characters and escapes, and any text.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,20}",
        "[\\x00-\\x1f{}:%\\\\x7fF]{0,18}",
        any::<String>(),
        (0..=MAX_KEY_LEN + 2).prop_map(|len| "k".repeat(len)),
    ]
}

/// A key next to `key`: one character changed, appended, removed, or a NUL appended (a key
/// that only differs by trailing zero bytes would collide under naive zero-padding).
fn neighbour(key: &str, how: u8, at: usize, c: char) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    match how % 4 {
        0 if !chars.is_empty() => {
            let i = at % chars.len();
            let old = chars[i];
            chars[i] = [c, 'x', 'y'].into_iter().find(|&n| n != old).unwrap_or(c);
        }
        1 => chars.push(c),
        2 if !chars.is_empty() => {
            chars.remove(at % chars.len());
        }
        _ => chars.push('\0'),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(cases(1_000))]

    /// Any two keys get separate counters exactly when they differ; a key is accepted exactly
    /// when it has 1 to MAX_KEY_LEN bytes, and otherwise gets `EmptyKey` or `KeyTooLong`.
    #[test]
    fn distinct_keys_never_share_a_counter(
        a in any_key(),
        other in any_key(),
        how in any::<u8>(),
        at in any::<usize>(),
        c in any::<char>(),
    ) {
        let near = neighbour(&a, how, at, c);
        let limiter = MemoryLimiter::builder(Quota::per_minute(1).unwrap())
            .clock(ManualClock::at_millis(1_800_000_000_000))
            .max_keys(16)
            .build()
            .unwrap();
        let valid = |k: &str| (1..=MAX_KEY_LEN).contains(&k.len());
        for b in [&other, &near] {
            let first = limiter.check_sync(&a);
            match a.len() {
                0 => prop_assert_eq!(first, Err(Error::EmptyKey)),
                len if len > MAX_KEY_LEN => {
                    prop_assert_eq!(first, Err(Error::KeyTooLong { len }))
                }
                _ => prop_assert!(first.is_ok()),
            }
            let second = limiter.check_sync(b);
            if valid(&a) && valid(b) {
                // `a` has used its one unit: `b` is admitted exactly when it is another key.
                prop_assert_eq!(second.unwrap().is_allowed(), &a != b, "{:?} {:?}", a, b);
            }
            limiter.clear_sync(&a).ok();
            limiter.clear_sync(b).ok();
        }
    }
}

#[cfg(feature = "http")]
mod headers {
    //! The header writers and the header-style parser (feature `http`).

    use super::*;

    use std::time::Duration;

    use http::HeaderMap;
    use ratewindow::http::{HeaderStyle, IetfDraft, PartitionKey, policy_names, write_headers};
    use ratewindow::{Alignment, ConfigError, Decision};

    /// The latest time limiters decide for: 2^46 ms.
    const MAX_TIME_MS: u64 = 1 << 46;
    /// The largest sf-integer (RFC 9651): 15 digits. The writers clamp to it.
    const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

    proptest! {
        #![proptest_config(cases(2_000))]

    /// `HeaderStyle::from_str` on any text: never a panic; a parsed style's text form parses
    /// back to it, and an error names the token it did not know.
    #[test]
    fn header_style_text_never_panics_and_round_trips(
        text in prop_oneof![
            "((xratelimit|x-ratelimit|ietf|ietf-10|github|both|IETF|Both|x|)[ ]?[+,][ ]?){0,4}(ietf|github|xratelimit|)",
            any::<String>(),
        ],
    ) {
        match text.parse::<HeaderStyle>() {
            Ok(style) => prop_assert_eq!(style.to_string().parse::<HeaderStyle>(), Ok(style)),
            Err(err) => prop_assert!(err.to_string().starts_with("unknown header style")),
        }
    }
    }

    /// The largest limit the in-memory backend counts for a window, from its own error.
    fn max_limit(window_ms: u64) -> u64 {
        match MemoryLimiter::new(Quota::from_millis(u64::MAX, window_ms).unwrap()) {
            Err(ConfigError::LimitTooLarge { max, .. }) => max,
            other => panic!("{window_ms} ms: {other:?}"),
        }
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        /// (window, limit as a fraction of the window's maximum in 1/2^32, or an exact small one)
        quotas: Vec<(u64, Result<u32, u64>)>,
        staggered: bool,
        start_ms: u64,
        /// (advance or step back in ms, cost as a fraction of the smallest limit, peek instead)
        traffic: Vec<(i64, u32, bool)>,
        key: String,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        let window = prop_oneof![
            1..=MAX_WINDOW_MS,
            prop::sample::select(vec![
                1,
                7,
                999,
                1_000,
                1_500,
                60_000,
                3_600_000,
                86_400_000,
                MAX_WINDOW_MS - 1,
                MAX_WINDOW_MS,
            ]),
        ];
        let limit = prop_oneof![any::<u32>().prop_map(Ok), (1..=5u64).prop_map(Err)];
        let start = prop_oneof![
            0..=10_000u64,
            1_600_000_000_000..=1_900_000_000_000u64,
            MAX_TIME_MS - 2 * MAX_WINDOW_MS..=MAX_TIME_MS,
        ];
        let step = prop_oneof![
            0..=2_000i64,
            -2_000..=0i64,
            any::<i64>().prop_map(|ms| ms >> 20),
        ];
        (
            prop::collection::vec((window, limit), 1..=3),
            any::<bool>(),
            start,
            prop::collection::vec((step, any::<u32>(), any::<bool>()), 0..24),
            "\\PC{1,20}",
        )
            .prop_map(|(quotas, staggered, start_ms, traffic, key)| Scenario {
                quotas,
                staggered,
                start_ms,
                traffic,
                key,
            })
    }

    /// Runs a scenario and returns its last decision (a peek if there was no traffic).
    fn decide(s: &Scenario) -> Decision {
        let quotas: Vec<Quota> = s
            .quotas
            .iter()
            .map(|&(window_ms, limit)| {
                let max = max_limit(window_ms);
                let limit = match limit {
                    Ok(fraction) => ((u128::from(max) * u128::from(fraction)) >> 32) as u64,
                    Err(small) => small,
                };
                Quota::from_millis(limit.clamp(1, max), window_ms).unwrap()
            })
            .collect();
        let min_limit = quotas.iter().map(Quota::limit).min().unwrap();
        let clock = ManualClock::at_millis(s.start_ms);
        let mut builder = MemoryLimiter::builder(quotas[0]);
        for &quota in &quotas[1..] {
            builder = builder.quota(quota);
        }
        let alignment = if s.staggered {
            Alignment::Staggered
        } else {
            Alignment::Epoch
        };
        let limiter = builder
            .alignment(alignment)
            .clock(clock.clone())
            .build()
            .unwrap();
        let mut decision = limiter.peek_sync(&s.key).unwrap();
        let mut now = s.start_ms;
        for &(step, fraction, peek) in &s.traffic {
            now = now.saturating_add_signed(step).min(MAX_TIME_MS);
            clock.set_millis(now);
            let cost = (((u128::from(min_limit) * u128::from(fraction)) >> 32) as u64).max(1);
            decision = if peek {
                limiter.peek_sync(&s.key)
            } else {
                limiter.check_n_sync(&s.key, cost)
            }
            .unwrap();
        }
        decision
    }

    /// An RFC 9651 bare item, as far as the writers use them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Bare {
        Integer(u64),
        /// The base64 text of a byte sequence, checked to be canonical.
        Bytes(String),
        String(String),
        Token(String),
    }

    #[derive(Debug)]
    struct Member {
        item: Bare,
        params: Vec<(String, Bare)>,
    }

    /// A strict parser of RFC 9651 lists (section 4.2.1), with the bare items above. Errors say
    /// where the value stops being a well-formed list.
    fn parse_sf_list(value: &str) -> Result<Vec<Member>, String> {
        let b = value.as_bytes();
        let mut i = 0;
        let mut members = Vec::new();
        if b.is_empty() {
            return Ok(members);
        }
        loop {
            let item = parse_bare(b, &mut i)?;
            let mut params = Vec::new();
            while b.get(i) == Some(&b';') {
                i += 1;
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                let key = parse_key(b, &mut i)?;
                let value = if b.get(i) == Some(&b'=') {
                    i += 1;
                    parse_bare(b, &mut i)?
                } else {
                    Bare::Token("?1".into())
                };
                if params.iter().any(|(k, _)| k == &key) {
                    return Err(format!("parameter {key} twice"));
                }
                params.push((key, value));
            }
            members.push(Member { item, params });
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            match b.get(i) {
                None => return Ok(members),
                Some(b',') => i += 1,
                Some(c) => return Err(format!("{:?} at {i} after a member", *c as char)),
            }
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            if i == b.len() {
                return Err("trailing comma".into());
            }
        }
    }

    fn parse_key(b: &[u8], i: &mut usize) -> Result<String, String> {
        let start = *i;
        match b.get(*i) {
            Some(c) if c.is_ascii_lowercase() || *c == b'*' => *i += 1,
            other => return Err(format!("key starts with {other:?} at {start}")),
        }
        while b
            .get(*i)
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(c))
        {
            *i += 1;
        }
        Ok(String::from_utf8_lossy(&b[start..*i]).into_owned())
    }

    fn parse_bare(b: &[u8], i: &mut usize) -> Result<Bare, String> {
        let start = *i;
        match b.get(*i) {
            Some(b'"') => {
                *i += 1;
                let mut out = String::new();
                loop {
                    match b.get(*i) {
                        Some(b'\\') => match b.get(*i + 1) {
                            Some(c @ (b'"' | b'\\')) => {
                                out.push(*c as char);
                                *i += 2;
                            }
                            _ => return Err(format!("bad escape at {i}")),
                        },
                        Some(b'"') => {
                            *i += 1;
                            return Ok(Bare::String(out));
                        }
                        Some(c @ 0x20..=0x7e) => {
                            out.push(*c as char);
                            *i += 1;
                        }
                        other => return Err(format!("{other:?} in a string at {i}")),
                    }
                }
            }
            Some(b':') => {
                *i += 1;
                let from = *i;
                while b
                    .get(*i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+/=".contains(c))
                {
                    *i += 1;
                }
                let text = String::from_utf8_lossy(&b[from..*i]).into_owned();
                if b.get(*i) != Some(&b':') {
                    return Err(format!("unterminated byte sequence at {start}"));
                }
                *i += 1;
                // Canonical base64: whole quads, padding only at the end.
                let pad = text.len() - text.trim_end_matches('=').len();
                if text.len() % 4 != 0 || pad > 2 || text.trim_end_matches('=').contains('=') {
                    return Err(format!("non-canonical base64 {text:?}"));
                }
                Ok(Bare::Bytes(text))
            }
            Some(c) if c.is_ascii_digit() => {
                while b.get(*i).is_some_and(u8::is_ascii_digit) {
                    *i += 1;
                }
                if *i - start > 15 {
                    return Err(format!("integer of {} digits", *i - start));
                }
                if b.get(*i) == Some(&b'.') {
                    return Err("a decimal, not an integer".into());
                }
                let digits = std::str::from_utf8(&b[start..*i]).unwrap();
                Ok(Bare::Integer(digits.parse().unwrap()))
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'*' => {
                while b
                    .get(*i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(c))
                {
                    *i += 1;
                }
                Ok(Bare::Token(
                    String::from_utf8_lossy(&b[start..*i]).into_owned(),
                ))
            }
            other => Err(format!("no bare item at {start}: {other:?}")),
        }
    }

    fn digits_of(headers: &HeaderMap, name: &str) -> Result<u64, TestCaseError> {
        let value = headers
            .get(name)
            .ok_or_else(|| TestCaseError::fail(format!("no {name}")))?
            .to_str()
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        prop_assert!(
            !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()),
            "{}: {:?}",
            name,
            value
        );
        prop_assert!(
            value == "0" || !value.starts_with('0'),
            "{}: {:?}",
            name,
            value
        );
        Ok(value.parse().unwrap())
    }

    proptest! {
        #![proptest_config(cases(600))]

        /// Any decision the limiter can make (any windows up to 2^40 ms, limits up to what each
        /// window counts, clocks from the epoch to 2^46 ms stepping both ways, any key and
        /// partition key), written in every style at once: every value is visible ASCII; the
        /// X-RateLimit values are the decision's numbers in canonical decimal; both IETF fields are
        /// well-formed RFC 9651 lists whose integers are the decision's numbers (clamped to 15
        /// digits), whose names are the policy names and whose `pk` is the partition key's
        /// canonical base64; `retry-after` is there exactly when denied; and the allocation-free
        /// `Decision::headers` agree.
        #[test]
        fn any_decision_writes_well_formed_headers_that_parse_back(
            s in scenario(),
            pk_bytes in prop::collection::vec(any::<u8>(), 0..=40),
        ) {
            let decision = decide(&s);
            let pk = PartitionKey::from_bytes(&pk_bytes);
            prop_assert_eq!(pk.is_some(), (1..=PartitionKey::MAX_BYTES).contains(&pk_bytes.len()));
            let style = HeaderStyle::x_ratelimit()
                .with_ietf(IetfDraft::Draft10)
                .with_github_extras();
            let mut headers = HeaderMap::new();
            write_headers(&decision, style, pk.as_ref(), &mut headers);

            for (name, value) in &headers {
                let text = value.to_str();
                prop_assert!(text.is_ok(), "{}: {:?}", name, value);
                let text = text.unwrap();
                prop_assert!(!text.is_empty() && text.trim() == text, "{}: {:?}", name, text);
            }
            prop_assert_eq!(digits_of(&headers, "x-ratelimit-limit")?, decision.limit());
            prop_assert_eq!(digits_of(&headers, "x-ratelimit-remaining")?, decision.remaining());
            prop_assert_eq!(digits_of(&headers, "x-ratelimit-reset")?, decision.reset_epoch_secs());
            prop_assert_eq!(digits_of(&headers, "x-ratelimit-used")?, decision.binding().used());
            match decision.retry_after_secs() {
                Some(secs) => {
                    prop_assert!(!decision.is_allowed());
                    prop_assert!(secs >= 1);
                    prop_assert_eq!(digits_of(&headers, "retry-after")?, secs);
                }
                None => {
                    prop_assert!(decision.is_allowed());
                    prop_assert!(!headers.contains_key("retry-after"));
                }
            }
            for (name, value) in decision.headers() {
                prop_assert_eq!(headers[name].to_str().unwrap(), value.as_str());
            }

            let names: Vec<String> = policy_names(&decision).map(|n| n.to_string()).collect();
            let resource = headers["x-ratelimit-resource"].to_str().unwrap();
            prop_assert!(names.iter().any(|n| n == resource), "{} not in {:?}", resource, names);
            let text = |name: &str| headers[name].to_str().unwrap().to_owned();
            let policy = parse_sf_list(&text("ratelimit-policy"))
                .map_err(|e| TestCaseError::fail(format!("ratelimit-policy: {e}")))?;
            let limits = parse_sf_list(&text("ratelimit"))
                .map_err(|e| TestCaseError::fail(format!("ratelimit: {e}")))?;
            let states = decision.quotas();
            prop_assert_eq!(policy.len(), states.len());
            prop_assert_eq!(limits.len(), states.len());
            let now = decision.decided_at_ms();
            let clamp = |n: u64| Bare::Integer(n.min(MAX_SF_INTEGER));
            for (i, state) in states.iter().enumerate() {
                let window_ms = u64::try_from(state.window().as_millis()).unwrap();
                let to_end = state.window_end_ms().saturating_sub(now);
                let mut expected_policy = vec![
                    ("q".to_owned(), clamp(state.limit())),
                    ("w".to_owned(), clamp(window_ms.div_ceil(1000))),
                ];
                let mut expected_limits = vec![
                    ("r".to_owned(), clamp(state.remaining())),
                    ("t".to_owned(), clamp(to_end.div_ceil(1000).max(1))),
                ];
                if let Some(pk) = &pk {
                    let bytes = Bare::Bytes(pk.as_base64().to_owned());
                    expected_policy.push(("pk".to_owned(), bytes.clone()));
                    expected_limits.push(("pk".to_owned(), bytes));
                }
                for (member, expected) in [(&policy[i], expected_policy), (&limits[i], expected_limits)] {
                    prop_assert_eq!(&member.item, &Bare::String(names[i].clone()));
                    prop_assert_eq!(&member.params, &expected);
                }
            }
        }
    }

    /// A seed table of decisions at the extremes, so that they are checked on every run rather
    /// than when the generator happens to reach them.
    #[test]
    fn extreme_decisions_write_well_formed_headers() {
        let extremes = [
            (vec![(1, Err(1))], 0, vec![(0, 0, false), (0, 0, false)]),
            (
                vec![
                    (MAX_WINDOW_MS, Ok(u32::MAX)),
                    (1, Ok(u32::MAX)),
                    (7, Err(5)),
                ],
                MAX_TIME_MS,
                vec![(0, u32::MAX, false), (-(1 << 45), 1, false)],
            ),
            (
                vec![(MAX_WINDOW_MS, Ok(u32::MAX))],
                0,
                vec![(0, u32::MAX, false), (0, 0, false), (i64::MAX, 0, true)],
            ),
        ];
        for (quotas, start_ms, traffic) in extremes {
            for staggered in [false, true] {
                let s = Scenario {
                    quotas: quotas.clone(),
                    staggered,
                    start_ms,
                    traffic: traffic.clone(),
                    key: "k\u{0}{}".into(),
                };
                let decision = decide(&s);
                let mut headers = HeaderMap::new();
                let pk = PartitionKey::from_bytes(&[0xff; 32]);
                let style = HeaderStyle::x_ratelimit()
                    .with_ietf(IetfDraft::Draft10)
                    .with_github_extras();
                write_headers(&decision, style, pk.as_ref(), &mut headers);
                for name in ["ratelimit-policy", "ratelimit"] {
                    let value = headers[name].to_str().unwrap();
                    parse_sf_list(value).unwrap_or_else(|e| panic!("{s:?}: {name}: {value}: {e}"));
                }
                // After a step back the window can end far ahead: still exact, never a panic.
                let to_end = decision.window_end_ms() - decision.decided_at_ms();
                assert_eq!(decision.time_to_reset(), Duration::from_millis(to_end));
                assert!(headers.contains_key("x-ratelimit-limit"), "{s:?}");
            }
        }
    }
}
