//! [`ClusterRouter`]: Redis Cluster routing of our own, on redis-rs's per-node connections.
//!
//! Each call goes to the master of its key's hash slot and nowhere else, over one multiplexed
//! connection per master. A master that dies then costs its own slots only: the other masters'
//! connections are never waited on, and the slot map is only ever refreshed in the background,
//! behind a lock held for a swap, never across a network call. A timeout counts as evidence of
//! a lost master, as a broken connection does. (redis-rs 1.8.1's cluster client, measured under
//! the same faults, keeps the live masters' keys working too, but a timeout makes it retry the
//! same node rather than read the map, so a frozen or partitioned master's keys wait until it
//! answers again: BENCHMARKS.md, "Redis Cluster failover".)
//!
//! The routing is here; `node` keeps each node's connection and `slots` the slot map.

mod node;
mod slots;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind, Value,
};
use parking_lot::{Mutex, RwLock};

use self::node::{Asking, MIN_CONNECT_TIMEOUT, Node, UNANSWERED_FOR};
use self::slots::config_epochs;
use super::connection::Request;
use super::errors::{Failure, within};
use super::keys::SLOTS;

/// Redirects one call follows (`MOVED` and `ASK`) before it gives up: a slot moves once, and
/// one migration adds an `ASK`; more is a loop between nodes that disagree.
const MAX_REDIRECTS: u32 = 5;
/// The first wait before a call that got `TRYAGAIN` is sent again; it doubles, up to 16 times
/// this. The caller's timeout bounds the retries.
const TRY_AGAIN_AFTER: Duration = Duration::from_millis(2);
/// The slot map is read again at least this often while calls come.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Refreshes prompted by failures or redirects start at least this far apart.
const REFRESH_GAP: Duration = Duration::from_millis(200);
/// After a call finds its master failed, the map is read this often, for `WATCH_FOR`: a replica
/// is then used as soon as the cluster has promoted it, not at the next call the breaker lets
/// through.
const WATCH_EVERY: Duration = Duration::from_millis(50);
const WATCH_FOR: Duration = Duration::from_secs(10);

/// A connection to a Redis Cluster: a map from hash slot to master, read from the cluster
/// itself (`CLUSTER SLOTS`), and one multiplexed connection per master, made when first
/// needed and made again after it breaks. Cloning is cheap and shares both.
///
/// A call goes to its slot's master only, so a master that stops answering or dies fails the
/// calls for its own slots and no others. `MOVED` updates the slot and is followed, `ASK` is
/// followed with `ASKING` (up to five redirects in all), and `TRYAGAIN` (a migrating slot's keys
/// split between two nodes) is retried after a short wait, all within the caller's timeout;
/// `CLUSTERDOWN` is an error. The map is read again in the
/// background: after a redirect, after a connection to a master fails or a call to it times out
/// (to find a replica promoted in its place), and every few seconds.
#[derive(Clone)]
pub(crate) struct ClusterRouter {
    inner: Arc<Router>,
}

struct Router {
    /// The first seed's settings (credentials, TLS), from which every node's are made.
    template: ConnectionInfo,
    /// `host:port` of every seed: asked for the map when no known node answers.
    seeds: Vec<Arc<str>>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    /// The owner of each slot; `None` where no master serves it.
    slots: RwLock<Box<[Option<Arc<Node>>]>>,
    /// Per slot, the config epoch of its owner when the map named it (0: not known). Written
    /// under `slots`' write lock.
    epochs: Mutex<Box<[u64]>>,
    /// Every node known by address: the map's masters and the seeds.
    nodes: Mutex<HashMap<Arc<str>, Arc<Node>>>,
    refreshing: AtomicBool,
    /// Counts the changes of any slot's owner, so that callers can tell a map that changed
    /// since they last failed (see [`ClusterRouter::map_generation`]).
    map_generation: AtomicU64,
    /// Whether the map is being watched after a master failed, and until when (ms from `epoch`).
    watching: AtomicBool,
    watch_until_ms: AtomicU64,
    /// Slots updated by `MOVED` while a refresh was reading the map: applied over what it read.
    moved_meanwhile: Mutex<Vec<(u16, Arc<Node>)>>,
    /// When the latest refresh started, in ms from `epoch`.
    refreshed_ms: AtomicU64,
    epoch: Instant,
}

