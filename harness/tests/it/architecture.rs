//! The architecture invariants that are about the code itself, checked on the workspace as
//! `cargo metadata` and the sources describe it: NATS is the only infrastructure (no product
//! crate links a database or cache client), dependencies point one way (product crates never
//! depend on test crates; scenarios never import the services' internals), no test sleeps to
//! synchronise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crates that ship: the services and what they are built from.
const PRODUCT: [&str; 5] = ["api", "common", "engine", "generic", "telemetry"];
/// The crates that test them.
const TESTING: [&str; 6] = [
    "test-support",
    "harness",
    "spantree",
    "otlp-receiver",
    "scenarios",
    "book",
];
/// Clients of databases and caches: none may appear among a product crate's dependencies.
const STORES: [&str; 14] = [
    "sqlx",
    "diesel",
    "rusqlite",
    "postgres",
    "tokio-postgres",
    "mysql",
    "mysql_async",
    "redis",
    "deadpool-redis",
    "mongodb",
    "sled",
    "rocksdb",
    "sea-orm",
    "memcache",
];

/// Each workspace package's dependencies: name → (dependency, kind: `normal`, `dev`, `build`).
fn workspace_dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let meta = test_support::cargo_metadata(&test_support::workspace_root())
        .expect("cargo metadata of the workspace");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or_default().to_owned(),
                        d["kind"].as_str().unwrap_or("normal").to_owned(),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap_or_default().to_owned(), deps)
        })
        .collect()
}

#[test]
fn product_crates_link_no_database_or_cache_and_no_test_crate() {
    let deps = workspace_dependencies();
    for product in PRODUCT {
        let of = deps
            .get(product)
            .unwrap_or_else(|| panic!("no workspace package {product}"));
        for (dep, kind) in of {
            assert!(
                !STORES.contains(&dep.as_str()),
                "{product} depends on {dep}: NATS with JetStream is the only infrastructure"
            );
            assert!(
                kind == "dev" || !TESTING.contains(&dep.as_str()),
                "{product} depends on the test crate {dep} ({kind}); only as a dev-dependency"
            );
        }
    }
}

#[test]
fn scenarios_talk_to_the_system_not_its_internals() {
    let deps = workspace_dependencies();
    let scenarios = deps.get("scenarios").expect("the scenarios package");
    for (dep, _) in scenarios {
        assert!(
            !PRODUCT.contains(&dep.as_str()),
            "scenarios depend on the product crate {dep}: they talk HTTP and read logs"
        );
    }
    for file in rust_files(&test_support::workspace_root().join("scenarios")) {
        let text = std::fs::read_to_string(&file).expect("reading a scenario file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for internal in PRODUCT {
                assert!(
                    !code.contains(&format!("use {internal}::"))
                        && !code.contains(&format!(" {internal}::")),
                    "{}:{}: a scenario names {internal}'s internals: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// A `sleep` in test code is allowed only where its line says why it is not synchronisation
/// (a polling interval inside `wait_for`, a configured fault delay, a backoff).
#[test]
fn no_test_sleeps_to_synchronise() {
    let root = test_support::workspace_root();
    let mut test_code = Vec::new();
    for dir in [
        "scenarios",
        "harness/src",
        "harness/tests",
        "harness/receiver",
        "harness/spantree",
        "crates/test-support",
        "crates/api/tests",
        "crates/common/tests",
        "crates/engines/generic/tests",
    ] {
        test_code.extend(rust_files(&root.join(dir)));
    }
    let mut offenders = Vec::new();
    for file in test_code {
        let text = std::fs::read_to_string(&file).expect("reading a test file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let sleeps = ["sleep(", "sleep_until("]
                .iter()
                .any(|s| code.contains(s) && !code.contains(&format!("fn {s}")));
            if sleeps && !line.contains("not synchronisation") {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "test code that sleeps (wait on a condition with a deadline instead, or say on the \
         line why it is not synchronisation):\n{}",
        offenders.join("\n")
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("architecture.rs")
        {
            out.push(path);
        }
    }
    out
}
