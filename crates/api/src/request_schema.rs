//! The `RunRequest` rules that depend on the registered engines, as JSON Schema, for the
//! OpenAPI document (`crate::openapi::document_for`).
//!
//! What `common::validate` checks against an engine's `engine.yaml`, written so that a
//! request the schema accepts is one the API accepts, and the reverse:
//!
//! | rule | in the schema |
//! | --- | --- |
//! | engine name and version registered | `enum` of each |
//! | `workflow_type`, `workflow_type_version` the engine declares | `enum` (the declared spelling; any ASCII case of a type is accepted too) |
//! | `workflow_url`: an allowed scheme, or an absolute path under an allowed root without `..` | `pattern` per scheme and root |
//! | `workflow_params` keys: parameter names, not denied (`deniedParams` of type `exact`, after normalisation) | `propertyNames` `pattern` and `not` |
//! | a value must not read as an option, nor hold a NUL; one argument at most `MAX_ARG_BYTES` | `pattern`, `maxLength` |
//! | at most `MAX_PARAMS` parameters | `maxProperties` |
//! | `workflow_engine_parameters`: declared names, types, `enum` and `range` checks, one alias at a time, required ones | `properties`, `additionalProperties`, `enum`, `minimum`/`maximum`, `not`/`anyOf` of `required` |
//!
//! What JSON Schema cannot say is written in the field's description and listed by
//! [`UNEXPRESSED`] (the contract test names each): a `regex` denial or check (Rust `regex`
//! syntax, matched on normalised spellings), symlinks a path resolves through, sizes counted in
//! bytes for non-ASCII text, and the total size of all arguments (`MAX_ARGS_BYTES`).

use common::config::{DeniedKind, EngineSpec, ParamSpec, ParamType, UnknownParamsBehavior};
use common::validate::{MAX_ARG_BYTES, MAX_PARAMS};
use serde_json::{Value, json};

/// The rules the schema cannot express, each as the description says it.
pub const UNEXPRESSED: [&str; 4] = [
    "a deniedParams entry of type regex (matched on the name as given and normalised)",
    "a workflow_url path that resolves through a symlink to outside the allowed roots",
    "MAX_ARG_BYTES and MAX_ARGS_BYTES count bytes (non-ASCII text counts more than its length)",
    "MAX_ARGS_BYTES: all parameters together, as process arguments, at most 1 MiB",
];

/// Any character but NUL, in a pattern.
const NOT_NUL: &str = r"[^\x00]";

/// The schema of `RunRequest`'s engine-dependent properties for the engines in `specs`: one
/// set of property schemas when one engine is registered, an `anyOf` of them when several.
#[must_use]
pub fn rules(specs: &[EngineSpec]) -> Value {
    let branches: Vec<Value> = specs.iter().map(branch).collect();
    match branches.as_slice() {
        [] => json!({
            "description": "No engine is registered: every run request is a 400 until one is."
        }),
        [one] => one.clone(),
        _ => json!({"anyOf": branches}),
    }
}

