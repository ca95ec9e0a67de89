//! Data-driven tests of the normaliser, the renderer and the expectation API on hand-built OTLP
//! input. Every rendering check also replays the input in shuffled arrival orders.

use super::expect;
use super::testkit::*;
use super::{Options, SpanForest, TreeError};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// The fixtures are Metis-shaped: the Metis harness's id family, `run_id` → `[run#N]`.
fn metis() -> Options {
    Options::new().id_family("run_id", "run")
}

fn forest(spans: &[S], options: &Options) -> Result<SpanForest, TreeError> {
    SpanForest::from_otlp(&otlp(spans), options)
}

/// Renders `spans` (and every shuffle of them) and compares with `expected`.
#[track_caller]
fn check(spans: &[S], expected: &str) {
    check_with(spans, &metis(), expected);
}

#[track_caller]
fn check_with(spans: &[S], options: &Options, expected: &str) {
    let expected = expected.strip_prefix('\n').unwrap_or(expected);
    let actual = match forest(spans, options) {
        Ok(f) => f.render(),
        Err(e) => panic!("building the forest failed:\n{e}"),
    };
    if actual != expected {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a);
        panic!(
            "rendering differs{}\n--- expected\n{expected}\n--- actual\n{actual}---",
            first
                .map(|n| format!(" from line {}", n + 1))
                .unwrap_or_default()
        );
    }
    for order in shuffles(spans.len()) {
        let shuffled: Vec<S> = order.iter().map(|&i| spans[i].clone()).collect();
        let again = forest(&shuffled, options)
            .expect("a shuffle builds like the original")
            .render();
        assert_eq!(again, actual, "arrival order {order:?} renders differently");
    }
}

/// Building `spans` fails with exactly this message.
#[track_caller]
fn check_err(spans: &[S], options: &Options, expected: &str) {
    let expected = expected.strip_prefix('\n').unwrap_or(expected);
    match forest(spans, options) {
        Ok(f) => panic!("expected an error, got a forest:\n{}", f.render()),
        Err(e) => {
            let actual = e.to_string();
            assert!(
                actual == expected,
                "error message differs\n--- expected\n{expected}\n--- actual\n{actual}\n---"
            );
        }
    }
}

fn describe(service: &str, name: &str, id: u64) -> String {
    format!("{service} {name:?} (span {})", span_hex(id))
}

