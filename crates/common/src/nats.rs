//! NATS names: JetStream streams and consumers, core subjects, KV buckets.
//!
//! Every stream, subject and bucket, what it holds, who writes and who reads it, is one row of
//! [`LAYOUT`], built from the constants below (the book's NATS page renders it).
//!
//! The run id is the last token of a run message's subject, so whether a QUEUED run still has a
//! message waiting is one lookup (the reconciler's question), and the indexes list one user's
//! runs, or the runs not yet finished, without reading any other record.
//!
//! Subject tokens come from the engine's config (never from the request's spelling), with `.`
//! replaced by `_` so a version like `1.0` stays one token.

use std::path::PathBuf;
use std::time::Duration;

/// The stream that carries run requests (work-queue retention).
pub const RUNS_STREAM: &str = "METIS_RUNS";
/// Subjects of [`RUNS_STREAM`].
pub const RUNS_SUBJECTS: &str = "metis.runs.>";
/// The stream that stores captured output lines.
pub const LOGS_STREAM: &str = "METIS_LOGS";
/// Subjects of [`LOGS_STREAM`].
pub const LOGS_SUBJECTS: &str = "metis.logs.>";
/// Run records.
pub const RUNS_BUCKET: &str = "metis_runs";
/// Engine configs, persistent, so a run for an engine that is down is still accepted.
pub const ENGINE_CONFIGS_BUCKET: &str = "metis_engine_configs";
/// Live engine instances.
pub const ENGINES_BUCKET: &str = "metis_engines";
/// What each user stores (runs, output bytes), by [`user_token`]: the quotas' counters.
pub const USAGE_BUCKET: &str = "metis_usage";
/// How long the `metis_engines` bucket keeps a registration nobody refreshes. Liveness is
/// decided by the age of the last heartbeat against the API's `ENGINE_TTL_MS`; this only
/// garbage-collects registrations of instances that are long gone.
pub const ENGINES_BUCKET_MAX_AGE: Duration = Duration::from_secs(600);
/// Default time without a heartbeat after which an engine instance counts as gone.
pub const DEFAULT_ENGINE_TTL: Duration = Duration::from_secs(10);
/// Default interval of an engine instance's heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// The index stream of non-terminal runs.
pub const ACTIVE_STREAM: &str = "METIS_ACTIVE";
/// Subjects of [`ACTIVE_STREAM`].
pub const ACTIVE_SUBJECTS: &str = "metis.active.>";
/// The index stream of each user's runs.
pub const USER_RUNS_STREAM: &str = "METIS_USER_RUNS";
/// Subjects of [`USER_RUNS_STREAM`].
pub const USER_RUNS_SUBJECTS: &str = "metis.user_runs.>";
/// The stream counting finished runs by terminal state.
pub const FINISHED_STREAM: &str = "METIS_FINISHED";
/// Subjects of [`FINISHED_STREAM`].
pub const FINISHED_SUBJECTS: &str = "metis.finished.>";
/// Every stream and bucket Metis creates, by name (each one row of [`LAYOUT`]).
pub const NAMES: [&str; 9] = [
    RUNS_STREAM,
    LOGS_STREAM,
    RUNS_BUCKET,
    ENGINES_BUCKET,
    ENGINE_CONFIGS_BUCKET,
    USAGE_BUCKET,
    ACTIVE_STREAM,
    USER_RUNS_STREAM,
    FINISHED_STREAM,
];

/// How often JetStream delivers one run message to an engine before giving up on it.
pub const MAX_DELIVER: i64 = 10;
/// How long an engine's per-user consumer lives without a fetch before JetStream removes it.
pub const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(15 * 60);

/// One stream, subject or bucket of the layout: what the book's *NATS subjects, streams and
/// buckets* page shows, built from the constants the code uses (names, limits), so the page
/// cannot drift from them.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The name (Markdown), with its subjects.
    pub name: fn() -> String,
    /// What kind of NATS object it is, with its limits (Markdown).
    pub kind: fn() -> String,
    /// What it holds.
    pub content: &'static str,
    /// Who writes it.
    pub written_by: &'static str,
    /// Who reads it.
    pub read_by: fn() -> String,
}

