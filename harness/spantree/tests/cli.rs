//! The `spantree` binary on dumps made by a service that is not Metis: spans made with the
//! official OpenTelemetry SDK and sent by its OTLP exporter (gRPC) to the receiver, whose
//! `GET /v1/traces` answer is the dump — rendered, reshaped, checked and diffed.

use std::path::Path;
use std::process::{Command, Output};

use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanExporter as _};
use otlp_receiver::{Query, Receiver};

/// Exports one "checkout" request (a server span, a client child with an event) with the
/// official SDK and its OTLP exporter, the way any service would, with `items` as an
/// attribute. The spans are collected in memory first and then handed to the exporter on
/// `runtime` (the SDK's batch thread has no Tokio reactor for tonic).
fn export_checkout(runtime: &tokio::runtime::Runtime, grpc: std::net::SocketAddr, items: i64) {
    let resource = Resource::builder_empty()
        .with_service_name("checkout-service")
        .build();
    let memory = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(memory.clone())
        .build();
    let tracer = provider.tracer("shop");
    let root = tracer
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("items", items),
        ])
        .start(&tracer);
    let cx = Context::current_with_span(root);
    let mut query = tracer
        .span_builder("SELECT cart")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("db.system.name", "postgresql")])
        .start_with_context(&tracer, &cx);
    query.add_event("rows read", vec![KeyValue::new("rows", 3)]);
    query.end();
    cx.span().end();
    let spans = memory.get_finished_spans().expect("the finished spans");
    runtime.block_on(async {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{grpc}"))
            .build()
            .expect("an OTLP/gRPC exporter");
        exporter.set_resource(&resource);
        exporter
            .export(spans)
            .await
            .expect("the export reaches the receiver");
    });
    provider.shutdown().expect("shutdown");
}

fn spantree(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spantree"))
        .args(args)
        .output()
        .expect("run spantree")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write the dump");
    path.display().to_string()
}

