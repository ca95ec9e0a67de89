//! Starting the Metis binaries as supervised processes, and a small HTTP client for the API.
//!
//! Both binaries are started with [`crate::clean_command`] (nothing from the caller's shell
//! leaks in), `LOG_FORMAT=json`, port 0, and are ready once they log their `listening` event
//! and answer `/readyz`. The API is started in its production mode, bearer tokens verified
//! with a random per-process HS256 secret ([`jwt_secret`]); [`ApiClient`] mints a token for
//! its user with [`mint_token`], so tests call the API as a real client would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{NatsEndpoint, Proc, bin, clean_command, wait_for};

/// The HS256 secret every API started by [`start_api`] in this process verifies tokens with
/// (random per test process, so no token outlives its test run).
#[must_use]
pub fn jwt_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| crate::random_hex(32))
}

/// A token for `user` valid for an hour, signed with [`jwt_secret`].
#[must_use]
pub fn mint_token(user: &str) -> String {
    mint_token_with(
        user,
        jwt_secret(),
        serde_json::json!({"exp": now_s() + 3600, "iat": now_s()}),
    )
}

/// A dozen malformed `Authorization` header values, each carrying `secret` (a bare token, the
/// wrong scheme, a missing space, stray punctuation, a well-formed `Bearer` with a non-JWT):
/// what a hostile or careless client sends. No reply, span or log line may quote any of it.
#[must_use]
pub fn malformed_authorizations(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        format!("{secret} {secret}"),
        format!("Basic {secret}"),
        format!("Token {secret}"),
        format!("Bearer{secret}"),
        format!("bearer: {secret}"),
        format!("{secret}Bearer {secret}"),
        format!("Bearer {secret}"),
        format!("Bearer {secret}.{secret}.{secret}"),
        format!("JWT {secret}"),
        format!("Bearer-{secret}"),
        format!("Digest username=\"{secret}\""),
    ]
}

/// A token for `user` with `claims` (added to `sub`), signed with `secret`: expired, foreign
/// or otherwise hostile tokens for tests.
#[must_use]
pub fn mint_token_with(user: &str, secret: &str, claims: Value) -> String {
    let mut body = serde_json::json!({"sub": user});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), claims) {
        b.extend(extra);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &body,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a test token")
}

/// A JWT with header `header` and claims `claims` and an arbitrary signature `signature`
/// (e.g. empty, for `alg: none`): a token no key signed, for tests that must be refused.
#[must_use]
pub fn forged_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// URL-safe base64 without padding (JWT segments).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Seconds since the epoch.
#[must_use]
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a binary may take to start and become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The address in a JSON log line whose message is `listening`.
#[must_use]
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    let mut addr: SocketAddr = v.get("addr")?.as_str()?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    Some(addr)
}

