//! Capturing the workflow's output: stdout and stderr are read line by line, concurrently,
//! numbered with one combined `seq` from 0 in the order read, and published as
//! [`LogLine`] JSON on `metis.logs.<run_id>.<stdout|stderr>` (the `METIS_LOGS` stream), so a
//! page of one stream is read by subject.
//!
//! Publishes are pipelined and their acks awaited in order; [`LogPublisher::finish`] returns
//! only when every line is stored, so a run is marked terminal only after all of its output
//! can be read. A line whose ack fails (NATS restarting, a timeout) is published again with
//! every line after it, in order, with backoff for about a minute: each carries
//! `Nats-Msg-Id: <run_id>.<seq>`, so a line that had landed with only its ack lost is not
//! stored twice. Invalid UTF-8 is replaced; a line longer than [`MAX_LINE`] bytes is split, only
//! between two characters (the pieces joined are the line, byte for byte), and every piece but
//! the last says so (`continues: true`).
//!
//! A run stores at most `MAX_RUN_OUTPUT_BYTES` of output (line text, both streams), or what is
//! left of its user's `MAX_LOG_BYTES_PER_USER` when that is less: the line that would pass the
//! cap is stored as far as it fits (cut between characters), then one stderr line starting
//! with [`TRUNCATED_MARKER`] names the cap, and the rest is read (so the process never blocks
//! on a full pipe) but not stored. A full log store (`METIS_LOGS` refuses new lines rather
//! than evict anyone's) ends the run's stored output the same way, without the marker.

use std::collections::VecDeque;

use async_nats::jetstream::{self, context::PublishAckFuture};
use chrono::{DateTime, Utc};
use common::{LogLine, LogStream, RunId};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// The longest line stored as one message; longer ones continue in the next.
pub const MAX_LINE: usize = 16 * 1024;

/// The start of the line stored in place of the output past the per-run cap.
pub const TRUNCATED_MARKER: &str = "[metis] output truncated";

/// How many publishes may wait for their ack at once.
const WINDOW: usize = 128;

/// Whether the newest pending line could not even be sent (handled at once, in order).
fn ack_missing(pending: &VecDeque<Pending>) -> bool {
    pending.back().is_some_and(|p| p.ack.is_none())
}

/// One line read from the process, before it is numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text, without its line ending.
    pub line: String,
    /// Whether the line was longer than [`MAX_LINE`] and goes on in the next piece.
    pub continues: bool,
    /// When it was read.
    pub time: DateTime<Utc>,
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes; returns the lines they complete, each with whether it is a piece of a
    /// longer line that continues.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push((self.take(), false));
            } else {
                self.buf.push(b);
                if self.buf.len() >= self.max {
                    // Cut before a character the buffer holds only part of, so no piece ends
                    // (or the next begins) inside a multi-byte character.
                    let cut = char_boundary(&self.buf);
                    let rest = self.buf.split_off(cut);
                    out.push((self.take(), true));
                    self.buf = rest;
                }
            }
        }
        out
    }

    /// The unterminated rest, if any (at end of stream).
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        // A cut piece keeps a trailing `\r`: only a line's own ending is dropped.
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Where to cut a full buffer: its length, or the start of a UTF-8 character it ends in the
/// middle of (never 0: bytes that are no UTF-8 at all are cut where they are).
fn char_boundary(buf: &[u8]) -> usize {
    let len = buf.len();
    // The start of the last character: at most 3 continuation bytes (10xxxxxx) back.
    let Some(start) = (len.saturating_sub(4)..len)
        .rev()
        .find(|&i| buf[i] & 0xC0 != 0x80)
    else {
        return len;
    };
    let width = match buf[start] {
        b if b < 0x80 => 1,
        b if b & 0xE0 == 0xC0 => 2,
        b if b & 0xF0 == 0xE0 => 3,
        b if b & 0xF8 == 0xF0 => 4,
        _ => 1,
    };
    if start + width > len && start > 0 {
        start
    } else {
        len
    }
}

/// Reads `reader` to its end, sending each line to `tx`.
pub async fn read_lines(
    mut reader: impl AsyncRead + Unpin,
    stream: LogStream,
    tx: mpsc::Sender<Captured>,
) {
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "reading the process output failed");
                break;
            }
        };
        for (line, continues) in splitter.push(&chunk[..n]) {
            if tx
                .send(Captured {
                    stream,
                    line,
                    continues,
                    time: Utc::now(),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = tx
            .send(Captured {
                stream,
                line,
                continues: false,
                time: Utc::now(),
            })
            .await;
    }
}

/// A line published and not yet acknowledged.
struct Pending {
    stream: LogStream,
    seq: u64,
    payload: bytes::Bytes,
    ack: Option<PublishAckFuture>,
}

/// Whether a publish failed because the log stream is at its size limit (it discards new
/// messages, never other runs' lines).
fn storage_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("maximum bytes exceeded") || e.contains("maximum messages exceeded")
}

