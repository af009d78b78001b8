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

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use parking_lot::{Mutex, RwLock};

use super::connection::Request;
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
/// The least time a connection attempt is given: a TLS handshake and `AUTH` across a network
/// take several round trips, more than a call's timeout may allow.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that has answered nothing for this long while calls were sent on it is made
/// again: it may be half-open (a NAT or firewall entry dropped, a partition), and would
/// otherwise time out every call until the operating system gives up on it, many minutes later.
const UNANSWERED_FOR: Duration = Duration::from_secs(5);

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
        let router = Arc::new(Router {
            template,
            seeds,
            // Connecting runs in a task of its own (see `Node::connection`), which no call
            // waits for beyond its own timeout: it may take as long as a handshake needs. No
            // response timeout of redis-rs's: every call is bounded by its caller's (the
            // limiter's, or the map read's own), and a second timer per call costs as much
            // again; an unanswered call leaves its mark (`unanswered_since_ms`) all the same.
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout.max(MIN_CONNECT_TIMEOUT)))
                .set_response_timeout(None),
            timeout,
            slots: RwLock::new(vec![None; SLOTS].into_boxed_slice()),
            epochs: Mutex::new(vec![0; SLOTS].into_boxed_slice()),
            nodes: Mutex::new(HashMap::new()),
            refreshing: AtomicBool::new(true),
            map_generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            watch_until_ms: AtomicU64::new(0),
            moved_meanwhile: Mutex::new(Vec::new()),
            refreshed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        for seed in &router.seeds {
            router.node(seed)?;
        }
        let read = router.refresh().await;
        router.refreshing.store(false, Ordering::Release);
        read?;
        Ok(ClusterRouter { inner: router })
    }

    /// Sends `request` to the master of `slot`, following redirects and retrying `TRYAGAIN`
    /// (setting `master_answered` once the master has answered either way).
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        slot: u16,
        request: Request<'_>,
        master_answered: &AtomicBool,
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
            // Whatever comes next, the master answered: a timeout from here on is not its own.
            master_answered.store(true, Ordering::Relaxed);
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
}

impl ClusterRouter {
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

    /// A number that grows whenever a slot's owner changes in the map: a caller that stopped
    /// sending to a failed master can send again once the map has changed, since a replica may
    /// have taken its place.
    pub(crate) fn map_generation(&self) -> u64 {
        self.inner.map_generation.load(Ordering::Acquire)
    }

    /// Every slot the master of `slot` serves, by the current map (`slot` alone if none does):
    /// a failed call trips them all, so a dead master costs one timeout per interval, not one
    /// per slot its keys happen to use.
    pub(crate) fn slots_of_master(&self, slot: u16) -> Vec<u16> {
        let slots = self.inner.slots.read();
        let Some(owner) = &slots[usize::from(slot) % SLOTS] else {
            return vec![slot];
        };
        (0..SLOTS)
            .filter(|&s| {
                slots[s]
                    .as_ref()
                    .is_some_and(|node| Arc::ptr_eq(node, owner))
            })
            .map(|s| s as u16)
            .collect()
    }

    /// Every master of the current map, as its `host:port` and one slot it serves: a command
    /// sent to that slot reaches that master (for checks that concern each server, not a key).
    pub(crate) fn masters(&self) -> Vec<(String, u16)> {
        let slots = self.inner.slots.read();
        let mut seen: Vec<&Arc<Node>> = Vec::new();
        let mut masters = Vec::new();
        for (slot, node) in slots.iter().enumerate() {
            if let Some(node) = node {
                if !seen.iter().any(|s| Arc::ptr_eq(s, node)) {
                    seen.push(node);
                    masters.push((node.address.to_string(), slot as u16));
                }
            }
        }
        masters
    }
}

