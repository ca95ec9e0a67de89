//! Validation of a [`RunRequest`] against an engine's `engine.yaml`.
//!
//! The API runs this before anything is stored or published, so a bad request is a 400 that
//! names the field; the engine runs it again before building the argv (its config is the one
//! that counts). The result already holds the argv pieces for `{engine_params}` and
//! `{workflow_params}`: every value is one argument, whatever characters it contains.
//!
//! Hostile requests are refused here:
//!
//! - `workflow_url` must be a URL whose scheme `engine.allowedUrlSchemes` lists, or an
//!   absolute path without `..` that resolves (symlinks followed, as far as the path exists on
//!   this host) under one of `engine.allowedWorkflowRoots`; the engine passes the resolved path
//!   to the command, so a symlink swapped after the check cannot redirect the run.
//! - Denied parameter names match after the normalisation a command line undergoes: leading
//!   dashes dropped, ASCII case folded, `_` read as `-` (`--Exec`, `EXEC`, `e_x_e_c` → a
//!   denied `exec` needs only one entry); for engine and workflow parameters alike.
//! - Names forwarded as options (`unknownParamsBehavior: pass`, `workflow_params` keys) must
//!   be option names: `[A-Za-z0-9][A-Za-z0-9_.-]*` after up to two leading dashes.
//! - A positional value (a declared parameter without `cliFlag`) must not start with `-`, so
//!   it cannot be read as an option.

use serde_json::Value;

use crate::config::{
    DeniedKind, EngineSpec, ParamSpec, ParamType, UnknownParamsBehavior, Validation,
};
use crate::model::RunRequest;

/// The longest single argument, in bytes: Linux's `MAX_ARG_STRLEN` (32 pages of 4 KiB) less
/// the terminating NUL. A longer one fails the engine's `execve` ("Argument list too long").
pub const MAX_ARG_BYTES: usize = 32 * 4096 - 1;
/// The most bytes all of a run's parameters may take as arguments (each with its NUL), well
/// under Linux's `ARG_MAX` (a quarter of an 8 MiB stack), which the workflow's environment
/// shares.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;
/// The most parameters (engine and workflow together) a run may have.
pub const MAX_PARAMS: usize = 1024;

