//! Watching the server's eviction policy. Every counter is a key with a TTL, so a Redis whose
//! `maxmemory-policy` is anything but `noeviction` (the `volatile-*` policies too) may drop
//! counters under memory pressure, and a dropped counter lets its window admit its limit again,
//! without an error anywhere. The watch makes that visible: it reads the policy and the
//! `evicted_keys` statistic of every server (every Cluster master) on the first call and then
//! periodically, warns once per change, and can refuse such a server.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};
use parking_lot::Mutex;

use super::builder::RedisLimiterBuilder;
use super::connection::{RedisConnection, Request};
use super::errors::Cause;
use super::limiter::RedisLimiter;
use crate::{BackendErrorKind, Error};

/// How often the server is checked by default.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// A check that failed (the server did not answer) is tried again this soon, if the interval is
/// longer: a server unreachable at the first call is not left unchecked for a whole interval.
const RETRY_FAILED: Duration = Duration::from_secs(5);
/// The least time a check waits for each answer: it runs off the decisions' path, so it need
/// not give up at a call's timeout.
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// In the watch's state word: a check found a server that may evict, and it is refused.
const REFUSING: u64 = 1 << 63;
/// In the watch's state word: the unix ms at which the next check is due. All ones: never.
const DUE_MS: u64 = REFUSING - 1;

/// Something about the Redis server that can make limits leak, found by the limiter's
/// eviction checks (see [`RedisLimiter::check_eviction`]).
///
/// Delivered to the hook set with [`RedisLimiterBuilder::on_warning`], else printed to stderr,
/// one line per warning: a library that silently lets every window admit more than its limit
/// would be worse than a noisy one. Each is delivered once per change, not once per call.
///
/// `node` is the Cluster master's `host:port`, `None` on a single server.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisWarning {
    /// The server may evict keys, counters included: its `maxmemory-policy` is not
    /// `noeviction` (every counter has a TTL, so the `volatile-*` policies evict them too). An
    /// evicted counter lets its window admit up to its limit again. Reported whatever
    /// `maxmemory` is: with `maxmemory 0` (no limit) nothing is evicted yet, but a limit can be
    /// set at any time, and the policy then applies at once. Delivered when a server is first
    /// found with such a policy, and again if the policy changes to another one.
    #[non_exhaustive]
    EvictingPolicy {
        /// The Cluster master, `None` on a single server.
        node: Option<String>,
        /// The `maxmemory-policy`, e.g. `allkeys-lru`.
        policy: String,
        /// `maxmemory` in bytes (0: no limit for now), `None` if it could not be read.
        maxmemory: Option<u64>,
    },
    /// The server evicted keys since the previous check: its `evicted_keys` statistic grew by
    /// `evicted`. Any of them may have been counters. Delivered at each check that finds growth.
    #[non_exhaustive]
    KeysEvicted {
        /// The Cluster master, `None` on a single server.
        node: Option<String>,
        /// How many keys the server evicted since the previous check.
        evicted: u64,
    },
    /// The policy could not be read: the server refused both `CONFIG GET` and `INFO` (a
    /// managed service that disables them, an ACL user without `+config|get` and `+info`).
    /// Counters may be evicted unnoticed. Delivered when a server is first found so.
    #[non_exhaustive]
    PolicyUnknown {
        /// The Cluster master, `None` on a single server.
        node: Option<String>,
    },
}

impl RedisWarning {
    /// The Cluster master the warning is about (`host:port`), `None` on a single server.
    pub fn node(&self) -> Option<&str> {
        match self {
            RedisWarning::EvictingPolicy { node, .. }
            | RedisWarning::KeysEvicted { node, .. }
            | RedisWarning::PolicyUnknown { node } => node.as_deref(),
        }
    }
}