/// Every stream, subject and bucket Metis uses.
pub const LAYOUT: &[Layout] = &[
    Layout {
        name: || {
            format!(
                "`{RUNS_STREAM}`, subjects `metis.runs.<engine>.<engine_version>.<type>.<type_version>.<user>.<run_id>` (`<user>` encoded as one token)"
            )
        },
        kind: || "JetStream stream, work-queue retention".to_owned(),
        content: "`RunRequestMessage {run_id, request, user_id, trace_id}` with a `traceparent` header and `Nats-Msg-Id` = run id (so a second publish of the same run is dropped)",
        written_by: "API (`create_run`, the reconciler)",
        read_by: || {
            format!(
                "engines, through one durable pull consumer per engine name and version and user (`engine_<name>_<version>_u_<hash of user>`, filter `….<type_version>.<user>.*`, at most {MAX_DELIVER} deliveries, removed after {} minutes unused), shared by all its instances and served round-robin (see [Limits](limits.md)); `engine_<name>_<version>` (filter `….<type_version>.*`) takes messages an earlier version published without `<user>`; the reconciler looks up one run's subject",
                CONSUMER_INACTIVE_THRESHOLD.as_secs() / 60
            )
        },
    },
    Layout {
        name: || "`metis.cancel.<engine_id>`".to_owned(),
        kind: || "core NATS subject".to_owned(),
        content: "`CancelMessage {run_id}` with a `traceparent` header",
        written_by: "API (`request_cancel`)",
        read_by: || "the engine instance that owns the run".to_owned(),
    },
    Layout {
        name: || format!("`{RUNS_BUCKET}`"),
        kind: || "key-value bucket".to_owned(),
        content: "`RunRecord` by run id: request, user, state, engine id, run log (command, start and end time, exit code), error, the subject of its message",
        written_by: "API (create, cancel, reaper), engines (every state change)",
        read_by: || "API (`GET /runs…`)".to_owned(),
    },
    Layout {
        name: || format!("`{ENGINE_CONFIGS_BUCKET}`"),
        kind: || "key-value bucket".to_owned(),
        content: "the `engine` section of each engine.yaml, by `<name>/<version>`; persistent, so runs for an engine that is down are still accepted",
        written_by: "engines at start-up",
        read_by: || "API (validation, service-info)".to_owned(),
    },
    Layout {
        name: || format!("`{ENGINES_BUCKET}`"),
        kind: || {
            format!(
                "key-value bucket (entries expire after {} minutes unrefreshed)",
                ENGINES_BUCKET_MAX_AGE.as_secs() / 60
            )
        },
        content: "`EngineRegistration` by instance id, refreshed by a heartbeat every `HEARTBEAT_INTERVAL_MS`, with the ids of the runs in flight",
        written_by: "engines",
        read_by: || {
            "API (service-info, the reaper: an instance whose registration has not changed for `ENGINE_TTL_MS` is gone)".to_owned()
        },
    },
    Layout {
        name: || format!("`{LOGS_STREAM}`, subjects `metis.logs.<run_id>.<stdout|stderr>`"),
        kind: || {
            format!(
                "JetStream stream ({} GiB, {} KiB messages; full: new lines refused, never old ones evicted; lines leave with their run by `RETENTION_MAX_AGE_S`)",
                crate::infra::LOGS_MAX_BYTES / (1 << 30),
                crate::infra::LOGS_MAX_MSG_SIZE / 1024
            )
        },
        content: "`LogLine`, one message per captured output line, numbered; at most `MAX_RUN_OUTPUT_BYTES` per run (or what is left of `MAX_LOG_BYTES_PER_USER`), then one `[metis] output truncated` line",
        written_by: "engines",
        read_by: || {
            "API (`GET /runs/{run_id}/logs`: all lines by `metis.logs.<run_id>.*`, one stream by its own subject, so a page costs one read per line it returns; lines of earlier engines, on `metis.logs.<run_id>`, are still read)".to_owned()
        },
    },
    Layout {
        name: || format!("`{USAGE_BUCKET}`"),
        kind: || "key-value bucket, by user token".to_owned(),
        content: "`{stored_runs, log_bytes}`: what each user stores, for `MAX_STORED_RUNS_PER_USER` and `MAX_LOG_BYTES_PER_USER`",
        written_by: "API (a stored run; retention gives back), engines (a run's output bytes)",
        read_by: || {
            "API (create, `/service-info`, each dispatch: what is left of the user's output quota)"
                .to_owned()
        },
    },
    Layout {
        name: || format!("`{ACTIVE_STREAM}`, subjects `metis.active.<user>.<run_id>`"),
        kind: || "JetStream stream, one message per subject".to_owned(),
        content: "index of the runs not yet terminal; written before the record, purged when the run ends",
        written_by: "API (create), whoever ends a run",
        read_by: || {
            "the reaper and reconciler, service-info, an engine restarted with a fixed id"
                .to_owned()
        },
    },
    Layout {
        name: || {
            format!(
                "`{USER_RUNS_STREAM}`, subjects `metis.user_runs.<user>.<run_id>` and `metis.user_runs.<user>.<STATE>.<run_id>`"
            )
        },
        kind: || "JetStream stream, one message per subject".to_owned(),
        content: "index of each user's runs (`<user>` encoded as one token), and of the terminal state each ended in",
        written_by: "API (create); whoever ends a run (the state entry)",
        read_by: || {
            "API (`GET /runs`; `GET /runs?state=…` reads the state's entries, or the user's active index for an unfinished state)".to_owned()
        },
    },
    Layout {
        name: || format!("`{FINISHED_STREAM}`, subjects `metis.finished.<STATE>`"),
        kind: || "JetStream stream (de-duplicated by run id)".to_owned(),
        content: "one message per run that reached terminal state `<STATE>`",
        written_by: "whoever ends a run",
        read_by: || "API (service-info counts)".to_owned(),
    },
];

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The header that carries W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether `s` is a valid engine name or instance id: letters, digits, `_`, `-`.
#[must_use]
pub fn is_engine_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Whether `s` is a valid engine version: letters, digits, `_`, `-`, `.`.
#[must_use]
pub fn is_engine_version(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// One subject token: `.`, `*`, `>` and whitespace become `_`.
#[must_use]
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `metis.runs.<engine>.<engine_version>.<type>.<type_version>`: the subject prefix of one
/// kind of run (also the name of the producer span); each message goes to
/// [`run_message_subject`] below it.
#[must_use]
pub fn run_subject(
    engine: &str,
    engine_version: &str,
    workflow_type: &str,
    type_version: &str,
) -> String {
    format!(
        "metis.runs.{}.{}.{}.{}",
        token(engine),
        token(engine_version),
        token(workflow_type),
        token(type_version)
    )
}

/// `metis.runs.<engine>.<engine_version>.>`: every run message of one engine name and version.
#[must_use]
pub fn engine_runs_filter(engine: &str, engine_version: &str) -> String {
    format!("metis.runs.{}.{}.>", token(engine), token(engine_version))
}

/// `<run_subject>.<user>.<run_id>`: where the message of one run is published (`<user>` =
/// [`user_token`]), so each user's queued runs are a subject filter of their own and an engine
/// can claim them round-robin (see `engine::queues`).
#[must_use]
pub fn run_message_subject(prefix: &str, user_id: &str, run_id: &crate::RunId) -> String {
    format!("{prefix}.{}.{run_id}", user_token(user_id))
}

/// Which queue a run message is in (see [`run_queue_of_subject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunQueue<'a> {
    /// One user's (their [`user_token`]).
    User(&'a str),
    /// The layout of earlier versions, without the user (`….<type_version>.<run_id>` or
    /// `….<type_version>`), claimed through the engine's shared consumer.
    Shared,
}

/// Whose queue a run message's subject is in: the user token of
/// `metis.runs.<engine>.<engine_version>.<type>.<type_version>.<user>.<run_id>`, or the shared
/// queue of the layout of earlier versions. `None` for a subject of neither shape.
#[must_use]
pub fn run_queue_of_subject(subject: &str) -> Option<RunQueue<'_>> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["metis", "runs", _, _, _, _, user, _] => Some(RunQueue::User(user)),
        ["metis", "runs", _, _, _, _, _] | ["metis", "runs", _, _, _, _] => Some(RunQueue::Shared),
        _ => None,
    }
}

