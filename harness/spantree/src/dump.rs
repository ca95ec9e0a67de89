//! Reading OTLP/JSON trace dumps: one `TracesData` object (the receiver's `GET /v1/traces`,
//! an exporter's request body) or one per line (the OpenTelemetry Collector's file exporter),
//! merged into one `TracesData`.

use opentelemetry_proto::tonic::trace::v1::TracesData;

/// Why a dump could not be read; says where.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Not OTLP/JSON `TracesData`.
    #[error("{source_name}: line {line}: not OTLP/JSON TracesData: {reason}")]
    Malformed {
        /// The file name (or `stdin`).
        source_name: String,
        /// 1-based line where the bad object starts.
        line: usize,
        /// The decoder's message.
        reason: String,
    },
    /// Nothing in it.
    #[error("{0}: no OTLP/JSON TracesData in it (empty)")]
    Empty(String),
}

/// Parses `text` (named `source_name` in errors): a whole-file JSON object, or JSON lines.
pub fn parse(source_name: &str, text: &str) -> Result<TracesData, DumpError> {
    if text.trim().is_empty() {
        return Err(DumpError::Empty(source_name.to_owned()));
    }
    // One object, possibly pretty-printed over many lines.
    if let Ok(data) = serde_json::from_str::<TracesData>(text) {
        return Ok(data);
    }
    let mut merged = TracesData::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.trim_start().starts_with('{') {
            return Err(DumpError::Malformed {
                source_name: source_name.to_owned(),
                line: i + 1,
                reason: "expected a JSON object".to_owned(),
            });
        }
        let data: TracesData = serde_json::from_str(line).map_err(|e| DumpError::Malformed {
            source_name: source_name.to_owned(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        merged.resource_spans.extend(data.resource_spans);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;

    #[test]
    fn whole_objects_and_json_lines() {
        assert_eq!(parse("f", ONE).unwrap().resource_spans.len(), 1);
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(ONE).unwrap())
                .unwrap();
        assert_eq!(parse("f", &pretty).unwrap().resource_spans.len(), 1);
        let lines = format!("{ONE}\n\n{ONE}\n");
        assert_eq!(parse("f", &lines).unwrap().resource_spans.len(), 2);
    }

    #[test]
    fn errors_say_where() {
        let err = parse("dump.json", &format!("{ONE}\n{{\"resourceSpans\": 5}}\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("dump.json: line 2: not OTLP/JSON"),
            "{err}"
        );
        let err = parse("dump.json", &format!("{ONE}\nhello\n")).unwrap_err();
        assert!(
            err.to_string().contains("line 2")
                && err.to_string().contains("expected a JSON object"),
            "{err}"
        );
        assert!(matches!(parse("stdin", " \n"), Err(DumpError::Empty(_))));
    }
}
