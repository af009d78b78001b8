//! The server's configuration, from environment variables: every variable it reads is in
//! [`VARIABLES`], and each malformed one stops it with a message naming the variable.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ratewindow::http::HeaderStyle;
use ratewindow::{ConfigError, Quota, Shadow};

use super::serve::Limits;

const DEFAULT_BIND: &str = "127.0.0.1:8080";
const DEFAULT_RATE_LIMIT: &str = "100/1m";
const DEFAULT_HEADERS: &str = "xratelimit";
const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
const MAX_HEADER_READ_TIMEOUT_SECS: u64 = 3600;
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const MAX_MAX_CONNECTIONS: usize = 1_000_000;
const DEFAULT_REDIS_PREFIX: &str = "ratewindow";
const DEFAULT_REDIS_TIMEOUT_MS: u64 = 50;
const DEFAULT_REDIS_MAX_CLOCK_SKEW_MS: u64 = 1000;

/// Everything the server is configured with.
pub struct Settings {
    /// `RATE_LIMIT` as it was given, for messages.
    rate_limit: String,
    /// The quotas: the default plan's, the other plans' and `/start`'s.
    pub quotas: Quotas,
    /// `BIND` as it was given, and what it resolved to.
    pub bind: String,
    pub addrs: Vec<SocketAddr>,
    pub style: HeaderStyle,
    pub limits: Limits,
    pub backend: Backend,
    /// Read (and so checked) whatever the backend, so that a typo never goes unnoticed.
    pub redis: RedisSettings,
}

impl Settings {
    /// Every variable, in the order the messages about them come.
    pub fn from_env() -> Result<Settings, String> {
        let rate_limit = env_or("RATE_LIMIT", DEFAULT_RATE_LIMIT)?;
        let quotas = Quotas::from_env(&rate_limit)?;
        let bind = env_or("BIND", DEFAULT_BIND)?;
        let addrs: Vec<SocketAddr> = bind
            .to_socket_addrs()
            .map_err(|err| {
                format!("BIND={bind:?}: {err} (expected host:port, e.g. {DEFAULT_BIND})")
            })?
            .collect();
        let headers = env_or("HEADERS", DEFAULT_HEADERS)?;
        let style: HeaderStyle = headers
            .parse()
            .map_err(|err| format!("HEADERS={headers:?}: {err}"))?;
        let limits = Limits::from_env()?;
        let backend = Backend::from_env()?;
        let redis = RedisSettings::from_env()?;
        Ok(Settings {
            rate_limit,
            quotas,
            bind,
            addrs,
            style,
            limits,
            backend,
            redis,
        })
    }

    /// A limiter refused the quota: the message names `RATE_LIMIT`.
    pub fn bad_rate_limit(&self, err: ConfigError) -> String {
        format!("RATE_LIMIT={:?}: {err}", self.rate_limit)
    }
}

/// `name`'s quota, if the variable is set and not empty.
fn optional_quota(name: &str) -> Result<Option<Quota>, String> {
    let text = env_or(name, "")?;
    match text.trim() {
        "" => Ok(None),
        quota => quota
            .parse::<Quota>()
            .map(Some)
            .map_err(|err| format!("{name}={text:?}: {err}")),
    }
}

/// The quotas per API key: `RATE_LIMIT` for the default plan, `PLANS` for the keys of other
/// plans, and `START_RATE_LIMIT` for starting campaigns.
#[derive(Clone)]
pub struct Quotas {
    /// `RATE_LIMIT`: the default plan's (`free` when there are other plans).
    pub default: Quota,
    /// `PLANS`: each plan's name and quota; a key starting with `<name>_` is on plan `name`.
    pub plans: Vec<(String, Quota)>,
    /// `START_RATE_LIMIT`: `POST .../start`'s own quota and counters, if set.
    pub start: Option<Quota>,
    /// `START_FAILURE_LIMIT`: a quota that only failed starts (`4xx`) count against, if set.
    pub start_failures: Option<Quota>,
    /// `SHADOW=1`: every quota in shadow (a dry run: denials are let through and counted).
    pub shadow: bool,
}

impl Quotas {
    /// The name of the default plan when `PLANS` names others.
    pub const DEFAULT_PLAN: &'static str = "free";
    /// The name of `POST .../start`'s limiter.
    pub const START: &'static str = "start";
    /// The name of the limiter of failed starts.
    pub const START_FAILURES: &'static str = "start-failures";