impl fmt::Display for RedisWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = At(self.node());
        match self {
            RedisWarning::EvictingPolicy {
                policy, maxmemory, ..
            } => {
                write!(
                    f,
                    "Redis{at} may evict rate-limit counters: maxmemory-policy is {policy}"
                )?;
                match maxmemory {
                    Some(0) => {
                        f.write_str(" (maxmemory 0: no limit now, but one can be set at any time)")?
                    }
                    Some(bytes) => write!(f, " (maxmemory {bytes} bytes)")?,
                    None => {}
                }
                f.write_str(
                    "; an evicted counter lets its window admit more than its limit; set \
                     maxmemory-policy noeviction",
                )
            }
            RedisWarning::KeysEvicted { evicted, .. } => write!(
                f,
                "Redis{at} evicted {evicted} keys since the last check; any rate-limit counter \
                 among them let its window admit more than its limit; set maxmemory-policy \
                 noeviction"
            ),
            RedisWarning::PolicyUnknown { .. } => write!(
                f,
                "the maxmemory-policy of Redis{at} could not be read (CONFIG GET and INFO were \
                 refused): rate-limit counters may be evicted unnoticed"
            ),
        }
    }
}

/// " at host:port", or nothing on a single server.
struct At<'a>(Option<&'a str>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(node) => write!(f, " at {node}"),
            None => Ok(()),
        }
    }
}

/// What one check read from one server (one Cluster master).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMemory {
    /// The Cluster master's `host:port`, `None` on a single server.
    pub node: Option<String>,
    /// The `maxmemory-policy`, from `CONFIG GET` or else `INFO memory`; `None` if the server
    /// refused both.
    pub policy: Option<String>,
    /// `maxmemory` in bytes (0: no limit for now), `None` if it could not be read.
    pub maxmemory: Option<u64>,
    /// `evicted_keys` from `INFO stats`: keys evicted since the server started (or since
    /// `CONFIG RESETSTAT`); `None` if the server refused `INFO`.
    pub evicted_keys: Option<u64>,
    /// How much `evicted_keys` grew since this limiter's previous check of the server; `None`
    /// at the first (which only takes the baseline) or when it could not be read.
    pub evicted_since_last_check: Option<u64>,
}

impl ServerMemory {
    /// Whether the policy was read and is not `noeviction`: the server may evict counters (now
    /// if `maxmemory` is reached, or once a limit is set).
    pub fn has_evicting_policy(&self) -> bool {
        self.policy.as_deref().is_some_and(evicts)
    }

    /// What this reading warns of, whether or not it was delivered before.
    pub fn warnings(&self) -> Vec<RedisWarning> {
        let node = self.node.clone();
        let mut warnings = Vec::new();
        match &self.policy {
            Some(policy) if evicts(policy) => warnings.push(RedisWarning::EvictingPolicy {
                node: node.clone(),
                policy: policy.clone(),
                maxmemory: self.maxmemory,
            }),
            Some(_) => {}
            None => warnings.push(RedisWarning::PolicyUnknown { node: node.clone() }),
        }
        if let Some(evicted) = self.evicted_since_last_check.filter(|&n| n > 0) {
            warnings.push(RedisWarning::KeysEvicted { node, evicted });
        }
        warnings
    }
}

/// What [`RedisLimiter::check_eviction`] found: one [`ServerMemory`] per server (per Cluster
/// master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    servers: Vec<ServerMemory>,
}

impl EvictionReport {
    /// Each server's reading: one on a single server, one per master on a Cluster.
    pub fn servers(&self) -> &[ServerMemory] {
        &self.servers
    }

    /// Whether any server may evict counters (its policy is not `noeviction`).
    pub fn may_evict(&self) -> bool {
        self.servers.iter().any(ServerMemory::has_evicting_policy)
    }

    /// Everything the readings warn of, whether or not the hook was already given it: a policy
    /// that may evict, keys evicted since the previous check, a policy that could not be read.
    /// Empty for a server that is safe for counters.
    pub fn warnings(&self) -> Vec<RedisWarning> {
        self.servers
            .iter()
            .flat_map(ServerMemory::warnings)
            .collect()
    }
}