/// The property schemas of one engine.
fn branch(spec: &EngineSpec) -> Value {
    let note = format!(
        "Not expressed in this schema, checked by the API: {}.",
        UNEXPRESSED.join("; ")
    );
    json!({
        "properties": {
            "workflow_engine": {"type": "string", "enum": [spec.name]},
            "workflow_engine_version": {"type": "string", "enum": [spec.version]},
            "workflow_type": {
                "type": "string",
                "enum": spec.workflow_types,
                "description": "A type the engine declares (any ASCII case is accepted)."
            },
            "workflow_type_version": {"type": "string", "enum": spec.workflow_type_versions},
            "workflow_url": workflow_url(spec),
            "workflow_params": {
                "maxProperties": MAX_PARAMS,
                "propertyNames": names(spec, r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
                "additionalProperties": argument_value(),
                "description": format!("Each key becomes `--<key> <value>`. {note}")
            },
            "workflow_engine_parameters": engine_parameters(spec),
        }
    })
}

/// An allowed scheme's URL, or an absolute path under an allowed root without `..`.
fn workflow_url(spec: &EngineSpec) -> Value {
    let mut patterns: Vec<String> = spec
        .allowed_url_schemes
        .iter()
        .map(|s| format!("^{}://{NOT_NUL}*$", any_case(s)))
        .collect();
    // A path segment other than `..` (and without `/` or NUL).
    let segment = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+|\.)";
    for root in &spec.allowed_workflow_roots {
        let root = root.trim_end_matches('/');
        patterns.push(format!(
            "^{}(?:/{segment})*/?$",
            regex_escape(if root.is_empty() { "" } else { root })
        ));
    }
    let one = |p: &String| json!({"type": "string", "pattern": p, "maxLength": MAX_ARG_BYTES});
    match patterns.as_slice() {
        [] => json!({
            "type": "string",
            "description": "This engine allows neither URLs nor local files: every request is a 400.",
            "not": {}
        }),
        [p] => one(p),
        _ => json!({"anyOf": patterns.iter().map(one).collect::<Vec<_>>()}),
    }
}

/// A parameter name (matching `pattern`) that no `exact` denial matches.
fn names(spec: &EngineSpec, pattern: &str) -> Value {
    let denied: Vec<Value> = spec
        .denied_params
        .iter()
        .filter(|d| d.kind == DeniedKind::Exact)
        .filter_map(|d| denied_pattern(spec, &d.pattern))
        .map(|p| json!({"pattern": p}))
        .collect();
    let mut schema = json!({
        "type": "string",
        "pattern": pattern,
        "maxLength": MAX_ARG_BYTES - 2,
    });
    if !denied.is_empty() {
        schema["not"] = json!({"anyOf": denied});
    }
    schema
}

/// The names an `exact` denial of `denied` refuses, as `common::validate::check_denied`
/// matches them: after up to two leading dashes, the denied name or (for a name the engine
/// does not declare) a non-empty prefix of it, in any ASCII case, `_` for `-`.
fn denied_pattern(spec: &EngineSpec, denied: &str) -> Option<String> {
    let normal = common::validate::normalize_param_name(denied);
    if normal.is_empty() {
        return None;
    }
    let declared: Vec<String> = spec
        .engine_params
        .validated_params
        .iter()
        .flat_map(|p| p.names.iter())
        .map(|n| common::validate::normalize_param_name(n))
        .collect();
    let chars: Vec<char> = normal.chars().collect();
    let mut alternatives = Vec::new();
    for end in 1..=chars.len() {
        let prefix: String = chars[..end].iter().collect();
        // A declared name is refused only when it is the denied name itself (its other
        // spellings are not: JSON Schema cannot tell the declared spelling from the others).
        if end < chars.len() && declared.contains(&prefix) {
            continue;
        }
        alternatives.push(
            chars[..end]
                .iter()
                .map(|c| char_class(*c))
                .collect::<String>(),
        );
    }
    Some(format!("^-{{0,2}}(?:{})$", alternatives.join("|")))
}

/// A value that becomes one process argument: no NUL, not read as an option (a string may
/// start with `-` only as a number), at most `MAX_ARG_BYTES`.
fn argument_value() -> Value {
    json!({
        "anyOf": [
            {
                "type": "string",
                "maxLength": MAX_ARG_BYTES,
                "pattern": option_safe(),
            },
            {"type": ["number", "integer", "boolean", "null", "array", "object"]}
        ]
    })
}

/// Text that does not read as an option and holds no NUL: empty, not starting with `-`, or
/// a number as Rust's `f64` parser reads it.
fn option_safe() -> String {
    let number = r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])";
    format!(r"^(?:[^-\x00]{NOT_NUL}*|-{number})?$")
}

