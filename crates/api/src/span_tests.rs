//! In-process span tests with `tracing-test`: the spans of `create_run`, `request_cancel` and
//! the HTTP server span, asserted on the lines `tracing` formats (span names, their fields and
//! the events inside), with no stack and no OTLP export — a real `nats-server` from
//! `test-support` stands behind the router. A contributor who renames a span or a field gets a
//! sub-second failure here before the end-to-end snapshot changes.
//!
//! Every span context seen is also checked against the span registry
//! (`crates/telemetry/spans.toml`), the file the end-to-end lint and the book read: each field
//! must be declared for its span, and each required attribute present — so the registry, these
//! tests and the snapshots cannot disagree.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use spantree::registry::Registry;
use test_support::fmt_line::{SpanContext, lines_with as contexts_of};
use tower::ServiceExt as _;
use tracing_test::traced_test;

use crate::{AppState, ConfigCache, Dispatching, config::Config, routes};

/// A NATS server (its log in a folder of the test's own), and the API's state on it with the
/// generic engine's config registered.
async fn app(test: &str) -> (test_support::NatsServer, AppState) {
    let logs = test_support::target_dir().join("api-span-tests").join(test);
    std::fs::create_dir_all(&logs).unwrap();
    let nats = test_support::NatsServer::start(&logs).await.unwrap();
    let client = nats.connect().await.unwrap();
    let config = Config::from_lookup(|k| (k == "AUTH_MODE").then(|| "header".to_owned())).unwrap();
    let infra = common::infra::Infra::ensure_with(client.clone(), None)
        .await
        .unwrap();
    let engine = common::FullEngineConfig::load(
        &test_support::workspace_root().join("fixtures/engines/generic.yaml"),
    )
    .unwrap()
    .engine;
    infra
        .engine_configs
        .put(
            common::nats::engine_config_key(&engine.name, &engine.version),
            serde_json::to_vec(&engine).unwrap().into(),
        )
        .await
        .unwrap();
    let state = AppState {
        infra: Arc::new(infra),
        client,
        auth: Arc::new(config.auth.clone()),
        config: Arc::new(config),
        configs: ConfigCache::default(),
        dispatching: Dispatching::default(),
        quota_locks: crate::QuotaLocks::default(),
        active_counts: crate::ActiveCounts::default(),
    };
    (nats, state)
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-user-id", "alice")
        .header("content-type", "application/json")
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
        .unwrap();
    let res = routes::router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn run_request() -> serde_json::Value {
    serde_json::json!({
        "workflow_type": "SH", "workflow_type_version": "1",
        "workflow_url": test_support::workspace_root().join("fixtures/workflows/ok.sh").display().to_string(),
        "workflow_engine": "generic", "workflow_engine_version": "1",
    })
}

/// The registry, and the check of one span context against it (by its `otel.name` and
/// `otel.kind` when it sets them).
fn check_registered(registry: &Registry, c: &SpanContext) -> Result<(), String> {
    let name = c.get("otel.name").unwrap_or(&c.name);
    let kind = c.get("otel.kind").unwrap_or("internal");
    registry.check_fields("metis-api", name, kind, c.fields.keys().map(String::as_str))
}

fn registry() -> Registry {
    Registry::metis().unwrap()
}

#[tokio::test]
#[traced_test]
async fn create_run_spans_and_their_event() {
    let (_nats, state) = app("create_run_spans_and_their_event").await;
    let (status, body) = call(&state, "POST", "/runs", run_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let registry = registry();
    logs_assert(|lines| {
        let seen = contexts_of(lines, "Run created and dispatched");
        let [(contexts, rest)] = seen.as_slice() else {
            return Err(format!(
                "expected one 'Run created and dispatched' event, got {seen:?}"
            ));
        };
        let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
        if names != ["HTTP request", "create_run"] {
            return Err(format!(
                "the event is in {names:?}, not in HTTP request > create_run"
            ));
        }
        let (http, create) = (&contexts[0], &contexts[1]);
        for (k, v) in [
            ("otel.name", "POST /runs"),
            ("http.request.method", "POST"),
            ("http.route", "/runs"),
            ("url.path", "/runs"),
        ] {
            if http.get(k) != Some(v) {
                return Err(format!(
                    "HTTP span: {k} is {:?}, not {v}",
                    http.fields.get(k)
                ));
            }
        }
        for (k, v) in [
            ("user_id", "alice"),
            ("workflow_type", "SH"),
            ("workflow_engine", "generic"),
            ("run_id", run_id.as_str()),
        ] {
            if create.get(k) != Some(v) {
                return Err(format!(
                    "create_run: {k} is {:?}, not {v}",
                    create.fields.get(k)
                ));
            }
        }
        if !rest.contains("nats_subject=metis.runs.generic.1.SH.1") {
            return Err(format!("the event lacks nats_subject: {rest}"));
        }
        check_registered(&registry, http)?;
        check_registered(&registry, create)
    });
}

#[tokio::test]
#[traced_test]
async fn a_refused_run_fails_inside_the_http_span() {
    let (_nats, state) = app("a_refused_run_fails_inside_the_http_span").await;
    let mut request = run_request();
    request["workflow_engine"] = "nope".into();
    let (status, body) = call(&state, "POST", "/runs", request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let registry = registry();
    logs_assert(|lines| {
        let seen = contexts_of(lines, "request refused");
        let [(contexts, rest)] = seen.as_slice() else {
            return Err(format!(
                "expected one 'request refused' event, got {seen:?}"
            ));
        };
        let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
        if names != ["HTTP request"] {
            return Err(format!("the failure is logged in {names:?}"));
        }
        if !rest.contains("status=400") || !rest.contains("nope") {
            return Err(format!(
                "the event does not say 400 and name the engine: {rest}"
            ));
        }
        check_registered(&registry, &contexts[0])
    });
}

#[tokio::test]
#[traced_test]
async fn request_cancel_of_a_queued_run() {
    let (_nats, state) = app("request_cancel_of_a_queued_run").await;
    let (_, body) = call(&state, "POST", "/runs", run_request()).await;
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &state,
        "POST",
        &format!("/runs/{run_id}/cancel"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "CANCELED", "{body}");
    let registry = registry();
    logs_assert(|lines| {
        let seen = contexts_of(lines, "Queued run canceled immediately");
        let [(contexts, _)] = seen.as_slice() else {
            return Err(format!(
                "expected one 'Queued run canceled immediately', got {seen:?}"
            ));
        };
        let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
        if names != ["HTTP request", "request_cancel"] {
            return Err(format!("the event is in {names:?}"));
        }
        let http = &contexts[0];
        if http.fields.get("otel.name").map(String::as_str) != Some("POST /runs/{run_id}/cancel") {
            return Err(format!(
                "the server span is named {:?}",
                http.fields.get("otel.name")
            ));
        }
        if contexts[1].fields.get("run_id") != Some(&run_id) {
            return Err(format!(
                "request_cancel: run_id is {:?}",
                contexts[1].fields.get("run_id")
            ));
        }
        check_registered(&registry, http)?;
        check_registered(&registry, &contexts[1])
    });
}

#[tokio::test]
#[traced_test]
async fn a_failed_read_is_named_after_its_route() {
    let (_nats, state) = app("a_failed_read_is_named_after_its_route").await;
    let id = "01960000-0000-7000-8000-000000000000";
    let (status, _) = call(
        &state,
        "GET",
        &format!("/runs/{id}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let registry = registry();
    logs_assert(|lines| {
        let seen = contexts_of(lines, "request refused");
        let [(contexts, rest)] = seen.as_slice() else {
            return Err(format!("expected one 'request refused', got {seen:?}"));
        };
        let http = &contexts[0];
        let want = [
            ("otel.name", "GET /runs/{run_id}".to_owned()),
            ("http.route", "/runs/{run_id}".to_owned()),
            ("url.path", format!("/runs/{id}")),
        ];
        for (k, v) in &want {
            if http.fields.get(*k) != Some(v) {
                return Err(format!("{k} is {:?}, not {v}", http.fields.get(*k)));
            }
        }
        if !rest.contains("status=404") {
            return Err(format!("not a 404: {rest}"));
        }
        check_registered(&registry, http)
    });
}
