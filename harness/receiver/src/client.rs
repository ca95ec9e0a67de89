//! [`ReceiverClient`]: the harness's side of the receiver's query API, the same for a
//! receiver in this process, in a child process or in a container.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use reqwest::{Method, StatusCode, Url};

use super::query::{Query, service_name, span_count};
use super::{Stats, WAIT_HEADER};

/// Budget for requests that do not wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a wait's own timeout for the request carrying it.
const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// How many spans a timeout message lists.
const LISTED_SPANS: usize = 20;

/// Why a [`ReceiverClient`] call failed. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL does not parse.
    #[error("parse the otlp receiver url {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// Why it is not a URL.
        reason: String,
    },
    /// No answer (connection refused, reset, request timeout).
    #[error("reach the otlp receiver at {url}")]
    Request {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer with an error status.
    #[error("query {url}: the otlp receiver answered {status}: {body}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The answer's body (the receiver's `{"error": ...}`).
        body: String,
    },
    /// An answer that does not decode.
    #[error("decode the otlp receiver's answer to {url}")]
    Decode {
        /// The request URL.
        url: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// [`ReceiverClient::wait_for`]'s condition did not hold before its deadline.
    #[error("see {awaited} within {timeout:?}; saw {seen}")]
    TimedOut {
        /// The condition ([`Query`]'s `Display`).
        awaited: String,
        /// How long the receiver waited.
        timeout: Duration,
        /// The spans that matched the filters when time ran out.
        seen: String,
        /// Those spans.
        data: Box<TracesData>,
    },
}

/// The answer to a wait.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitResult {
    /// The spans matching the query's filters when the wait ended.
    pub data: TracesData,
    /// Whether the deadline passed before the condition held.
    pub timed_out: bool,
    /// Number of spans in `data`.
    pub span_count: usize,
}

/// A client for the receiver's HTTP query API.
#[derive(Debug, Clone)]
pub struct ReceiverClient {
    base: String,
    http: reqwest::Client,
}

impl ReceiverClient {
    /// A client for the receiver whose HTTP port is at `base_url` (`http://127.0.0.1:4318`).
    /// A URL that does not parse makes every call fail with [`ClientError::InvalidUrl`].
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// A client for the receiver whose HTTP port is `addr`.
    #[must_use]
    pub fn for_addr(addr: SocketAddr) -> Self {
        Self::new(format!("http://{addr}"))
    }