    fn from_env(rate_limit: &str) -> Result<Quotas, String> {
        let default: Quota = rate_limit
            .parse()
            .map_err(|err| format!("RATE_LIMIT={rate_limit:?}: {err}"))?;
        let plans_text = env_or("PLANS", "")?;
        let mut plans: Vec<(String, Quota)> = Vec::new();
        for entry in plans_text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let bad = |why: &str| {
                format!(
                    "PLANS={plans_text:?}: {entry:?} {why} (expected comma-separated \
                     <name>=<limit>/<window> with the window of RATE_LIMIT, e.g. pro=1000/1m)"
                )
            };
            let (name, quota) = entry.split_once('=').ok_or_else(|| bad("has no '='"))?;
            // The name's characters are the limiter's to check (`PLANS: plan <name>: ...`).
            let name = name.trim();
            if name == Self::DEFAULT_PLAN || plans.iter().any(|(known, _)| known == name) {
                return Err(bad("repeats a plan's name (free is the default plan's)"));
            }
            let quota: Quota = quota.trim().parse().map_err(|err| bad(&format!("{err}")))?;
            if quota.window() != default.window() {
                return Err(bad("has another window than RATE_LIMIT"));
            }
            plans.push((name.to_owned(), quota));
        }
        let start = optional_quota("START_RATE_LIMIT")?;
        let start_failures = optional_quota("START_FAILURE_LIMIT")?;
        let shadow = match env_or("SHADOW", "0")?.trim() {
            "" | "0" => false,
            "1" => true,
            other => return Err(format!("SHADOW={other:?}: expected 1 or 0 (default 0)")),
        };
        Ok(Quotas {
            default,
            plans,
            start,
            start_failures,
            shadow,
        })
    }

    /// The quotas in shadow: every one with `SHADOW=1`.
    pub fn shadow(&self) -> Shadow {
        if self.shadow {
            Shadow::ALL
        } else {
            Shadow::NONE
        }
    }

    /// Whether requests are decided by more than the default plan.
    pub fn chosen_per_request(&self) -> bool {
        !self.plans.is_empty() || self.start.is_some() || self.start_failures.is_some()
    }
}

impl fmt::Display for Quotas {
    /// E.g. `100 per 1m`, `free 100 per 1m, pro 1000 per 1m, start 5 per 1m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.chosen_per_request() {
            return write!(f, "{} per API key", self.default);
        }
        let default_name = if self.plans.is_empty() {
            "every key"
        } else {
            Self::DEFAULT_PLAN
        };
        write!(f, "{default_name} {}", self.default)?;
        for (name, quota) in &self.plans {
            write!(f, ", {name} {quota}")?;
        }
        if let Some(start) = self.start {
            write!(f, ", {} {start}", Self::START)?;
        }
        if let Some(failures) = self.start_failures {
            write!(f, ", {} {failures}", Self::START_FAILURES)?;
        }
        if self.shadow {
            f.write_str(", in shadow")?;
        }
        Ok(())
    }
}

impl Limits {
    /// `HEADER_READ_TIMEOUT_SECS` and `MAX_CONNECTIONS`.
    fn from_env() -> Result<Limits, String> {
        let timeout = env_or(
            "HEADER_READ_TIMEOUT_SECS",
            &DEFAULT_HEADER_READ_TIMEOUT_SECS.to_string(),
        )?;
        let header_read_timeout = match timeout.trim().parse::<u64>() {
            Ok(secs @ 1..=MAX_HEADER_READ_TIMEOUT_SECS) => Duration::from_secs(secs),
            _ => {
                return Err(format!(
                    "HEADER_READ_TIMEOUT_SECS={timeout:?}: expected a whole number of seconds \
                     from 1 to {MAX_HEADER_READ_TIMEOUT_SECS} (default \
                     {DEFAULT_HEADER_READ_TIMEOUT_SECS})"
                ));
            }
        };
        let max = env_or("MAX_CONNECTIONS", &DEFAULT_MAX_CONNECTIONS.to_string())?;
        let max_connections = match max.trim().parse::<usize>() {
            Ok(n @ 1..=MAX_MAX_CONNECTIONS) => n,
            _ => {
                return Err(format!(
                    "MAX_CONNECTIONS={max:?}: expected a whole number from 1 to \
                     {MAX_MAX_CONNECTIONS} (default {DEFAULT_MAX_CONNECTIONS})"
                ));
            }
        };
        Ok(Limits {
            header_read_timeout,
            max_connections,
        })
    }
}