/// A running Metis binary.
pub struct Service {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

/// Starts `binary` with `env` (plus `LOG_FORMAT=json` and `RUST_LOG=info` unless given) and
/// waits for its `listening` line and a 200 from `/readyz`.
pub async fn start_service(
    name: &str,
    binary: &str,
    env: &[(&str, String)],
    log_dir: &Path,
) -> Result<Service> {
    let mut cmd = clean_command(bin(binary)?);
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(name, cmd, log_dir)?;
    let addr = proc
        .wait_for_line(
            &format!("{name} to log `listening`"),
            START_TIMEOUT,
            listening_addr,
        )
        .await?;
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    let ready = format!("{url}/readyz");
    wait_for(
        &format!("{name} to be ready at {ready}"),
        START_TIMEOUT,
        || async {
            match http.get(&ready).send().await {
                Ok(r) if r.status() == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    Ok(Service { proc, url })
}

/// The settings that choose how the API authenticates; `extra` setting one replaces the
/// default [`jwt_secret`].
pub const AUTH_KEY_VARS: [&str; 5] = [
    "AUTH_MODE",
    "AUTH_JWT_SECRET",
    "AUTH_JWT_SECRET_FILE",
    "AUTH_JWT_PUBLIC_KEY_FILE",
    "AUTH_JWKS_FILE",
];

/// Starts `metis-api` against `nats` (with its credentials), verifying tokens signed with
/// [`jwt_secret`] unless `extra` picks another key or mode ([`AUTH_KEY_VARS`]).
pub async fn start_api(
    nats: &NatsEndpoint,
    log_dir: &Path,
    extra: &[(&str, String)],
) -> Result<Service> {
    let mut env = nats.env();
    env.extend([
        ("APP_PORT", "0".to_owned()),
        ("APP_HOST", "127.0.0.1".to_owned()),
    ]);
    if !extra.iter().any(|(k, _)| AUTH_KEY_VARS.contains(k)) {
        env.push(("AUTH_JWT_SECRET", jwt_secret().to_owned()));
    }
    env.extend(extra.iter().cloned());
    start_service("metis-api", "metis-api", &env, log_dir).await
}

/// Starts `metis-engine-generic` with `config` against `nats` (with its credentials); `name`
/// tells instances apart.
pub async fn start_engine(
    name: &str,
    config: &Path,
    nats: &NatsEndpoint,
    log_dir: &Path,
    extra: &[(&str, String)],
) -> Result<Service> {
    let mut env = nats.env();
    env.extend([
        ("HEALTH_PORT", "0".to_owned()),
        ("ENGINE_CONFIG_PATH", config.display().to_string()),
    ]);
    env.extend(extra.iter().cloned());
    start_service(name, "metis-engine-generic", &env, log_dir).await
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

/// A thin client for the Metis HTTP API, as a user would call it.
#[derive(Clone)]
pub struct ApiClient {
    /// Base URL.
    pub base: String,
    /// The user its token names (`None`: no `Authorization` header).
    pub user: Option<String>,
    /// The `Authorization` header value sent with every request.
    authorization: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base` as user `alice`, with a token from [`mint_token`].
    #[must_use]
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            user: None,
            authorization: None,
            http: reqwest::Client::new(),
        }
        .as_user(Some("alice"))
    }

    /// The same client as another user, with a token of its own (`None` = no token).
    #[must_use]
    pub fn as_user(&self, user: Option<&str>) -> Self {
        Self {
            user: user.map(str::to_owned),
            authorization: user.map(|u| format!("Bearer {}", mint_token(u))),
            ..self.clone()
        }
    }

    /// The same client sending `Authorization: <value>` as given (a hostile or foreign token).
    #[must_use]
    pub fn with_authorization(&self, value: &str) -> Self {
        Self {
            user: None,
            authorization: Some(value.to_owned()),
            ..self.clone()
        }
    }

    /// The `Authorization` header this client sends.
    #[must_use]
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply> {
        let req = match &self.authorization {
            Some(a) => req.header("authorization", a),
            None => req,
        };
        let resp = req.send().await.context("sending a request to metis-api")?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.context("reading a metis-api response")?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            body,
            headers,
        })
    }

    /// GET a path with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// POST a JSON body with extra request headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Reply> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// POST raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<Reply> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// `POST /runs`; fails unless 200, returning the run id.
    pub async fn create_run(&self, body: &Value) -> Result<String> {
        let r = self.post("/runs", body).await?;
        if r.status != 200 {
            bail!("POST /runs answered {}: {}", r.status, r.body);
        }
        r.body["run_id"]
            .as_str()
            .map(str::to_owned)
            .context("POST /runs answered without run_id")
    }

    /// The run's state.
    pub async fn state(&self, run_id: &str) -> Result<String> {
        let r = self.get(&format!("/runs/{run_id}/status")).await?;
        r.body["state"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "GET /runs/{run_id}/status answered {}: {}",
                    r.status, r.body
                )
            })
    }

    /// Waits until the run's state is one of `states`; the error says what it was.
    pub async fn wait_for_state(
        &self,
        run_id: &str,
        states: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        const TERMINAL: [&str; 5] = [
            "COMPLETE",
            "EXECUTOR_ERROR",
            "SYSTEM_ERROR",
            "CANCELED",
            "PREEMPTED",
        ];
        let what = format!("run {run_id} to reach {}", states.join(" or "));
        let reached = wait_for(&what, timeout, || async {
            match self.state(run_id).await {
                Ok(s) if states.contains(&s.as_str()) => Ok(Ok(s)),
                // A terminal state that was not asked for will not change: stop waiting.
                Ok(s) if TERMINAL.contains(&s.as_str()) => Ok(Err(s)),
                Ok(s) => Err(format!("state {s}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        match reached {
            Ok(s) => Ok(s),
            Err(s) => {
                let detail = self
                    .get(&format!("/runs/{run_id}"))
                    .await
                    .map(|r| r.body.to_string())
                    .unwrap_or_default();
                bail!("waiting for {what}: it ended {s} instead: {detail}")
            }
        }
    }

    /// Every captured line of the run as `stream: line`, following page tokens.
    pub async fn log_lines(&self, run_id: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(t) => format!("/runs/{run_id}/logs?page_token={t}"),
                None => format!("/runs/{run_id}/logs"),
            };
            let r = self.get(&path).await?;
            if r.status != 200 {
                bail!("GET {path} answered {}: {}", r.status, r.body);
            }
            for l in r.body["lines"].as_array().into_iter().flatten() {
                out.push(format!(
                    "{}: {}",
                    l["stream"].as_str().unwrap_or("?"),
                    l["line"].as_str().unwrap_or("")
                ));
            }
            match r.body["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(out),
            }
        }
    }
}
