//! Runs, states, the HTTP run request, the NATS messages and the stored run record.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A run's identifier: a UUIDv7, so ids sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct RunId(pub Uuid);

impl RunId {
    /// A fresh, time-ordered run id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The WES run states.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// The state is not known.
    Unknown,
    /// Stored and published; no engine has claimed it yet.
    Queued,
    /// An engine claimed it and is preparing the workdir and command.
    Initializing,
    /// The workflow process runs.
    Running,
    /// Reserved by WES; Metis never pauses a run.
    Paused,
    /// The process exited with status 0.
    Complete,
    /// The process exited non-zero or was killed by a signal nobody asked for.
    ExecutorError,
    /// The engine itself failed (workdir, spawn, lost engine, shutdown).
    SystemError,
    /// The run was cancelled.
    Canceled,
    /// A cancel was requested; the owning engine is stopping the process.
    Canceling,
    /// Reserved by WES; Metis never preempts a run.
    Preempted,
}

impl State {
    /// Every state, in declaration order.
    pub const ALL: [State; 11] = [
        State::Unknown,
        State::Queued,
        State::Initializing,
        State::Running,
        State::Paused,
        State::Complete,
        State::ExecutorError,
        State::SystemError,
        State::Canceled,
        State::Canceling,
        State::Preempted,
    ];

    /// Whether no further transition can happen.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Complete
                | State::ExecutorError
                | State::SystemError
                | State::Canceled
                | State::Preempted
        )
    }

    /// The wire name, e.g. `EXECUTOR_ERROR`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "UNKNOWN",
            State::Queued => "QUEUED",
            State::Initializing => "INITIALIZING",
            State::Running => "RUNNING",
            State::Paused => "PAUSED",
            State::Complete => "COMPLETE",
            State::ExecutorError => "EXECUTOR_ERROR",
            State::SystemError => "SYSTEM_ERROR",
            State::Canceled => "CANCELED",
            State::Canceling => "CANCELING",
            State::Preempted => "PREEMPTED",
        }
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    ///
    /// QUEUED → INITIALIZING | CANCELED | SYSTEM_ERROR; INITIALIZING → RUNNING | CANCELING |
    /// terminal; RUNNING → CANCELING | terminal; CANCELING → CANCELED | terminal. Nothing leaves a
    /// terminal state.
    #[must_use]
    pub fn can_transition(self, to: State) -> bool {
        use State::*;
        match self {
            Queued => matches!(to, Initializing | Canceled | SystemError),
            Initializing => matches!(to, Running | Canceling) || to.is_terminal(),
            Running => matches!(to, Canceling) || to.is_terminal(),
            Canceling => to.is_terminal(),
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown state '{s}'"))
    }
}

/// The body of `POST /runs`.
///
/// Strict over HTTP (an unknown field is a 400, see [`RunRequest::unknown_field`]); lenient
/// inside NATS messages and records, so an API one field ahead of its engines strands nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunRequest {
    /// Workflow language, e.g. `SH`.
    #[schema(min_length = 1, pattern = r"\S")]
    pub workflow_type: String,
    /// Version of the workflow language, e.g. `1`.
    #[schema(min_length = 1, pattern = r"\S")]
    pub workflow_type_version: String,
    /// Where the workflow is: an absolute path under one of the engine's
    /// `allowedWorkflowRoots`, or a URL with one of its `allowedUrlSchemes`; passed to the
    /// command (resolved, for a path) as `{workflow_url}`.
    #[schema(min_length = 1, pattern = r"^(?!-)[\s\S]*\S")]
    pub workflow_url: String,
    /// Engine name, as registered by the engine's `engine.yaml`.
    #[schema(min_length = 1, pattern = r"\S")]
    pub workflow_engine: String,
    /// Engine version, as registered by the engine's `engine.yaml`.
    #[schema(min_length = 1, pattern = r"\S")]
    pub workflow_engine_version: String,
    /// Workflow inputs; each top-level key becomes `--key value` in `{workflow_params}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow_params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Engine parameters, validated against the engine's `engineParams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow_engine_parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