/// Where the counters live.
pub enum Backend {
    Memory,
    Redis(RedisTarget),
}

/// Which Redis, from `REDIS_URL` or `REDIS_CLUSTER_URLS`.
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl Backend {
    /// `REDIS_URL` or `REDIS_CLUSTER_URLS` (unset or empty: neither), at most one of them.
    fn from_env() -> Result<Backend, String> {
        let url = env_or("REDIS_URL", "")?;
        let cluster = env_or("REDIS_CLUSTER_URLS", "")?;
        match (url.trim(), cluster.trim()) {
            ("", "") => Ok(Backend::Memory),
            (url, "") => Ok(Backend::Redis(RedisTarget::Single(url.to_owned()))),
            ("", urls) => {
                let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
                if urls.iter().any(String::is_empty) {
                    let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                    return Err(format!(
                        "REDIS_CLUSTER_URLS={:?} has an empty entry (expected comma-separated \
                         node URLs, e.g. redis://127.0.0.1:7000,redis://127.0.0.1:7001)",
                        shown.join(",")
                    ));
                }
                Ok(Backend::Redis(RedisTarget::Cluster(urls)))
            }
            _ => Err("REDIS_URL and REDIS_CLUSTER_URLS are both set; set one of them".to_owned()),
        }
    }
}

impl RedisTarget {
    /// The variable it came from.
    pub fn variable(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "REDIS_URL",
            RedisTarget::Cluster(_) => "REDIS_CLUSTER_URLS",
        }
    }
}

impl RedisTarget {
    /// The variable's value as it was read, passwords masked.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn urls(&self) -> String {
        match self {
            RedisTarget::Single(url) => redacted(url),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                shown.join(",")
            }
        }
    }

    /// `Redis at <url>` or `the Redis Cluster at <urls>`, passwords masked.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn addresses(&self) -> String {
        match self {
            RedisTarget::Single(url) => format!("Redis at {}", redacted(url)),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                format!("the Redis Cluster at {}", shown.join(", "))
            }
        }
    }
}

impl std::fmt::Display for RedisTarget {
    /// `redis <url>` or `redis cluster (<n> nodes: <urls>)`, passwords masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(url) => write!(f, "redis {}", redacted(url)),
            RedisTarget::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                write!(
                    f,
                    "redis cluster ({} nodes: {})",
                    urls.len(),
                    shown.join(", ")
                )
            }
        }
    }
}

/// `url` with its password masked, for logs and messages: `redis://user:***@host:6379/0`. A
/// user part without a password is masked whole (it may be a misplaced password), and so is the
/// value of a `pass`/`password` query parameter (`redis+unix:///tmp/redis.sock?pass=...`).
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // Everything up to the last `@` is user information, whatever it contains: a password with
    // an unescaped `/`, `?` or `#` (why such a URL fails to parse) must not end the user part
    // early and be shown as a host or path.
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => out.push_str(&format!("{user}:***")),
            None => out.push_str("***"),
        }
        out.push('@');
    }
    out.push_str(host);
    let tail = tail.split('#').next().unwrap_or_default();
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                        format!("{name}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// The Redis backend's settings, from the environment.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub struct RedisSettings {
    pub policy: Policy,
    pub prefix: String,
    pub timeout: Duration,
    pub redis_time: bool,
    pub max_clock_skew: Duration,
    /// Which of the Redis-only variables are set.
    set: Vec<&'static str>,
}

/// `FAILURE_POLICY` (and `FALLBACK_INSTANCES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Open,
    Closed,
    Fallback { instances: u64 },
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Open => f.write_str("open"),
            Policy::Closed => f.write_str("closed"),
            Policy::Fallback { instances: 1 } => f.write_str("fallback, 1 instance"),
            Policy::Fallback { instances } => write!(f, "fallback, {instances} instances"),
        }
    }
}