#[test]
fn render_check_and_diff_dumps_of_another_service() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime for the receiver");
    let receiver = runtime
        .block_on(Receiver::start_local())
        .expect("start the receiver");
    let client = receiver.client();
    let dump = |items| {
        runtime.block_on(client.clear()).expect("clear");
        export_checkout(&runtime, receiver.grpc_addr(), items);
        runtime
            .block_on(client.traces_json(&Query::new()))
            .expect("the receiver's dump")
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let three = write(dir.path(), "three.json", &dump(3));
    let four = write(dir.path(), "four.json", &dump(4));

    // render: the normalised tree, ids and times redacted.
    let out = spantree(&["render", &three]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tree = text(&out.stdout);
    assert!(
        tree.starts_with(
            "legend\ncheckout-service\n└─ scope shop\n\ntrace#1\ncheckout-service  GET /cart  [server]  http.request.method=GET items=3\n"
        ),
        "{tree}"
    );
    assert!(
        tree.contains(
            "└─ SELECT cart  [client]  db.system.name=postgresql\n   └─ event \"rows read\" rows=3"
        ),
        "{tree}"
    );
    // --shape: structure only.
    let shape = text(&spantree(&["render", "--shape", &three]).stdout);
    assert_eq!(
        shape,
        "trace#1\ncheckout-service  GET /cart  [server]\n└─ SELECT cart  [client]\n"
    );
    // A redaction config replaces literals.
    let config = write(dir.path(), "redact.txt", "# the shop\npostgresql => [db]\n");
    let redacted = text(&spantree(&["render", "--redact-config", &config, &three]).stdout);
    assert!(redacted.contains("db.system.name=[db]"), "{redacted}");
    // A view (what the e2e harness writes beside each dump) does the same, and more.
    let view = write(
        dir.path(),
        "view.txt",
        "# a view\nredact postgresql => [db]\nexpect-traces 1\n",
    );
    let viewed = text(&spantree(&["render", "--view", &view, &three]).stdout);
    assert_eq!(viewed, redacted);
    let out = spantree(&[
        "diff",
        "--view",
        &view,
        &write(dir.path(), "r.txt", &redacted),
        &three,
    ]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let bad_view = write(dir.path(), "bad-view.txt", "census\n");
    let out = spantree(&["render", "--view", &bad_view, &three]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad-view.txt: line 1"),
        "{}",
        text(&out.stderr)
    );
    // Collector file-exporter format: one TracesData per line.
    let lines = write(
        dir.path(),
        "lines.jsonl",
        &format!(
            "{}\n{}\n",
            std::fs::read_to_string(&three).unwrap().trim(),
            std::fs::read_to_string(&four).unwrap().trim()
        ),
    );
    let both = text(&spantree(&["render", "--expect-traces", "2", &lines]).stdout);
    assert!(both.contains("trace#2"), "{both}");

    // check: the invariants hold; a dump missing its root has an orphan. (`--no-registry`:
    // inside this repository `check` would find Metis's registry.)
    let out = spantree(&["check", "--no-registry", &three]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout),
        "ok: 1 trace(s), 2 span(s); the invariants hold\nok: every attribute fits the semantic conventions\n"
    );
    // check --registry: the service's own registry; `items` undeclared is a finding, declared
    // with the wrong type another, declared right none.
    let registry = |items: &str| {
        write(
            dir.path(),
            "registry.toml",
            &format!(
                "[[span]]\nname = \"GET *\"\nservice = \"checkout-service\"\nkind = \"server\"\nmeaning = \"A request.\"\n\
                 attributes = [{{ name = \"http.request.method\", semconv = true, requirement = \"required\" }}{items}]\n\n\
                 [[span]]\nname = \"SELECT *\"\nservice = \"checkout-service\"\nkind = \"client\"\nmeaning = \"A query.\"\n\
                 attributes = [{{ name = \"db.system.name\", semconv = true }}]\n"
            ),
        )
    };
    let out = spantree(&["check", &three, "--registry", &registry("")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("checkout-service `GET *`: attribute `items` (int) is neither declared in the registry nor a semantic-convention attribute"),
        "{}",
        text(&out.stdout)
    );
    let wrong = registry(", { name = \"items\", type = \"string\", meaning = \"n\" }");
    let out = spantree(&["check", &three, "--registry", &wrong]);
    assert!(
        text(&out.stdout).contains("attribute `items` is int, but the registry declares string"),
        "{}",
        text(&out.stdout)
    );
    let right = registry(", { name = \"items\", type = \"int\", meaning = \"n\" }");
    let out = spantree(&["check", &three, "--registry", &right]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Without --registry, the nearest spans.toml above the current folder is the registry.
    let nested = dir.path().join("project/sub");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(&right, dir.path().join("project/spans.toml")).unwrap();
    let found = Command::new(env!("CARGO_BIN_EXE_spantree"))
        .args(["check", &three])
        .current_dir(&nested)
        .output()
        .expect("run spantree");
    assert!(found.status.success(), "{}", text(&found.stdout));
    assert!(
        text(&found.stderr).contains("project/spans.toml")
            && text(&found.stdout).contains("the registry and the semantic conventions"),
        "{} {}",
        text(&found.stderr),
        text(&found.stdout)
    );
    // --version, and the exit codes in --help.
    assert!(text(&spantree(&["--version"]).stdout).starts_with("spantree "));
    assert!(text(&spantree(&["--help"]).stdout).contains("Exit codes: 0"));
    let out = spantree(&["check", &three, "--registry", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let mut data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&three).unwrap()).unwrap();
    let spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    spans.retain(|s| s["name"] != "GET /cart");
    let orphan = write(dir.path(), "orphan.json", &data.to_string());
    let out = spantree(&["check", &orphan]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("orphan"),
        "{}",
        text(&out.stdout)
    );
    // render --draw-orphans draws the partial trace under its missing root.
    let out = spantree(&["render", "--draw-orphans", &orphan]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "legend\ncheckout-service\n└─ scope shop\n\ntrace#1\n[unknown]  [missing parent]\n└─ checkout-service  SELECT cart  [client]  db.system.name=postgresql\n   └─ event \"rows read\" rows=3\n"
    );

    // diff: the same dump is no change; another request shows the attribute that changed.
    assert!(spantree(&["diff", &three, &three]).status.success());
    let out = spantree(&["diff", &three, &four]);
    assert_eq!(out.status.code(), Some(1));
    let diff = text(&out.stdout);
    assert_eq!(
        diff,
        "changed  trace#1 › checkout-service GET /cart\n  - checkout-service  GET /cart  [server]  http.request.method=GET items=3\n  + checkout-service  GET /cart  [server]  http.request.method=GET items=4\n"
    );
    // A rendered tree (a snapshot) can be one side.
    let rendered = write(dir.path(), "three.txt", &tree);
    assert!(spantree(&["diff", &rendered, &three]).status.success());

    // Bad input: exit 2 with a message that names the file.
    let bad = write(dir.path(), "bad.json", "{\"resourceSpans\": 5}");
    let out = spantree(&["render", &bad]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.json"),
        "{}",
        text(&out.stderr)
    );
}