/// The subject prefix (`metis.runs.<engine>.<engine_version>.<type>.<type_version>`, the
/// producer span's name) of a run message's subject, in either layout.
#[must_use]
pub fn run_prefix_of_subject(subject: &str) -> Option<&str> {
    let tokens = match run_queue_of_subject(subject) {
        Some(RunQueue::User(_)) => 2,
        Some(RunQueue::Shared) if subject.split('.').count() == 7 => 1,
        Some(RunQueue::Shared) => 0,
        None => return None,
    };
    let mut end = subject.len();
    for _ in 0..tokens {
        end = subject[..end].rfind('.')?;
    }
    Some(&subject[..end])
}

/// The run id in a run message's subject (its last token), when there is one.
#[must_use]
pub fn run_id_of_subject(subject: &str) -> Option<crate::RunId> {
    subject.rsplit('.').next()?.parse().ok()
}

/// `metis.active.<user>.<run_id>`.
#[must_use]
pub fn active_subject(user_id: &str, run_id: &crate::RunId) -> String {
    format!("metis.active.{}.{run_id}", user_token(user_id))
}

/// `metis.active.*.<run_id>`: the run's active entry, whoever's it is.
#[must_use]
pub fn active_run_filter(run_id: &crate::RunId) -> String {
    format!("metis.active.*.{run_id}")
}