/// How often a line is published again before the run's output counts as lost.
const RESEND_ATTEMPTS: u32 = 30;

/// Numbers captured lines and stores them in JetStream, in order.
pub struct LogPublisher {
    js: jetstream::Context,
    run: RunId,
    run_id: String,
    next_seq: u64,
    pending: VecDeque<Pending>,
    error: Option<String>,
    limit: u64,
    /// The setting `limit` comes from (named in the marker line).
    limit_name: &'static str,
    stored_bytes: u64,
    dropped: bool,
    /// Why part of the output was not stored.
    note: Option<String>,
}

/// What a run's output came to, once it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSummary {
    /// Lines stored (the marker line included).
    pub lines: u64,
    /// Bytes of output stored (of the lines' text).
    pub bytes: u64,
    /// Why part of the output was not stored, when it was not.
    pub note: Option<String>,
}

impl LogPublisher {
    /// A publisher for the run's `metis.logs.<run_id>.<stream>` subjects that stores at most `limit`
    /// bytes of output (`limit_name`: the setting the limit comes from).
    #[must_use]
    pub fn new(
        js: jetstream::Context,
        run_id: &RunId,
        limit: u64,
        limit_name: &'static str,
    ) -> Self {
        Self {
            js,
            run: *run_id,
            run_id: run_id.to_string(),
            next_seq: 0,
            pending: VecDeque::new(),
            error: None,
            limit,
            limit_name,
            stored_bytes: 0,
            dropped: false,
            note: None,
        }
    }

    /// Publishes one line (after the first failure, lines are only counted; past the cap,
    /// one marker line and then nothing).
    pub async fn push(&mut self, c: Captured) {
        if self.dropped {
            return;
        }
        let len = c.line.len() as u64;
        if self.stored_bytes + len > self.limit {
            // Fill the cap exactly: the part of this line that fits (cut between characters),
            // then the marker.
            let room = usize::try_from(self.limit - self.stored_bytes).unwrap_or(usize::MAX);
            let cut = c.line.floor_char_boundary(room);
            if cut > 0 {
                self.stored_bytes += cut as u64;
                let part = Captured {
                    stream: c.stream,
                    line: c.line[..cut].to_owned(),
                    continues: false,
                    time: c.time,
                };
                self.publish(part).await;
            }
            self.dropped = true;
            tracing::warn!(
                // i64, so OTLP carries an int (u64 is exported as a string).
                limit = i64::try_from(self.limit).unwrap_or(i64::MAX),
                limit_name = self.limit_name,
                "run output passed the cap; the rest is not stored"
            );
            let why = format!(
                "this run printed more than {} bytes ({}); the rest is not stored",
                self.limit, self.limit_name
            );
            self.note = Some(why.clone());
            let marker = Captured {
                stream: LogStream::Stderr,
                line: format!("{TRUNCATED_MARKER}: {why}"),
                continues: false,
                time: c.time,
            };
            return self.publish(marker).await;
        }
        self.stored_bytes += len;
        self.publish(c).await;
    }

    async fn publish(&mut self, c: Captured) {
        let seq = self.next_seq;
        self.next_seq += 1;
        tracing::debug!(seq, stream = ?c.stream, line = %c.line, "output");
        if self.error.is_some() {
            return;
        }
        let stream = c.stream;
        let msg = LogLine {
            seq,
            stream,
            line: c.line,
            continues: c.continues,
            time: c.time,
        };
        let payload = match serde_json::to_vec(&msg) {
            Ok(p) => bytes::Bytes::from(p),
            Err(e) => {
                self.error = Some(format!("encoding line {seq}: {e}"));
                return;
            }
        };
        let ack = self.send(seq, stream, payload.clone()).await.ok();
        self.pending.push_back(Pending {
            stream,
            seq,
            payload,
            ack,
        });
        if ack_missing(&self.pending) {
            // Keep the order: settle everything before this line goes out again.
            while !self.pending.is_empty() && self.error.is_none() {
                self.await_oldest().await;
            }
        } else if self.pending.len() >= WINDOW {
            self.await_oldest().await;
        }
    }