/// Whether a `maxmemory-policy` may evict keys that have a TTL (every counter has one).
fn evicts(policy: &str) -> bool {
    !policy.trim().eq_ignore_ascii_case("noeviction")
}

type Hook = Arc<dyn Fn(&RedisWarning) + Send + Sync>;

/// The builder's eviction settings.
#[derive(Clone)]
pub(super) struct EvictionSettings {
    interval: Duration,
    refuse: bool,
    hook: Option<Hook>,
}

impl Default for EvictionSettings {
    fn default() -> Self {
        EvictionSettings {
            interval: DEFAULT_INTERVAL,
            refuse: false,
            hook: None,
        }
    }
}

impl fmt::Debug for EvictionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvictionSettings")
            .field("interval", &self.interval)
            .field("refuse", &self.refuse)
            .field("hook", &self.hook.as_ref().map(|_| "Fn(&RedisWarning)"))
            .finish()
    }
}

impl<C> RedisLimiterBuilder<C> {
    /// Calls `hook` with each [`RedisWarning`] about the server (a `maxmemory-policy` that may
    /// evict counters, keys evicted, a policy that cannot be read), instead of printing it to
    /// stderr. Each warning comes once per change, from the task that ran the check (or from
    /// [`RedisLimiter::check_eviction`]'s caller); keep the hook short.
    ///
    /// ```no_run
    /// use ratewindow::{Quota, RedisConnection, RedisLimiter};
    ///
    /// # async fn run() -> Result<(), ratewindow::Error> {
    /// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
    /// let limiter = RedisLimiter::builder(Quota::per_minute(100)?)
    ///     .on_warning(|warning| eprintln!("rate limiter: {warning}")) // or your logger
    ///     .build(connection)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_warning(mut self, hook: impl Fn(&RedisWarning) + Send + Sync + 'static) -> Self {
        self.eviction.hook = Some(Arc::new(hook));
        self
    }

    /// Refuses a server that may evict counters: once a check finds a `maxmemory-policy` other
    /// than `noeviction` on the server (on any Cluster master), every decision fails as
    /// [`Error::Backend`] with [`BackendErrorKind::Unavailable`], so the
    /// [failure policy](Self::failure_policy) answers, until a later check finds `noeviction`.
    /// Keys the over-limit cache holds stay denied. A policy that cannot be read is warned of,
    /// not refused.
    ///
    /// The first check runs in the background on the first call, so a few calls may be decided
    /// by Redis before it answers; await [`RedisLimiter::check_eviction`] after building to
    /// refuse from the first decision.
    pub fn refuse_evicting_server(mut self) -> Self {
        self.eviction.refuse = true;
        self
    }

    /// How often the server's eviction policy and `evicted_keys` are checked (default 60 s;
    /// a check that failed is tried again within 5 s), by the limiter's clock. The first
    /// check runs on the first call; each runs in a task of its own (`tokio::spawn`), so no
    /// decision waits for it, and a call costs one atomic load for it. `Duration::ZERO` turns
    /// the automatic checks off: then only [`RedisLimiter::check_eviction`] checks.
    pub fn eviction_check_interval(mut self, interval: Duration) -> Self {
        self.eviction.interval = interval;
        self
    }
}