#[test]
fn run_crosses_services_and_drops_sdk_noise() {
    check_with(
        &run_trace(1, 10, RUN_A, "alice", "COMPLETE"),
        &metis().expect_traces(1),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-api  POST /runs  [server]  http.response.status_code=200 http.request.method=POST
│   http.route=/runs server.port=[port:int] url.path=/runs user_agent.original=reqwest/0.13
└─ create_run  run_id=[run#1] user_id=alice workflow_engine=generic workflow_type=SH
   ├─ event INFO "Run created and dispatched"
   └─ publish metis.runs.generic.1.SH.1  [producer]
      │    messaging.destination.name=metis.runs.generic.1.SH.1 messaging.system=nats
      └─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE api_trace_id=→create_run
         │   duration_ms=[duration:int] run_id=[run#1] user_id=alice workflow_type=SH
         ├─ event INFO phase state=initializing
         ├─ event INFO phase state=building
         ├─ event INFO phase state=executing
         ├─ event INFO phase state=running
         ├─ event INFO phase state=parsing
         ├─ event INFO phase state=updating_db
         └─ event INFO phase state=cleanup
"#,
    );
}

#[test]
fn concurrent_siblings_sort_by_content_not_by_time() {
    // Started in the order b, a+event, a, callback: the tree does not care.
    check(
        &[
            span(ENGINE, "workflow_run", 1),
            span(ENGINE, "upload", 2)
                .parent(1)
                .attr("file", "b.txt")
                .start(1),
            span(ENGINE, "upload", 3)
                .parent(1)
                .attr("file", "a.txt")
                .event(0, "WARN", "retrying", vec![])
                .start(2),
            span(ENGINE, "upload", 4)
                .parent(1)
                .attr("file", "a.txt")
                .start(3),
            span(API, "callback", 5).parent(1).start(4),
        ],
        r#"
legend
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api

trace#1
metis-engine-generic  workflow_run
├─ metis-api  callback
├─ upload  file=a.txt
├─ upload  file=a.txt
│  └─ event WARN retrying
└─ upload  file=b.txt
"#,
    );
}

/// A span from `start` to `end` ms (on one clock; any base).
fn at(span: S, base: u64, start: u64, end: u64) -> S {
    span.raw(|s| {
        s.start_time_unix_nano = base + start * 1_000_000;
        s.end_time_unix_nano = base + end * 1_000_000;
    })
}

/// Children of one API span: `store run` ends before `publish` starts (sequential in one
/// process), `audit` overlaps both, and the engine's `ack` (another process, another clock)
/// ended before all of them by its timestamps. Span ids come from `ids`, times from `base`.
fn causal_siblings(base: u64, ids: [u64; 5]) -> Vec<S> {
    let [root, store, publish, audit, ack] = ids;
    vec![
        at(span(API, "create_run", root), base, 0, 100),
        at(span(API, "store run", store).parent(root), base, 10, 20),
        at(
            span(API, "publish", publish).parent(root).kind(PRODUCER),
            base,
            30,
            40,
        ),
        at(span(API, "audit", audit).parent(root), base, 15, 35),
        at(span(ENGINE, "ack", ack).parent(root), base, 1, 2),
    ]
}

#[test]
fn siblings_of_one_process_keep_their_causal_order() {
    let expected = r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-api  create_run
├─ audit
├─ store run
├─ publish  [producer]
└─ metis-engine-generic  ack
"#;
    // `audit` and `store run` are both first candidates (no sibling ended before they
    // started): the key puts `audit` first. `publish` comes after `store run`, whose end it
    // followed, though its name sorts before it. `ack` ended before all of them by its
    // timestamps, but it is from another process, so only the key places it (last: the key
    // starts with the service).
    check(
        &causal_siblings(1_700_000_000_000_000_000, [1, 2, 3, 4, 5]),
        expected,
    );
    // Neither the clock's origin nor the ids (so neither their tie-break order) matter.
    for (base, ids) in [
        (5_000_000_000, [9, 4, 7, 2, 3]),
        (1_800_000_000_000_000_000, [5, 4, 3, 2, 1]),
    ] {
        check(&causal_siblings(base, ids), expected);
    }
}

#[test]
fn overlapping_siblings_sort_by_content_whatever_their_start_times() {
    let render = |starts: [u64; 3]| {
        let spans: Vec<S> = std::iter::once(at(span(API, "batch", 1), 0, 0, 100))
            .chain(starts.iter().enumerate().map(|(i, &start)| {
                // Each lasts 20 ms, all overlap.
                at(
                    span(API, "upload", 2 + i as u64)
                        .parent(1)
                        .attr("file", ["c", "a", "b"][i]),
                    0,
                    start,
                    start + 20,
                )
            }))
            .collect();
        forest(&spans, &metis()).unwrap().render()
    };
    let first = render([1, 2, 3]);
    assert!(
        first.ends_with("├─ upload  file=a\n├─ upload  file=b\n└─ upload  file=c\n"),
        "{first}"
    );
    for starts in [[3, 2, 1], [2, 3, 1], [1, 3, 2], [10, 5, 1]] {
        assert_eq!(render(starts), first, "start times {starts:?}");
    }
}

#[test]
fn child_arriving_before_its_parent() {
    let mut spans = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    spans.reverse();
    let in_order = forest(&run_trace(1, 10, RUN_A, "alice", "COMPLETE"), &metis()).unwrap();
    assert_eq!(
        forest(&spans, &metis()).unwrap().render(),
        in_order.render()
    );
    check(
        &[
            span(ENGINE, "workflow_run", 2).parent(1).kind(CONSUMER),
            span(API, "publish x", 1).kind(PRODUCER),
        ],
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-api  publish x  [producer]
└─ metis-engine-generic  workflow_run  [consumer]
"#,
    );
}

#[test]
fn traces_are_sorted_and_ids_numbered_by_first_appearance() {
    let mut spans = run_trace(2, 20, RUN_B, "bob", "EXECUTOR_ERROR");
    spans.extend(run_trace(1, 10, RUN_A, "alice", "COMPLETE"));
    spans.extend(cancel_trace(3, 30, RUN_A, ENGINE_ID));
    check_with(
        &spans,
        &metis().expect_traces(3).redact(ENGINE_ID, "[engine#1]"),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-api  POST /runs  [server]  http.response.status_code=200 http.request.method=POST
│   http.route=/runs server.port=[port:int] url.path=/runs user_agent.original=reqwest/0.13
└─ create_run  run_id=[run#1] user_id=alice workflow_engine=generic workflow_type=SH
   ├─ event INFO "Run created and dispatched"
   └─ publish metis.runs.generic.1.SH.1  [producer]
      │    messaging.destination.name=metis.runs.generic.1.SH.1 messaging.system=nats
      └─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE api_trace_id=→create_run
         │   duration_ms=[duration:int] run_id=[run#1] user_id=alice workflow_type=SH
         ├─ event INFO phase state=initializing
         ├─ event INFO phase state=building
         ├─ event INFO phase state=executing
         ├─ event INFO phase state=running
         ├─ event INFO phase state=parsing
         ├─ event INFO phase state=updating_db
         └─ event INFO phase state=cleanup

trace#2
metis-api  POST /runs  [server]  http.response.status_code=200 http.request.method=POST
│   http.route=/runs server.port=[port:int] url.path=/runs user_agent.original=reqwest/0.13
└─ create_run  run_id=[run#2] user_id=bob workflow_engine=generic workflow_type=SH
   ├─ event INFO "Run created and dispatched"
   └─ publish metis.runs.generic.1.SH.1  [producer]
      │    messaging.destination.name=metis.runs.generic.1.SH.1 messaging.system=nats
      └─ metis-engine-generic  workflow_run  [consumer]  !ERROR "workflow exited with status 3"
         │    error="exit status 3" state=EXECUTOR_ERROR api_trace_id=→create_run
         │   duration_ms=[duration:int] run_id=[run#2] user_id=bob workflow_type=SH
         ├─ event INFO phase state=initializing
         ├─ event INFO phase state=building
         ├─ event INFO phase state=executing
         ├─ event INFO phase state=running
         ├─ event INFO phase state=parsing
         ├─ event INFO phase state=updating_db
         └─ event INFO phase state=cleanup

trace#3
metis-api  POST /runs/{run_id}/cancel  [server]  http.response.status_code=200
│   http.route=/runs/{run_id}/cancel url.path=/runs/[run#1]/cancel
└─ request_cancel  run_id=[run#1]
   └─ publish metis.cancel.[engine#1]  [producer]
      │    messaging.destination.name=metis.cancel.[engine#1]
      └─ metis-engine-generic  workflow_cancel  [consumer]  run_id=[run#1]
"#,
    );
}

#[test]
fn run_ids_are_redacted_everywhere_with_one_number_per_run() {
    let other = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    let another = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    check(
        &[
            span(API, &format!("POST /runs/{RUN_B}/cancel"), 1)
                .kind(SERVER)
                .attr("instance", other),
            span(API, "request_cancel", 2)
                .parent(1)
                .attr("run_id", RUN_B)
                .attr("peer_instance", another)
                .attr("same_instance", other)
                .attr("shouting", RUN_B.to_uppercase())
                .event(
                    1,
                    "INFO",
                    &format!("cancel requested for {RUN_B}"),
                    vec![kv("runs", vec!["x".into_any(), RUN_B.into_any()])],
                ),
        ],
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api

trace#1
metis-api  POST /runs/[run#1]/cancel  [server]  instance=[uuid#1]
└─ request_cancel  peer_instance=[uuid#2] run_id=[run#1] same_instance=[uuid#1] shouting=[run#1]
   └─ event INFO "cancel requested for [run#1]" runs=[x,[run#1]]
"#,
    );
}

/// The crate knows nothing of runs: without an id family every UUID is a `[uuid#N]`, and a
/// family passed in (here another service's `order_id`) is numbered on its own.
#[test]
fn id_families_are_passed_in_and_numbered_on_their_own() {
    let order = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    let spans = [span(API, &format!("GET /orders/{order}"), 1)
        .kind(SERVER)
        .attr("order_id", order)
        .attr("run_id", RUN_B)];
    check_with(
        &spans,
        &Options::new(),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api

trace#1
metis-api  GET /orders/[uuid#1]  [server]  order_id=[uuid#1] run_id=[uuid#2]
"#,
    );
    check_with(
        &spans,
        &Options::new()
            .id_family("order_id", "order")
            .id_family("run_id", "run"),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api

trace#1
metis-api  GET /orders/[order#1]  [server]  order_id=[order#1] run_id=[run#1]
"#,
    );
}

#[test]
fn redaction_policy() {
    let workdir = "/tmp/.tmpAbC123";
    check_with(
        &[span(ENGINE, "workflow_run", 1)
            .attr("run_id", RUN_A)
            .attr("engine_id", ENGINE_ID)
            .attr("workdir", format!("{workdir}/runs/{RUN_A}"))
            .attr("script", "/work/main/fixtures/workflows/ok.sh")
            .attr("cmd", "/bin/sh -c /work/main/fixtures/x.sh")
            .attr("relative", "fixtures/workflows/ok.sh")
            .attr("started", "2024-05-01T12:00:00.123456Z")
            .attr("created_at", 1_714_560_000_i64)
            .attr("pid", 12_345_i64)
            .attr("process.pid", 5_i64)
            .attr("nats_url", "nats://127.0.0.1:4222")
            .attr("endpoint", "http://otel-collector.internal:4317/v1/traces")
            .attr("listen", "0.0.0.0:38123")
            .attr("peer", "10.1.2.3:4222")
            .attr("host.name", "builder-42")
            .attr("server.address", "ci-runner.example.com")
            .attr("client.address", "127.0.0.1")
            .attr("elapsed_ms", 12_i64)
            .attr("wait_ns", 99_i64)
            .attr("duration_ms", 1.5)
            .attr("url.path", format!("/runs/{RUN_A}/logs"))
            .attr("workflow_url", "file:///work/main/fixtures/workflows/ok.sh")
            .attr("exit_code", 0_i64)
            .event(
                1,
                "INFO",
                "event crates/engine/src/runtime.rs:120",
                vec![kv("stdout", "/tmp/x/stdout.log")],
            )
            .event(
                2,
                "WARN",
                "wrote /tmp/x/out.log at 2024-05-01 12:00:01",
                vec![],
            )
            .status(2, "spawning /bin/false failed")],
        &metis()
            .redact(workdir, "[workdir]")
            .redact(ENGINE_ID, "[engine#1]"),
        r#"
legend
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-engine-generic  workflow_run  !ERROR "spawning [path]/false failed"  client.address=127.0.0.1
│   cmd="[path]/sh -c [path]/x.sh" created_at=[timestamp:int] duration_ms=[duration:double]
│   elapsed_ms=[duration:int] endpoint=http://[host]:[port]/v1/traces engine_id=[engine#1]
│   exit_code=0 host.name=[host:string] listen=0.0.0.0:[port] nats_url=nats://127.0.0.1:[port]
│   peer=[host]:[port] pid=[pid:int] process.pid=[pid:int] relative=fixtures/workflows/ok.sh
│   run_id=[run#1] script=[path]/ok.sh server.address=[host] started=[timestamp]
│   url.path=/runs/[run#1]/logs wait_ns=[duration:int] workdir=[workdir]/runs/[run#1]
│   workflow_url=file://[path]/ok.sh
├─ event INFO stdout=[path]/stdout.log
└─ event WARN "wrote [path]/out.log at [timestamp]"
"#,
    );
}

#[test]
fn typed_values_render_so_a_type_change_shows() {
    check(
        &[span(API, "typed", 1)
            .attr("s3", "3")
            .attr("i3", 3_i64)
            .attr("d3", 3.0)
            .attr("half", 0.5)
            .attr("neg", -1_i64)
            .attr("b", true)
            .attr("sb", "true")
            .attr("empty", "")
            .attr("spaced", "a b")
            .attr("eq", "a=b")
            .attr("quote", "say \"hi\"")
            .attr("nl", "line\nbreak")
            .attr(
                "arr",
                vec![
                    1_i64.into_any(),
                    "x".into_any(),
                    "a,b".into_any(),
                    "2".into_any(),
                ],
            )
            .status(1, "")],
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api

trace#1
metis-api  typed  OK  arr=[1,x,"a,b","2"] b=true d3=3.0 empty="" eq="a=b" half=0.5 i3=3 neg=-1
    nl="line\nbreak" quote="say \"hi\"" s3="3" sb="true" spaced="a b"
"#,
    );
}

#[test]
fn references_name_their_target_and_show_an_alias_when_ambiguous() {
    check(
        &[
            span(API, "batch", 1),
            span(API, "create_run", 2)
                .parent(1)
                .attr("user_id", "alice"),
            span(API, "create_run", 3).parent(1).attr("user_id", "bob"),
            span(ENGINE, "workflow_run", 4)
                .parent(3)
                .attr("api_trace_id", span_hex(3))
                .attr("trace_id", trace_hex(1))
                .attr(
                    "traceparent",
                    format!("00-{}-{}-01", trace_hex(1), span_hex(1)),
                ),
            span(API, "later", 5).trace(2).link(1, 2).link(7, 70),
        ],
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
metis-api  batch
├─ create_run  (span#2)  user_id=alice
└─ create_run  (span#3)  user_id=bob
   └─ metis-engine-generic  workflow_run  api_trace_id=→create_run(span#3) trace_id=→trace#1
          traceparent=00-→trace#1-→batch-01

trace#2
metis-api  later
├─ link [external]
└─ link →create_run(span#2)
"#,
    );
}

#[test]
fn unresolved_api_trace_id_fails() {
    let mut spans = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    spans[3] = spans[3]
        .clone()
        .raw(|s| s.attributes.retain(|kv| kv.key != "api_trace_id"))
        .attr("api_trace_id", span_hex(99));
    let holds = [
        describe(API, "POST /runs", 10),
        describe(API, "create_run", 11),
        describe(API, "publish metis.runs.generic.1.SH.1", 12),
        describe(ENGINE, "workflow_run", 13),
    ]
    .join(", ");
    check_err(
        &spans,
        &metis(),
        &format!(
            "unresolved id reference(s):\n  - {}: api_trace_id={} names no span of its trace {}; that trace holds: {holds}",
            describe(ENGINE, "workflow_run", 13),
            span_hex(99),
            trace_hex(1),
        ),
    );

    // Pointing at the create_run of *another* trace is just as wrong, and says so.
    let mut spans = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    spans.extend(run_trace(2, 20, RUN_B, "bob", "COMPLETE"));
    spans[3] = spans[3]
        .clone()
        .raw(|s| s.attributes.retain(|kv| kv.key != "api_trace_id"))
        .attr("api_trace_id", span_hex(21));
    check_err(
        &spans,
        &metis(),
        &format!(
            "unresolved id reference(s):\n  - {}: api_trace_id={} names no span of its trace {} (it is {} of trace {}); that trace holds: {holds}",
            describe(ENGINE, "workflow_run", 13),
            span_hex(21),
            trace_hex(1),
            describe(API, "create_run", 21),
            trace_hex(2),
        ),
    );
}

#[test]
fn orphan_span_fails_naming_the_missing_parent() {
    let spans: Vec<S> = run_trace(1, 10, RUN_A, "alice", "COMPLETE")
        .into_iter()
        .filter(|s| s.name() != "publish metis.runs.generic.1.SH.1")
        .collect();
    let err = forest(&spans, &metis()).unwrap_err();
    assert!(err.is_incomplete());
    check_err(
        &spans,
        &metis(),
        &format!(
            "1 orphan span(s): the parent never arrived:\n  - {} has parent span {}, which never arrived; trace {} holds: {}, {}, {}",
            describe(ENGINE, "workflow_run", 13),
            span_hex(12),
            trace_hex(1),
            describe(API, "POST /runs", 10),
            describe(API, "create_run", 11),
            describe(ENGINE, "workflow_run", 13),
        ),
    );
}

#[test]
fn orphans_drawn_under_a_missing_parent() {
    // The API's spans were lost (a collector outage): only the engine's arrived.
    let spans: Vec<S> = run_trace(1, 10, RUN_A, "alice", "COMPLETE")
        .into_iter()
        .filter(|s| s.name() == "workflow_run")
        .collect();
    let err = forest(&spans, &metis()).unwrap_err();
    assert!(matches!(err, TreeError::OrphanSpans(_)), "{err}");
    check_with(
        &spans,
        &metis().draw_orphans(),
        r#"
legend
metis-engine-generic
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic

trace#1
[unknown]  [missing parent]
└─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE api_trace_id=→[missing]
   │   duration_ms=[duration:int] run_id=[run#1] user_id=alice workflow_type=SH
   ├─ event INFO phase state=initializing
   ├─ event INFO phase state=building
   ├─ event INFO phase state=executing
   ├─ event INFO phase state=running
   ├─ event INFO phase state=parsing
   ├─ event INFO phase state=updating_db
   └─ event INFO phase state=cleanup
"#,
    );
    // A whole trace is unchanged by the option.
    let whole = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    assert_eq!(
        forest(&whole, &metis().draw_orphans()).unwrap().render(),
        forest(&whole, &metis()).unwrap().render()
    );
}

#[test]
fn open_span_fails() {
    let spans = [
        span(API, "POST /runs", 1).kind(SERVER),
        span(API, "create_run", 2).parent(1).open(),
    ];
    let err = forest(&spans, &metis()).unwrap_err();
    assert!(err.is_incomplete());
    check_err(
        &spans,
        &metis(),
        &format!(
            "1 span(s) left open (no end time, or an end before the start):\n  - {} in trace {}: start 1700000000002000000 ns, end 0 ns",
            describe(API, "create_run", 2),
            trace_hex(1)
        ),
    );
}

#[test]
fn wrong_trace_count_fails_listing_the_traces() {
    let spans = [
        span(API, "GET /healthz", 1).kind(SERVER),
        span(API, "POST /runs", 2).trace(2).kind(SERVER),
    ];
    let err = forest(&spans, &metis().expect_traces(3)).unwrap_err();
    assert!(err.is_incomplete(), "too few traces may still arrive");
    let (a, b) = if trace_hex(1) < trace_hex(2) {
        (1, 2)
    } else {
        (2, 1)
    };
    let line = |n: u64| {
        let name = if n == 1 { "GET /healthz" } else { "POST /runs" };
        format!("\n  - trace {}: {}", trace_hex(n), describe(API, name, n))
    };
    check_err(
        &spans,
        &metis().expect_traces(1),
        &format!("expected 1 trace(s), received 2:{}{}", line(a), line(b)),
    );
    assert!(
        !forest(&spans, &metis().expect_traces(1))
            .unwrap_err()
            .is_incomplete()
    );
}

#[test]
fn duplicate_span_ids_fail() {
    let spans = [span(API, "POST /runs", 1), span(API, "POST /runs", 1)];
    check_err(
        &spans,
        &metis(),
        &format!(
            "duplicate span id(s) (was a batch exported twice?):\n  - span {} arrived 2 times: metis-api \"POST /runs\" in trace {t}; metis-api \"POST /runs\" in trace {t}",
            span_hex(1),
            t = trace_hex(1)
        ),
    );
}

#[test]
fn expectations_pass() {
    let mut spans = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    spans.extend(run_trace(2, 20, RUN_B, "bob", "EXECUTOR_ERROR"));
    let f = forest(&spans, &metis().expect_traces(2)).unwrap();
    let checks = [
        expect::span()
            .named("workflow_run")
            .in_service(ENGINE)
            .with_kind(super::SpanKind::Consumer)
            .with_attr("state", "COMPLETE")
            .with_attr("run_id", "[run#1]")
            .with_attr("api_trace_id", "→create_run")
            .without_attr("error")
            .child_of(expect::span().named("publish metis.runs.generic.1.SH.1"))
            .descendant_of(
                expect::span()
                    .named("POST /runs")
                    .with_attr("http.response.status_code", 200),
            )
            .with_events_in_order(["initializing", "running", "cleanup"])
            .with_event(
                expect::event()
                    .named("phase")
                    .at_level("INFO")
                    .with_attr("state", "parsing"),
            )
            .once(),
        expect::span()
            .named("workflow_run")
            .with_error("workflow exited with status 3")
            .with_attr("error", "exit status 3")
            .once(),
        expect::span().named("create_run").times(2),
        expect::span()
            .named("create_run")
            .with_event("Run created and dispatched"),
        expect::no_span().named("workflow_cancel"),
    ];
    for c in checks {
        if let Err(e) = c.check(&f) {
            panic!("{e}");
        }
    }
    assert_eq!(expect::span().named("create_run").find(&f).len(), 2);
}

#[test]
fn expectation_failures_explain_themselves() {
    let spans = run_trace(1, 10, RUN_A, "alice", "EXECUTOR_ERROR");
    let f = forest(&spans, &metis()).unwrap();
    let tree = f.render();
    let fail = |e: super::ExpectedSpan| e.check(&f).unwrap_err().to_string();

    assert_eq!(
        fail(
            expect::span()
                .named("workflow_run")
                .with_attr("state", "COMPLETE")
        ),
        format!(
            "expected a span named \"workflow_run\" with state=COMPLETE\nbut no span matches; closest candidates:\n  - span#4: {}\n    has state=EXECUTOR_ERROR, expected state=COMPLETE\n\nspan tree:\n{tree}",
            f.span("span#4").unwrap().render_line()
        )
    );
    assert_eq!(
        fail(expect::no_span().named("create_run")),
        format!(
            "expected no span named \"create_run\"\nbut expected 0 matching span(s), found 1\n  - span#2: metis-api  create_run  run_id=[run#1] user_id=alice workflow_engine=generic workflow_type=SH\n\nspan tree:\n{tree}"
        )
    );
    assert_eq!(
        fail(expect::span().named("workflow_cancel")),
        format!(
            "expected a span named \"workflow_cancel\"\nbut no span matches; no span is named \"workflow_cancel\"\n\nspan tree:\n{tree}"
        )
    );
    assert!(fail(expect::span().named("workflow_run").with_events_in_order(["running", "initializing"])).contains(
        "events not in the expected order: after [\"running\"] no later event matches \"initializing\"; events: `event INFO phase state=initializing`, "
    ));
    assert!(
        fail(expect::span().named("workflow_run").child_of(expect::span().named("create_run")))
            .contains("parent span#3 does not match (name is \"publish metis.runs.generic.1.SH.1\", expected \"create_run\")")
    );
    assert!(
        fail(expect::span().named("create_run").with_attr("user_id", 7))
            .contains("has user_id=alice, expected user_id=7")
    );
    assert!(
        fail(expect::span().named("create_run").with_attr("user_id", "7"))
            .contains("expected user_id=\"7\"")
    );
}

#[test]
fn parent_cycle_fails_instead_of_dropping_spans() {
    let spans = [span(API, "a", 1).parent(2), span(API, "b", 2).parent(1)];
    check_err(
        &spans,
        &metis(),
        &format!(
            "malformed span(s) in the otlp data:\n  - {} in trace {t}: its parent {} is part of a parent cycle\n  - {} in trace {t}: its parent {} is part of a parent cycle",
            describe(API, "a", 1),
            span_hex(2),
            describe(API, "b", 2),
            span_hex(1),
            t = trace_hex(1),
        ),
    );
}

#[test]
fn batching_into_resources_does_not_matter() {
    let spans = run_trace(1, 10, RUN_A, "alice", "COMPLETE");
    let one_per_span = forest(&spans, &metis()).unwrap();
    // One ResourceSpans per service, all its spans in one scope, services in reverse order.
    let mut batched = otlp(&spans);
    let mut merged: Vec<ResourceSpans> = Vec::new();
    for rs in batched.resource_spans.drain(..) {
        match merged.iter_mut().find(|m| m.resource == rs.resource) {
            Some(m) => m.scope_spans[0]
                .spans
                .extend(rs.scope_spans[0].spans.clone()),
            None => merged.insert(0, rs),
        }
    }
    assert_eq!(merged.len(), 2);
    batched.resource_spans = merged;
    assert_eq!(
        SpanForest::from_otlp(&batched, &metis()).unwrap(),
        one_per_span
    );
}

const ENGINE_B: &str = "0196a3a4-2222-7000-8000-0000000000bb";

/// Two engine instances under one API publish (sorted by content, then by start time); a
/// second scope inside one engine; what the SDK dropped; an instance id in an attribute.
fn instances_and_scopes() -> Vec<S> {
    vec![
        span(API, "publish", 1).kind(4),
        span(ENGINE, "workflow_run", 2).parent(1).kind(5),
        span(ENGINE, "workflow_run", 3)
            .parent(1)
            .kind(5)
            .instance(ENGINE_B)
            .raw(|s| {
                s.dropped_attributes_count = 2;
                s.dropped_events_count = 1;
            }),
        span(ENGINE, "kv get", 4)
            .parent(3)
            .kind(3)
            .instance(ENGINE_B)
            .scope("async-nats")
            .attr("owner", ENGINE_B)
            .event(0, "INFO", "got", vec![])
            .raw(|s| s.events[0].dropped_attributes_count = 1),
        span(ENGINE, "stage", 5).parent(3).instance(ENGINE_B),
    ]
}

#[test]
fn each_service_entry_shows_its_resource_and_scope_and_instances_are_numbered() {
    check(
        &instances_and_scopes(),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic#1
├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic
metis-engine-generic#2
├─ resource service.instance.id=[metis-engine-generic#2] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic
metis-engine-generic#3
├─ resource service.instance.id=[metis-engine-generic#2] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope async-nats

trace#1
metis-api  publish  [producer]
├─ metis-engine-generic#1  workflow_run  [consumer]
└─ metis-engine-generic#2  workflow_run  [consumer]  dropped(attributes=2,events=1)
   ├─ metis-engine-generic#3  kv get  [client]  owner=[metis-engine-generic#2]
   │  └─ event INFO got dropped(attributes=1)
   └─ stage
"#,
    );
}

#[test]
fn interchangeable_instances_are_not_numbered() {
    check_with(
        &instances_and_scopes(),
        &metis().unordered_instances(ENGINE),
        r#"
legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-api
metis-engine-generic#1
├─ resource service.instance.id=[metis-engine-generic#*] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope metis-engine-generic
metis-engine-generic#2
├─ resource service.instance.id=[metis-engine-generic#*] service.version=[version:string]
│      telemetry.sdk.language=rust
└─ scope async-nats

trace#1
metis-api  publish  [producer]
├─ metis-engine-generic#1  workflow_run  [consumer]
└─ metis-engine-generic#1  workflow_run  [consumer]  dropped(attributes=2,events=1)
   ├─ metis-engine-generic#2  kv get  [client]  owner=[metis-engine-generic#*]
   │  └─ event INFO got dropped(attributes=1)
   └─ stage
"#,
    );
}

#[test]
fn module_docs_show_real_output() {
    let docs = include_str!("lib.rs");
    let block = docs
        .split("//! ```text\n")
        .nth(1)
        .and_then(|rest| rest.split("//! ```\n").next())
        .unwrap();
    let documented: String = block
        .lines()
        .map(|l| {
            format!(
                "{}\n",
                l.strip_prefix("//! ")
                    .or_else(|| l.strip_prefix("//!"))
                    .unwrap_or(l)
            )
        })
        .collect();
    let mut spans = run_trace(1, 10, RUN_A, "alice", "EXECUTOR_ERROR");
    spans.extend(cancel_trace(2, 20, RUN_A, ENGINE_ID));
    check_with(
        &spans,
        &metis().expect_traces(2).redact(ENGINE_ID, "[engine#1]"),
        &documented,
    );
}

#[test]
fn a_census_counts_identical_shapes_and_shows_the_odd_one() {
    let run = |trace: u64, id: &str, state: &str| {
        let root = trace * 10;
        vec![
            span("metis-api", "create_run", root)
                .trace(trace)
                .attr("run_id", id),
            span("metis-engine-generic", "workflow_run", root + 1)
                .trace(trace)
                .parent(root)
                .attr("run_id", id)
                .attr("state", state),
        ]
    };
    let ids = [
        "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a11",
        "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a12",
        "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a13",
    ];
    let mut spans = run(1, ids[0], "COMPLETE");
    spans.extend(run(2, ids[1], "EXECUTOR_ERROR"));
    spans.extend(run(3, ids[2], "COMPLETE"));
    let census =
        super::shape_census(&otlp(&spans), "run_id", &ids, &metis().expect_traces(1)).unwrap();
    let headers: Vec<&str> = census.lines().filter(|l| l.starts_with("shape#")).collect();
    assert_eq!(headers, ["shape#1 ×2", "shape#2 ×1"], "{census}");
    assert!(census.contains("state=EXECUTOR_ERROR"), "{census}");
    assert_eq!(
        census.matches("[run#1]").count(),
        4,
        "ids renumbered per run: {census}"
    );
}

#[test]
fn only_successful_read_only_requests_are_left_out() {
    let spans = [
        // Polling: successful GETs with no child span go.
        span(API, "GET /runs/{run_id}/status", 1)
            .kind(SERVER)
            .attr("http.response.status_code", 200_i64),
        // A GET that did something stays.
        span(API, "GET /runs", 2)
            .trace(2)
            .kind(SERVER)
            .attr("http.response.status_code", 200_i64),
        span(API, "list_runs", 3).trace(2).parent(2),
        // Failed GETs stay: a 404, a 500, an error status without a code.
        span(API, "GET /runs/{run_id}", 4)
            .trace(3)
            .kind(SERVER)
            .attr("http.response.status_code", 404_i64),
        span(API, "GET /service-info", 5)
            .trace(4)
            .kind(SERVER)
            .attr("http.response.status_code", 500_i64),
        span(API, "GET /service-info", 6)
            .trace(5)
            .kind(SERVER)
            .status(2, "storage unavailable"),
        // A health probe polled until it fails: its answer is the scenario's to assert.
        span(API, "GET /readyz", 7)
            .trace(6)
            .kind(SERVER)
            .attr("http.response.status_code", 503_i64)
            .status(2, "not connected to NATS"),
    ];
    let kept = super::without_read_only_requests(&otlp(&spans));
    let mut names: Vec<&str> = kept
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "GET /runs",
            "GET /runs/{run_id}",
            "GET /service-info",
            "GET /service-info",
            "list_runs"
        ]
    );
}

/// A view's `annotations` service: its own traces (the e2e harness's faults) stay beside the
/// traces `only` selects, and a census shows them as a shape of their own; without
/// `annotations` they are dropped as any other trace.
#[test]
fn annotations_stay_beside_only_and_census() {
    let id = "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a11";
    let other = "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a12";
    let spans = vec![
        span("metis-api", "create_run", 10)
            .trace(1)
            .attr("run_id", id),
        span("metis-api", "create_run", 20)
            .trace(2)
            .attr("run_id", other),
        span("e2e-harness", "faults", 30).trace(3),
        span("e2e-harness", "kill API", 31).trace(3).parent(30),
    ];
    let data = otlp(&spans);
    let only = crate::view::View::new(metis()).only("run_id", &[id]);
    let names = |forest: crate::SpanForest| -> Vec<String> {
        forest.spans().map(|s| s.name().to_owned()).collect()
    };
    assert_eq!(names(only.forest(&data).unwrap()), ["create_run"]);
    let annotated = only.annotations("e2e-harness");
    assert_eq!(
        names(annotated.forest(&data).unwrap()),
        ["faults", "kill API", "create_run"]
    );
    let census = crate::view::View::new(metis().expect_traces(1))
        .census("run_id", &[id, other])
        .annotations("e2e-harness")
        .render(&data)
        .unwrap();
    let headers: Vec<&str> = census.lines().filter(|l| l.starts_with("shape#")).collect();
    assert_eq!(headers, ["shape#1 ×2", "shape#2 ×1"], "{census}");
    assert!(census.contains("e2e-harness  faults"), "{census}");
}
