//! Reading the lines `tracing-subscriber`'s default formatter writes (what `tracing-test`
//! captures): `… LEVEL test:span_a{k=v k2=v2}:span_b{…}: target: message fields`. The
//! in-process span tests of the api and engine crates assert on these.

use std::collections::BTreeMap;

/// One span context of a line: its name and fields (values as formatted, Debug quotes of a
/// `&str` field removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanContext {
    /// The span's name (`create_run`, `HTTP request`).
    pub name: String,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

impl SpanContext {
    /// A field's value.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// The span contexts of `line`, outermost first, and the rest (target, message, event fields).
/// Keys are found as `key=` after a space; a value that itself contains ` key=` would split.
#[must_use]
pub fn parse(line: &str) -> (Vec<SpanContext>, String) {
    let mut contexts = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find("}:").map(|c| open + c) else {
            break;
        };
        // Past the timestamp, the level and the test's own span (`name:`).
        let name = rest[..open].rsplit(':').next().unwrap_or_default();
        // A root span without a test span before it follows the level.
        let name = name.rsplit("  ").next().unwrap_or(name).trim();
        let name = ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
            .iter()
            .find_map(|l| name.rsplit_once(l).map(|(_, n)| n))
            .unwrap_or(name)
            .trim()
            .to_owned();
        let inner = &rest[open + 1..close];
        let keys = key_positions(inner);
        let mut fields = BTreeMap::new();
        for (i, (key_start, value_start)) in keys.iter().enumerate() {
            let end = keys.get(i + 1).map_or(inner.len(), |n| n.0);
            let key = &inner[*key_start..value_start - 1];
            let v = inner[*value_start..end].trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            fields.insert(key.to_owned(), v.to_owned());
        }
        contexts.push(SpanContext { name, fields });
        rest = &rest[close + 2..];
    }
    (contexts, rest.trim().to_owned())
}

/// (start of the key, start of the value) of each `key=` at the start or after a space.
fn key_positions(s: &str) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if i == 0 || bytes[i - 1] == b' ' {
            let start = i;
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] == b'.')
            {
                j += 1;
            }
            if j > start && !bytes[start].is_ascii_digit() && j < bytes.len() && bytes[j] == b'=' {
                out.push((start, j + 1));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Every line of `lines` containing `needle`, parsed.
#[must_use]
pub fn lines_with(lines: &[&str], needle: &str) -> Vec<(Vec<SpanContext>, String)> {
    lines
        .iter()
        .filter(|l| l.contains(needle))
        .map(|l| parse(l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_span_contexts() {
        let (c, rest) = parse(
            "2026-12-01T00:00:00Z  INFO test_x:HTTP request{otel.name=POST /runs otel.kind=\"server\" http.route=/runs}:create_run{user_id=alice run_id=1}: api::service: Run created nats_subject=a.b",
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].name, "HTTP request");
        assert_eq!(c[0].get("otel.name"), Some("POST /runs"));
        assert_eq!(c[0].get("otel.kind"), Some("server"));
        assert_eq!(c[1].name, "create_run");
        assert_eq!(c[1].get("run_id"), Some("1"));
        assert_eq!(rest, "api::service: Run created nats_subject=a.b");
        let (c, _) =
            parse("2026  INFO workflow_run{run_id=x}: engine::run: phase state=\"running\"");
        assert_eq!(c[0].name, "workflow_run");
    }
}
