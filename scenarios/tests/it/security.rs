//! Security as a client sees it: requests without a valid bearer token stop at the HTTP span
//! with a 401 and reach nothing behind it, and no span carries a token; and a trace can start
//! in the client — the API continues an incoming W3C `traceparent`.

use harness::client_trace::{CLIENT_SERVICE, ClientSpan};
use harness::tree::{SpanKind, Value, expect};
use serde_json::json;
use test_support::metis::{jwt_secret, mint_token_with, now_s};

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};

/// **What it pins.** No token and an expired token: 401s that stop at the HTTP span with the reason
/// as `error`; the run of a valid token is its `sub`'s; no span carries a token.
///
/// **Why it matters.** Authentication is enforced at the HTTP span and never leaks: 401s stop there
/// with the reason, a run belongs to its token's subject, no span carries a token.
///
/// **If this changes.** A token value in any attribute is a security bug. A 401 that reaches
/// `create_run` means a handler runs before authentication.
// ANCHOR: authenticated_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_run() -> anyhow::Result<()> {
    stack("authenticated_run", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let anonymous = s.client.as_user(None);
                let r = anonymous.post("/runs", &run_body("ok.sh")).await?;
                assert_eq!(r.status, 401, "{}", r.body);
                let expired = mint_token_with("alice", jwt_secret(), json!({"exp": now_s() - 600}));
                let r = s
                    .client
                    .with_authorization(&format!("Bearer {expired}"))
                    .post("/runs", &run_body("ok.sh"))
                    .await?;
                assert_eq!(r.status, 401, "{}", r.body);
                assert!(
                    r.body["msg"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("expired"),
                    "{}",
                    r.body
                );
                // The run of a valid token; another user cannot see it.
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let bob = s.client.as_user(Some("bob"));
                assert_eq!(bob.get(&format!("/runs/{run}")).await?.status, 404);

                let ids = engine_ids(s).await?;
                let tokens = [
                    expired,
                    s.client.authorization().unwrap_or_default().to_owned(),
                ];
                // Three POSTs, and bob's failed read: a GET that failed is never left out.
                let forest = check_tree(s, "authenticated_run", 4, &ids).await?;
                expect::span()
                    .named("POST /runs")
                    .with_attr("http.response.status_code", 401)
                    .times(2)
                    .check(&forest)?;
                expect::span()
                    .named("GET /runs/{run_id}")
                    .with_attr("http.response.status_code", 404)
                    .once()
                    .check(&forest)?;
                expect::span()
                    .named("create_run")
                    .with_attr("user_id", "alice")
                    .once()
                    .check(&forest)?;
                // No attribute or event of any span holds a token (or a piece of one).
                for span in forest.spans() {
                    let texts = span.attributes().iter().map(|(_, v)| v).chain(
                        span.events()
                            .iter()
                            .flat_map(|e| e.attributes.iter().map(|(_, v)| v)),
                    );
                    for v in texts {
                        let text = match v {
                            Value::Str(t) => t.clone(),
                            other => format!("{other:?}"),
                        };
                        for t in &tokens {
                            let sig = t.rsplit('.').next().unwrap_or_default();
                            // `eyJ` starts every JWT (base64 of `{"`).
                            assert!(
                                !text.contains("eyJ") && (sig.len() < 16 || !text.contains(sig)),
                                "span {} carries a token: {text}",
                                span.name()
                            );
                        }
                    }
                }
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: authenticated_run

/// **What it pins.** The client's own span (its own OpenTelemetry SDK, `e2e-client`) is the root:
/// the API's `POST /runs` continues the incoming `traceparent`, down to `workflow_run`.
///
/// **Why it matters.** A client with its own OpenTelemetry SDK sees Metis inside its trace: the API
/// continues the incoming `traceparent` down to the engine.
///
/// **If this changes.** If the API's `POST /runs` becomes a root, incoming trace context is
/// ignored; clients lose the link from their request to the run.
// ANCHOR: client_started_trace
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_started_trace() -> anyhow::Result<()> {
    stack("client_started_trace", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                // The client's own span, exported by its own OpenTelemetry SDK.
                let client = ClientSpan::start(&s.infra.receiver.grpc, "submit workflow")?;
                let headers = client.headers();
                assert!(
                    headers.iter().any(|(k, _)| k == "traceparent"),
                    "{headers:?}"
                );
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let r = s
                    .client
                    .post_with("/runs", &run_body("ok.sh"), &pairs)
                    .await?;
                assert_eq!(r.status, 200, "{}", r.body);
                let run = r.body["run_id"].as_str().unwrap_or_default().to_owned();
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let trace_id = client.trace_id();
                client.end().await?;

                let ids = engine_ids(s).await?;
                let forest = check_tree(s, "client_started_trace", 1, &ids).await?;
                expect::span()
                    .named("POST /runs")
                    .with_kind(SpanKind::Server)
                    .child_of(
                        expect::span()
                            .named("submit workflow")
                            .in_service(CLIENT_SERVICE)
                            .with_kind(SpanKind::Client),
                    )
                    .once()
                    .check(&forest)?;
                expect::span()
                    .named("workflow_run")
                    .descendant_of(expect::span().named("submit workflow"))
                    .once()
                    .check(&forest)?;
                // The exported spans carry the client's trace id, not one the API made up.
                let data = s.receiver.traces(&harness::otlp::Query::default()).await?;
                let api_trace = data
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|ss| &ss.spans)
                    .find(|sp| sp.name == "POST /runs")
                    .map(|sp| {
                        sp.trace_id
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    });
                assert_eq!(api_trace.as_deref(), Some(trace_id.as_str()));
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: client_started_trace

/// A dozen malformed `Authorization` headers, each carrying `secret`: every one is a 401, and
/// no response, exported span or process log line holds any piece of what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_leaks_nothing() -> anyhow::Result<()> {
    stack("malformed_authorization", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let secret = "pw-9f8e7d6c5b4a3210";
                let shapes = test_support::metis::malformed_authorizations(secret);
                for shape in &shapes {
                    let client = s.client.with_authorization(shape);
                    for r in [
                        client.post("/runs", &run_body("ok.sh")).await?,
                        client.get("/runs").await?,
                    ] {
                        assert_eq!(r.status, 401, "{shape}: {}", r.body);
                        assert!(
                            !r.body.to_string().contains("9f8e7d6c"),
                            "{shape}: the reply quotes it: {}",
                            r.body
                        );
                    }
                }
                let data = s.collect_spans(shapes.len() * 2).await?;
                let spans = serde_json::to_string(&data)?;
                assert!(
                    !spans.contains("9f8e7d6c"),
                    "an exported span holds what was sent"
                );
                for entry in std::fs::read_dir(&s.dir)? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "log") {
                        let text = std::fs::read_to_string(&path)?;
                        assert!(
                            !text.contains("9f8e7d6c"),
                            "{} holds what was sent",
                            path.display()
                        );
                    }
                }
                Ok(())
            })
        })
        .await
}
