//! Serving the router: HTTP/1.1 connections on hyper, each given a deadline for its request
//! headers, at most so many at once, and a graceful end on Ctrl-C or SIGTERM.
//!
//! `axum::serve` sets no header-read timeout and takes every connection, so a client that sends
//! one header line a second keeps a connection (and its memory) forever, and enough of them
//! exhaust the process's file descriptors. Here a connection that has not sent a whole request
//! head within [`Limits::header_read_timeout`] is closed, and beyond
//! [`Limits::max_connections`] new connections wait in the listen queue until one closes.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// What one server allows its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a request's headers, counted from when the
    /// server starts reading them: from the connection's start, and again after each response
    /// (so an idle keep-alive connection is closed after as long).
    pub header_read_timeout: Duration,
    /// How many connections are served at once (at least 1).
    pub max_connections: usize,
}

/// Serves `app` on the connections `listener` accepts until `shutdown` completes, then stops
/// accepting, lets each connection finish the request it is serving, and returns once all
/// have closed.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
{
    // Every connection holds a slot while it is open; a semaphore allows at most u32::MAX
    // permits to be taken at once, which the end below does.
    let slots_total = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(slots_total as usize));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // No slot, no accept: the connection waits in the listen queue.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else {
            break; // the semaphore is never closed
        };
        let io = tokio::select! {
            (io, _addr) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let connection = connection(
            io,
            app.clone(),
            limits.header_read_timeout,
            stopping.clone(),
            slot,
        );
        tokio::spawn(connection);
    }
    drop(listener);
    let _ = stop.send(true);
    // Every slot back: every connection has ended.
    let _ = slots.acquire_many(slots_total).await;
}

/// Serves one connection until the client closes it, its request head takes too long, or the
/// server stops (after the request in progress, if any).
async fn connection<I>(
    io: I,
    app: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let service = TowerToHyperService::new(app);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        // A connection's errors (a client gone, a head too slow) concern that client only.
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    // A signal that cannot be listened for must not stop the server: wait forever instead.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("shutting down");
}