/// `workflow_engine_parameters` for one engine.
fn engine_parameters(spec: &EngineSpec) -> Value {
    let params = &spec.engine_params;
    let mut properties = serde_json::Map::new();
    let mut all_of = Vec::new();
    let mut required = Vec::new();
    for p in &params.validated_params {
        let schema = param_value(p);
        for name in &p.names {
            properties.insert(name.clone(), schema.clone());
        }
        for (i, a) in p.names.iter().enumerate() {
            for b in &p.names[i + 1..] {
                // `required` holds for anything but an object: `null` must stay valid.
                all_of.push(json!({"not": {"type": "object", "required": [a, b]}}));
            }
        }
        if p.required && p.default.is_none() {
            match p.names.as_slice() {
                [one] => required.push(one.clone()),
                names => all_of.push(json!({
                    "anyOf": names.iter().map(|n| json!({"required": [n]})).collect::<Vec<_>>()
                })),
            }
        }
    }
    let mut schema = json!({
        "properties": properties,
        "maxProperties": MAX_PARAMS,
    });
    match params.unknown_params_behavior {
        UnknownParamsBehavior::Reject => {
            schema["additionalProperties"] = json!(false);
            schema["propertyNames"] = names(spec, ".*");
        }
        UnknownParamsBehavior::Strip => {
            schema["propertyNames"] = names(spec, ".*");
        }
        UnknownParamsBehavior::Pass => {
            schema["propertyNames"] = names(
                spec,
                r"^(?:--[A-Za-z0-9][A-Za-z0-9_.-]*|-[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9_.-]*)$",
            );
            schema["additionalProperties"] = argument_value();
        }
    }
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    if !all_of.is_empty() {
        schema["allOf"] = json!(all_of);
    }
    schema
}

