//! Reading a run's captured output back from the `METIS_LOGS` stream.
//!
//! Lines are stored one message each on `metis.logs.<run_id>.<stdout|stderr>`, in the order
//! the engine read them. A page is read from the stream's leader ("next message on this
//! subject, or these subjects, at or after sequence N"), so a page token is simply the next
//! stream sequence to read, and a page costs one read per line it returns: a page of one
//! stream is read by its subject, never by skipping the other stream's lines.
//!
//! Engines of earlier versions published all of a run's lines on `metis.logs.<run_id>`; a
//! run with no line in the new layout is read from there (filtering by stream line by line,
//! as those versions did).

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use common::{LogLine, LogStream, RunId};

use crate::error::ApiError;

/// One page of lines.
pub struct Page {
    /// The lines, in order.
    pub lines: Vec<LogLine>,
    /// Where the next page starts, when there may be more.
    pub next: Option<u64>,
}

/// Reads up to `page_size` lines from stream sequence `start`, optionally only one stream.
pub async fn read(
    js: &async_nats::jetstream::Context,
    run_id: &RunId,
    start: u64,
    page_size: usize,
    only: Option<LogStream>,
) -> Result<Page, ApiError> {
    let stream = js
        .get_stream_no_info(common::nats::LOGS_STREAM)
        .await
        .map_err(ApiError::unavailable)?;
    let subject = match only {
        Some(s) => common::nats::logs_subject(run_id, s),
        None => common::nats::logs_filter(run_id),
    };
    let page = read_subject(&stream, run_id, &subject, start, page_size, None).await?;
    if !page.lines.is_empty() || page.next.is_some() {
        return Ok(page);
    }
    let legacy = common::nats::legacy_logs_subject(run_id);
    read_subject(&stream, run_id, &legacy, start, page_size, only).await
}

/// Reads up to `page_size` lines of `subject` (a subject or a filter) from stream sequence
/// `start`, keeping only the lines of `only` when given.
async fn read_subject(
    stream: &async_nats::jetstream::stream::Stream<()>,
    run_id: &RunId,
    subject: &str,
    start: u64,
    page_size: usize,
    only: Option<LogStream>,
) -> Result<Page, ApiError> {
    let mut lines = Vec::new();
    let mut seq = start.max(1);
    loop {
        if lines.len() == page_size {
            return Ok(Page {
                lines,
                next: Some(seq),
            });
        }
        // From the stream's leader, not a direct get: a replica still catching up after a
        // restart would answer a run's log without its last lines. A read waits out a leader
        // change like a write does.
        let next = common::infra::read_during_failover("reading the run's logs", || async {
            match stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.to_owned())
                .send()
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(common::infra::InfraError::new("reading the run's logs", e)),
            }
        })
        .await
        .map_err(ApiError::unavailable)?;
        let Some(msg) = next else {
            return Ok(Page { lines, next: None });
        };
        seq = msg.sequence + 1;
        match serde_json::from_slice::<LogLine>(&msg.payload) {
            Ok(line) if only.is_none_or(|s| s == line.stream) => lines.push(line),
            Ok(_) => {}
            Err(e) => {
                telemetry::tracing::warn!(run_id = %run_id, sequence = msg.sequence, error = %e, "skipping a log message that does not decode")
            }
        }
    }
}
