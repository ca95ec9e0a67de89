//! A tiny static file server for the built site (axum + tower-http's `ServeDir`).
//!
//! `serve` uses it on a fixed port for people; the browser test on an ephemeral port, and
//! reads back [`Server::misses`]: every request answered with a 4xx/5xx (a missing stylesheet,
//! script or image shows up here even when the page still renders).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::oneshot;
use tower_http::services::ServeDir;

type Misses = Arc<Mutex<Vec<String>>>;

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    misses: Misses,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(State(misses): State<Misses>, req: Request, next: Next) -> Response {
    let what = req.uri().to_string();
    let res = next.run(req).await;
    let status = res.status();
    if (status.is_client_error() || status.is_server_error())
        && let Ok(mut m) = misses.lock()
    {
        m.push(format!("{} {what}", status.as_u16()));
    }
    res
}

impl Server {
    /// Serves `dir` on `addr` (port 0 = ephemeral). Call inside a tokio runtime.
    pub async fn start(dir: &Path, addr: SocketAddr) -> Result<Self> {
        let misses: Misses = Arc::default();
        let app = Router::new()
            .fallback_service(ServeDir::new(dir))
            .layer(middleware::from_fn_with_state(misses.clone(), record));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            url: format!("http://{local}"),
            misses,
            stop: Some(tx),
            task,
        })
    }

    /// Every 4xx/5xx answered so far, as `status path`.
    #[must_use]
    pub fn misses(&self) -> Vec<String> {
        self.misses.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_files_and_records_misses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<h1>hi</h1>").unwrap();
        let srv = Server::start(dir.path(), ([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let get = |path: &str| {
            let url = format!("{}{path}", srv.url);
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let addr = url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned();
                let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap_or(""));
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        assert!(get("/").await.contains("<h1>hi</h1>"));
        assert!(get("/nope.css").await.starts_with("HTTP/1.0 404"));
        assert_eq!(srv.misses(), ["404 /nope.css"]);
        srv.stop().await;
    }
}