impl RunRequest {
    /// Every field of the request, as spelled on the wire.
    pub const FIELDS: [&'static str; 8] = [
        "workflow_type",
        "workflow_type_version",
        "workflow_url",
        "workflow_engine",
        "workflow_engine_version",
        "workflow_params",
        "workflow_engine_parameters",
        "tags",
    ];

    /// The first top-level key of a JSON request body that is not a field of the request.
    #[must_use]
    pub fn unknown_field(body: &serde_json::Value) -> Option<&str> {
        body.as_object()?
            .keys()
            .map(String::as_str)
            .find(|k| !Self::FIELDS.contains(k))
    }
}

/// What the API publishes on `metis.runs.<engine>.<version>.<type>.<type_version>.<run_id>`.
/// Unknown fields are ignored (rolling upgrades: an API ahead of its engines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequestMessage {
    /// The run to execute.
    pub run_id: RunId,
    /// The request as accepted by the API.
    pub request: RunRequest,
    /// Owner of the run.
    pub user_id: String,
    /// OpenTelemetry span id (16 hex digits) of the API's `create_run` span.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The most output bytes this run may store: what is left of its user's
    /// `MAX_LOG_BYTES_PER_USER` when it was created (absent: only the engine's own cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// What the API publishes on `metis.cancel.<engine_id>`. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelMessage {
    /// The run to cancel.
    pub run_id: RunId,
}

/// The log of the workflow process, written by the engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct RunLog {
    /// `run-<run_id>`.
    pub name: String,
    /// The argv the process was started with.
    pub cmd: Vec<String>,
    /// When the process was spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Exit status; absent when the process was killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// How many output lines were stored (once the run ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lines: Option<u64>,
    /// How many bytes of output were stored (once the run ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Why part of the output was not stored (a cap it reached), when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_note: Option<String>,
}

/// One run as stored in the `metis_runs` bucket (key = run id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: RunId,
    /// Owner; only this user sees the run.
    pub user_id: String,
    /// The accepted request.
    pub request: RunRequest,
    /// Current state.
    pub state: State,
    /// The engine instance that claimed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
    /// When the API accepted the run.
    pub created_at: DateTime<Utc>,
    /// Last state change.
    pub updated_at: DateTime<Utc>,
    /// The process log, once the engine has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_log: Option<RunLog>,
    /// Why the run ended in SYSTEM_ERROR or EXECUTOR_ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The subject its run message is published on (so the reconciler can look for it and
    /// publish it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl RunRecord {
    /// A new QUEUED record.
    #[must_use]
    pub fn queued(run_id: RunId, user_id: String, request: RunRequest) -> Self {
        let now = Utc::now();
        Self {
            run_id,
            user_id,
            request,
            state: State::Queued,
            engine_id: None,
            created_at: now,
            updated_at: now,
            run_log: None,
            error: None,
            subject: None,
        }
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`, as in the API and in the log subjects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

impl FromStr for LogStream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            other => Err(format!(
                "unknown stream '{other}', expected stdout or stderr"
            )),
        }
    }
}

/// One captured output line, published on `metis.logs.<run_id>.<stream>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Position in the run's combined output, from 0.
    pub seq: u64,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
    /// `true` when the line was longer than the engine's 16 KiB piece and goes on in the next
    /// entry of the same stream (pieces are cut only between characters: joined, they are the
    /// line); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continues: bool,
    /// When the engine read it.
    pub time: DateTime<Utc>,
}