/// `metis.active.<user>.*`: one user's unfinished runs.
#[must_use]
pub fn user_active_filter(user_id: &str) -> String {
    format!("metis.active.{}.*", user_token(user_id))
}

/// `metis.user_runs.<user>.<run_id>`.
#[must_use]
pub fn user_run_subject(user_id: &str, run_id: &crate::RunId) -> String {
    format!("metis.user_runs.{}.{run_id}", user_token(user_id))
}

/// `metis.user_runs.*.*`: the creation entries of every user's runs (not the state entries).
pub const USER_RUNS_CREATED: &str = "metis.user_runs.*.*";

/// `metis.user_runs.<user>.*`: every run of one user.
#[must_use]
pub fn user_runs_filter(user_id: &str) -> String {
    format!("metis.user_runs.{}.*", user_token(user_id))
}

/// `metis.user_runs.<user>.<STATE>.<run_id>`: the run reached terminal `<STATE>` (written when
/// it does), so one user's runs in one terminal state are a subject prefix of their own (the
/// server finds them without walking the user's other runs).
#[must_use]
pub fn user_finished_subject(user_id: &str, run_id: &crate::RunId, state: crate::State) -> String {
    format!("metis.user_runs.{}.{state}.{run_id}", user_token(user_id))
}

/// `metis.user_runs.<user>.<STATE>.*`: one user's runs that ended in `<STATE>`.
#[must_use]
pub fn user_finished_filter(user_id: &str, state: crate::State) -> String {
    format!("metis.user_runs.{}.{state}.*", user_token(user_id))
}

/// `metis.finished.<STATE>`.
#[must_use]
pub fn finished_subject(state: crate::State) -> String {
    format!("metis.finished.{state}")
}