    /// The receiver's base URL, as given.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str, query: Option<&Query>) -> Result<Url, ClientError> {
        let mut url = Url::parse(&self.base).map_err(|e| ClientError::InvalidUrl {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        url.set_path(path);
        url.set_query(None);
        if let Some(query) = query {
            let Query {
                trace_id,
                service_name,
                span_name,
                min_spans,
                quiet_ms,
                timeout_ms,
            } = query;
            append_pairs(
                &mut url,
                [
                    ("trace_id", trace_id.clone()),
                    ("service_name", service_name.clone()),
                    ("span_name", span_name.clone()),
                    ("min_spans", min_spans.map(|n| n.to_string())),
                    ("quiet_ms", quiet_ms.map(|n| n.to_string())),
                    ("timeout_ms", timeout_ms.map(|n| n.to_string())),
                ],
            );
        }
        Ok(url)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        timeout: Duration,
    ) -> Result<(reqwest::Response, String), ClientError> {
        self.send_body(method, url, timeout, None).await
    }

    async fn send_body(
        &self,
        method: Method,
        url: Url,
        timeout: Duration,
        json: Option<Vec<u8>>,
    ) -> Result<(reqwest::Response, String), ClientError> {
        let shown = url.to_string();
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(body) = json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Request {
                url: shown.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                url: shown,
                status,
                body,
            });
        }
        Ok((response, shown))
    }

    async fn text(response: reqwest::Response, url: &str) -> Result<String, ClientError> {
        response
            .text()
            .await
            .map_err(|source| ClientError::Request {
                url: url.to_owned(),
                source,
            })
    }

    fn decode<T: serde::de::DeserializeOwned>(body: &str, url: &str) -> Result<T, ClientError> {
        serde_json::from_str(body).map_err(|source| ClientError::Decode {
            url: url.to_owned(),
            source,
        })
    }

    /// Succeeds when the receiver answers `GET /healthz`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.send(Method::GET, self.url("/healthz", None)?, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// The spans matching `query`'s filters, now (its wait condition is ignored).
    pub async fn traces(&self, query: &Query) -> Result<TracesData, ClientError> {
        let url = self.url("/v1/traces", Some(&query.filters_only()))?;
        let (response, url) = self.send(Method::GET, url, REQUEST_TIMEOUT).await?;
        Self::decode(&Self::text(response, &url).await?, &url)
    }

    /// The log records matching `query`, after waiting for its `min_records` up to its
    /// timeout (what matched either way; compare the count to know whether it held).
    pub async fn logs(&self, query: &crate::LogQuery) -> Result<crate::LogsData, ClientError> {
        let mut url = self.url("/v1/logs", None)?;
        let crate::LogQuery {
            trace_id,
            service_name,
            min_records,
            timeout_ms,
        } = query;
        append_pairs(
            &mut url,
            [
                ("trace_id", trace_id.clone()),
                ("service_name", service_name.clone()),
                ("min_records", min_records.map(|n| n.to_string())),
                ("timeout_ms", timeout_ms.map(|n| n.to_string())),
            ],
        );
        let timeout = query.effective_timeout() + WAIT_MARGIN;
        let (response, url) = self.send(Method::GET, url, timeout).await?;
        Self::decode(&Self::text(response, &url).await?, &url)
    }

    /// The spans matching `query`'s filters as the receiver encodes them (OTLP/JSON
    /// `TracesData`), e.g. to keep as a failure artefact.
    pub async fn traces_json(&self, query: &Query) -> Result<String, ClientError> {
        let url = self.url("/v1/traces", Some(&query.filters_only()))?;
        let (response, url) = self.send(Method::GET, url, REQUEST_TIMEOUT).await?;
        Self::text(response, &url).await
    }

    /// Waits on the receiver until `query`'s condition holds or its timeout passes, and
    /// returns what matched either way.
    pub async fn wait(&self, query: &Query) -> Result<WaitResult, ClientError> {
        let url = self.url("/v1/traces", Some(query))?;
        let timeout = query.effective_timeout() + WAIT_MARGIN;
        let (response, url) = self.send(Method::GET, url, timeout).await?;
        let timed_out = response
            .headers()
            .get(WAIT_HEADER)
            .is_some_and(|v| v.as_bytes() == b"timeout");
        let data: TracesData = Self::decode(&Self::text(response, &url).await?, &url)?;
        Ok(WaitResult {
            span_count: span_count(&data),
            data,
            timed_out,
        })
    }

    /// Like [`wait`](Self::wait), but a timeout is an error that says what was awaited
    /// and which spans matched.
    pub async fn wait_for(&self, query: &Query) -> Result<TracesData, ClientError> {
        let result = self.wait(query).await?;
        if !result.timed_out {
            return Ok(result.data);
        }
        Err(ClientError::TimedOut {
            awaited: query.to_string(),
            timeout: query.effective_timeout(),
            seen: summarize(&result.data),
            data: Box::new(result.data),
        })
    }

    /// The receiver's counters.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        let (response, url) = self
            .send(Method::GET, self.url("/v1/stats", None)?, REQUEST_TIMEOUT)
            .await?;
        Self::decode(&Self::text(response, &url).await?, &url)
    }

    /// Sets the receiver's fault mode (see [`crate::fault`]); returns it as now in force.
    pub async fn set_faults(
        &self,
        mode: &crate::fault::FaultMode,
    ) -> Result<crate::fault::FaultStatus, ClientError> {
        let body = serde_json::to_vec(mode).expect("fault modes serialise");
        let url = self.url("/v1/faults", None)?;
        let (response, url) = self
            .send_body(Method::PUT, url, REQUEST_TIMEOUT, Some(body))
            .await?;
        Self::decode(&Self::text(response, &url).await?, &url)
    }

    /// The fault mode in force and how many exports it refused.
    pub async fn faults(&self) -> Result<crate::fault::FaultStatus, ClientError> {
        let (response, url) = self
            .send(Method::GET, self.url("/v1/faults", None)?, REQUEST_TIMEOUT)
            .await?;
        Self::decode(&Self::text(response, &url).await?, &url)
    }

    /// Makes the receiver behave again.
    pub async fn clear_faults(&self) -> Result<(), ClientError> {
        self.send(
            Method::DELETE,
            self.url("/v1/faults", None)?,
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Makes the receiver forget every kept span.
    pub async fn clear(&self) -> Result<(), ClientError> {
        self.send(
            Method::DELETE,
            self.url("/v1/traces", None)?,
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }
}

/// `2 matching spans: api/create_run, engine/workflow_run` (at most [`LISTED_SPANS`] named).
/// Adds the set query parameters to `url`.
fn append_pairs<const N: usize>(url: &mut Url, pairs: [(&str, Option<String>); N]) {
    let mut query = url.query_pairs_mut();
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, &value);
        }
    }
}

fn summarize(data: &TracesData) -> String {
    let names: Vec<String> = data
        .resource_spans
        .iter()
        .flat_map(|rs| {
            let service = service_name(rs).unwrap_or("?");
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |s| format!("{service}/{}", s.name))
        })
        .collect();
    match names.len() {
        0 => "no matching span".to_owned(),
        n => {
            let listed = names[..n.min(LISTED_SPANS)].join(", ");
            let more = n.saturating_sub(LISTED_SPANS);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let spans = if n == 1 { "span" } else { "spans" };
            format!("{n} matching {spans}: {listed}{more}")
        }
    }
}