    async fn send(
        &self,
        seq: u64,
        stream: LogStream,
        payload: bytes::Bytes,
    ) -> Result<PublishAckFuture, String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            common::nats::MSG_ID,
            format!("{}.{seq}", self.run_id).as_str(),
        );
        self.js
            .publish_with_headers(
                common::nats::logs_subject(&self.run, stream),
                headers,
                payload,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn await_oldest(&mut self) {
        let Some(oldest) = self.pending.pop_front() else {
            return;
        };
        let landed = match oldest.ack {
            Some(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            None => Err("the publish failed".to_owned()),
        };
        if let Err(first) = &landed
            && storage_full(first)
        {
            // The log store refuses new lines rather than evicting anyone's (DiscardNew):
            // this run's output stops here, and its record says so.
            tracing::warn!(parent: None, run_id = %self.run_id, error = %first, "the log store is full; the rest of the run's output is not stored");
            self.dropped = true;
            self.pending.clear();
            self.note = Some(format!(
                "the log store ({}) is full; output from line {} on is not stored",
                common::nats::LOGS_STREAM,
                oldest.seq
            ));
            return;
        }
        if let Err(first) = landed {
            // Publish this line and every later one again, in order, each until it lands.
            let mut todo = vec![(oldest.seq, oldest.stream, oldest.payload)];
            todo.extend(self.pending.drain(..).map(|p| (p.seq, p.stream, p.payload)));
            // Outside the run's span: whether a retry happens depends on timing.
            tracing::warn!(parent: None, run_id = %self.run_id, seq = oldest.seq, error = %first, lines = todo.len(), "storing output failed; publishing again");
            for (seq, stream, payload) in todo {
                if let Err(e) = self.resend(seq, stream, payload).await {
                    self.error = Some(format!("line {seq}: {e}"));
                    return;
                }
            }
        }
    }

    async fn resend(
        &self,
        seq: u64,
        stream: LogStream,
        payload: bytes::Bytes,
    ) -> Result<(), String> {
        let mut delay = std::time::Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..RESEND_ATTEMPTS {
            match self.send(seq, stream, payload.clone()).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(delay).await; // backoff between retries, not synchronisation
            delay = (delay * 2).min(std::time::Duration::from_secs(2));
        }
        Err(last)
    }

    /// Waits for every ack. The summary when all were stored, else the first failure.
    pub async fn finish(mut self) -> Result<OutputSummary, String> {
        while !self.pending.is_empty() {
            self.await_oldest().await;
        }
        match self.error {
            None => Ok(OutputSummary {
                lines: self.next_seq,
                bytes: self.stored_bytes,
                note: self.note,
            }),
            Some(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(max: usize, chunks: &[&[u8]], expect: &[&str]) {
        let mut s = LineSplitter::new(max);
        let mut got: Vec<String> = chunks
            .iter()
            .flat_map(|c| s.push(c))
            .map(|(l, _)| l)
            .collect();
        got.extend(s.finish());
        assert_eq!(got, expect, "chunks {chunks:?}");
    }

    #[test]
    fn lines_split_on_newlines_across_chunks() {
        check(100, &[b"a\nb", b"c\n", b"\n"], &["a", "bc", ""]);
        check(100, &[b"no newline"], &["no newline"]);
        check(100, &[b"crlf\r\n"], &["crlf"]);
        check(100, &[], &[]);
    }

    #[test]
    fn long_lines_are_split_and_bad_utf8_replaced() {
        check(3, &[b"abcdefg\n"], &["abc", "def", "g"]);
        check(100, &[b"\xff\xfeok\n"], &["\u{fffd}\u{fffd}ok"]);
    }

    #[test]
    fn a_long_line_is_split_between_characters_and_joins_back_byte_for_byte() {
        // 40 KB of 1-, 2-, 3- and 4-byte characters, cut every 16 KiB.
        let line: String = "aé€😀".repeat(4000);
        let mut s = LineSplitter::new(MAX_LINE);
        let mut pieces = s.push(format!("{line}\n").as_bytes());
        pieces.extend(s.finish().map(|l| (l, false)));
        assert!(pieces.len() >= 3, "{}", pieces.len());
        assert!(pieces.iter().all(|(p, _)| !p.contains('\u{fffd}')));
        assert!(pieces.iter().all(|(p, _)| p.len() <= MAX_LINE));
        let flags: Vec<bool> = pieces.iter().map(|(_, c)| *c).collect();
        assert!(flags[..flags.len() - 1].iter().all(|c| *c) && !flags[flags.len() - 1]);
        let joined: String = pieces.into_iter().map(|(p, _)| p).collect();
        assert_eq!(joined, line);
        // Bytes that are no UTF-8 at all still make progress (the line's end is an empty
        // last piece when the line fills its pieces exactly).
        check(
            2,
            &[b"\x80\x80\x80\x80\n"],
            &["\u{fffd}\u{fffd}", "\u{fffd}\u{fffd}", ""],
        );
    }

    #[tokio::test]
    async fn read_lines_sends_every_line_then_the_rest() {
        let (tx, mut rx) = mpsc::channel(16);
        read_lines(&b"one\ntwo\nthree"[..], LogStream::Stderr, tx).await;
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            assert_eq!(c.stream, LogStream::Stderr);
            got.push(c.line);
        }
        assert_eq!(got, ["one", "two", "three"]);
    }
}
