//! NATS names: JetStream streams and consumers, core subjects, KV buckets.
//!
//! | name | kind | content |
//! | --- | --- | --- |
//! | `METIS_RUNS` / `metis.runs.<engine>.<engine_version>.<type>.<type_version>` | work-queue stream | [`crate::RunRequestMessage`] + `traceparent` header |
//! | `metis.cancel.<engine_id>` | core subject | [`crate::CancelMessage`] + `traceparent` header |
//! | `metis_runs` | KV bucket | [`crate::RunRecord`] by run id; every change is a compare-and-set |
//! | `metis_engine_configs` | KV bucket | the `engine` section of each engine.yaml, by `<name>/<version>` |
//! | `metis_engines` | KV bucket with TTL | [`crate::EngineRegistration`] by instance id, kept by heartbeats |
//! | `METIS_LOGS` / `metis.logs.<run_id>` | stream | [`crate::LogLine`], one message per output line |
//!
//! Subject tokens come from the engine's config (never from the request's spelling), with `.`
//! replaced by `_` so a version like `1.0` stays one token.

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
/// How long an engine instance stays registered without a heartbeat.
pub const ENGINE_TTL: Duration = Duration::from_secs(10);
/// How often an engine instance heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
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

/// `metis.runs.<engine>.<engine_version>.<type>.<type_version>`.
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

/// The durable consumer shared by every instance of one engine name and version.
#[must_use]
pub fn consumer_name(engine: &str, engine_version: &str) -> String {
    format!("engine_{}_{}", token(engine), token(engine_version))
}

/// `metis.cancel.<engine_id>`.
#[must_use]
pub fn cancel_subject(engine_id: &str) -> String {
    format!("metis.cancel.{}", token(engine_id))
}

/// `metis.logs.<run_id>`.
#[must_use]
pub fn logs_subject(run_id: &crate::RunId) -> String {
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
    }
}