impl Router {
    fn owner(&self, slot: u16) -> RedisResult<Arc<Node>> {
        self.slots.read()[usize::from(slot) % SLOTS]
            .clone()
            .ok_or_else(|| {
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ClusterDown),
                    "no master serves the slot",
                ))
            })
    }

    /// Records that `slot` has moved to `node` for good (its `MOVED` was followed and answered).
    fn moved(&self, slot: u16, node: Arc<Node>) {
        let mut map = self.slots.write();
        map[usize::from(slot) % SLOTS] = Some(node.clone());
        self.map_generation.fetch_add(1, Ordering::Release);
        // Under the map's lock, so a refresh installing now sees it either way.
        if self.refreshing.load(Ordering::Acquire) {
            self.moved_meanwhile.lock().push((slot, node));
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
        let _ = node.unanswered_since_ms.compare_exchange(
            0,
            now_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let result = if asking {
            request.send(&mut Asking(&mut connection)).await
        } else {
            request.send(&mut connection).await
        };
        // Any reply, an error reply too, shows the connection works.
        if result.as_ref().map_or_else(
            |error| matches!(error.kind(), ErrorKind::Server(_)),
            |_| true,
        ) && node.unanswered_since_ms.load(Ordering::Relaxed) != 0
        {
            // Written only when set: the common case reads a shared line and leaves it shared.
            node.unanswered_since_ms.store(0, Ordering::Relaxed);
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

    /// Replaces the map with the `CLUSTER SLOTS` reply that the node at `asked` gave, unless it
    /// knows fewer slots than the map and another node did not say the same number
    /// (`agreed_fewer`); that refusal's detail is the number it knew.
    ///
    /// With `epochs` (node id → config epoch, from the same node's `CLUSTER NODES`), a slot
    /// whose owner's epoch is lower than the one the map holds keeps its owner: the reply's
    /// view of it is older than the map's.
    fn install(
        &self,
        asked: &str,
        reply: Value,
        epochs: Option<&HashMap<String, u64>>,
        agreed_fewer: Option<usize>,
    ) -> RedisResult<()> {
        let asked_host = host_of(asked);
        let mut slots = vec![None; SLOTS].into_boxed_slice();
        let mut slot_epochs = vec![None; SLOTS].into_boxed_slice();
        let mut covered = 0;
        for range in array(reply)? {
            let mut fields = array(range)?.into_iter();
            let (Some(start), Some(end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let (start, end) = (integer(start)?, integer(end)?);
            let mut master = array(master)?.into_iter();
            let (Some(host), Some(port)) = (master.next(), master.next()) else {
                return Err(malformed());
            };
            // No endpoint (`cluster-preferred-endpoint-type unknown-endpoint`), an empty or an
            // unknown one means the host the reply came from.
            let host = match host {
                Value::Nil => String::new(),
                host => String::from_redis_value(host)?,
            };
            let host = if host.is_empty() || host == "?" {
                asked_host
            } else {
                &host
            };
            let node = self.node(&address(host, integer(port)? as u16))?;
            // The master's id follows its port (Redis 4 and later).
            let epoch = match master.next() {
                Some(Value::BulkString(id)) => epochs.and_then(|epochs| {
                    epochs
                        .get(std::str::from_utf8(&id).unwrap_or_default())
                        .copied()
                }),
                _ => None,
            };
            for slot in start..=end.min(SLOTS as i64 - 1) {
                slots[slot as usize] = Some(node.clone());
                slot_epochs[slot as usize] = epoch;
                covered += 1;
            }
        }
        if covered == 0 {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "the node serves no slot",
            )));
        }
        // A node still joining, or one with a stale view, may know fewer slots than the map
        // already does: its answer would send calls nowhere. Another node is asked instead, and
        // only when it knows the same number are the slots taken as given up (an operator
        // removed them); a slot that really lost its master answers `MOVED` or `CLUSTERDOWN` at
        // the old owner meanwhile.
        let known = self
            .slots
            .read()
            .iter()
            .filter(|node| node.is_some())
            .count();
        if covered < known && agreed_fewer != Some(covered) {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "the node knows fewer slots than the map",
                covered.to_string(),
            )));
        }
        let mut map = self.slots.write();
        let mut known = self.epochs.lock();
        let mut changed = false;
        let read = slots.into_vec().into_iter().zip(slot_epochs.iter());
        for (slot, (owner, epoch)) in read.enumerate() {
            match epoch {
                // An older view of the slot than the map's: keep the map's owner.
                Some(epoch) if *epoch < known[slot] && map[slot].is_some() => {}
                _ => {
                    let same = match (&map[slot], &owner) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    };
                    changed |= !same;
                    map[slot] = owner;
                    known[slot] = epoch.unwrap_or(0);
                }
            }
        }
        drop(known);
        if changed {
            self.map_generation.fetch_add(1, Ordering::Release);
        }
        // A `MOVED` followed while the map was being read may be newer than the read.
        for (slot, node) in self.moved_meanwhile.lock().drain(..) {
            map[usize::from(slot) % SLOTS] = Some(node);
        }
        let mut kept: Vec<Arc<str>> = self.seeds.clone();
        kept.extend(map.iter().flatten().map(|node| node.address.clone()));
        drop(map);
        // Nodes that left the cluster close their connections.
        self.nodes
            .lock()
            .retain(|address, _| kept.iter().any(|k| k == address));
        Ok(())
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

