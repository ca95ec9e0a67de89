//! What every scenario shares: starting a stack, request bodies, and the snapshot check.

use harness::tree::view::View;
use std::time::Duration;

use harness::{Stack, StackOptions};
use serde_json::{Value, json};

/// Deadline for a run to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Starts a stack for `scenario` with `engines` engine instances.
pub async fn stack(scenario: &str, engines: usize) -> anyhow::Result<Stack> {
    Stack::start(
        scenario,
        StackOptions {
            engines,
            ..StackOptions::default()
        },
    )
    .await
}

// ANCHOR: run_body
/// A request for the fixture workflow `script` (in `fixtures/workflows/`).
pub fn run_body(script: &str) -> Value {
    json!({
        "workflow_type": "SH",
        "workflow_type_version": "1",
        "workflow_url": test_support::workspace_root().join("fixtures/workflows").join(script).display().to_string(),
        "workflow_engine": "generic",
        "workflow_engine_version": "1",
    })
}
// ANCHOR_END: run_body

/// The engine instance ids the API knows now, in start order of the stack's engines is not
/// guaranteed, so they are sorted; each becomes `[engine#N]` in snapshots.
pub async fn engine_ids(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let info = stack.client.get("/service-info").await?.body;
    let mut ids: Vec<String> = info["engines"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

// ANCHOR: check_tree
/// Stops the services (they flush), collects every span, builds the normalised forest with
/// `expected_traces` traces, writes `tree.txt`, and compares it with the named snapshot in
/// `scenarios/snapshots/`. Returns the forest for further expectations.
pub async fn check_tree(
    stack: &mut Stack,
    name: &str,
    expected_traces: usize,
    engine_ids: &[String],
) -> anyhow::Result<harness::tree::SpanForest> {
    check_tree_of(stack, name, expected_traces, engine_ids, None).await
}

/// [`check_tree`] restricted to the traces of the runs in `only_runs` (when given).
pub async fn check_tree_of(
    stack: &mut Stack,
    name: &str,
    expected_traces: usize,
    engine_ids: &[String],
    only_runs: Option<&[&str]>,
) -> anyhow::Result<harness::tree::SpanForest> {
    check_tree_with(stack, name, expected_traces, engine_ids, only_runs, false).await
}

/// [`check_tree_of`] for traces of which a part was lost on purpose (an outage): a span whose
/// parent never arrived hangs under a `[missing parent]` node instead of failing the tree.
pub async fn check_partial_tree_of(
    stack: &mut Stack,
    name: &str,
    expected_traces: usize,
    engine_ids: &[String],
    only_runs: &[&str],
) -> anyhow::Result<harness::tree::SpanForest> {
    check_tree_with(
        stack,
        name,
        expected_traces,
        engine_ids,
        Some(only_runs),
        true,
    )
    .await
}

async fn check_tree_with(
    stack: &mut Stack,
    name: &str,
    expected_traces: usize,
    engine_ids: &[String],
    only_runs: Option<&[&str]>,
    draw_orphans: bool,
) -> anyhow::Result<harness::tree::SpanForest> {
    let data = stack.collect_spans(1).await?;
    // The harness's own trace of the faults it injected, when it made one, comes on top.
    let mut options = harness::tree_options()
        .expect_traces(expected_traces + stack.fault_traces())
        .redact(stack.dir.display().to_string(), "[e2e-dir]");
    for (i, id) in engine_ids.iter().enumerate() {
        options = options.redact(id.clone(), format!("[engine#{}]", i + 1));
    }
    if draw_orphans {
        options = options.draw_orphans();
    }
    if engine_ids.len() > 1 {
        // Engines share the work queue: which one ran a run is scheduling, not structure (the
        // scenario asserts the split itself).
        options = options.unordered_instances("metis-engine-generic");
    }
    let mut view = View::new(options).annotations(harness::fault_trace::HARNESS_SERVICE);
    if let Some(runs) = only_runs {
        view = view.only("run_id", runs);
    }
    // Until the tree's invariants hold (or a deadline says what never arrived).
    let (forest, _) = stack
        .build_when_complete(data, |data| view.forest(data))
        .await?;
    let rendered = forest.render();
    stack.write_tree(&rendered)?;
    assert_tree_snapshot(name, &rendered);
    check_dump_against_tree(stack, &view, &rendered)?;
    Ok(forest)
}
// ANCHOR_END: check_tree

/// Compares `rendered` with the named snapshot in `scenarios/snapshots/`.
fn assert_tree_snapshot(name: &str, rendered: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!(
        "span tree of scenario `{name}`; regenerate with `just review`"
    ));
    settings.bind(|| insta::assert_snapshot!(name, rendered));
}

/// Stops the services, collects every span, and compares the shape census of the traces of
/// `runs` (each run's traces rendered on their own, identical ones counted; see
/// `harness::tree::shape_census`) with the named snapshot. Returns the collected data.
pub async fn check_census(
    stack: &mut Stack,
    name: &str,
    runs: &[String],
    engine_ids: &[String],
) -> anyhow::Result<harness::otlp::TracesData> {
    let data = stack.collect_spans(1).await?;
    let mut options = harness::tree_options()
        .expect_traces(1)
        .redact(stack.dir.display().to_string(), "[e2e-dir]");
    for (i, id) in engine_ids.iter().enumerate() {
        options = options.redact(id.clone(), format!("[engine#{}]", i + 1));
    }
    let ids: Vec<&str> = runs.iter().map(String::as_str).collect();
    let view = View::new(options)
        .census("run_id", &ids)
        .annotations(harness::fault_trace::HARNESS_SERVICE);
    let (census, data) = stack
        .build_when_complete(data, |data| view.render(data))
        .await?;
    stack.write_tree(&census)?;
    assert_tree_snapshot(name, &census);
    check_dump_against_tree(stack, &view, &census)?;
    Ok(data)
}

/// The whole forest of a census scenario's data (without the polling GETs), for expectations
/// over every run at once.
pub fn forest_of(data: &harness::otlp::TracesData) -> anyhow::Result<harness::tree::SpanForest> {
    Ok(harness::tree::SpanForest::from_otlp(
        &harness::tree::without_read_only_requests(data),
        &harness::tree_options(),
    )?)
}

/// Writes `view.txt` beside the scenario's `spans.json` and checks what a reviewer would run,
/// `spantree diff --view view.txt scenarios/snapshots/NAME.snap spans.json`: the dump read back
/// from disk, rendered through the view read back from disk, differs from the tree in nothing
/// (no polling GET, no trace of another run, no lost value type).
fn check_dump_against_tree(stack: &Stack, view: &View, tree: &str) -> anyhow::Result<()> {
    let path = stack.dir.join("view.txt");
    std::fs::write(&path, view.to_text())?;
    let view = View::parse(&std::fs::read_to_string(&path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let dump_path = stack.dir.join("spans.json");
    let dump = harness::tree::dump::parse(
        &dump_path.display().to_string(),
        &std::fs::read_to_string(&dump_path)?,
    )?;
    let from_dump = view.render(&dump)?;
    let changes = harness::tree::diff::diff(tree, &from_dump)?;
    anyhow::ensure!(
        changes.is_empty() && from_dump == tree,
        "spantree diff --view {} of the snapshot and {} finds {} change(s):\n{}",
        path.display(),
        dump_path.display(),
        changes.len(),
        changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Waits until the run's captured output contains `line` (as `stream: text`).
pub async fn wait_for_log(stack: &Stack, run: &str, line: &str) -> anyhow::Result<()> {
    test_support::wait_for(
        &format!("run {run} to print '{line}'"),
        DEADLINE,
        || async {
            match stack.client.log_lines(run).await {
                Ok(lines) if lines.iter().any(|l| l == line) => Ok(()),
                Ok(lines) => Err(format!("{lines:?}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
}

/// The body of a committed snapshot (what follows its `---` header).
pub fn snapshot_body(name: &str) -> anyhow::Result<String> {
    let path = test_support::workspace_root()
        .join("scenarios/snapshots")
        .join(format!("{name}.snap"));
    let text = std::fs::read_to_string(&path)?;
    let body = text
        .splitn(3, "---\n")
        .nth(2)
        .ok_or_else(|| anyhow::anyhow!("{} has no snapshot header", path.display()))?;
    Ok(body.trim_end().to_owned())
}