/// Every environment variable the server reads: the first [`GENERAL_VARIABLES`] for every
/// backend, then the Redis settings.
pub const VARIABLES: [&str; 17] = [
    "BIND",
    "RATE_LIMIT",
    "PLANS",
    "START_RATE_LIMIT",
    "START_FAILURE_LIMIT",
    "SHADOW",
    "HEADERS",
    "HEADER_READ_TIMEOUT_SECS",
    "MAX_CONNECTIONS",
    "REDIS_URL",
    "REDIS_CLUSTER_URLS",
    "FAILURE_POLICY",
    "FALLBACK_INSTANCES",
    "REDIS_PREFIX",
    "REDIS_TIMEOUT_MS",
    "REDIS_TIME",
    "REDIS_MAX_CLOCK_SKEW_MS",
];

/// How many of [`VARIABLES`] apply to every backend.
const GENERAL_VARIABLES: usize = 11;

impl RedisSettings {
    /// The variables that only tune the Redis backend (ignored without it).
    const VARIABLES: &'static [&'static str] = VARIABLES.split_at(GENERAL_VARIABLES).1;

    fn from_env() -> Result<RedisSettings, String> {
        let policy = env_or("FAILURE_POLICY", "open")?;
        let instances = env_or("FALLBACK_INSTANCES", "1")?;
        let instances = match instances.trim().parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "FALLBACK_INSTANCES={instances:?}: expected how many instances share the \
                     quota, a whole number of at least 1"
                ));
            }
        };
        let policy = match policy.trim().to_ascii_lowercase().as_str() {
            "open" => Policy::Open,
            "closed" => Policy::Closed,
            "fallback" => Policy::Fallback { instances },
            _ => {
                return Err(format!(
                    "FAILURE_POLICY={policy:?}: expected open, closed or fallback"
                ));
            }
        };
        let prefix = env_or("REDIS_PREFIX", DEFAULT_REDIS_PREFIX)?;
        let timeout = env_or("REDIS_TIMEOUT_MS", &DEFAULT_REDIS_TIMEOUT_MS.to_string())?;
        let timeout = match timeout.trim().parse::<u64>() {
            Ok(ms) if ms >= 1 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "REDIS_TIMEOUT_MS={timeout:?}: expected a whole number of milliseconds, at \
                     least 1 (default {DEFAULT_REDIS_TIMEOUT_MS})"
                ));
            }
        };
        let redis_time = env_or("REDIS_TIME", "0")?;
        let redis_time = match redis_time.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "" | "0" | "false" | "no" | "off" => false,
            _ => {
                return Err(format!(
                    "REDIS_TIME={redis_time:?}: expected 1 (windows by Redis's TIME) or 0"
                ));
            }
        };
        let skew = env_or(
            "REDIS_MAX_CLOCK_SKEW_MS",
            &DEFAULT_REDIS_MAX_CLOCK_SKEW_MS.to_string(),
        )?;
        let max_clock_skew = match skew.trim().parse::<u64>() {
            Ok(ms) if ms <= 86_400_000 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "REDIS_MAX_CLOCK_SKEW_MS={skew:?}: expected a whole number of milliseconds, \
                     at most a day (default {DEFAULT_REDIS_MAX_CLOCK_SKEW_MS})"
                ));
            }
        };
        let set = Self::VARIABLES
            .iter()
            .copied()
            .filter(|name| std::env::var_os(name).is_some())
            .collect();
        Ok(RedisSettings {
            policy,
            prefix,
            timeout,
            redis_time,
            max_clock_skew,
            set,
        })
    }

    /// The Redis variables that are set but have no effect with `backend`.
    pub fn ignored_with(&self, backend: &Backend) -> Vec<&'static str> {
        self.set
            .iter()
            .copied()
            .filter(|&name| match backend {
                Backend::Memory => true,
                Backend::Redis(_) => {
                    name == "FALLBACK_INSTANCES" && !matches!(self.policy, Policy::Fallback { .. })
                }
            })
            .collect()
    }
}

impl std::fmt::Display for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failure policy: {}, prefix {:?}, timeout {} ms, windows by ",
            self.policy,
            self.prefix,
            self.timeout.as_millis(),
        )?;
        if self.redis_time {
            f.write_str("Redis's TIME")
        } else {
            write!(
                f,
                "the local clock (clocks at most {} ms apart)",
                self.max_clock_skew.as_millis()
            )
        }
    }
}

fn env_or(name: &str, default: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}
