//! The Cluster's nodes: one multiplexed connection per node, made by one attempt at a time,
//! made again when it breaks or goes unanswered, and probed after a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Cmd, RedisError, RedisFuture, RedisResult, Value};
use parking_lot::Mutex;

/// The least time a connection attempt is given: a TLS handshake and `AUTH` across a network
/// take several round trips, more than a call's timeout may allow.
pub(super) const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that has answered nothing for this long while calls were sent on it is made
/// again: it may be half-open (a NAT or firewall entry dropped, a partition), and would
/// otherwise time out every call until the operating system gives up on it, many minutes later.
pub(super) const UNANSWERED_FOR: Duration = Duration::from_secs(5);

/// One node: its client and its current connection.
pub(super) struct Node {
    pub(super) address: Arc<str>,
    client: Client,
    /// The connection in use and its generation, which tells a broken connection from the one
    /// made after it.
    connection: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting, so that concurrent calls make one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// Whether a `PING` is out on the connection (see [`ClusterRouter::timed_out`](super::ClusterRouter::timed_out)).
    probing: AtomicBool,
    /// Connection attempts that failed, counted: a call that waited while another call's
    /// attempt failed shares that failure rather than making one more attempt in its turn.
    failed_attempts: AtomicU64,
    /// When (ms from the router's epoch) a call was first sent on the connection without an
    /// answer since; 0 once something answered.
    unanswered_since_ms: AtomicU64,
}

impl Node {
    pub(super) fn new(address: Arc<str>, client: Client) -> Node {
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
    pub(super) fn probe(self: &Arc<Self>) {
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

    pub(super) async fn connection(
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

    /// Marks a call as sent on the connection at `now_ms`, unless an earlier one is still
    /// unanswered.
    pub(super) fn sent(&self, now_ms: u64) {
        let _ = self.unanswered_since_ms.compare_exchange(
            0,
            now_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Clears the unanswered mark: something came back on the connection.
    pub(super) fn answered(&self) {
        if self.unanswered_since_ms.load(Ordering::Relaxed) != 0 {
            // Written only when set: the common case reads a shared line and leaves it shared.
            self.unanswered_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// How long calls have gone unanswered on the connection, at `now_ms`.
    pub(super) fn unanswered_for(&self, now_ms: u64) -> u64 {
        match self.unanswered_since_ms.load(Ordering::Relaxed) {
            0 => 0,
            since => now_ms.saturating_sub(since),
        }
    }

    /// Drops the connection, whatever its generation, and starts the unanswered time afresh.
    pub(super) fn drop_connection(&self) {
        *self.connection.lock() = None;
        self.unanswered_since_ms.store(0, Ordering::Relaxed);
    }

    /// Drops the connection of `generation` if it is still the current one.
    pub(super) fn forget(&self, generation: u64) {
        let mut current = self.connection.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

/// Connection generations, unique in the process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A connection that sends `ASKING` before each command, in one pipeline, as `ASK` requires.
pub(super) struct Asking<'c>(pub(super) &'c mut MultiplexedConnection);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