impl ClusterRouter {
    /// Reads the slot map from the first seed that answers within `timeout`.
    pub(crate) async fn connect(urls: &[&str], timeout: Duration) -> RedisResult<ClusterRouter> {
        let mut infos = Vec::with_capacity(urls.len());
        for url in urls {
            infos.push(url.into_connection_info()?);
        }
        Self::connect_to(infos, timeout).await
    }

    /// [`connect`](Self::connect) with the seeds' settings given whole (e.g. TLS with a
    /// private CA); the first one's credentials and TLS settings are used for every node.
    pub(crate) async fn connect_to(
        infos: Vec<ConnectionInfo>,
        timeout: Duration,
    ) -> RedisResult<ClusterRouter> {
        let Some(template) = infos.first().cloned() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no cluster node given",
            )));
        };
        let seeds = infos
            .iter()
            .filter_map(|info| host_port(info.addr()))
            .map(|(host, port)| Arc::<str>::from(address(host, port)))
            .collect();
        // Connecting runs in a task of its own (see `Node::connection`), which no call waits
        // for beyond its own timeout: it may take as long as a handshake needs. No response
        // timeout of redis-rs's: every call is bounded by its caller's (the limiter's, or the
        // map read's own), and a second timer per call costs as much again; an unanswered call
        // leaves its mark (`unanswered_since_ms`) all the same.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout.max(MIN_CONNECT_TIMEOUT)))
            .set_response_timeout(None);
        let router = Arc::new(Router::new(template, seeds, config, timeout));
        router.refreshing.store(true, Ordering::Release);
        for seed in &router.seeds {
            router.node(seed)?;
        }
        let read = router.refresh().await;
        router.refreshing.store(false, Ordering::Release);
        read?;
        Ok(ClusterRouter { inner: router })
    }

    /// Sends `request` to the master of `slot`, following redirects and retrying `TRYAGAIN`,
    /// for up to `timeout`. A call that fails after the master has answered (a redirect,
    /// `TRYAGAIN`) fails alone ([`Failure::Call`]), a timeout then included: the master is not
    /// to blame for it.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        slot: u16,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<T, Failure> {
        // Set by the call as it goes, and read however it ended: a timeout drops the call
        // wherever it was.
        let mut master_answered = false;
        let reply = within(timeout, self.follow(slot, request, &mut master_answered)).await;
        reply.map_err(|cause| Failure::new(cause, master_answered))
    }

    /// [`query`](Self::query) without its timeout: sets `master_answered` once the master has
    /// answered, with an error of its own, a redirect or `TRYAGAIN`.
    async fn follow<T: FromRedisValue>(
        &self,
        slot: u16,
        request: Request<'_>,
        master_answered: &mut bool,
    ) -> RedisResult<T> {
        let router = &self.inner;
        // One clock read per call serves the refresh schedule and the connection's health.
        let now_ms = router.now_ms();
        router.refresh_after(REFRESH_EVERY, now_ms);
        let node = match router.owner(slot) {
            Ok(node) => node,
            Err(error) => {
                // No master serves the slot by this map: it may be out of date.
                router.refresh_after(REFRESH_GAP, now_ms);
                return Err(error);
            }
        };
        // Redirects and `TRYAGAIN` are followed until the call succeeds or fails otherwise:
        // the caller's timeout bounds the whole call, and `MAX_REDIRECTS` a redirect loop.
        let (mut node, mut asking, mut moved_to) = (node, false, None);
        let (mut redirects, mut retries) = (0, 0);
        loop {
            let error = match router.send(&node, request, asking, now_ms).await {
                Ok(value) => {
                    if let Some(owner) = moved_to {
                        // The slot has moved for good: once its new owner has answered, later
                        // calls go there at once.
                        router.moved(slot, owner);
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            // A reply of the node's own (an error about the call, `CLUSTERDOWN` for one slot, a
            // redirect, `TRYAGAIN`) is an answer: what follows is not the master's failure. A
            // refused or broken connection is no answer.
            if matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension) {
                *master_answered = true;
            }
            if error.kind() == ErrorKind::Server(ServerErrorKind::TryAgain) {
                // A multi-key call whose keys are split between the two nodes of a migrating
                // slot: the migration moves them within moments.
                tokio::time::sleep(TRY_AGAIN_AFTER * (1 << retries.min(4))).await;
                retries += 1;
                continue;
            }
            let Some((to, _)) = error.redirect_node() else {
                if redirects == 0 && (error.is_unrecoverable_error() || error.is_timeout()) {
                    router.watch(now_ms);
                }
                return Err(error);
            };
            if redirects == MAX_REDIRECTS {
                return Err(error);
            }
            redirects += 1;
            // An empty host (`cluster-preferred-endpoint-type unknown-endpoint`) is the host of
            // the node that answered.
            let to = match to.strip_prefix(':') {
                Some(port) => format!("{}:{port}", host_of(&node.address)),
                None => to.to_owned(),
            };
            node = router.node(&to)?;
            // `ASK` sends this one call to the slot's importing node; `MOVED` moves the slot, and
            // the rest of the map is read again in case more moved with it.
            asking = error.kind() != ErrorKind::Server(ServerErrorKind::Moved);
            if !asking {
                moved_to = Some(node.clone());
                router.refresh_after(REFRESH_GAP, now_ms);
            }
        }
    }

    /// Tells the router that a call got no answer within its caller's timeout. A master that
    /// stops answering (frozen, or cut off by a partition) breaks no connection, so this is the
    /// only sign of it: the map is read again in the background, as after a broken connection,
    /// to find a replica promoted in its place as soon as the cluster has promoted one.
    ///
    /// A call that timed out at the master of `slot` (not after a redirect, `at_master`) also
    /// leaves that connection marked as unanswered, and its late reply, if any, goes nowhere:
    /// one `PING` on the connection tells a slow moment from a dead connection, so that a
    /// healthy one is not made again at the next call after an idle spell.
    pub(crate) fn timed_out(&self, slot: u16, at_master: bool) {
        let router = &self.inner;
        let now_ms = router.now_ms();
        router.refresh_after(REFRESH_GAP, now_ms);
        if at_master {
            router.watch(now_ms);
            if let Ok(node) = router.owner(slot) {
                node.probe();
            }
        }
    }
}

impl Router {
    /// A router with an empty slot map, from `seeds`.
    fn new(
        template: ConnectionInfo,
        seeds: Vec<Arc<str>>,
        config: AsyncConnectionConfig,
        timeout: Duration,
    ) -> Router {
        Router {
            template,
            seeds,
            config,
            timeout,
            slots: RwLock::new(vec![None; SLOTS].into_boxed_slice()),
            epochs: Mutex::new(vec![0; SLOTS].into_boxed_slice()),
            nodes: Mutex::new(HashMap::new()),
            refreshing: AtomicBool::new(false),
            map_generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            watch_until_ms: AtomicU64::new(0),
            moved_meanwhile: Mutex::new(Vec::new()),
            refreshed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The node at `host:port`, made (without connecting) if it is new.
    fn node(&self, address: &str) -> RedisResult<Arc<Node>> {
        if let Some(node) = self.nodes.lock().get(address) {
            return Ok(node.clone());
        }
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                RedisError::from((
                    ErrorKind::Parse,
                    "a cluster node address without a port",
                    address.to_owned(),
                ))
            })?;
        // The seed's credentials and TLS settings carry over to every node.
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let client = Client::open(self.template.clone().set_addr(addr))?;
        let address: Arc<str> = address.into();
        let node = Arc::new(Node::new(address.clone(), client));
        Ok(self.nodes.lock().entry(address).or_insert(node).clone())
    }

    async fn send<T: FromRedisValue>(
        self: &Arc<Self>,
        node: &Arc<Node>,
        request: Request<'_>,
        asking: bool,
        now_ms: u64,
    ) -> RedisResult<T> {
        if node.unanswered_for(now_ms) > UNANSWERED_FOR.as_millis() as u64 {
            node.drop_connection();
            self.refresh_after(REFRESH_GAP, now_ms);
        }
        let (generation, mut connection) = match node.connection(&self.config).await {
            Ok(connection) => connection,
            Err(error) => {
                self.refresh_after(REFRESH_GAP, now_ms);
                return Err(error);
            }
        };
        node.sent(now_ms);
        let result = if asking {
            request.send(&mut Asking(&mut connection)).await
        } else {
            request.send(&mut connection).await
        };
        // Any reply, an error reply too, shows the connection works.
        if result.as_ref().map_or_else(
            |error| matches!(error.kind(), ErrorKind::Server(_)),
            |_| true,
        ) {
            node.answered();
        }
        if let Err(error) = &result {
            // A timeout leaves the connection as it is (the node may only be slow); a broken
            // one is replaced, and the map read again in case the node is gone for good.
            if error.is_unrecoverable_error() && !error.is_timeout() {
                node.forget(generation);
                self.refresh_after(REFRESH_GAP, now_ms);
            }
        }
        result
    }

    /// Milliseconds since the router was made (at least 1, so that 0 can mean "never").
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Reads the map every `WATCH_EVERY` until `WATCH_FOR` after the latest call to this, in a
    /// task of its own (one at a time): a master that failed is replaced by its replica only
    /// once the cluster has promoted it, about a second later, and calls held back by the
    /// breaker would see that only when the breaker next lets one through.
    fn watch(self: &Arc<Self>, now_ms: u64) {
        self.watch_until_ms
            .store(now_ms + WATCH_FOR.as_millis() as u64, Ordering::Relaxed);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.watching.swap(true, Ordering::Acquire) {
            return;
        }
        let router = Arc::clone(self);
        runtime.spawn(async move {
            while router.now_ms() < router.watch_until_ms.load(Ordering::Relaxed) {
                tokio::time::sleep(WATCH_EVERY).await;
                router.refresh_after(WATCH_EVERY, router.now_ms());
            }
            router.watching.store(false, Ordering::Release);
        });
    }

    /// Starts reading the map in the background unless a read started less than `gap` before
    /// `now_ms` or is still running.
    fn refresh_after(self: &Arc<Self>, gap: Duration, now_ms: u64) {
        let last_ms = self.refreshed_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last_ms) < gap.as_millis() as u64 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::Acquire) {
            return;
        }
        self.refreshed_ms.store(now_ms, Ordering::Relaxed);
        let refreshing = Refreshing(self.clone());
        runtime.spawn(async move {
            // A failed read keeps the map as it was; the next failure or redirect tries again.
            let _ = refreshing.0.refresh().await;
        });
    }

    /// Reads `CLUSTER SLOTS` from the first node that answers, the map's masters before the
    /// seeds, and installs it.
    async fn refresh(self: &Arc<Self>) -> RedisResult<()> {
        // Moves recorded before this read are in the map it replaces, and in what it reads.
        self.moved_meanwhile.lock().clear();
        let mut candidates: Vec<Arc<Node>> = Vec::new();
        for node in self.slots.read().iter().flatten() {
            if !candidates.iter().any(|c| Arc::ptr_eq(c, node)) {
                candidates.push(node.clone());
            }
        }
        for seed in &self.seeds {
            let node = self.node(seed)?;
            if !candidates.iter().any(|c| Arc::ptr_eq(c, &node)) {
                candidates.push(node);
            }
        }
        // Start at a different node each time, so that a dead one is not always asked first.
        let start = self.refreshed_ms.load(Ordering::Relaxed) as usize;
        let slots_command = ::redis::cmd("CLUSTER").arg("SLOTS").to_owned();
        let nodes_command = ::redis::cmd("CLUSTER").arg("NODES").to_owned();
        let mut last_error = None;
        // How many slots the last node that knew fewer than the map said it knew: a second
        // node that agrees shows slots given up on purpose, not a node's partial view.
        let mut fewer = None;
        for i in 0..candidates.len() {
            let node = &candidates[(start + i) % candidates.len()];
            // The map, then each node's config epoch as this node knows it: a node whose view
            // is out of date (an old master back from a partition) names owners of lower
            // epochs than the map's, and those slots are not taken from it.
            let read = async {
                let now_ms = self.now_ms();
                let map = self.send::<Value>(node, Request::Command(&slots_command), false, now_ms);
                let map = map.await?;
                let nodes =
                    self.send::<String>(node, Request::Command(&nodes_command), false, now_ms);
                Ok((map, nodes.await.ok()))
            };
            let reply = tokio::time::timeout(self.timeout, read)
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                });
            let installed = reply.and_then(|(map, nodes)| {
                let epochs = nodes.as_deref().map(config_epochs);
                self.install(&node.address, map, epochs.as_ref(), fewer)
            });
            match installed {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if let Some(covered) = error.detail().and_then(|d| d.parse().ok()) {
                        fewer = Some(covered);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no cluster node given"))
        }))
    }
}

/// Marks the background read of the map as over when dropped: when it ends, and also when its
/// runtime shuts down under it, which would otherwise stop every later read.
struct Refreshing(Arc<Router>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

impl fmt::Debug for ClusterRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nodes: Vec<Arc<str>> = self.inner.nodes.lock().keys().cloned().collect();
        nodes.sort();
        f.debug_struct("ClusterRouter")
            .field("nodes", &nodes)
            .finish_non_exhaustive()
    }
}

fn host_port(addr: &ConnectionAddr) -> Option<(&str, u16)> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host, *port))
        }
        _ => None,
    }
}

/// The host part of a `host:port` address.
fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

fn address(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}
