//! The GitHub workflows, checked without GitHub: each parses, every job has `runs-on` and
//! steps, every step is exactly one of `run` or `uses`, every `uses` is pinned to a ref, and
//! every `just <recipe>` a step runs names a recipe of the justfile — so a renamed recipe
//! cannot leave a workflow calling nothing. (`just lint` runs zizmor over them too.)

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

fn recipes(justfile: &str) -> BTreeSet<String> {
    justfile
        .lines()
        .filter(|l| {
            !l.starts_with([' ', '\t', '#']) && !l.starts_with("export") && !l.starts_with("set ")
        })
        .filter_map(|l| {
            let (head, _) = l.split_once(':')?;
            let name = head.split_whitespace().next()?;
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                .then(|| name.to_owned())
        })
        .collect()
}

/// The recipes named by `just …` invocations in a shell script.
fn just_calls(script: &str) -> Vec<String> {
    script
        .split(['\n', ';', '&', '|'])
        .filter_map(|part| {
            let mut words = part.split_whitespace().skip_while(|w| w.contains('='));
            (words.next()? == "just").then(|| words.next().map(str::to_owned))?
        })
        .filter(|r| !r.starts_with('-'))
        .collect()
}

#[test]
fn workflows_are_well_formed_and_call_existing_recipes() {
    let root = test_support::workspace_root();
    let known = recipes(&std::fs::read_to_string(root.join("justfile")).unwrap());
    assert!(
        known.contains("test") && known.contains("e2e-check"),
        "{known:?}"
    );
    let dir = root.join(".github/workflows");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut problems = Vec::new();
    let mut called = BTreeSet::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let doc: Value = match serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{name}: not YAML: {e}"));
                continue;
            }
        };
        check_workflow(&name, &doc, &known, &mut problems, &mut called);
    }
    assert!(
        problems.is_empty(),
        "workflow problems:\n{}",
        problems.join("\n")
    );
    // The workflows use the recipes .ci/run relies on, and the sharded suite's (the e2e
    // workflow and the weekly flake check run the scenarios in shards; `just test` runs the
    // same scenarios through `e2e-check`, whose tests are the archive's).
    for r in [
        "lint",
        "unit",
        "book-check",
        "e2e-archive",
        "e2e-shard",
        "chaos",
    ] {
        assert!(
            called.contains(r),
            "no workflow runs `just {r}` (called: {called:?})"
        );
    }
}

fn check_workflow(
    name: &str,
    doc: &Value,
    known: &BTreeSet<String>,
    problems: &mut Vec<String>,
    called: &mut BTreeSet<String>,
) {
    if doc.get("on").is_none() && doc.get(Value::Bool(true)).is_none() {
        problems.push(format!("{name}: no `on:` trigger"));
    }
    let Some(jobs) = doc.get("jobs").and_then(Value::as_mapping) else {
        problems.push(format!("{name}: no jobs"));
        return;
    };
    for (job, spec) in jobs {
        let job = job.as_str().unwrap_or("?");
        let at = format!("{name}: job {job}");
        if spec.get("runs-on").is_none() {
            problems.push(format!("{at}: no runs-on"));
        }
        let Some(steps) = spec.get("steps").and_then(Value::as_sequence) else {
            problems.push(format!("{at}: no steps"));
            continue;
        };
        for (i, step) in steps.iter().enumerate() {
            let (run, uses) = (step.get("run"), step.get("uses"));
            match (run, uses) {
                (Some(run), None) => {
                    for recipe in just_calls(run.as_str().unwrap_or_default()) {
                        if !known.contains(&recipe) {
                            problems.push(format!(
                                "{at}, step {}: `just {recipe}` is not a recipe of the justfile",
                                i + 1
                            ));
                        }
                        called.insert(recipe);
                    }
                }
                (None, Some(uses)) => {
                    let uses = uses.as_str().unwrap_or_default();
                    if !uses.contains('@') {
                        problems.push(format!(
                            "{at}, step {}: `{uses}` is not pinned to a ref",
                            i + 1
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{at}, step {}: needs exactly one of run and uses",
                    i + 1
                )),
            }
        }
    }
}

#[test]
fn the_checks_catch_mistakes() {
    let known: BTreeSet<String> = ["test".to_owned()].into();
    let doc: Value = serde_yaml_ng::from_str(
        "on: push\njobs:\n  a:\n    steps:\n      - run: just tset\n      - uses: actions/checkout\n      - name: nothing\n",
    )
    .unwrap();
    let (mut problems, mut called) = (Vec::new(), BTreeSet::new());
    check_workflow("x.yml", &doc, &known, &mut problems, &mut called);
    let all = problems.join("\n");
    for want in [
        "no runs-on",
        "`just tset` is not a recipe",
        "not pinned to a ref",
        "exactly one of run and uses",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    assert_eq!(
        just_calls("E2E_BACKEND=x just e2e-check\ncargo run || just --list"),
        ["e2e-check"]
    );
    assert_eq!(
        recipes("a:\n    x\n# c: d\nb x=\"1\": a\nexport P := q\n(c):\n"),
        ["a", "b"].map(String::from).into()
    );
}