impl<C> RedisLimiter<C> {
    /// Checks now whether the server (every master of a Cluster) may evict counters, and
    /// returns what it found; warnings not delivered before go to the
    /// [hook](RedisLimiterBuilder::on_warning) (or stderr) as with the periodic checks, and
    /// with [`refuse_evicting_server`](RedisLimiterBuilder::refuse_evicting_server) the
    /// limiter refuses or accepts the server from now on.
    ///
    /// Reads `CONFIG GET maxmemory*`, or `INFO memory` where `CONFIG` is disabled or renamed
    /// (managed services), and `evicted_keys` from `INFO stats`. Each answer is waited for up to
    /// the limiter's timeout or a second, whichever is longer. Meant for startup, where it makes
    /// the first decision already know the server; the limiter also checks by itself (see
    /// [`eviction_check_interval`](RedisLimiterBuilder::eviction_check_interval)).
    ///
    /// A policy other than `noeviction` is reported even with `maxmemory 0` (no limit, so
    /// nothing is evicted yet): a limit and a policy can be set at run time, and both are
    /// reported.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if a server did not answer (a Cluster master's address is in the
    /// detail); the masters that answered are still recorded and warned of. A server that
    /// refuses the commands is not an error: its policy is `None` and it is warned of as
    /// [`RedisWarning::PolicyUnknown`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// use ratewindow::{Quota, RedisConnection, RedisLimiter};
    ///
    /// # async fn run() -> Result<(), ratewindow::Error> {
    /// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
    /// let limiter = RedisLimiter::builder(Quota::per_minute(100)?)
    ///     .refuse_evicting_server()
    ///     .build(connection)?;
    /// let report = limiter.check_eviction().await?;
    /// if report.may_evict() {
    ///     for warning in report.warnings() {
    ///         eprintln!("{warning}");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn check_eviction(&self) -> Result<EvictionReport, Error> {
        self.eviction.check().await
    }
}

/// A limiter's watch on its server: when the next check is due, whether the server is refused,
/// and what the previous checks found. Shared by the limiter's clones.
pub(super) struct EvictionWatch {
    /// [`REFUSING`] and [`DUE_MS`]: one word, so that a call reads both with one load.
    state: AtomicU64,
    interval_ms: u64,
    refuse: bool,
    hook: Option<Hook>,
    /// A clone of the limiter's connection (they share it).
    connection: RedisConnection,
    timeout: Duration,
    /// Numbers the checks in the order they start.
    tickets: AtomicU64,
    seen: Mutex<Seen>,
}

impl fmt::Debug for EvictionWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvictionWatch")
            .field("interval_ms", &self.interval_ms)
            .field("refuse", &self.refuse)
            .finish_non_exhaustive()
    }
}

