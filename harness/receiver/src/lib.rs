//! The fake OTLP receiver: keeps every span it is sent and serves them back.
//!
//! - **gRPC port** (`grpc`): OTLP `TraceService` and `LogsService` (kept), `MetricsService`
//!   (accepted and counted); gzip accepted.
//! - **HTTP port** (`http`): OTLP/HTTP `POST /v1/{traces,logs,metrics}` (protobuf or JSON,
//!   plain or gzip; errors as `google.rpc.Status`) and the query API — `GET /v1/traces`
//!   answers OTLP/JSON `TracesData` (the collector file-exporter encoding, produced by
//!   `opentelemetry-proto`'s serde support), filtered and optionally long-polled with a
//!   [`Query`]; `GET /v1/logs` the same for log records as `LogsData` ([`LogQuery`]);
//!   `DELETE /v1/traces`, `DELETE /v1/logs`, `GET /v1/stats`,
//!   `GET /healthz`; `PUT|GET|DELETE /v1/faults` set, read and clear a fault mode (refuse the
//!   next exports with UNAVAILABLE/503 or throttle them with 429 `Retry-After`, or delay them;
//!   see [`fault`]).
//! - **Storage** (`store`): every export's `ResourceSpans` and `ResourceLogs` with resource
//!   and scope, in arrival order, never dropped or reordered; converted to JSON only when
//!   queried. Spans with invalid ids are refused with `partial_success` (`conform`).
//!
//! [`Receiver::start`] runs one in this process; the `otlp-receiver` binary runs the same
//! thing as a process (or in a `FROM scratch` container) and prints its [`Addresses`] as one
//! JSON line. [`ReceiverClient`] talks to either.
//!
//! Architecture invariant: nothing here sleeps to wait; waiters wake on ingest, on a timer for
//! the exact moment a quiet period ends, or at their deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

mod client;
mod conform;
pub mod fault;
mod grpc;
mod http;
mod logs;
mod query;
mod store;

pub use client::{ClientError, ReceiverClient, WaitResult};
pub use logs::LogQuery;
pub use opentelemetry_proto::tonic::logs::v1::LogsData;
pub use opentelemetry_proto::tonic::trace::v1::TracesData;
pub use query::{DEFAULT_TIMEOUT, MAX_TIMEOUT, Query, service_name, span_count};
pub use store::Stats;

/// Response header of `GET /v1/traces`: `ok` when the wait condition held, `timeout` when
/// the deadline passed first.
pub const WAIT_HEADER: &str = "x-otlp-wait";
/// Response header of `GET /v1/traces`: the number of spans in the answer.
pub const SPAN_COUNT_HEADER: &str = "x-otlp-span-count";
/// Response header of `GET /v1/logs`: the number of log records in the answer.
pub const LOG_COUNT_HEADER: &str = "x-otlp-log-count";
/// Largest export accepted, on either port.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long [`RunningReceiver::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The bound addresses; the `otlp-receiver` binary prints them as its first stdout line,
/// `{"grpc":"127.0.0.1:4317","http":"127.0.0.1:4318"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The OTLP/gRPC port.
    pub grpc: SocketAddr,
    /// The HTTP port (OTLP/HTTP and the query API).
    pub http: SocketAddr,
}

/// Why the receiver could not start. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound.
    #[error("bind the otlp receiver's {port} port on {addr}")]
    Bind {
        /// `grpc` or `http`.
        port: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a server stopped with an error. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("serve otlp/grpc")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("serve the otlp receiver's http port")]
    Http(#[source] io::Error),
    /// A server task panicked.
    #[error("run the otlp receiver's {0} server task")]
    Task(&'static str, #[source] JoinError),
}

/// Starts receivers.
#[derive(Debug, Clone, Copy)]
pub struct Receiver;

impl Receiver {
    /// Binds both ports (port 0 picks a free one) and serves them on the current Tokio
    /// runtime until [`RunningReceiver::shutdown`] or drop.
    pub async fn start(grpc: SocketAddr, http: SocketAddr) -> Result<RunningReceiver, StartError> {
        let bind = |port, addr| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { port, addr, source })?;
            let local =
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { port, addr, source })?;
            Ok::<_, StartError>((listener, local))
        };
        let (grpc_listener, grpc_addr) = bind("grpc", grpc).await?;
        let (http_listener, http_addr) = bind("http", http).await?;

        let store = Arc::new(store::Store::default());
        let (shutdown, stopped) = watch::channel(false);
        let signal = |mut stopped: watch::Receiver<bool>| async move {
            // Also ends when the sender is dropped.
            let _ = stopped.wait_for(|stop| *stop).await;
        };

        let grpc_task = tokio::spawn(
            grpc::router(Arc::clone(&store)).serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener),
                signal(stopped.clone()),
            ),
        );
        let http_task = tokio::spawn(
            axum::serve(http_listener, http::router(store, stopped.clone()))
                .with_graceful_shutdown(signal(stopped))
                .into_future(),
        );
        Ok(RunningReceiver {
            addresses: Addresses {
                grpc: grpc_addr,
                http: http_addr,
            },
            shutdown,
            tasks: Some((grpc_task, http_task)),
        })
    }

    /// [`start`](Self::start) on free loopback ports.
    pub async fn start_local() -> Result<RunningReceiver, StartError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start(any, any).await
    }
}

type Tasks = (
    JoinHandle<Result<(), tonic::transport::Error>>,
    JoinHandle<io::Result<()>>,
);

/// A receiver serving in this process. Dropping it stops the servers without waiting.
#[derive(Debug)]
pub struct RunningReceiver {
    addresses: Addresses,
    shutdown: watch::Sender<bool>,
    tasks: Option<Tasks>,
}

impl RunningReceiver {
    /// The bound addresses.
    #[must_use]
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The bound gRPC address.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    /// The bound HTTP address.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.addresses.http
    }

    /// `http://<grpc addr>`, for an OTLP/gRPC exporter.
    #[must_use]
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addresses.grpc)
    }

    /// `http://<http addr>`, the OTLP/HTTP base and the query API.
    #[must_use]
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.addresses.http)
    }

    /// A client for the query API.
    #[must_use]
    pub fn client(&self) -> ReceiverClient {
        ReceiverClient::for_addr(self.addresses.http)
    }

    /// Stops accepting, lets open requests finish (waits answer 503 at once) for up to a
    /// few seconds, then stops.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.shutdown.send_replace(true);
        let Some((mut grpc, mut http)) = self.tasks.take() else {
            return Ok(());
        };
        let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let grpc = (&mut grpc).await;
            let http = (&mut http).await;
            (grpc, http)
        })
        .await;
        let Ok((grpc, http)) = joined else {
            tracing::warn!(
                "otlp receiver connections still open after {SHUTDOWN_GRACE:?}; closing them"
            );
            grpc.abort();
            http.abort();
            return Ok(());
        };
        grpc.map_err(|e| ServeError::Task("grpc", e))?
            .map_err(ServeError::Grpc)?;
        http.map_err(|e| ServeError::Task("http", e))?
            .map_err(ServeError::Http)?;
        Ok(())
    }
}

impl Drop for RunningReceiver {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