/// A user id as one subject token, injectively: letters, digits, `_` and `-` stay, every
/// other byte becomes `=XX` (hex), so `a.b` and `a_b` never meet. Empty becomes `=`.
#[must_use]
pub fn user_token(user_id: &str) -> String {
    if user_id.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(user_id.len());
    for b in user_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The durable consumer shared by every instance of one engine name and version.
#[must_use]
pub fn consumer_name(engine: &str, engine_version: &str) -> String {
    format!("engine_{}_{}", token(engine), token(engine_version))
}

/// The durable consumer through which every instance of one engine name and version claims
/// one user's runs (`<user>` = [`user_token`], hashed: a user id may be longer than a consumer
/// name may be, and a name must not be one user's to choose for another).
#[must_use]
pub fn user_consumer_name(engine: &str, engine_version: &str, user_token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user_token.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_u_{hex}", consumer_name(engine, engine_version))
}

/// `metis.cancel.<engine_id>`.
#[must_use]
pub fn cancel_subject(engine_id: &str) -> String {
    format!("metis.cancel.{}", token(engine_id))
}

/// `metis.logs.<run_id>.<stream>` (`stdout` or `stderr`): where one run's lines of one output
/// stream are published, so a page of one stream is read by subject, never by skipping the
/// other's lines.
#[must_use]
pub fn logs_subject(run_id: &crate::RunId, stream: crate::LogStream) -> String {
    format!("metis.logs.{run_id}.{}", stream.as_str())
}

/// `metis.logs.<run_id>.*`: every line of one run, both streams, in the order captured.
#[must_use]
pub fn logs_filter(run_id: &crate::RunId) -> String {
    format!("metis.logs.{run_id}.*")
}

/// `metis.logs.<run_id>`: where engines of earlier versions published all of a run's lines.
#[must_use]
pub fn legacy_logs_subject(run_id: &crate::RunId) -> String {
    format!("metis.logs.{run_id}")
}

/// The `metis_engine_configs` key of an engine.
#[must_use]
pub fn engine_config_key(engine: &str, engine_version: &str) -> String {
    format!("{}/{}", token(engine), token(engine_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_one_token_per_part() {
        assert_eq!(
            run_subject("generic", "1.0", "SH", "1"),
            "metis.runs.generic.1_0.SH.1"
        );
        assert_eq!(cancel_subject("a.b*c"), "metis.cancel.a_b_c");
        assert_eq!(consumer_name("generic", "2.1"), "engine_generic_2_1");
        assert_eq!(engine_config_key("generic", "1.0"), "generic/1_0");
        let id = crate::RunId::new();
        let subject = run_message_subject(&run_subject("generic", "1", "SH", "1"), "a.b", &id);
        assert_eq!(subject, format!("metis.runs.generic.1.SH.1.a=2Eb.{id}"));
        assert_eq!(run_id_of_subject(&subject), Some(id));
        assert_eq!(run_id_of_subject("metis.runs.generic.1.SH.1"), None);
        assert_eq!(
            run_queue_of_subject(&subject),
            Some(RunQueue::User("a=2Eb"))
        );
        let legacy = format!("metis.runs.generic.1.SH.1.{id}");
        assert_eq!(run_queue_of_subject(&legacy), Some(RunQueue::Shared));
        assert_eq!(
            run_prefix_of_subject(&subject),
            Some("metis.runs.generic.1.SH.1")
        );
        assert_eq!(
            run_prefix_of_subject(&legacy),
            Some("metis.runs.generic.1.SH.1")
        );
        let oldest = "metis.runs.generic.1.SH.1";
        assert_eq!(run_prefix_of_subject(oldest), Some(oldest));
        assert_eq!(run_prefix_of_subject("metis.cancel.x"), None);
        assert_eq!(run_queue_of_subject("metis.cancel.x"), None);
        assert_eq!(
            engine_runs_filter("generic", "1.0"),
            "metis.runs.generic.1_0.>"
        );
        // Consumer names: one per user, never the user's spelling, always a valid name.
        let a = user_consumer_name("generic", "1", &user_token("alice"));
        let b = user_consumer_name("generic", "1", &user_token("bob"));
        assert_ne!(a, b);
        assert!(
            a.starts_with("engine_generic_1_u_") && a.len() == "engine_generic_1_u_".len() + 32
        );
    }

    #[test]
    fn user_tokens_are_one_token_and_injective() {
        let users = [
            "alice", "a.b", "a_b", "a=2Eb", "a@b.c", "", "A-b", "=", "..",
        ];
        let tokens: std::collections::BTreeSet<String> =
            users.iter().map(|u| user_token(u)).collect();
        assert_eq!(tokens.len(), users.len(), "{tokens:?}");
        for t in &tokens {
            assert!(
                !t.is_empty() && !t.contains(['.', '*', '>', ' ']),
                "not one token: {t}"
            );
        }
        assert_eq!(user_token("alice"), "alice");
        assert_eq!(user_token("a.b@c"), "a=2Eb=40c");
    }
}

/// How a service authenticates to NATS, from its environment:
///
/// | variable | meaning |
/// | --- | --- |
/// | `NATS_USER` + `NATS_PASSWORD` | user and password |
/// | `NATS_TOKEN` | an authorization token |
/// | `NATS_CREDS_FILE` | a `.creds` file (JWT + nkey seed, decentralised auth) |
/// | `NATS_NKEY_SEED_FILE` | a file holding an nkey seed (`SU…`) |
///
/// At most one method; none means no credentials (a server without authorization). The
/// values never reach a workflow: the engine starts workflows with a cleared environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// `NATS_USER` / `NATS_PASSWORD`.
    UserPassword(String, String),
    /// `NATS_TOKEN`.
    Token(String),
    /// `NATS_CREDS_FILE`.
    CredsFile(PathBuf),
    /// `NATS_NKEY_SEED_FILE`.
    NkeySeedFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret.
        match self {
            Self::None => f.write_str("none"),
            Self::UserPassword(user, _) => write!(f, "user {user}"),
            Self::Token(_) => f.write_str("token"),
            Self::CredsFile(p) => write!(f, "creds file {}", p.display()),
            Self::NkeySeedFile(p) => write!(f, "nkey seed file {}", p.display()),
        }
    }
}

/// Default `NATS_URL` of both services.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The NATS settings both services read (see [`crate::settings`]).
pub const SETTINGS: &[crate::settings::Setting] = &[
    crate::settings::Setting {
        name: "NATS_URL",
        meaning: "the NATS server (with JetStream); several, comma-separated, for a cluster (the client fails over)",
        default: || crate::settings::literal(DEFAULT_URL),
    },
    crate::settings::Setting {
        name: "NATS_REPLICAS",
        meaning: "copies of each stream and bucket the service creates (1–5)",
        default: || "3 on a cluster, else 1".to_owned(),
    },
    crate::settings::Setting {
        name: "NATS_PING_INTERVAL_MS",
        meaning: "how often the service pings its NATS server; two unanswered pings and it fails over to another",
        default: || crate::settings::millis(DEFAULT_PING_INTERVAL),
    },
    crate::settings::Setting {
        name: "NATS_USER",
        meaning: "with `NATS_PASSWORD`: log in to NATS with a user and password (at most one kind of credential may be set)",
        default: || "none".to_owned(),
    },
    crate::settings::Setting {
        name: "NATS_PASSWORD",
        meaning: "the password of `NATS_USER`",
        default: || "none".to_owned(),
    },
    crate::settings::Setting {
        name: "NATS_TOKEN",
        meaning: "log in to NATS with a token",
        default: || "none".to_owned(),
    },
    crate::settings::Setting {
        name: "NATS_CREDS_FILE",
        meaning: "log in to NATS with a `.creds` file (JWT and NKey seed)",
        default: || "none".to_owned(),
    },
    crate::settings::Setting {
        name: "NATS_NKEY_SEED_FILE",
        meaning: "log in to NATS with an NKey seed file",
        default: || "none".to_owned(),
    },
];

/// The variables [`NatsAuth`] reads.
pub const NATS_AUTH_VARS: [&str; 5] = [
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_CREDS_FILE",
    "NATS_NKEY_SEED_FILE",
];

impl NatsAuth {
    /// The files holding a secret (`NATS_CREDS_FILE`, `NATS_NKEY_SEED_FILE`), with the
    /// variable that names each: nothing a workflow may read.
    #[must_use]
    pub fn secret_files(&self) -> Vec<(&'static str, PathBuf)> {
        match self {
            Self::CredsFile(p) => vec![("NATS_CREDS_FILE", p.clone())],
            Self::NkeySeedFile(p) => vec![("NATS_NKEY_SEED_FILE", p.clone())],
            _ => Vec::new(),
        }
    }

    /// Reads the variables through `get` (empty counts as unset); the error names them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let (user, password) = (get("NATS_USER"), get("NATS_PASSWORD"));
        let mut found = Vec::new();
        match (user, password) {
            (Some(u), Some(p)) => found.push(Self::UserPassword(u, p)),
            (Some(_), None) => return Err("NATS_USER is set but NATS_PASSWORD is not".to_owned()),
            (None, Some(_)) => return Err("NATS_PASSWORD is set but NATS_USER is not".to_owned()),
            (None, None) => {}
        }
        found.extend(get("NATS_TOKEN").map(Self::Token));
        found.extend(get("NATS_CREDS_FILE").map(|p| Self::CredsFile(p.into())));
        found.extend(get("NATS_NKEY_SEED_FILE").map(|p| Self::NkeySeedFile(p.into())));
        match found.len() {
            0 => Ok(Self::None),
            1 => Ok(found.remove(0)),
            _ => Err(format!(
                "set only one NATS credential: NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS_FILE or NATS_NKEY_SEED_FILE (found {})",
                found
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// `opts` with these credentials; a file that cannot be read is an error naming it.
    pub async fn apply(
        &self,
        opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        Ok(match self {
            Self::None => opts,
            Self::UserPassword(u, p) => opts.user_and_password(u.clone(), p.clone()),
            Self::Token(t) => opts.token(t.clone()),
            Self::CredsFile(path) => opts
                .credentials_file(path)
                .await
                .map_err(|e| format!("NATS_CREDS_FILE {}: {e}", path.display()))?,
            Self::NkeySeedFile(path) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| format!("NATS_NKEY_SEED_FILE {}: {e}", path.display()))?;
                opts.nkey(seed.trim().to_owned())
            }
        })
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<NatsAuth, String> {
        NatsAuth::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn one_method_at_most_and_secrets_never_printed() {
        assert_eq!(from(&[]).unwrap(), NatsAuth::None);
        let up = from(&[("NATS_USER", "metis"), ("NATS_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(format!("{up:?}"), "user metis");
        assert!(
            from(&[("NATS_USER", "metis")])
                .unwrap_err()
                .contains("NATS_PASSWORD")
        );
        assert!(
            from(&[("NATS_PASSWORD", "x")])
                .unwrap_err()
                .contains("NATS_USER")
        );
        let two = from(&[("NATS_TOKEN", "t0k"), ("NATS_CREDS_FILE", "/x.creds")]).unwrap_err();
        assert!(two.contains("only one") && !two.contains("t0k"), "{two}");
        assert_eq!(
            format!("{:?}", from(&[("NATS_TOKEN", "t0k")]).unwrap()),
            "token"
        );
    }
}

/// The servers `NATS_URL` names: one URL, or several separated by commas (the members of a
/// cluster; the client fails over between them). The error names the entry that is wrong.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let addrs: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("'{u}' is not a NATS server URL: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err("names no server".to_owned());
    }
    Ok(addrs)
}

/// The replica count for streams and buckets: `NATS_REPLICAS` when set (1 to 5), otherwise 3
/// on a cluster (the server reports a cluster name) and 1 on a single server.
#[must_use]
pub fn default_replicas(info: &async_nats::ServerInfo) -> usize {
    if info.cluster.as_deref().is_some_and(|c| !c.is_empty()) {
        3
    } else {
        1
    }
}

/// Reads `NATS_REPLICAS` (1 to 5; unset = [`default_replicas`]); the error names the variable.
pub fn replicas_setting(value: Option<&str>) -> Result<Option<usize>, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=5).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "NATS_REPLICAS must be a number from 1 to 5, got '{v}'"
            )),
        },
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn one_or_several_servers() {
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        let three = server_addrs("nats://a:1, nats://b:2,nats://c:3").unwrap();
        assert_eq!(three.len(), 3);
        assert!(
            server_addrs("nats://a:1,not a url")
                .unwrap_err()
                .contains("not a url")
        );
        assert!(server_addrs(" , ").is_err());
        assert_eq!(replicas_setting(None), Ok(None));
        assert_eq!(replicas_setting(Some("3")), Ok(Some(3)));
        for bad in ["0", "6", "three"] {
            assert!(
                replicas_setting(Some(bad))
                    .unwrap_err()
                    .contains("NATS_REPLICAS")
            );
        }
    }
}

/// Default `NATS_PING_INTERVAL_MS`: how often a service pings its server; two unanswered pings
/// and it reconnects to another (a server cut off by a partition answers nothing, and its TCP
/// connection may never break).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Reads `NATS_PING_INTERVAL_MS` (at least 1; unset = [`DEFAULT_PING_INTERVAL`]).
pub fn ping_interval_setting(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_PING_INTERVAL),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_millis(n)),
            _ => Err(format!(
                "NATS_PING_INTERVAL_MS must be milliseconds (at least 1), got '{v}'"
            )),
        },
    }
}