impl EvictionWatch {
    /// A watch whose first check is due at once (never with a zero interval), answers bounded by
    /// `timeout` (at least a second).
    pub(super) fn new(
        settings: EvictionSettings,
        connection: RedisConnection,
        timeout: Duration,
    ) -> EvictionWatch {
        let interval_ms = u64::try_from(settings.interval.as_millis()).unwrap_or(DUE_MS);
        EvictionWatch {
            state: AtomicU64::new(if interval_ms == 0 { DUE_MS } else { 0 }),
            interval_ms,
            refuse: settings.refuse,
            hook: settings.hook,
            connection,
            timeout: timeout.max(MIN_CHECK_TIMEOUT),
            tickets: AtomicU64::new(0),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Called by each decision at local time `now_ms`: starts a check in the background when one
    /// is due, and fails the call when the server is refused. One atomic load otherwise.
    #[inline]
    pub(super) fn poll(self: &Arc<Self>, now_ms: u64) -> Result<(), Error> {
        let state = self.state.load(Ordering::Relaxed);
        if now_ms >= state & DUE_MS {
            self.start_check(state, now_ms);
        }
        if state & REFUSING != 0 {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Claims the due check (one caller among concurrent ones) and spawns it.
    #[cold]
    #[inline(never)]
    fn start_check(self: &Arc<Self>, state: u64, now_ms: u64) {
        let next_ms = now_ms.saturating_add(self.interval_ms).min(DUE_MS);
        if self
            .state
            .compare_exchange(
                state,
                (state & REFUSING) | next_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        // Without a tokio runtime there is nowhere to run it; the next due call tries again.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let watch = Arc::clone(self);
        let retry_ms = now_ms
            .saturating_add(self.interval_ms.min(RETRY_FAILED.as_millis() as u64))
            .min(DUE_MS);
        runtime.spawn(async move {
            if watch.check().await.is_err() {
                // Sooner than a whole interval, unless another check was scheduled meanwhile.
                let _ = watch
                    .state
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |state| {
                        (state & DUE_MS == next_ms).then_some((state & REFUSING) | retry_ms)
                    });
            }
        });
    }

    /// The error a refused server's calls get.
    #[cold]
    fn refusal(&self) -> Error {
        let detail = self.seen.lock().refusal().unwrap_or_else(|| {
            "the Redis server may evict counters; set maxmemory-policy noeviction".into()
        });
        Error::Backend {
            kind: BackendErrorKind::Unavailable,
            detail,
        }
    }

    /// Reads every server, records what changed, and delivers the new warnings.
    async fn check(&self) -> Result<EvictionReport, Error> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed) + 1;
        let targets: Vec<(Option<String>, u16)> = match self.connection.cluster() {
            None => vec![(None, 0)],
            Some(router) => router
                .masters()
                .into_iter()
                .map(|(address, slot)| (Some(address), slot))
                .collect(),
        };
        let mut servers = Vec::with_capacity(targets.len());
        let mut failure = None;
        for (node, slot) in &targets {
            match self.read(node.clone(), *slot).await {
                Ok(server) => servers.push(server),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        let nodes: Vec<Option<String>> = targets.into_iter().map(|(node, _)| node).collect();
        let warnings = {
            let mut seen = self.seen.lock();
            // A check that started before the last one recorded read older values: recording
            // them would undo a newer policy and count evictions twice.
            if ticket < seen.latest {
                Vec::new()
            } else {
                seen.latest = ticket;
                let warnings = seen.record(&mut servers, &nodes);
                // Under the lock, so that the latest check decides.
                if self.refuse && seen.refusal().is_some() {
                    self.state.fetch_or(REFUSING, Ordering::Relaxed);
                } else {
                    self.state.fetch_and(!REFUSING, Ordering::Relaxed);
                }
                warnings
            }
        };
        // Outside the lock: a hook may call `check_eviction` itself.
        for warning in &warnings {
            match &self.hook {
                Some(hook) => hook(warning),
                None => eprintln!("ratewindow: warning: {warning}"),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(EvictionReport { servers }),
        }
    }

    /// Reads the policy, `maxmemory` and `evicted_keys` of the server (the master of `slot`).
    async fn read(&self, node: Option<String>, slot: u16) -> Result<ServerMemory, Error> {
        let failed = |error: Error| match (&node, error) {
            (Some(node), Error::Backend { kind, detail }) => Error::Backend {
                kind,
                detail: format!("checking the eviction policy of {node}: {detail}"),
            },
            (_, error) => error,
        };
        let mut server = ServerMemory {
            node: node.clone(),
            policy: None,
            maxmemory: None,
            evicted_keys: None,
            evicted_since_last_check: None,
        };
        // One pattern, so that servers before 7.0 (one parameter per CONFIG GET) answer too.
        let config = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory*")
            .to_owned();
        if let Some(reply) = self.ask(slot, &config).await.map_err(failed)? {
            server.policy = config_field(&reply, "maxmemory-policy").map(normalized);
            server.maxmemory = config_field(&reply, "maxmemory").and_then(|v| v.parse().ok());
        }
        if server.policy.is_none() {
            let info = ::redis::cmd("INFO").arg("memory").to_owned();
            if let Some(info) = self.ask(slot, &info).await.map_err(failed)?.and_then(text) {
                server.policy = info_field(&info, "maxmemory_policy").map(normalized);
                server.maxmemory = server
                    .maxmemory
                    .or_else(|| info_field(&info, "maxmemory")?.parse().ok());
            }
        }
        let stats = ::redis::cmd("INFO").arg("stats").to_owned();
        if let Some(info) = self.ask(slot, &stats).await.map_err(failed)?.and_then(text) {
            server.evicted_keys = info_field(&info, "evicted_keys").and_then(|v| v.parse().ok());
        }
        Ok(server)
    }

    /// Sends `command` to the server (the master of `slot`): `None` when the server refuses it
    /// (renamed, disabled, not permitted), an error when it does not answer.
    async fn ask(&self, slot: u16, command: &Cmd) -> Result<Option<Value>, Error> {
        let reply = self
            .connection
            .send(slot, Request::Command(command), self.timeout)
            .await;
        match reply {
            Ok(value) => Ok(Some(value)),
            Err(failure) if matches!(failure.cause(), Cause::Redis(error) if refused(error)) => {
                Ok(None)
            }
            Err(failure) => Err(failure.into_error()),
        }
    }
}

/// Whether the server answered that it will not run the command (`ERR unknown command` where
/// `CONFIG` is renamed or disabled, `NOPERM`, a managed service's own error), as opposed to not
/// answering or being unable to serve now (`LOADING`, `CLUSTERDOWN`, ...).
fn refused(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
            | ErrorKind::Extension
    )
}

/// What previous checks found, per server.
#[derive(Debug, Default)]
struct Seen {
    servers: Vec<SeenServer>,
    /// The ticket of the latest check recorded.
    latest: u64,
}

#[derive(Debug)]
struct SeenServer {
    node: Option<String>,
    /// The policy last read; `None` if it could not be.
    policy: Option<String>,
    /// `evicted_keys` last read: the baseline of the next check's growth.
    evicted_keys: Option<u64>,
}

impl Seen {
    /// Records `servers` (the readings of this check; `nodes` are every server asked, answered
    /// or not), fills in their eviction growth, and returns what is new since the previous
    /// check: a policy that turned evicting (or changed to another evicting one), one that
    /// turned unreadable, keys evicted. Servers no longer asked (masters gone) are forgotten.
    fn record(
        &mut self,
        servers: &mut [ServerMemory],
        nodes: &[Option<String>],
    ) -> Vec<RedisWarning> {
        self.servers.retain(|seen| nodes.contains(&seen.node));
        let mut warnings = Vec::new();
        for server in servers {
            let index = match self.servers.iter().position(|s| s.node == server.node) {
                Some(index) => index,
                None => {
                    self.servers.push(SeenServer {
                        node: server.node.clone(),
                        // Neither evicting nor unreadable: the first reading is news either way.
                        policy: Some("noeviction".into()),
                        evicted_keys: None,
                    });
                    self.servers.len() - 1
                }
            };
            let seen = &mut self.servers[index];
            let changed = seen.policy != server.policy;
            match &server.policy {
                Some(policy) if changed && evicts(policy) => {
                    warnings.push(RedisWarning::EvictingPolicy {
                        node: server.node.clone(),
                        policy: policy.clone(),
                        maxmemory: server.maxmemory,
                    });
                }
                None if changed => warnings.push(RedisWarning::PolicyUnknown {
                    node: server.node.clone(),
                }),
                _ => {}
            }
            seen.policy = server.policy.clone();
            if let Some(now) = server.evicted_keys {
                // A restart or `CONFIG RESETSTAT` starts the statistic again: a new baseline.
                if let Some(before) = seen.evicted_keys {
                    let evicted = now.saturating_sub(before);
                    server.evicted_since_last_check = Some(evicted);
                    if evicted > 0 {
                        warnings.push(RedisWarning::KeysEvicted {
                            node: server.node.clone(),
                            evicted,
                        });
                    }
                }
                seen.evicted_keys = Some(now);
            }
        }
        warnings
    }

    /// Why a refusing limiter refuses: the first server last found with an evicting policy.
    fn refusal(&self) -> Option<String> {
        self.servers.iter().find_map(|seen| {
            let policy = seen.policy.as_deref().filter(|p| evicts(p))?;
            Some(format!(
                "the Redis server{} may evict counters (maxmemory-policy {policy}); set \
                 maxmemory-policy noeviction",
                At(seen.node.as_deref())
            ))
        })
    }
}

fn normalized(policy: &str) -> String {
    policy.trim().to_ascii_lowercase()
}

/// The text of a string reply (`INFO` is a bulk string in RESP2, a verbatim string in RESP3).
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

fn text_ref(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// The value of parameter `name` in a `CONFIG GET` reply: a flat array of names and values
/// (RESP2) or a map (RESP3).
fn config_field<'a>(reply: &'a Value, name: &str) -> Option<&'a str> {
    match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|pair| text_ref(&pair[0]).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|pair| text_ref(&pair[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(n, _)| text_ref(n).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|(_, value)| text_ref(value)),
        _ => None,
    }
}

/// The value of field `name` in `INFO` text (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_MEMORY: &str = "# Memory\r\nused_memory:1018016\r\nused_memory_human:994.16K\r\n\
        maxmemory:2097152\r\nmaxmemory_human:2.00M\r\nmaxmemory_policy:allkeys-lru\r\n\
        allocator_frag_ratio:1.00\r\n";
    const INFO_STATS: &str = "# Stats\r\ntotal_connections_received:3\r\nexpired_keys:0\r\n\
        expired_stale_perc:0.00\r\nevicted_keys:565042\r\nevicted_clients:0\r\n";

    #[test]
    fn info_fields_are_read_by_their_whole_name() {
        assert_eq!(info_field(INFO_MEMORY, "maxmemory"), Some("2097152"));
        assert_eq!(
            info_field(INFO_MEMORY, "maxmemory_policy"),
            Some("allkeys-lru")
        );
        assert_eq!(info_field(INFO_STATS, "evicted_keys"), Some("565042"));
        assert_eq!(info_field(INFO_STATS, "evicted"), None);
        assert_eq!(info_field(INFO_STATS, "missing"), None);
        // Plain `\n` line ends too.
        assert_eq!(info_field("a:1\nb:2\n", "b"), Some("2"));
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn config_get_replies_are_read_in_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            bulk("maxmemory-policy"),
            bulk("volatile-ttl"),
            bulk("maxmemory"),
            bulk("0"),
            bulk("maxmemory-samples"),
            bulk("5"),
        ]);
        assert_eq!(
            config_field(&resp2, "maxmemory-policy"),
            Some("volatile-ttl")
        );
        assert_eq!(config_field(&resp2, "maxmemory"), Some("0"));
        let resp3 = Value::Map(vec![
            (bulk("maxmemory"), bulk("100")),
            (bulk("maxmemory-policy"), bulk("noeviction")),
        ]);
        assert_eq!(config_field(&resp3, "maxmemory-policy"), Some("noeviction"));
        assert_eq!(config_field(&resp3, "maxmemory"), Some("100"));
        // A managed service's empty answer for a hidden parameter.
        assert_eq!(config_field(&Value::Array(vec![]), "maxmemory"), None);
        assert_eq!(config_field(&Value::Nil, "maxmemory"), None);
        let verbatim = Value::VerbatimString {
            format: ::redis::VerbatimFormat::Text,
            text: INFO_STATS.into(),
        };
        assert_eq!(text(verbatim).as_deref(), Some(INFO_STATS));
    }

