//! The redaction rules themselves: the patterns that find ids, times, addresses and paths in
//! any string, the rule of each attribute key ([`key_rule`]), and the small helpers that apply
//! them. The `Redactor` (`redact.rs`) applies them to a forest's names, values and resources.

use super::*;

/// The resource attribute naming a service instance (`[SERVICE#N]`).
pub(super) const INSTANCE_KEY: &str = "service.instance.id";

pub(super) static ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b").unwrap());
pub(super) static UUID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").unwrap()
});
pub(super) static UUID_FULL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").unwrap()
});
pub(super) static TIMESTAMP_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?")
        .unwrap()
});
pub(super) static URL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<user>[^\s/@"'\[\]]*@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%]*)(?::(?P<port>\d{1,5}))?(?P<path>/[^\s"']*)?"#,
    )
    .unwrap()
});
pub(super) static ADDR_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<pre>^|[^A-Za-z0-9.\-])(?P<host>localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})\b")
        .unwrap()
});
pub(super) static PATH_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?P<pre>^|[\s"'=(\[,:])(?P<path>/[^\s"'`<>|;,()\[\]{}=:/]+(?:/[^\s"'`<>|;,()\[\]{}=:/]*)*)"#).unwrap()
});
pub(super) static EVENT_WITHOUT_MESSAGE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^event \S+:\d+$").unwrap());

pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with("127.")
        || host == "::1"
        || host == "0.0.0.0"
        || host == "::"
}

/// What a key's rule does to its value.
pub(super) enum KeyRule {
    Drop,
    Placeholder(&'static str),
    Address,
    IdRef,
    Text { paths: bool },
}

pub(super) fn key_rule(key: &str) -> KeyRule {
    let last = key.rsplit('.').next().unwrap_or(key);
    if key.starts_with("code.")
        || key.starts_with("thread.")
        || matches!(key, "busy_ns" | "idle_ns" | "target" | "level")
    {
        KeyRule::Drop
    } else if last == "duration"
        || last.starts_with("duration_")
        || last.ends_with("_duration")
        || last.contains("_duration_")
        || last.ends_with("_ns")
        || last.starts_with("elapsed")
    {
        KeyRule::Placeholder("[duration]")
    } else if last == "pid" || last.ends_with("_pid") {
        KeyRule::Placeholder("[pid]")
    } else if last == "port" || last.ends_with("_port") {
        KeyRule::Placeholder("[port]")
    } else if last == "timestamp"
        || last.ends_with("_timestamp")
        || last.ends_with("_at")
        || last.ends_with("_time")
    {
        KeyRule::Placeholder("[timestamp]")
    } else if matches!(
        key,
        "service.version" | "telemetry.sdk.version" | "telemetry.distro.version"
    ) {
        KeyRule::Placeholder("[version]")
    } else if key == "host.name" || last == "hostname" {
        KeyRule::Placeholder("[host]")
    } else if last == "address" || last.ends_with("_address") {
        KeyRule::Address
    } else if last.ends_with("trace_id") || last.ends_with("span_id") {
        KeyRule::IdRef
    } else {
        let url_like = key.starts_with("url.")
            || key.starts_with("http.")
            || matches!(last, "uri" | "url" | "route");
        KeyRule::Text { paths: !url_like }
    }
}

/// The first id family whose key `key` matches (its last dotted segment is the family's key
/// or ends in `_<key>`).
pub(super) fn family_of(key: &str, families: &[super::IdFamily]) -> Option<usize> {
    let last = key.rsplit('.').next().unwrap_or(key);
    families.iter().position(|f| {
        last == f.key
            || last
                .strip_suffix(f.key.as_str())
                .is_some_and(|head| head.ends_with('_'))
    })
}

/// `[duration]` → `[duration:int]`: the placeholder keeps the value's type, so an int that
/// became a string (or a double) is a snapshot change. An empty string and a missing value stay
/// as they are (`""`, nothing), so emptiness is never hidden.
pub(super) fn typed_placeholder(placeholder: &str, value: Option<&any_value::Value>) -> Value {
    use any_value::Value as V;
    let ty = match value {
        None => return Value::Empty,
        Some(V::StringValue(s)) if s.is_empty() => return Value::Str(String::new()),
        Some(V::StringValue(_) | V::StringValueStrindex(_)) => "string",
        Some(V::IntValue(_)) => "int",
        Some(V::DoubleValue(_)) => "double",
        Some(V::BoolValue(_)) => "bool",
        Some(V::ArrayValue(_)) => "array",
        Some(V::KvlistValue(_)) => "map",
        Some(V::BytesValue(_)) => "bytes",
    };
    let name = placeholder.trim_end_matches(']');
    Value::Str(format!("{name}:{ty}]"))
}

pub(super) fn split_port(address: &str) -> (&str, bool) {
    match address.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            (host, true)
        }
        _ => (address, false),
    }
}

pub(super) fn redact_path(path: &str) -> String {
    match path.split('/').rfind(|c| !c.is_empty()) {
        Some(last) => format!("[path]/{last}"),
        None => path.to_owned(),
    }
}

/// `Regex::replace_all` with a fallible-free `FnMut` that may borrow mutable state.
pub(super) fn replace(re: &Regex, s: &str, mut f: impl FnMut(&Captures<'_>) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for c in re.captures_iter(s) {
        let m = c.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        out.push_str(&f(&c));
        last = m.end();
    }
    out.push_str(&s[last..]);
    out
}