/// A live engine instance, kept in the `metis_engines` bucket by heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EngineRegistration {
    /// Instance id (the `metis.cancel.<id>` subject).
    pub id: String,
    /// Engine name.
    pub name: String,
    /// Engine version.
    pub version: String,
    /// When the instance started.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// The runs in flight on this instance at `heartbeat_at` (claimed, not yet finished).
    #[serde(default)]
    pub runs: Vec<RunId>,
    /// How the instance isolates runs: `bubblewrap`, or `none` under
    /// `METIS_UNSAFE_NO_SANDBOX=1` (absent from engines that predate the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_wire_names() {
        for st in State::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<State>().unwrap(), st);
        }
        assert_eq!(
            "executor_error".parse::<State>().unwrap(),
            State::ExecutorError
        );
        assert!("nope".parse::<State>().is_err());
    }

    #[test]
    fn transitions_follow_the_lifecycle() {
        use State::*;
        let allowed = [
            (Queued, Initializing),
            (Queued, Canceled),
            (Initializing, Running),
            (Initializing, Canceling),
            (Initializing, SystemError),
            (Running, Complete),
            (Running, ExecutorError),
            (Running, Canceling),
            (Canceling, Canceled),
            (Canceling, SystemError),
        ];
        for (from, to) in allowed {
            assert!(from.can_transition(to), "{from} -> {to} should be allowed");
        }
        let denied = [
            (Queued, Running),
            (Queued, Complete),
            (Complete, Running),
            (Canceled, Initializing),
            (Running, Queued),
            (Canceling, Running),
        ];
        for (from, to) in denied {
            assert!(!from.can_transition(to), "{from} -> {to} should be denied");
        }
    }

    #[test]
    fn run_request_fields_are_every_field() {
        let full = RunRequest {
            workflow_type: "SH".into(),
            workflow_type_version: "1".into(),
            workflow_url: "x".into(),
            workflow_engine: "generic".into(),
            workflow_engine_version: "1".into(),
            workflow_params: Some(Default::default()),
            workflow_engine_parameters: Some(Default::default()),
            tags: Some(Default::default()),
        };
        let v = serde_json::to_value(&full).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = RunRequest::FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        assert_eq!(RunRequest::unknown_field(&v), None);
        let mut bogus = v.clone();
        bogus["bogus"] = 1.into();
        assert_eq!(RunRequest::unknown_field(&bogus), Some("bogus"));
    }

    #[test]
    fn messages_from_a_newer_api_decode() {
        let msg = serde_json::json!({
            "run_id": RunId::new(), "user_id": "u", "trace_id": null, "priority": 3,
            "request": {"workflow_type":"SH","workflow_type_version":"1","workflow_url":"x",
                "workflow_engine":"generic","workflow_engine_version":"1","new_field":true},
        });
        let m: RunRequestMessage = serde_json::from_value(msg).unwrap();
        assert_eq!(m.request.workflow_type, "SH");
        let c: CancelMessage =
            serde_json::from_value(serde_json::json!({"run_id": RunId::new(), "why": "x"}))
                .unwrap();
        let _ = c;
    }

    /// What one service writes and the other reads — a record, a registration, an output
    /// line — decodes with a field a newer writer added: a rolling upgrade strands nothing.
    #[test]
    fn records_lines_and_registrations_from_a_newer_writer_decode() {
        let request = serde_json::json!({"workflow_type":"SH","workflow_type_version":"1",
            "workflow_url":"x","workflow_engine":"generic","workflow_engine_version":"1"});
        let mut rec = serde_json::to_value(RunRecord::queued(
            RunId::new(),
            "u".to_owned(),
            serde_json::from_value(request).unwrap(),
        ))
        .unwrap();
        rec["new_field"] = serde_json::json!({"any": 1});
        let rec: RunRecord = serde_json::from_value(rec).unwrap();
        assert_eq!(rec.state, State::Queued);
        let mut line = serde_json::to_value(LogLine {
            seq: 1,
            stream: LogStream::Stdout,
            line: "x".to_owned(),
            time: chrono::Utc::now(),
            continues: false,
        })
        .unwrap();
        line["new_field"] = serde_json::json!(true);
        let line: LogLine = serde_json::from_value(line).unwrap();
        assert_eq!(line.line, "x");
        let now = chrono::Utc::now();
        let reg = serde_json::json!({"id": "e", "name": "generic", "version": "1",
            "started_at": now, "heartbeat_at": now, "runs": [], "new_field": 2});
        let reg: EngineRegistration = serde_json::from_value(reg).unwrap();
        assert_eq!(reg.id, "e");
    }
}
