//! TLS (feature `tls`): connecting with a private certificate authority, and the rustls
//! provider that redis-rs's TLS needs.

use super::builder::DEFAULT_TIMEOUT;
use super::cluster::ClusterRouter;
use super::connection::RedisConnection;
use super::errors::url_error;
use crate::{ConfigError, Error};

impl RedisConnection {
    /// Connects to one server over TLS, e.g. `rediss://redis.internal:6380/`, trusting the
    /// certificate authorities in `ca_pem` (PEM) rather than the system's: for a server whose
    /// certificate a private CA signed. The server's name (or IP address) must match its
    /// certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL does not parse or is not `rediss://`;
    /// [`Error::Backend`] if the server cannot be reached or its certificate is not trusted
    /// (e.g. `ca_pem` holds no certificate).
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn connect_with_ca(url: &str, ca_pem: &[u8]) -> Result<RedisConnection, Error> {
        install_tls_provider();
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = ::redis::Client::build_with_tls(url, certificates).map_err(url_error)?;
        Self::single(client).await
    }

    /// Connects to a cluster over TLS (`rediss://` URLs), trusting the certificate authorities
    /// in `ca_pem` (PEM) rather than the system's, as
    /// [`connect_with_ca`](Self::connect_with_ca) does for one server; otherwise as
    /// [`connect_cluster`](Self::connect_cluster).
    ///
    /// The router connects to each master at the address `CLUSTER SLOTS` gives, which is an IP
    /// address unless the nodes announce hostnames (`cluster-announce-hostname` with
    /// `cluster-preferred-endpoint-type hostname`): the nodes' certificates must name what they
    /// announce, e.g. `subjectAltName=IP:10.0.0.1`.
    ///
    /// # Errors
    ///
    /// As [`connect_cluster`](Self::connect_cluster); a URL that is not `rediss://` is
    /// [`Error::Config`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), ratewindow::Error> {
    /// use ratewindow::RedisConnection;
    ///
    /// let ca = std::fs::read("/etc/redis/ca.crt").expect("the CA certificate");
    /// let urls = ["rediss://10.0.0.1:6380/", "rediss://10.0.0.2:6380/"];
    /// let connection = RedisConnection::connect_cluster_with_ca(&urls, &ca).await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn connect_cluster_with_ca(
        urls: &[&str],
        ca_pem: &[u8],
    ) -> Result<RedisConnection, Error> {
        install_tls_provider();
        let mut infos = Vec::with_capacity(urls.len());
        for url in urls {
            if !is_tls(url) {
                return Err(Error::Config(ConfigError::InvalidSetting {
                    reason: "a TLS connection with a CA needs rediss:// URLs",
                }));
            }
            let certificates = ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca_pem.to_vec()),
            };
            let client = ::redis::Client::build_with_tls(*url, certificates).map_err(url_error)?;
            infos.push(client.get_connection_info().clone());
        }
        let router = ClusterRouter::connect_to(infos, DEFAULT_TIMEOUT)
            .await
            .map_err(url_error)?;
        Ok(RedisConnection::with_router(router))
    }
}

/// Whether `url` is a `rediss://` URL.
pub(super) fn is_tls(url: &str) -> bool {
    url.trim_start()
        .get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// redis-rs builds its TLS configuration on the process's default rustls provider, which rustls
/// picks by itself only when exactly one provider is compiled in. An application that also
/// pulls in `aws-lc-rs` would have none, so ring is installed unless one already is; only when
/// a `rediss://` connection is made, so that plain connections leave the process default alone.
pub(super) fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
