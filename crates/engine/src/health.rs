//! The health endpoints on `HEALTH_HOST:HEALTH_PORT` (loopback unless configured otherwise: a
//! probe from another host, such as Kubernetes', needs `HEALTH_HOST=0.0.0.0`). At shutdown a
//! client still connected after [`STOP_GRACE`] is cut off.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process serves |
//! | `GET /readyz` | 200 `{"status":"ok"}` when NATS is connected and the engine consumes runs, else 503 `{"status":"not ready","nats":…,"consuming":…}` |
//! | anything else | 404 `{"msg","status_code"}` |
//!
//! Binding logs one INFO `listening` event whose `addr` field is the bound socket address, so
//! a harness can start the engine with `HEALTH_PORT=0` and read the port from the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::EngineError;

/// How long the health server may take to close its connections at shutdown.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What readiness depends on.
#[derive(Clone)]
pub struct Health {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// Whether the consume loop is fetching runs.
    pub consuming: Arc<AtomicBool>,
}

/// Binds the port, logs `listening`, and serves until `stop` turns true.
pub async fn serve(
    host: &str,
    port: u16,
    health: Health,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, EngineError> {
    let ip: std::net::IpAddr = host.parse().map_err(|_| EngineError::Env {
        var: "HEALTH_HOST",
        value: host.to_owned(),
        reason: "is not an IP address".into(),
    })?;
    let addr = SocketAddr::from((ip, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| EngineError::Health {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| EngineError::Health {
            addr: addr.to_string(),
            source,
        })?;
    let app = router(health);
    tracing::info!(addr = %local_addr, "listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "health server stopped");
        }
    }))
}

fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(health)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(h): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let nats = h.client.connection_state() == async_nats::connection::State::Connected;
    let consuming = h.consuming.load(Ordering::SeqCst);
    if nats && consuming {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "nats": nats, "consuming": consuming})),
        )
    }
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"msg": format!("no route for {}", uri.path()), "status_code": 404})),
    )
}