/// One node: its client and its current connection.
struct Node {
    address: Arc<str>,
    client: Client,
    /// The connection in use and its generation, which tells a broken connection from the one
    /// made after it.
    connection: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting, so that concurrent calls make one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// Whether a `PING` is out on the connection (see [`ClusterRouter::timed_out`]).
    probing: AtomicBool,
    /// Connection attempts that failed, counted: a call that waited while another call's
    /// attempt failed shares that failure rather than making one more attempt in its turn.
    failed_attempts: AtomicU64,
    /// When (ms from the router's epoch) a call was first sent on the connection without an
    /// answer since; 0 once something answered.
    unanswered_since_ms: AtomicU64,
}

impl Node {
    fn new(address: Arc<str>, client: Client) -> Node {
        Node {
            address,
            client,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            failed_attempts: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            unanswered_since_ms: AtomicU64::new(0),
        }
    }

    /// Sends one `PING` on the current connection, unless one is out already, and clears the
    /// unanswered mark when it is answered: the connection works, whatever timed out before.
    fn probe(self: &Arc<Self>) {
        let Some((_, mut connection)) = self.connection.lock().clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.probing.swap(true, Ordering::Acquire) {
            return;
        }
        let node = Arc::clone(self);
        runtime.spawn(async move {
            let command = ::redis::cmd("PING");
            let ping = command.query_async::<()>(&mut connection);
            if let Ok(Ok(())) = tokio::time::timeout(UNANSWERED_FOR, ping).await {
                node.unanswered_since_ms.store(0, Ordering::Relaxed);
            }
            node.probing.store(false, Ordering::Release);
        });
    }

    async fn connection(
        self: &Arc<Self>,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.connection.lock().clone() {
            return Ok(current);
        }
        // The attempt runs as a task of its own: a call that gives up at its timeout does not
        // cancel it, so a handshake (TLS, AUTH) slower than one call's budget still completes
        // for the calls after it, instead of starting over with each.
        let attempt = Arc::clone(self).connect(config.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(attempt).await.unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::other(
                    "the connection attempt was cancelled",
                )))
            }),
            Err(_) => attempt.await,
        }
    }

    async fn connect(
        self: Arc<Self>,
        config: AsyncConnectionConfig,
    ) -> RedisResult<(u64, MultiplexedConnection)> {
        let failed_before = self.failed_attempts.load(Ordering::Acquire);
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.connection.lock().clone() {
            return Ok(current);
        }
        // One attempt in flight per node: against a node that drops packets each attempt lasts
        // the whole connection timeout, and a burst of calls would otherwise queue as many
        // attempts, one after another, long after the calls themselves gave up.
        if self.failed_attempts.load(Ordering::Acquire) != failed_before {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection attempt made meanwhile failed",
            )));
        }
        let connection = match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(connection) => connection,
            Err(error) => {
                self.failed_attempts.fetch_add(1, Ordering::Release);
                return Err(error);
            }
        };
        let mut current = self.connection.lock();
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        *current = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// How long calls have gone unanswered on the connection, at `now_ms`.
    fn unanswered_for(&self, now_ms: u64) -> u64 {
        match self.unanswered_since_ms.load(Ordering::Relaxed) {
            0 => 0,
            since => now_ms.saturating_sub(since),
        }
    }

    /// Drops the connection, whatever its generation, and starts the unanswered time afresh.
    fn drop_connection(&self) {
        *self.connection.lock() = None;
        self.unanswered_since_ms.store(0, Ordering::Relaxed);
    }

    /// Drops the connection of `generation` if it is still the current one.
    fn forget(&self, generation: u64) {
        let mut current = self.connection.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

/// Connection generations, unique in the process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A connection that sends `ASKING` before each command, in one pipeline, as `ASK` requires.
struct Asking<'c>(&'c mut MultiplexedConnection);