    #[test]
    fn every_policy_but_noeviction_evicts_counters() {
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert!(evicts(policy), "{policy}");
        }
        assert!(!evicts("noeviction"));
        assert!(!evicts(" NoEviction "));
    }

    fn reading(node: Option<&str>, policy: Option<&str>, evicted: Option<u64>) -> ServerMemory {
        ServerMemory {
            node: node.map(str::to_owned),
            policy: policy.map(str::to_owned),
            maxmemory: Some(0),
            evicted_keys: evicted,
            evicted_since_last_check: None,
        }
    }

    #[test]
    fn each_change_is_warned_of_once() {
        let mut seen = Seen::default();
        let nodes = [None];
        let mut check = |policy, evicted| {
            let mut servers = [reading(None, policy, evicted)];
            let warnings = seen.record(&mut servers, &nodes);
            (warnings, servers[0].evicted_since_last_check)
        };
        // A safe server: nothing; the first reading of evicted_keys is only the baseline.
        assert_eq!(check(Some("noeviction"), Some(7)), (vec![], None));
        let evicting = RedisWarning::EvictingPolicy {
            node: None,
            policy: "allkeys-lru".into(),
            maxmemory: Some(0),
        };
        assert_eq!(
            check(Some("allkeys-lru"), Some(7)),
            (vec![evicting.clone()], Some(0))
        );
        // The same policy again: nothing new.
        assert_eq!(check(Some("allkeys-lru"), Some(7)), (vec![], Some(0)));
        // Growth is warned of at each check that finds it.
        let grown = RedisWarning::KeysEvicted {
            node: None,
            evicted: 5,
        };
        assert_eq!(check(Some("allkeys-lru"), Some(12)), (vec![grown], Some(5)));
        // A restarted server's statistic starts again: a new baseline, no warning.
        assert_eq!(check(Some("allkeys-lru"), Some(2)), (vec![], Some(0)));
        // Back to safe, then evicting again: warned again.
        assert_eq!(check(Some("noeviction"), Some(2)), (vec![], Some(0)));
        assert_eq!(
            check(Some("allkeys-lru"), Some(2)),
            (vec![evicting], Some(0))
        );
        // Unreadable: once.
        let unknown = RedisWarning::PolicyUnknown { node: None };
        assert_eq!(check(None, None), (vec![unknown], None));
        assert_eq!(check(None, None), (vec![], None));
    }

    #[test]
    fn cluster_masters_are_watched_one_by_one() {
        let mut seen = Seen::default();
        let nodes = [Some("a:1".to_owned()), Some("b:2".to_owned())];
        let mut servers = [
            reading(Some("a:1"), Some("noeviction"), Some(0)),
            reading(Some("b:2"), Some("volatile-lru"), Some(0)),
        ];
        let warnings = seen.record(&mut servers, &nodes);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].node(), Some("b:2"));
        assert_eq!(
            seen.refusal().as_deref(),
            Some(
                "the Redis server at b:2 may evict counters (maxmemory-policy volatile-lru); set \
                 maxmemory-policy noeviction"
            )
        );
        // b:2 did not answer this time: what it last showed still holds.
        let mut servers = [reading(Some("a:1"), Some("noeviction"), Some(3))];
        let warnings = seen.record(&mut servers, &nodes);
        assert_eq!(
            warnings,
            [RedisWarning::KeysEvicted {
                node: Some("a:1".into()),
                evicted: 3
            }]
        );
        assert!(seen.refusal().is_some());
        // b:2 left the cluster: forgotten.
        let mut servers = [reading(Some("a:1"), Some("noeviction"), Some(3))];
        assert!(seen.record(&mut servers, &nodes[..1]).is_empty());
        assert_eq!(seen.refusal(), None);
    }

    #[test]
    fn warnings_read_as_sentences() {
        let evicting = RedisWarning::EvictingPolicy {
            node: None,
            policy: "allkeys-lru".into(),
            maxmemory: Some(2_097_152),
        };
        assert_eq!(
            evicting.to_string(),
            "Redis may evict rate-limit counters: maxmemory-policy is allkeys-lru (maxmemory \
             2097152 bytes); an evicted counter lets its window admit more than its limit; set \
             maxmemory-policy noeviction"
        );
        let unlimited = RedisWarning::EvictingPolicy {
            node: Some("10.0.0.1:7000".into()),
            policy: "volatile-lru".into(),
            maxmemory: Some(0),
        };
        assert!(unlimited.to_string().starts_with(
            "Redis at 10.0.0.1:7000 may evict rate-limit counters: maxmemory-policy is \
             volatile-lru (maxmemory 0: no limit now, but one can be set at any time)"
        ));
        let evicted = RedisWarning::KeysEvicted {
            node: None,
            evicted: 565_042,
        };
        assert!(
            evicted
                .to_string()
                .starts_with("Redis evicted 565042 keys since the last check")
        );
        assert!(
            RedisWarning::PolicyUnknown { node: None }
                .to_string()
                .contains("could not be read")
        );
        let report = EvictionReport {
            servers: vec![reading(None, Some("allkeys-lfu"), Some(9))],
        };
        assert!(report.may_evict());
        assert_eq!(report.warnings().len(), 1);
    }
}
