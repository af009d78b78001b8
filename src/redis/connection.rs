//! [`RedisConnection`]: how calls reach Redis, one server or a Cluster, and what a call sends.

use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Cmd, FromRedisValue, RedisResult};

use super::builder::DEFAULT_TIMEOUT;
use super::cluster::ClusterRouter;
use super::errors::{Failure, backend_error, refused_for_good, url_error, within};
use super::script::Script;
#[cfg(feature = "tls")]
use super::tls::{install_tls_provider, is_tls};
use crate::Error;

/// A connection to a single Redis server (reconnecting by itself) or to a Redis Cluster (each
/// call routed to its key's master only, so a master that is down fails its own keys and no
/// others). Both multiplex every concurrent call over their connections; cloning one is cheap
/// and shares them. Made by the `connect*` functions; what it is built on is its own business.
#[derive(Clone)]
pub struct RedisConnection(Connection);

#[derive(Clone)]
enum Connection {
    /// One server, through redis-rs's `ConnectionManager`.
    Single(ConnectionManager),
    /// A cluster, through the crate's own router.
    Cluster(ClusterRouter),
}

impl RedisConnection {
    /// Connects to one server, e.g. `redis://127.0.0.1:6379/`.
    ///
    /// The connection has no response timeout of redis-rs's own: a limiter bounds each of its
    /// calls by its [`timeout`](crate::RedisLimiterBuilder::timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL does not parse; [`Error::Backend`] if the server
    /// cannot be reached.
    pub async fn connect(url: &str) -> Result<RedisConnection, Error> {
        #[cfg(feature = "tls")]
        if is_tls(url) {
            install_tls_provider();
        }
        let client = ::redis::Client::open(url).map_err(url_error)?;
        Self::single(client).await
    }

    /// Connects to the one server `client` names.
    pub(super) async fn single(client: ::redis::Client) -> Result<RedisConnection, Error> {
        // A refused password or certificate is final, but the connection manager retries it
        // with backoff for about ten seconds, as it does an unreachable server (which may be
        // starting): one plain connection first reports it at once.
        if let Err(error) = client.get_multiplexed_async_connection().await {
            if refused_for_good(&error) {
                return Err(backend_error(error));
            }
        }
        // No response timeout of redis-rs's own (500 ms by default): every call is bounded by
        // its limiter's timeout, and a second timer per call would cost as much again.
        let config = ConnectionManagerConfig::new().set_response_timeout(None);
        Ok(RedisConnection(Connection::Single(
            ConnectionManager::new_with_config(client, config)
                .await
                .map_err(backend_error)?,
        )))
    }

    /// Connects to a cluster through any of its nodes, reading slot maps within 50 ms (the
    /// limiter's default timeout); see
    /// [`connect_cluster_with_timeout`](Self::connect_cluster_with_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a URL does not parse; [`Error::Backend`] if no node can be
    /// reached.
    pub async fn connect_cluster(urls: &[&str]) -> Result<RedisConnection, Error> {
        Self::connect_cluster_with_timeout(urls, DEFAULT_TIMEOUT).await
    }

    /// Connects to a cluster through any of its nodes (`redis://` or `rediss://`, credentials
    /// in the URL), reading its slot map from the first that answers; `timeout` bounds each
    /// read of the slot map, and each connection attempt is given at least a second (it runs
    /// on its own, so no call waits for it beyond the call's own timeout). A limiter's calls
    /// are bounded by the limiter's [`timeout`](crate::RedisLimiterBuilder::timeout) alone. The first
    /// URL's credentials and scheme are used for every node the cluster names.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a URL does not parse; [`Error::Backend`] if no node gives
    /// its slot map within `timeout`.
    pub async fn connect_cluster_with_timeout(
        urls: &[&str],
        timeout: Duration,
    ) -> Result<RedisConnection, Error> {
        #[cfg(feature = "tls")]
        if urls.iter().any(|url| is_tls(url)) {
            install_tls_provider();
        }
        let router = ClusterRouter::connect(urls, timeout)
            .await
            .map_err(url_error)?;
        Ok(Self::with_router(router))
    }
}

impl RedisConnection {
    /// A connection through `router`.
    pub(super) fn with_router(router: ClusterRouter) -> RedisConnection {
        RedisConnection(Connection::Cluster(router))
    }

    /// The cluster router, unless this is one server.
    pub(super) fn cluster(&self) -> Option<&ClusterRouter> {
        match &self.0 {
            Connection::Single(_) => None,
            Connection::Cluster(router) => Some(router),
        }
    }

    /// Sends `request` to the server, or on a Cluster to the master of `slot`, and waits for
    /// its reply up to `timeout`; a call that gets none says what failed (see [`Failure`]).
    pub(super) async fn send<T: FromRedisValue>(
        &self,
        slot: u16,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<T, Failure> {
        match &self.0 {
            Connection::Single(c) => within(timeout, request.send(&mut c.clone()))
                .await
                .map_err(|cause| Failure::new(cause, false)),
            // Boxed: the router's future (redirects, retries) is kilobytes, and a single
            // server's calls should not carry it.
            Connection::Cluster(c) => Box::pin(c.query(slot, request, timeout)).await,
        }
    }
}

/// What a call sends.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    /// `EVALSHA` (the command), loading the script after `NOSCRIPT`.
    Script(&'a Script, &'a Cmd),
    /// Any other command: `DEL`, `CLUSTER SLOTS`.
    Command(&'a Cmd),
}

impl Request<'_> {
    pub(crate) async fn send<T: FromRedisValue>(
        self,
        connection: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self {
            Request::Script(script, command) => {
                Ok(T::from_redis_value(script.run(command, connection).await?)?)
            }
            Request::Command(command) => command.query_async(connection).await,
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Connection::Single(_) => "RedisConnection(one server)",
            Connection::Cluster(_) => "RedisConnection(cluster)",
        })
    }
}