/// One declared parameter's value.
fn param_value(p: &ParamSpec) -> Value {
    let mut enumerated = None;
    let (mut min, mut max) = (None, None);
    let mut unexpressed = Vec::new();
    for rule in &p.validate {
        match rule {
            common::config::Validation::Enum { allowed, .. } => enumerated = Some(allowed.clone()),
            common::config::Validation::Range {
                min: lo, max: hi, ..
            } => {
                min = *lo;
                max = *hi;
            }
            common::config::Validation::Regex { pattern, .. } => {
                unexpressed.push(format!("must match the Rust regex `{pattern}`"));
            }
        }
    }
    // Positional values (no flag) must not read as an option.
    let text = if p.cli_flag.is_none() {
        json!({"type": "string", "pattern": r"^(?:[^-\x00][^\x00]*)?$"})
    } else {
        json!({"type": "string", "pattern": r"^[^\x00]*$"})
    };
    let mut schema = match p.kind {
        ParamType::String => text,
        // A number, or its text: a range can only be said of the number itself.
        ParamType::Int if min.is_some() || max.is_some() => json!({"type": "integer"}),
        ParamType::Int => json!({"anyOf": [
            {"type": "integer"},
            {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"}
        ]}),
        ParamType::Float if min.is_some() || max.is_some() => json!({"type": "number"}),
        ParamType::Float => json!({"type": "number"}),
        ParamType::Bool => json!({"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]}),
        ParamType::List => json!({"anyOf": [
            {"type": "array", "items": {"type": ["string", "number", "integer", "boolean"]}},
            {"type": "string"}
        ]}),
    };
    if let Some(allowed) = enumerated {
        schema = json!({"enum": allowed});
    }
    if let Some(lo) = min {
        schema["minimum"] = json!(lo);
    }
    if let Some(hi) = max {
        schema["maximum"] = json!(hi);
    }
    let mut description = format!("`{}`", p.names.join("`, `"));
    if matches!(p.kind, ParamType::Int | ParamType::Float) {
        description.push_str("; a number's text is accepted too");
    }
    for u in unexpressed {
        description.push_str("; ");
        description.push_str(&u);
    }
    schema["description"] = json!(description);
    schema
}

/// `s` matched in any ASCII case.
fn any_case(s: &str) -> String {
    s.chars().map(char_class).collect()
}

/// One character of a name, as a pattern: letters in either case, `-` and `_` alike.
fn char_class(c: char) -> String {
    if c.is_ascii_alphabetic() {
        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
    } else if c == '-' || c == '_' {
        "[-_]".to_owned()
    } else {
        regex_escape(&c.to_string())
    }
}

/// `s` with every character a pattern treats specially escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::validate::validate;

    fn fixture() -> EngineSpec {
        let path = test_support::workspace_root().join("fixtures/engines/generic.yaml");
        common::FullEngineConfig::load(&path)
            .expect("the fixture engine config loads")
            .engine
    }

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(text)
    }

    fn request(params: Value, url: &str) -> common::RunRequest {
        serde_json::from_value(json!({
            "workflow_type": "SH", "workflow_type_version": "1", "workflow_url": url,
            "workflow_engine": "generic", "workflow_engine_version": "1",
            "workflow_params": params,
        }))
        .expect("a request")
    }

    /// The patterns agree with `validate` on names and values at their edges.
    #[test]
    fn the_schema_and_the_validation_agree() {
        let spec = fixture();
        let doc = rules(std::slice::from_ref(&spec));
        let props = &doc["properties"];
        assert_eq!(props["workflow_engine"]["enum"], json!(["generic"]));
        assert_eq!(props["workflow_type"]["enum"], json!(["SH"]));
        let names = &props["workflow_params"]["propertyNames"];
        let denied = names["not"]["anyOf"][0]["pattern"]
            .as_str()
            .expect("a denial");
        let root = spec.allowed_workflow_roots[0].clone();
        let url = format!("{root}/ok.sh");
        for key in [
            "E", "ex", "EXE", "exec", "Exec", "execute", "x", "greeting", "e.x",
        ] {
            let schema_ok =
                matches(names["pattern"].as_str().unwrap(), key) && !matches(denied, key);
            let api_ok = validate(&request(json!({key: "v"}), &url), &spec).is_ok();
            assert_eq!(schema_ok, api_ok, "workflow_params key {key:?}");
        }
        let value = option_safe();
        for v in [
            "", "plain", "-x", "-1", "-1.5e3", "-inf", "-NaN", "--", "-", "a-b", "x\u{0}",
        ] {
            let api_ok = validate(&request(json!({"k": v}), &url), &spec).is_ok();
            assert_eq!(matches(&value, v), api_ok, "workflow_params value {v:?}");
        }
        let url_pattern = props["workflow_url"]["anyOf"]
            .as_array()
            .expect("a scheme and a root")
            .iter()
            .filter_map(|s| s["pattern"].as_str())
            .collect::<Vec<_>>();
        for u in [
            url.clone(),
            format!("{root}/no-such.sh"),
            format!("{root}/../secret"),
            format!("{root}/a/./b"),
            format!("{root}x/ok.sh"),
            "https://example.org/w.sh".to_owned(),
            "HTTPS://example.org/w.sh".to_owned(),
            "http://example.org/w.sh".to_owned(),
            "/etc/passwd".to_owned(),
            "relative.sh".to_owned(),
        ] {
            let schema_ok = url_pattern.iter().any(|p| matches(p, &u));
            let api_ok = validate(&request(json!({}), &u), &spec).is_ok();
            assert_eq!(schema_ok, api_ok, "workflow_url {u:?}");
        }
    }

    /// What cannot be expressed is said in the document, each rule by name.
    #[test]
    fn the_unexpressed_rules_are_listed() {
        let doc = rules(&[fixture()]);
        let text = doc["properties"]["workflow_params"]["description"]
            .as_str()
            .unwrap_or_default();
        for rule in UNEXPRESSED {
            assert!(text.contains(rule), "{rule} in {text}");
        }
        assert!(rules(&[])["description"].is_string());
    }
}
