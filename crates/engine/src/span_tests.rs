//! In-process span tests with `tracing-test`: the engine's `workflow_run` span (as the run
//! path opens it) with its `phase` events, and `workflow_cancel`, asserted on the lines
//! `tracing` formats and checked against the span registry (`crates/telemetry/spans.toml`),
//! which the end-to-end lint and the book read too. Sub-second, no NATS, no export. What they
//! pin is how the span is opened (its name, kind and the fields it starts with) and how a
//! phase event is written inside it; the order of the phases in a real run, and the fields
//! recorded when a run ends (`state`, `duration_ms`, `error`), are pinned by the generic
//! engine's integration tests and the end-to-end snapshots and lint.

use spantree::registry::Registry;
use test_support::fmt_line::{SpanContext, lines_with};
use tracing_test::traced_test;

use common::{RunId, RunRecord};

fn record() -> RunRecord {
    let request = serde_json::from_value(serde_json::json!({
        "workflow_type": "SH", "workflow_type_version": "1", "workflow_url": "/w/ok.sh",
        "workflow_engine": "generic", "workflow_engine_version": "1",
    }))
    .unwrap();
    RunRecord::queued(RunId::new(), "alice".into(), request)
}

fn check(registry: &Registry, c: &SpanContext) -> Result<(), String> {
    let kind = c.get("otel.kind").unwrap_or("internal");
    registry.check_fields(
        "metis-engine-generic",
        &c.name,
        kind,
        c.fields.keys().map(String::as_str),
    )
}

#[test]
#[traced_test]
fn workflow_run_carries_its_fields_and_phase_events() {
    let rec = record();
    let span = crate::run::workflow_run_span(
        &rec,
        Some("00f067aa0ba902b7"),
        None,
        crate::sandbox::Kind::Bubblewrap,
    );
    span.in_scope(|| {
        for state in ["initializing", "building", "executing"] {
            crate::run::phase(state);
        }
    });
    let registry = Registry::metis().unwrap();
    let run_id = rec.run_id.to_string();
    logs_assert(|lines| {
        let phases = lines_with(lines, "engine::run: phase");
        let states: Vec<String> = phases
            .iter()
            .map(|(_, rest)| {
                rest.rsplit("state=")
                    .next()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned()
            })
            .collect();
        if states != ["initializing", "building", "executing"] {
            return Err(format!("phase events: {states:?}"));
        }
        for (contexts, _) in &phases {
            let [run] = contexts.as_slice() else {
                return Err(format!("a phase outside exactly one span: {contexts:?}"));
            };
            if run.name != "workflow_run" {
                return Err(format!("a phase in {}", run.name));
            }
            for (k, v) in [
                ("otel.kind", "consumer"),
                ("run_id", run_id.as_str()),
                ("user_id", "alice"),
                ("workflow_type", "SH"),
                ("api_trace_id", "00f067aa0ba902b7"),
            ] {
                if run.get(k) != Some(v) {
                    return Err(format!("workflow_run: {k} is {:?}, not {v}", run.get(k)));
                }
            }
            check(&registry, run)?;
        }
        Ok(())
    });
}

#[test]
#[traced_test]
fn workflow_cancel_names_its_run() {
    let id = RunId::new();
    let span = crate::cancel::workflow_cancel_span(&id, None);
    span.in_scope(|| tracing::info!("sent SIGTERM to the run's process group"));
    let registry = Registry::metis().unwrap();
    logs_assert(|lines| {
        let seen = lines_with(lines, "sent SIGTERM");
        let [(contexts, _)] = seen.as_slice() else {
            return Err(format!("{seen:?}"));
        };
        let [cancel] = contexts.as_slice() else {
            return Err(format!("{contexts:?}"));
        };
        if cancel.name != "workflow_cancel" || cancel.get("run_id") != Some(id.to_string().as_str())
        {
            return Err(format!("{cancel:?}"));
        }
        check(&registry, cancel)
    });
}
