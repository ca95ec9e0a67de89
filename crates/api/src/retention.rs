//! Retention: a finished run older than `RETENTION_MAX_AGE_S` leaves, its record and its
//! output lines together, and its user's usage (`metis_usage`) gives back what it held.
//!
//! One policy for both, so a run never shows with its lines gone by age. The sweep runs with
//! the reaper's pass and reads `METIS_USER_RUNS` from its start: that index is in creation
//! order and a deleted run's entries are purged, so a sweep reads the expired runs (plus the
//! old ones not yet finished, which stay) and stops at the first run younger than the
//! cutoff — never the whole history. A run is deleted once it is older than the age both by
//! its creation and by its end. Each deletion is a compare-and-set purge of the record: of
//! several API replicas sweeping side by side, one deletes a run and gives back its usage;
//! what the deletion's tidying leaves (lines, index entries) is removed by a later pass. The
//! sweep runs in a task of its own, so a long one never delays the reaper.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use common::RunId;
use common::infra::InfraError;
use telemetry::tracing::{info, warn};

use crate::AppState;

/// The most runs one sweep deletes (the next pass goes on).
pub const SWEEP_BATCH: usize = 500;

/// Whether a run id was minted longer than `age` ago (run ids are UUIDv7).
#[must_use]
pub fn older_than(id: &RunId, age: Duration) -> bool {
    let Some(ts) = id.0.get_timestamp() else {
        return true;
    };
    let (secs, nanos) = ts.to_unix();
    let minted = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    std::time::SystemTime::now()
        .duration_since(minted)
        .is_ok_and(|d| d > age)
}

/// Deletes up to [`SWEEP_BATCH`] finished runs older than `RETENTION_MAX_AGE_S`; returns how
/// many it deleted.
pub async fn sweep(state: &AppState) -> Result<usize, InfraError> {
    let age = state.config.retention_max_age;
    let infra = &state.infra;
    let mut seq = 1;
    let mut deleted = 0;
    while deleted < SWEEP_BATCH {
        let msg = match infra
            .user_runs
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(common::nats::USER_RUNS_CREATED.to_owned())
            .send()
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(InfraError::new("reading the run index for retention", e)),
        };
        seq = msg.sequence + 1;
        let Some(id) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<RunId>().ok())
        else {
            continue;
        };
        if !older_than(&id, age) {
            // Creation order: every later entry is younger.
            break;
        }
        let found = match infra.get_run(&id).await {
            Ok(found) => found,
            Err(e) => {
                // One unreadable record must not stop retention for everyone.
                warn!(run_id = %id, error = %e, "retention: could not read a run; next pass");
                continue;
            }
        };
        let user = msg.subject.split('.').nth(2).unwrap_or_default().to_owned();
        match found {
            // Old enough by its creation and by its end (a run that ran for long is kept for
            // the whole age after it ended).
            Some((rec, revision))
                if rec.state.is_terminal()
                    && chrono::Utc::now()
                        .signed_duration_since(rec.updated_at)
                        .to_std()
                        .is_ok_and(|d| d > age) =>
            {
                let bytes = rec
                    .run_log
                    .as_ref()
                    .and_then(|l| l.output_bytes)
                    .unwrap_or(0);
                match infra.delete_run(&id, &rec.user_id, Some(revision)).await {
                    Ok(true) => {
                        deleted += 1;
                        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                        if let Err(e) = infra.add_usage(&rec.user_id, -1, -bytes).await {
                            warn!(run_id = %id, error = %e, "giving back a deleted run's usage failed");
                        }
                    }
                    // Changed meanwhile, or another replica deleted it.
                    Ok(false) => {}
                    Err(e) => {
                        warn!(run_id = %id, error = %e, "deleting an expired run failed; next pass")
                    }
                }
            }
            // Not finished, or finished a moment ago: it stays.
            Some(_) => {}
            None => {
                // An index entry without a record (its create died half-way, or a deletion's
                // tidying failed): remove its lines and entries.
                if let Err(e) = infra.delete_leftovers(&id, &user).await {
                    warn!(run_id = %id, error = %e, "removing an expired run's leftovers failed; next pass");
                }
            }
        }
    }
    if deleted > 0 {
        info!(
            runs = deleted,
            max_age_s = age.as_secs(),
            "deleted finished runs past RETENTION_MAX_AGE_S (records and output)"
        );
    }
    Ok(deleted)
}