impl ConnectionLike for Asking<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            pipe.cmd("ASKING").ignore().add_command(cmd.clone());
            let (value,): (Value,) = pipe.query_async(self.0).await?;
            Ok(value)
        })
    }

    /// Pipelines (which the limiter does not send) go as they are.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
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
/// Each node's config epoch by its id, from a `CLUSTER NODES` reply: lines of
/// `<id> <address> <flags> <master> <ping> <pong> <config epoch> <link> <slots>...`.
fn config_epochs(nodes: &str) -> HashMap<String, u64> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let epoch = fields.get(6)?.parse().ok()?;
            Some((fields.first()?.to_string(), epoch))
        })
        .collect()
}

fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

fn address(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

fn array(value: Value) -> RedisResult<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

fn integer(value: Value) -> RedisResult<i64> {
    match value {
        Value::Int(n) if (0..=i64::from(u16::MAX)).contains(&n) => Ok(n),
        _ => Err(malformed()),
    }
}

fn malformed() -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router {
            template: "redis://127.0.0.1:1".into_connection_info().unwrap(),
            seeds: Vec::new(),
            config: AsyncConnectionConfig::new(),
            timeout: Duration::from_millis(50),
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

    /// A `CLUSTER SLOTS` reply: `(start, end, port)` ranges on 127.0.0.1.
    fn reply(ranges: &[(i64, i64, i64)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port)| {
                    Value::Array(vec![
                        Value::Int(start),
                        Value::Int(end),
                        Value::Array(vec![
                            Value::BulkString(b"127.0.0.1".to_vec()),
                            Value::Int(port),
                        ]),
                    ])
                })
                .collect(),
        )
    }

    fn owner_port(router: &Router, slot: usize) -> Option<String> {
        router.slots.read()[slot]
            .as_ref()
            .map(|node| node.address.to_string())
    }

    #[test]
    fn a_map_that_one_node_knows_with_fewer_slots_does_not_replace_a_fuller_one() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7002")
        );
        // A node that knows only its own slots is refused; the map stays whole.
        let partial = [(0, 5460, 7000)];
        assert!(
            router
                .install("127.0.0.1:7000", reply(&partial), None, None)
                .is_err()
        );
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7002")
        );
        // A whole map with a slot moved replaces it.
        let moved = [
            (0, 5460, 7000),
            (5461, 10922, 7001),
            (10923, 16382, 7002),
            (16383, 16383, 7000),
        ];
        router
            .install("127.0.0.1:7001", reply(&moved), None, None)
            .unwrap();
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7000")
        );
        // A reply without hosts (`unknown-endpoint`) means the host that was asked.
        let no_host = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![Value::Nil, Value::Int(7005)]),
        ])]);
        router
            .install("127.0.0.9:7005", no_host, None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.9:7005"));
    }

    /// Slots given up on purpose (`CLUSTER DELSLOTS`) leave every node knowing fewer slots than
    /// the map: the second node that says so is believed.
    ///
    /// Regression test: a map that knew fewer slots was refused for ever.
    #[test]
    fn fewer_slots_are_believed_when_a_second_node_agrees() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        let given_up = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16000, 7002)];
        let refused = router
            .install("127.0.0.1:7000", reply(&given_up), None, None)
            .unwrap_err();
        assert_eq!(refused.detail(), Some("16001"));
        // Another number does not count as agreement.
        assert!(
            router
                .install("127.0.0.1:7001", reply(&given_up), None, Some(16000))
                .is_err()
        );
        router
            .install("127.0.0.1:7001", reply(&given_up), None, Some(16001))
            .unwrap();
        assert_eq!(owner_port(&router, 16383), None);
        assert_eq!(
            owner_port(&router, 16000).as_deref(),
            Some("127.0.0.1:7002")
        );
    }

    /// A slot that moved (its `MOVED` followed) while a refresh was reading the map keeps its
    /// new owner when the refresh installs what it read before the move.
    ///
    /// Regression test: the refresh's older map overwrote the move.
    #[test]
    fn a_move_seen_during_a_refresh_outlives_the_map_it_read() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        router.refreshing.store(true, Ordering::Release);
        let target = router.node("127.0.0.1:7001").unwrap();
        router.moved(42, target);
        // The refresh read the map before the move.
        router
            .install("127.0.0.1:7002", reply(&full), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 42).as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(owner_port(&router, 43).as_deref(), Some("127.0.0.1:7000"));
        // Applied once: the next refresh's map stands as read.
        router
            .install("127.0.0.1:7002", reply(&full), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 42).as_deref(), Some("127.0.0.1:7000"));
    }

    /// A `CLUSTER SLOTS` reply with each master's id: `(start, end, port, id)`.
    fn reply_with_ids(ranges: &[(i64, i64, i64, &str)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port, id)| {
                    Value::Array(vec![
                        Value::Int(start),
                        Value::Int(end),
                        Value::Array(vec![
                            Value::BulkString(b"127.0.0.1".to_vec()),
                            Value::Int(port),
                            Value::BulkString(id.as_bytes().to_vec()),
                        ]),
                    ])
                })
                .collect(),
        )
    }

    /// After a failover, the old master comes back still believing it serves its slots until
    /// the cluster tells it otherwise; a map read from it then names it, with its old config
    /// epoch, where the map already names its promoted replica with a higher one. Those slots
    /// keep the replica; the others take what the reply says.
    ///
    /// Regression test: the first full-looking reply was installed, whatever its age.
    #[test]
    fn a_map_from_an_out_of_date_node_does_not_take_slots_back() {
        let router = router();
        let nodes = "a 127.0.0.1:7000@17000 master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n\
                     c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383\n\
                     d 127.0.0.1:7003@17003 slave a 0 0 1 connected\n";
        let before = [
            (0, 5460, 7000, "a"),
            (5461, 10922, 7001, "b"),
            (10923, 16383, 7002, "c"),
        ];
        let epochs = config_epochs(nodes);
        assert_eq!(epochs.get("d"), Some(&1));
        router
            .install(
                "127.0.0.1:7001",
                reply_with_ids(&before),
                Some(&epochs),
                None,
            )
            .unwrap();
        // The replica d is promoted with epoch 4, as a live node reports.
        let promoted = nodes
            .replace("master - 0 0 1 connected 0-5460", "slave d 0 0 1 connected")
            .replace("slave a 0 0 1 connected", "master - 0 0 4 connected 0-5460");
        let after = [
            (0, 5460, 7003, "d"),
            (5461, 10922, 7001, "b"),
            (10923, 16383, 7002, "c"),
        ];
        router
            .install(
                "127.0.0.1:7001",
                reply_with_ids(&after),
                Some(&config_epochs(&promoted)),
                None,
            )
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7003"));
        // The old master's own view: itself at epoch 1; and slot 16383 moved to b at epoch 5.
        let stale = [
            (0, 5460, 7000, "a"),
            (5461, 10922, 7001, "b"),
            (10923, 16382, 7002, "c"),
            (16383, 16383, 7001, "b"),
        ];
        let stale_nodes = nodes.replace("master - 0 0 2", "master - 0 0 5");
        router
            .install(
                "127.0.0.1:7000",
                reply_with_ids(&stale),
                Some(&config_epochs(&stale_nodes)),
                None,
            )
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7003"));
        assert_eq!(owner_port(&router, 5460).as_deref(), Some("127.0.0.1:7003"));
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7001")
        );
        // Without epochs (`CLUSTER NODES` refused), replies count by arrival, as before.
        router
            .install("127.0.0.1:7000", reply_with_ids(&before), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7000"));
    }

    /// Against a node that accepts connections and never answers, ten calls at once wait for
    /// one connection attempt, not ten in turn.
    ///
    /// Regression test: each call spawned its own attempt, and they took turns on the lock,
    /// each lasting the whole connection timeout.
    #[test]
    fn concurrent_calls_share_one_connection_attempt() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        });
        let client = Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let node = Arc::new(Node::new(format!("127.0.0.1:{port}").into(), client));
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_millis(200)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results = runtime.block_on(async {
            let calls: Vec<_> = (0..10)
                .map(|_| {
                    let (node, config) = (node.clone(), config.clone());
                    tokio::spawn(async move { node.connection(&config).await.is_ok() })
                })
                .collect();
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.unwrap());
            }
            results
        });
        assert!(
            results.iter().all(|ok| !ok),
            "nothing answered: {results:?}"
        );
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one attempt for all ten"
        );
        assert_eq!(node.failed_attempts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn each_master_is_listed_once_with_a_slot_it_serves() {
        let router = ClusterRouter {
            inner: Arc::new(router()),
        };
        assert!(router.masters().is_empty());
        let map = [
            (0, 99, 7000),
            (100, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7000),
        ];
        router
            .inner
            .install("127.0.0.1:7000", reply(&map), None, None)
            .unwrap();
        assert_eq!(
            router.masters(),
            [
                ("127.0.0.1:7000".to_owned(), 0),
                ("127.0.0.1:7001".to_owned(), 100),
                ("127.0.0.1:7002".to_owned(), 5461),
            ]
        );
    }
}
