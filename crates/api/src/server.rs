//! Serving HTTP with deadlines, so no client can hold the API: a request's head must arrive
//! within `HTTP_HEADER_TIMEOUT_MS` (on a new or a kept-alive connection; hyper closes the
//! connection otherwise), its body within `HTTP_BODY_TIMEOUT_MS` (a 408, by the router's
//! `RequestBodyTimeoutLayer`), and after SIGTERM/SIGINT the requests in flight get
//! `SHUTDOWN_GRACE_MS` to finish before [`serve`] returns anyway.
//!
//! `axum::serve` has neither a header deadline nor a bound on its graceful shutdown (one
//! client that sends half a request head keeps it waiting forever), so this is its accept loop
//! with hyper-util's connection builder and graceful-shutdown watcher.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// The deadlines [`serve`] applies.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For a request's head.
    pub header: Duration,
    /// For the requests in flight once `shutdown` resolved.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then gives the requests in flight
/// `deadlines.shutdown_grace` and returns. Returns whether they all finished in time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    deadlines: Deadlines,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(deadlines.header))
        .keep_alive_timeout(deadlines.header);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, a connection reset before accept: the
                        // listener itself is fine.
                        debug!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(20)).await; // back off, not synchronisation
                        continue;
                    }
                };
                let service = TowerToHyperService::new(
                    app.clone()
                        .map_request(|req: hyper::Request<Incoming>| req.map(axum::body::Body::new)),
                );
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    match tokio::time::timeout(deadlines.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => {
            info!("every connection closed");
            true
        }
        Err(_) => {
            warn!(
                grace_ms = u64::try_from(deadlines.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
                "connections still open after SHUTDOWN_GRACE_MS; exiting anyway"
            );
            false
        }
    }
}