/// The limits the engine's `execve` would hit, checked before anything is stored: one
/// argument, all of them together, how many.
fn check_sizes(
    req: &RunRequest,
    workflow_url: &str,
    engine_args: &[String],
    workflow_args: &[String],
) -> Result<(), ValidationError> {
    let engine = req.workflow_engine_parameters.iter().flatten();
    let workflow = req.workflow_params.iter().flatten();
    let params = engine
        .map(|(k, v)| (PARAMS, k, v))
        .chain(workflow.map(|(k, v)| ("workflow_params", k, v)));
    let mut count = 0;
    for (section, key, value) in params {
        {
            count += 1;
            let n = value_text(value).len().max(key.len() + 2);
            if n > MAX_ARG_BYTES {
                return Err(ValidationError::new(
                    format!("{section}.{key}"),
                    format!(
                        "is {n} bytes as a process argument; one argument may be at most {MAX_ARG_BYTES} bytes (the kernel's MAX_ARG_STRLEN)"
                    ),
                ));
            }
        }
    }
    if count > MAX_PARAMS {
        return Err(ValidationError::new(
            "workflow_params",
            format!(
                "{count} parameters (engine and workflow together); a run may have at most {MAX_PARAMS}"
            ),
        ));
    }
    let total: usize = engine_args
        .iter()
        .chain(workflow_args)
        .map(|a| a.len() + 1)
        .sum::<usize>()
        + workflow_url.len()
        + 1;
    if total > MAX_ARGS_BYTES {
        return Err(ValidationError::new(
            "workflow_params",
            format!(
                "the parameters take {total} bytes as process arguments; all of them together may take at most {MAX_ARGS_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// A request field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field, e.g. `workflow_engine_parameters.threads`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A request that passed validation, with its argv pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRun {
    /// `workflow_type` spelled as the engine declares it.
    pub workflow_type: String,
    /// `workflow_type_version` as the engine declares it.
    pub workflow_type_version: String,
    /// What `{engine_params}` expands to.
    pub engine_args: Vec<String>,
    /// What `{workflow_params}` expands to (`--key value` per top-level key).
    pub workflow_args: Vec<String>,
    /// What `{workflow_url}` expands to: the URL as given, or the local path resolved
    /// (symlinks followed) when it exists on this host.
    pub workflow_url: String,
}

/// A parameter value after type checking.
#[derive(Debug, Clone, PartialEq)]
enum Checked {
    Text(String),
    Flag(bool),
    List(Vec<String>),
}

const PARAMS: &str = "workflow_engine_parameters";

/// A value after a forwarded name must not itself read as an option: after a flag that takes
/// no value, `--exec=id` would be parsed as one.
const OPTION_VALUE: &str =
    "a value must not start with '-' (it could be read as an option); numbers are fine";

/// Whether `text` would be read as an option: it starts with `-` and is not a number.
fn reads_as_option(text: &str) -> bool {
    text.starts_with('-') && text.parse::<f64>().is_err()
}

/// Whether any string in `v` (keys included) holds a NUL.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Every value becomes a process argument, which cannot hold a NUL.
const NUL: &str = "must not contain a NUL character (it cannot be part of a process argument)";

/// Validates `req` against `spec` (the caller has already matched engine name and version).
pub fn validate(req: &RunRequest, spec: &EngineSpec) -> Result<ValidatedRun, ValidationError> {
    for (field, value) in [
        ("workflow_type", &req.workflow_type),
        ("workflow_type_version", &req.workflow_type_version),
        ("workflow_url", &req.workflow_url),
        ("workflow_engine", &req.workflow_engine),
        ("workflow_engine_version", &req.workflow_engine_version),
    ] {
        if value.trim().is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
    }
    if req.workflow_url.starts_with('-') {
        // It is an argument of the engine's program; it must not read as an option.
        return Err(ValidationError::new(
            "workflow_url",
            "must not start with '-'",
        ));
    }
    let workflow_url = check_workflow_url(&req.workflow_url, spec)
        .map_err(|m| ValidationError::new("workflow_url", m))?;
    let workflow_type = spec
        .workflow_types
        .iter()
        .find(|t| t.eq_ignore_ascii_case(&req.workflow_type))
        .ok_or_else(|| {
            ValidationError::new(
                "workflow_type",
                format!(
                    "'{}' is not supported by engine {} {} (supported: {})",
                    req.workflow_type,
                    spec.name,
                    spec.version,
                    spec.workflow_types.join(", ")
                ),
            )
        })?;
    let workflow_type_version = spec
        .workflow_type_versions
        .iter()
        .find(|v| **v == req.workflow_type_version)
        .ok_or_else(|| {
            ValidationError::new(
                "workflow_type_version",
                format!(
                    "'{}' is not supported by engine {} {} (supported: {})",
                    req.workflow_type_version,
                    spec.name,
                    spec.version,
                    spec.workflow_type_versions.join(", ")
                ),
            )
        })?;

    let given = req.workflow_engine_parameters.clone().unwrap_or_default();
    for key in given.keys() {
        check_denied(spec, key).map_err(|m| ValidationError::new(format!("{PARAMS}.{key}"), m))?;
    }
    for key in req.workflow_params.iter().flatten().map(|(k, _)| k) {
        check_denied(spec, key)
            .map_err(|m| ValidationError::new(format!("workflow_params.{key}"), m))?;
    }

    let mut engine_args = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for p in &spec.engine_params.validated_params {
        let present: Vec<&String> = p.names.iter().filter(|n| given.contains_key(*n)).collect();
        if present.len() > 1 {
            return Err(ValidationError::new(
                format!("{PARAMS}.{}", present[0]),
                format!(
                    "given more than once, as {}",
                    present
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        let value = match present.first() {
            Some(name) => {
                used.insert((*name).clone());
                let v = &given[*name];
                checked(p, v).map_err(|m| ValidationError::new(format!("{PARAMS}.{name}"), m))?
            }
            None => match &p.default {
                Some(d) => checked(p, d)
                    .map_err(|m| ValidationError::new(format!("{PARAMS}.{}", p.name()), m))?,
                None if p.required => {
                    return Err(ValidationError::new(
                        format!("{PARAMS}.{}", p.name()),
                        "is required",
                    ));
                }
                None => continue,
            },
        };
        if p.cli_flag.is_none() {
            let text = match &value {
                Checked::Text(t) => Some(t.clone()),
                Checked::List(items) => Some(items.join(",")),
                Checked::Flag(_) => None,
            };
            if text.is_some_and(|t| t.starts_with('-')) {
                let name = present.first().map_or(p.name(), |n| n.as_str());
                return Err(ValidationError::new(
                    format!("{PARAMS}.{name}"),
                    "a positional value must not start with '-' (it would be read as an option)",
                ));
            }
        }
        push_args(&mut engine_args, p.cli_flag.as_deref(), value);
    }
    for (key, value) in &given {
        if used.contains(key) {
            continue;
        }
        match spec.engine_params.unknown_params_behavior {
            UnknownParamsBehavior::Reject => {
                let known: Vec<&str> = spec
                    .engine_params
                    .validated_params
                    .iter()
                    .flat_map(|p| p.names.iter().map(String::as_str))
                    .collect();
                return Err(ValidationError::new(
                    format!("{PARAMS}.{key}"),
                    if known.is_empty() {
                        "unknown parameter; this engine accepts none".to_owned()
                    } else {
                        format!("unknown parameter (known: {})", known.join(", "))
                    },
                ));
            }
            UnknownParamsBehavior::Strip => {}
            UnknownParamsBehavior::Pass => {
                if !is_option_name(key) {
                    return Err(ValidationError::new(
                        format!("{PARAMS}.{key}"),
                        "is not an option name (letters, digits, '_', '-', '.', after at most two leading dashes)",
                    ));
                }
                if key.len() > 2 && key.starts_with('-') && !key.starts_with("--") {
                    // `-ve` is read as `-v -e`: a bundle could carry a denied short option.
                    return Err(ValidationError::new(
                        format!("{PARAMS}.{key}"),
                        "a single-dash option is one letter (use --name for a long one)",
                    ));
                }
                let text = value_text(value);
                if text.contains('\0') {
                    return Err(ValidationError::new(format!("{PARAMS}.{key}"), NUL));
                }
                if reads_as_option(&text) {
                    return Err(ValidationError::new(
                        format!("{PARAMS}.{key}"),
                        OPTION_VALUE,
                    ));
                }
                engine_args.push(key.clone());
                engine_args.push(text);
            }
        }
    }

    let mut workflow_args = Vec::new();
    for (key, value) in req.workflow_params.iter().flatten() {
        if key.is_empty() {
            return Err(ValidationError::new(
                "workflow_params",
                "keys must not be empty",
            ));
        }
        if key.starts_with('-') || !is_option_name(key) {
            return Err(ValidationError::new(
                format!("workflow_params.{key}"),
                "is not a parameter name (letters, digits, '_', '-', '.'; it becomes --<name>)",
            ));
        }
        let text = value_text(value);
        if text.contains('\0') {
            return Err(ValidationError::new(format!("workflow_params.{key}"), NUL));
        }
        if reads_as_option(&text) {
            return Err(ValidationError::new(
                format!("workflow_params.{key}"),
                OPTION_VALUE,
            ));
        }
        workflow_args.push(format!("--{key}"));
        workflow_args.push(text);
    }

    check_sizes(req, &workflow_url, &engine_args, &workflow_args)?;
    Ok(ValidatedRun {
        workflow_type: workflow_type.clone(),
        workflow_type_version: workflow_type_version.clone(),
        engine_args,
        workflow_args,
        workflow_url,
    })
}

/// A parameter name as a command line reads it: leading dashes dropped, ASCII lowercase,
/// `_` as `-`.
#[must_use]
pub fn normalize_param_name(name: &str) -> String {
    name.trim_start_matches('-')
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Whether `name` may be forwarded as an option: up to two leading dashes, then a letter or
/// digit, then letters, digits, `_`, `-`, `.`.
fn is_option_name(name: &str) -> bool {
    let bare = name
        .strip_prefix("--")
        .or_else(|| name.strip_prefix('-'))
        .unwrap_or(name);
    let mut chars = bare.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The denial reason when `key` matches a `deniedParams` entry, compared after
/// [`normalize_param_name`] — an undeclared name also when it is a prefix of a denied one (a
/// regex is tried on the name as given, normalised, and normalised with `_` for `-`).
fn check_denied(spec: &EngineSpec, key: &str) -> Result<(), String> {
    let normal = normalize_param_name(key);
    // A declared parameter is spelled as the engine declares it; any other name reaches the
    // program as typed, where getopt_long and argparse take an unambiguous prefix for the
    // whole option (`--exe` is `--exec`).
    let declared = spec
        .engine_params
        .validated_params
        .iter()
        .any(|p| p.names.iter().any(|n| n == key));
    for d in &spec.denied_params {
        let hit = match d.kind {
            DeniedKind::Exact => {
                let denied = normalize_param_name(&d.pattern);
                normal == denied || (!declared && !normal.is_empty() && denied.starts_with(&normal))
            }
            DeniedKind::Regex => regex::Regex::new(&d.pattern).is_ok_and(|re| {
                re.is_match(key) || re.is_match(&normal) || re.is_match(&normal.replace('-', "_"))
            }),
        };
        if hit {
            let reason = d.reason.as_deref().unwrap_or("not allowed by this engine");
            return Err(format!("parameter is denied: {reason}"));
        }
    }
    Ok(())
}

/// The scheme of `url` when it is written as `<scheme>://…`.
fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Checks `url` against the engine's workflow rules; the resolved value to run, or the
/// reason (naming the rule) it is refused.
pub fn check_workflow_url(url: &str, spec: &EngineSpec) -> Result<String, String> {
    let engine = format!("engine {} {}", spec.name, spec.version);
    if url.contains('\0') {
        return Err("must not contain NUL".to_owned());
    }
    if let Some(scheme) = url_scheme(url) {
        if spec
            .allowed_url_schemes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(scheme))
        {
            return Ok(url.to_owned());
        }
        return Err(if spec.allowed_url_schemes.is_empty() {
            format!(
                "{scheme}:// URLs are not allowed: {engine} runs local files only (engine.allowedUrlSchemes is empty)"
            )
        } else {
            format!(
                "the URL scheme '{scheme}' is not allowed by {engine} (engine.allowedUrlSchemes: {})",
                spec.allowed_url_schemes.join(", ")
            )
        });
    }
    let path = std::path::Path::new(url);
    if !path.is_absolute() {
        return Err(format!(
            "'{url}' must be an absolute path (or a URL with a scheme {engine} allows)"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("'{url}' must not contain '..'"));
    }
    if spec.allowed_workflow_roots.is_empty() {
        return Err(format!(
            "{engine} allows no local workflow files (engine.allowedWorkflowRoots is empty)"
        ));
    }
    let roots = spec.allowed_workflow_roots.join(", ");
    // Lexically first: a path outside every root is refused without touching the filesystem
    // (no probing of the API's host through error messages).
    let Some(root) = spec
        .allowed_workflow_roots
        .iter()
        .map(std::path::Path::new)
        .find(|root| path.starts_with(root))
    else {
        return Err(format!(
            "'{url}' is outside the workflow roots {engine} allows (engine.allowedWorkflowRoots: {roots})"
        ));
    };
    // Then with symlinks followed, as far as the path exists here.
    let resolved = resolve(path).map_err(|why| format!("'{url}' {why}"))?;
    let real_root = resolve(root).unwrap_or_else(|_| root.to_path_buf());
    if !resolved.starts_with(&real_root) {
        return Err(format!(
            "'{url}' resolves through a symlink to outside the workflow roots {engine} allows (engine.allowedWorkflowRoots: {roots})"
        ));
    }
    resolved
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("'{url}' resolves to a path that is not UTF-8"))
}

/// `path` with its longest existing prefix canonicalised (symlinks followed) and the rest
/// appended; lexical where nothing of it exists on this host. A symlink that does not resolve
/// (dangling, or a loop) is an error: its target could appear later, anywhere.
fn resolve(path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        if std::fs::symlink_metadata(existing).is_ok() {
            return Err(format!(
                "goes through {}, a symlink that does not resolve",
                existing.display()
            ));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return Ok(path.to_path_buf()),
        }
    }
}

fn push_args(args: &mut Vec<String>, flag: Option<&str>, value: Checked) {
    match value {
        Checked::Flag(false) => {}
        Checked::Flag(true) => args.push(flag.unwrap_or("true").to_owned()),
        Checked::Text(s) => {
            args.extend(flag.map(str::to_owned));
            args.push(s);
        }
        Checked::List(items) => {
            args.extend(flag.map(str::to_owned));
            args.push(items.join(","));
        }
    }
}

/// A JSON value as one argument: strings as they are, everything else as JSON text.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(60)])
    } else {
        text
    }
}

/// Type-checks and validates one value; the error is the reason, without the field name.
pub(crate) fn check_value(p: &ParamSpec, v: &Value) -> Result<(), String> {
    checked(p, v).map(|_| ())
}

fn checked(p: &ParamSpec, v: &Value) -> Result<Checked, String> {
    if has_nul(v) {
        return Err(NUL.to_owned());
    }
    let bad = |what: &str| Err(format!("expected {what}, got {}", describe(v)));
    let (value, number) = match p.kind {
        ParamType::String => match v {
            Value::String(s) => (Checked::Text(s.clone()), None),
            _ => return bad("a string"),
        },
        ParamType::Int => {
            let n = match v {
                Value::Number(n) if n.is_i64() => n.as_i64(),
                // JSON has one number type: `3.0` is the integer 3 (as JSON Schema reads it).
                Value::Number(n) => n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) => (Checked::Text(n.to_string()), Some(n as f64)),
                None => return bad("an integer"),
            }
        }
        ParamType::Float => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
                _ => None,
            };
            match n {
                Some(n) => (Checked::Text(n.to_string()), Some(n)),
                None => return bad("a number"),
            }
        }
        ParamType::Bool => match v {
            Value::Bool(b) => (Checked::Flag(*b), None),
            Value::String(s) if s == "true" || s == "false" => (Checked::Flag(s == "true"), None),
            _ => return bad("true or false"),
        },
        ParamType::List => match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::Array(_) | Value::Object(_) | Value::Null => {
                            return bad("a list of strings or numbers");
                        }
                        other => out.push(value_text(other)),
                    }
                }
                (Checked::List(out), None)
            }
            Value::String(s) => (
                Checked::List(s.split(',').map(|x| x.trim().to_owned()).collect()),
                None,
            ),
            _ => return bad("a list"),
        },
    };
    for rule in &p.validate {
        match rule {
            Validation::Enum { allowed, message } => {
                let ok = allowed
                    .iter()
                    .any(|a| a == v || value_text(a) == value_text(v));
                if !ok {
                    return Err(message.clone().unwrap_or_else(|| {
                        format!(
                            "{} is not one of {}",
                            describe(v),
                            allowed
                                .iter()
                                .map(value_text)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }));
                }
            }
            Validation::Regex { pattern, message } => {
                let re = regex::Regex::new(pattern)
                    .map_err(|e| format!("invalid regex in engine config: {e}"))?;
                let texts: Vec<String> = match &value {
                    Checked::Text(s) => vec![s.clone()],
                    Checked::Flag(b) => vec![b.to_string()],
                    Checked::List(items) => items.clone(),
                };
                if let Some(t) = texts.iter().find(|t| !re.is_match(t)) {
                    return Err(message
                        .clone()
                        .unwrap_or_else(|| format!("'{t}' does not match {pattern}")));
                }
            }
            Validation::Range { min, max, message } => {
                let Some(n) = number else {
                    return Err("a range check needs an int or float parameter".to_owned());
                };
                if let Some(lo) = min
                    && n < *lo
                {
                    return Err(message
                        .clone()
                        .unwrap_or_else(|| format!("{n} is less than the minimum {lo}")));
                }
                if let Some(hi) = max
                    && n > *hi
                {
                    return Err(message
                        .clone()
                        .unwrap_or_else(|| format!("{n} is more than the maximum: at most {hi}")));
                }
            }
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::config::FullEngineConfig;

    fn spec(unknown: &str) -> EngineSpec {
        let yaml = format!(
            r#"
engine:
  name: generic
  version: "1"
  workflowTypes: [SH]
  workflowTypeVersions: ["1"]
  commandTemplate: "sh {{workflow_url}} {{engine_params}} {{workflow_params}}"
  engineParams:
    unknownParamsBehavior: {unknown}
    validatedParams:
      - names: [threads, t]
        cliFlag: --threads
        type: int
        default: 2
        validate: [{{type: range, min: 1, max: 8}}]
      - names: [mode]
        cliFlag: --mode
        type: string
        validate: [{{type: enum, allowed: [fast, slow]}}]
      - names: [label]
        cliFlag: --label
        type: string
        validate: [{{type: regex, pattern: "^[a-z]+$"}}]
      - names: [verbose]
        cliFlag: -v
        type: bool
      - names: [profiles]
        cliFlag: --profiles
        type: list
      - names: [ratio]
        cliFlag: --ratio
        type: float
      - names: [sample]
        type: string
        required: true
  deniedParams:
    - pattern: exec
      reason: runs arbitrary code
    - pattern: "^danger"
      type: regex
  allowedWorkflowRoots: ["/srv/wf"]
  allowedUrlSchemes: [https]
"#
        );
        FullEngineConfig::parse(&yaml, Path::new("t.yaml"))
            .unwrap()
            .engine
    }

    fn request(params: Value) -> RunRequest {
        RunRequest {
            workflow_type: "sh".into(),
            workflow_type_version: "1".into(),
            workflow_url: "/srv/wf/wf.sh".into(),
            workflow_engine: "generic".into(),
            workflow_engine_version: "1".into(),
            workflow_params: Some(
                json!({"name": "x; touch /tmp/pwned", "n": 3})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            workflow_engine_parameters: serde_json::from_value(params).unwrap(),
            tags: None,
        }
    }

    #[track_caller]
    fn check(params: Value, unknown: &str, expect: Result<&[&str], (&str, &str)>) {
        let got = validate(&request(params.clone()), &spec(unknown));
        match (got, expect) {
            (Ok(v), Ok(args)) => assert_eq!(v.engine_args, args, "engine args for {params}"),
            (Err(e), Err((field, needle))) => assert!(
                e.field == field && e.reason.contains(needle),
                "for {params}: expected error on '{field}' containing '{needle}', got '{e}'"
            ),
            (got, want) => panic!("for {params}: expected {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn engine_params_are_typed_defaulted_and_ordered() {
        check(
            json!({"sample": "s1"}),
            "reject",
            Ok(&["--threads", "2", "s1"]),
        );
        check(
            json!({"sample": "s1", "t": "4", "mode": "fast", "verbose": true, "profiles": ["a", "b"], "ratio": 0.5}),
            "reject",
            Ok(&[
                "--threads",
                "4",
                "--mode",
                "fast",
                "-v",
                "--profiles",
                "a,b",
                "--ratio",
                "0.5",
                "s1",
            ]),
        );
        // `4.0` is the integer 4, as JSON Schema reads it; `4.5` is not an integer.
        check(
            json!({"sample": "s1", "t": 4.0}),
            "reject",
            Ok(&["--threads", "4", "s1"]),
        );
        check(
            json!({"sample": "s1", "t": 4.5}),
            "reject",
            Err(("workflow_engine_parameters.t", "expected an integer")),
        );
        check(
            json!({"sample": "s1", "verbose": "false"}),
            "reject",
            Ok(&["--threads", "2", "s1"]),
        );
        check(
            json!({"sample": "x; touch /tmp/pwned"}),
            "reject",
            Ok(&["--threads", "2", "x; touch /tmp/pwned"]),
        );
    }

    #[test]
    fn bad_engine_params_name_the_field() {
        let p = "workflow_engine_parameters";
        check(
            json!({}),
            "reject",
            Err((&format!("{p}.sample"), "is required")),
        );
        check(
            json!({"sample": "s", "threads": "many"}),
            "reject",
            Err((&format!("{p}.threads"), "expected an integer")),
        );
        check(
            json!({"sample": "s", "threads": 9}),
            "reject",
            Err((&format!("{p}.threads"), "maximum")),
        );
        check(
            json!({"sample": "s", "threads": 0}),
            "reject",
            Err((&format!("{p}.threads"), "minimum")),
        );
        check(
            json!({"sample": "s", "t": 1, "threads": 2}),
            "reject",
            Err((&format!("{p}.threads"), "more than once")),
        );
        check(
            json!({"sample": "s", "mode": "warp"}),
            "reject",
            Err((&format!("{p}.mode"), "not one of fast, slow")),
        );
        check(
            json!({"sample": "s", "label": "ABC"}),
            "reject",
            Err((&format!("{p}.label"), "does not match")),
        );
        check(
            json!({"sample": "s", "verbose": "yes"}),
            "reject",
            Err((&format!("{p}.verbose"), "true or false")),
        );
        check(
            json!({"sample": 5}),
            "reject",
            Err((&format!("{p}.sample"), "expected a string")),
        );
        check(
            json!({"sample": "s", "exec": "rm"}),
            "reject",
            Err((&format!("{p}.exec"), "runs arbitrary code")),
        );
        check(
            json!({"sample": "s", "dangerous": "1"}),
            "pass",
            Err((&format!("{p}.dangerous"), "denied")),
        );
        check(
            json!({"sample": "s", "other": "1"}),
            "reject",
            Err((&format!("{p}.other"), "unknown parameter")),
        );
    }

    #[test]
    fn unknown_params_pass_or_strip() {
        check(
            json!({"sample": "s", "--extra": "$(id)"}),
            "pass",
            Ok(&["--threads", "2", "s", "--extra", "$(id)"]),
        );
        check(
            json!({"sample": "s", "--extra": "1"}),
            "strip",
            Ok(&["--threads", "2", "s"]),
        );
    }

    #[test]
    fn workflow_type_is_matched_and_canonicalised() {
        let v = validate(&request(json!({"sample": "s"})), &spec("reject")).unwrap();
        assert_eq!(v.workflow_type, "SH");
        assert_eq!(
            v.workflow_args,
            ["--n", "3", "--name", "x; touch /tmp/pwned"]
        );
        let mut r = request(json!({"sample": "s"}));
        r.workflow_type = "CWL".into();
        let e = validate(&r, &spec("reject")).unwrap_err();
        assert_eq!(e.field, "workflow_type");
        assert!(e.reason.contains("supported: SH"), "{e}");
        let mut r = request(json!({"sample": "s"}));
        r.workflow_type_version = "2".into();
        assert_eq!(
            validate(&r, &spec("reject")).unwrap_err().field,
            "workflow_type_version"
        );
        let mut r = request(json!({"sample": "s"}));
        r.workflow_url = " ".into();
        assert_eq!(
            validate(&r, &spec("reject")).unwrap_err().field,
            "workflow_url"
        );
    }

    #[test]
    fn every_spelling_of_a_denied_name_is_denied() {
        let p = "workflow_engine_parameters";
        for spelling in [
            "exec", "--exec", "-exec", "EXEC", "Exec", "--EXEC", "---exec",
        ] {
            for mode in ["pass", "reject", "strip"] {
                check(
                    json!({"sample": "s", spelling: "rm -rf /"}),
                    mode,
                    Err((&format!("{p}.{spelling}"), "runs arbitrary code")),
                );
            }
            let mut r = request(json!({"sample": "s"}));
            r.workflow_params = Some(json!({spelling: "x"}).as_object().unwrap().clone());
            let e = validate(&r, &spec("reject")).unwrap_err();
            assert_eq!(e.field, format!("workflow_params.{spelling}"), "{e}");
        }
        assert_eq!(normalize_param_name("--Dry_Run"), "dry-run");
        // A regex is tried on the normalised name as well.
        check(
            json!({"sample": "s", "--DANGER_zone": "1"}),
            "pass",
            Err((&format!("{p}.--DANGER_zone"), "denied")),
        );
    }

    #[test]
    fn pass_mode_forwards_option_names_only_and_positionals_cannot_be_options() {
        let p = "workflow_engine_parameters";
        for bad in ["", "-", "--", "a b", "--x=1", "$(id)", ";", "--\u{0}"] {
            check(
                json!({"sample": "s", bad: "1"}),
                "pass",
                Err((&format!("{p}.{bad}"), "option name")),
            );
        }
        check(
            json!({"sample": "-rf"}),
            "reject",
            Err((&format!("{p}.sample"), "must not start with '-'")),
        );
        check(
            json!({"sample": "s", "label": "-x"}),
            "reject",
            Err((&format!("{p}.label"), "does not match")),
        );
        let mut r = request(json!({"sample": "s"}));
        r.workflow_params = Some(json!({"a b": "x"}).as_object().unwrap().clone());
        assert_eq!(
            validate(&r, &spec("reject")).unwrap_err().field,
            "workflow_params.a b"
        );
    }

    #[test]
    fn workflow_urls_must_stay_under_the_roots_or_use_an_allowed_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("workflows");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.sh"), "echo ok").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("escape.sh")).unwrap();
        std::os::unix::fs::symlink(&root, dir.path().join("link")).unwrap();
        let mut spec = spec("reject");
        spec.allowed_workflow_roots = vec![root.display().to_string()];
        let check_url = |spec: &EngineSpec, u: &str| {
            let mut r = request(json!({"sample": "s"}));
            r.workflow_url = u.to_owned();
            validate(&r, spec).map(|v| v.workflow_url)
        };
        let url = |u: &str| check_url(&spec, u);
        let real = std::fs::canonicalize(root.join("ok.sh")).unwrap();
        assert_eq!(
            url(&root.join("ok.sh").display().to_string()).unwrap(),
            real.display().to_string()
        );
        // Only the roots' own spelling counts: a symlinked folder outside is refused unread.
        assert!(url(&dir.path().join("link/ok.sh").display().to_string()).is_err());
        // A symlink inside that resolves inside: fine, and resolved.
        std::os::unix::fs::symlink(root.join("ok.sh"), root.join("alias.sh")).unwrap();
        assert_eq!(
            url(&root.join("alias.sh").display().to_string()).unwrap(),
            real.display().to_string()
        );
        // A dangling symlink is refused: its target could appear later, anywhere.
        std::os::unix::fs::symlink("/nonexistent/later", root.join("dangling.sh")).unwrap();
        assert!(
            url(&root.join("dangling.sh").display().to_string())
                .unwrap_err()
                .reason
                .contains("does not resolve")
        );
        // A file not there yet under the root is the engine's to report.
        assert!(url(&root.join("later.sh").display().to_string()).is_ok());
        assert_eq!(
            url("https://example.org/wf.sh").unwrap(),
            "https://example.org/wf.sh"
        );
        for (bad, needle) in [
            ("/etc/passwd", "outside the workflow roots"),
            (
                &root.join("escape.sh").display().to_string(),
                "through a symlink",
            ),
            ("https://a\u{0}b", "NUL"),
            (&format!("{}/../../etc/passwd", root.display()), "'..'"),
            ("wf.sh", "absolute path"),
            ("http://example.org/wf.sh", "scheme 'http' is not allowed"),
            ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ] {
            let e = url(bad).unwrap_err();
            assert_eq!(e.field, "workflow_url");
            assert!(e.reason.contains(needle), "{bad}: {e} (wanted {needle})");
        }
        let mut spec = spec.clone();
        spec.allowed_workflow_roots.clear();
        spec.allowed_url_schemes.clear();
        let url = |u: &str| check_url(&spec, u);
        assert!(
            url(&root.join("ok.sh").display().to_string())
                .unwrap_err()
                .reason
                .contains("allowedWorkflowRoots is empty")
        );
        assert!(
            url("https://x/y")
                .unwrap_err()
                .reason
                .contains("local files only")
        );
    }

    #[test]
    fn a_nul_in_any_argument_is_refused() {
        let p = "workflow_engine_parameters";
        check(
            json!({"sample": "a\u{0}b"}),
            "reject",
            Err((&format!("{p}.sample"), "NUL")),
        );
        check(
            json!({"sample": "s", "--extra": "a\u{0}"}),
            "pass",
            Err((&format!("{p}.--extra"), "NUL")),
        );
        let mut r = request(json!({"sample": "s"}));
        r.workflow_params = Some(json!({"k": "x\u{0}y"}).as_object().unwrap().clone());
        assert_eq!(
            validate(&r, &spec("reject")).unwrap_err().field,
            "workflow_params.k"
        );
    }

    #[test]
    fn abbreviations_bundles_and_option_values_cannot_smuggle_a_denied_option() {
        let p = "workflow_engine_parameters";
        // getopt_long/argparse expand an unambiguous prefix: --exe is --exec.
        for prefix in ["--exe", "ex", "--E"] {
            check(
                json!({"sample": "s", prefix: "id"}),
                "pass",
                Err((&format!("{p}.{prefix}"), "denied")),
            );
        }
        // A declared parameter is spelled as declared, so a prefix of a denied name is fine.
        check(
            json!({"sample": "s", "t": 3}),
            "reject",
            Ok(&["--threads", "3", "s"]),
        );
        // -ve is -v -e.
        check(
            json!({"sample": "s", "-ve": "x"}),
            "pass",
            Err((&format!("{p}.-ve"), "one letter")),
        );
        // A value after a forwarded name cannot be an option itself ...
        check(
            json!({"sample": "s", "--quiet": "--exec=id"}),
            "pass",
            Err((&format!("{p}.--quiet"), "must not start with '-'")),
        );
        let mut r = request(json!({"sample": "s"}));
        r.workflow_params = Some(json!({"verbose": "--exec=id"}).as_object().unwrap().clone());
        let e = validate(&r, &spec("reject")).unwrap_err();
        assert_eq!(e.field, "workflow_params.verbose", "{e}");
        // ... but a negative number is a number.
        let mut r = request(json!({"sample": "s"}));
        r.workflow_params = Some(
            json!({"offset": -5, "scale": "-0.5"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert!(validate(&r, &spec("reject")).is_ok());
        // A regex written with '_' matches the '-' spelling too.
        let mut spec = spec("pass");
        spec.denied_params.push(crate::config::DeniedParam {
            pattern: "^dry_run$".into(),
            kind: DeniedKind::Regex,
            reason: None,
        });
        let mut r = request(json!({"sample": "s", "--dry-run": "1"}));
        r.workflow_params = None;
        assert!(validate(&r, &spec).is_err());
        // A literal backslash-u0000 is text, not a NUL.
        check(
            json!({"sample": "a\\u0000b"}),
            "reject",
            Ok(&["--threads", "2", "a\\u0000b"]),
        );
    }

    /// What the kernel would refuse at `execve` is a 400 naming the field, before anything is
    /// stored: one argument over `MAX_ARG_STRLEN`, all of them over the total, too many.
    #[test]
    fn sizes_the_engine_could_not_execute_are_refused() {
        let with = |params: Value| {
            let mut req = request(json!({"sample": "s"}));
            req.workflow_params = params.as_object().cloned();
            validate(&req, &spec("reject"))
        };
        let big = "x".repeat(200 * 1024);
        let e = with(json!({"big": big})).unwrap_err();
        assert_eq!(e.field, "workflow_params.big", "{e}");
        assert!(e.reason.contains("MAX_ARG_STRLEN"), "{e}");
        assert!(with(json!({"ok": "x".repeat(MAX_ARG_BYTES)})).is_ok());
        let many: serde_json::Map<String, Value> = (0..10)
            .map(|i| (format!("p{i}"), json!("y".repeat(120 * 1024))))
            .collect();
        let e = with(Value::Object(many)).unwrap_err();
        assert!(e.reason.contains("all of them together"), "{e}");
        let count: serde_json::Map<String, Value> = (0..=MAX_PARAMS)
            .map(|i| (format!("p{i}"), json!(1)))
            .collect();
        let e = with(Value::Object(count)).unwrap_err();
        assert!(e.reason.contains("at most 1024"), "{e}");
    }
}
