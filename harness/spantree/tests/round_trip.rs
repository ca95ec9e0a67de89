//! `spantree` owns its format: every committed span-tree snapshot parses back into the typed
//! model, and rendering that model gives the snapshot byte for byte.

use std::path::Path;

#[test]
fn every_committed_snapshot_round_trips_through_the_model() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/snapshots");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let body = spantree::review::snapshot_body(&text);
        match spantree::parse(body) {
            Ok(parsed) if parsed.render() == body => {}
            Ok(parsed) => {
                let again = parsed.render();
                let (n, (want, got)) = body
                    .lines()
                    .zip(again.lines())
                    .enumerate()
                    .find(|(_, (a, b))| a != b)
                    .unwrap_or((0, ("(lengths differ)", "")));
                failures.push(format!(
                    "{}: line {}\n  snapshot: {want}\n  rendered: {got}",
                    path.display(),
                    n + 1
                ));
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
        checked += 1;
    }
    assert!(
        checked >= 30,
        "only {checked} snapshots under {}",
        dir.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
