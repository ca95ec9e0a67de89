//! The `engine.yaml` format, its loading and its start-up checks.
//!
//! Keys are camelCase; unknown keys are rejected so a typo is reported instead of ignored.
//! Every error names the file and the key path (`engine.engineParams.validatedParams[0].type`).
//! Versions may be written as YAML numbers (`version: 1`); they are read as strings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A failure to load or check an `engine.yaml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading engine config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key is missing, unknown, of the wrong type, or has an invalid value.
    #[error("engine config {path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole `engine.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FullEngineConfig {
    /// What the engine is and what it accepts.
    pub engine: EngineSpec,
    /// How runs are laid out on disk and cancelled.
    #[serde(default)]
    pub runs: RunsConfig,
}

/// Alias kept for readability at call sites.
pub type EngineConfig = FullEngineConfig;

/// The `engine` section: what an engine registers in NATS and the API validates against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineSpec {
    /// Engine name (`workflow_engine`).
    pub name: String,
    /// Engine version (`workflow_engine_version`).
    #[serde(deserialize_with = "string_like")]
    pub version: String,
    /// Instance id; a fresh UUID at every start when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Accepted `workflow_type` values.
    #[serde(deserialize_with = "strings_like")]
    pub workflow_types: Vec<String>,
    /// Accepted `workflow_type_version` values.
    #[serde(deserialize_with = "strings_like")]
    pub workflow_type_versions: Vec<String>,
    /// The command, split into an argv (shell-style quoting allowed; never run by a shell).
    pub command_template: String,
    /// How many runs one instance executes at once.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// Engine parameters the request may set.
    #[serde(default)]
    pub engine_params: EngineParams,
    /// Parameter names a request may never set, as engine or workflow parameter; leading
    /// dashes, case and `_` versus `-` do not matter (`--Exec` is `exec`).
    #[serde(default)]
    pub denied_params: Vec<DeniedParam>,
    /// Folders a local `workflow_url` must resolve under (symlinks followed); relative paths
    /// are resolved against the config file's folder. Empty: no local workflow is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_workflow_roots: Vec<String>,
    /// URL schemes (`https`, `s3`, …) a `workflow_url` may use; such a URL is passed to the
    /// command as given. Empty: only local files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_url_schemes: Vec<String>,
}

fn default_max_concurrent_runs() -> usize {
    4
}

/// `engine.engineParams`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineParams {
    /// What happens to a parameter that is not in `validatedParams`.
    #[serde(default)]
    pub unknown_params_behavior: UnknownParamsBehavior,
    /// Declared parameters, in argv order.
    #[serde(default)]
    pub validated_params: Vec<ParamSpec>,
}

/// `engine.engineParams.unknownParamsBehavior`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownParamsBehavior {
    /// 400 naming the parameter.
    #[default]
    Reject,
    /// Passed as `<name> <value>`.
    Pass,
    /// Dropped.
    Strip,
}

/// The type of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any string.
    String,
    /// A whole number (JSON number or numeric string).
    Int,
    /// A number.
    Float,
    /// `true`/`false` (JSON or string); true adds the flag alone.
    Bool,
    /// A JSON array or a comma-separated string; passed as one argument joined by commas.
    List,
}

/// One declared engine parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamSpec {
    /// Accepted names; the first is canonical.
    pub names: Vec<String>,
    /// The flag put before the value; absent = the value alone (positional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_flag: Option<String>,
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Whether a request must set it.
    #[serde(default)]
    pub required: bool,
    /// Used when the request does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default: Option<serde_json::Value>,
    /// Checks on the value.
    #[serde(default)]
    pub validate: Vec<Validation>,
}

impl ParamSpec {
    /// The canonical name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

/// A check on a parameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Validation {
    /// The value must be one of `allowed`.
    Enum {
        /// Allowed values.
        #[schema(value_type = Vec<Object>)]
        allowed: Vec<serde_json::Value>,
        /// Message used instead of the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The value (as text) must match `pattern` (anchor it yourself).
    Regex {
        /// A Rust `regex` pattern.
        pattern: String,
        /// Message used instead of the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A number within `[min, max]`.
    Range {
        /// Lower bound, inclusive.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// Upper bound, inclusive.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        /// Message used instead of the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// One `engine.deniedParams` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeniedParam {
    /// Name or regex.
    pub pattern: String,
    /// How `pattern` matches.
    #[serde(rename = "type", default)]
    pub kind: DeniedKind,
    /// Told to the user in the 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a denied pattern matches a parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeniedKind {
    /// The whole name.
    #[default]
    Exact,
    /// A regex search in the name.
    Regex,
}

/// The `runs` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunsConfig {
    /// Where each run's working directory goes.
    #[serde(default)]
    pub workdir: WorkdirConfig,
    /// Time between SIGTERM and SIGKILL when a run is cancelled.
    #[serde(default = "default_grace")]
    pub cancel_grace_period_ms: u64,
    /// Variables set in every workflow's environment, on top of the fixed allowlist (`PATH`,
    /// `HOME` and `TMPDIR` in the workdir, `LANG`); nothing else of the engine's own
    /// environment reaches a workflow.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// How each run is isolated from the host, the engine and other runs.
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

fn default_grace() -> u64 {
    5000
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            workdir: WorkdirConfig::default(),
            cancel_grace_period_ms: default_grace(),
            env: std::collections::BTreeMap::new(),
            sandbox: SandboxConfig::default(),
        }
    }
}

/// `runs.sandbox`: the per-run sandbox (bubblewrap namespaces, a per-run identity, limits).
/// Every field has a default; the engine's `sandbox` module says how each is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxConfig {
    /// Host paths a workflow sees read-only (besides the allowed workflow roots and its own
    /// workdir); a path missing on the host is skipped, a symlink is recreated as one.
    #[serde(default = "default_read_only_paths")]
    pub read_only_paths: Vec<PathBuf>,
    /// Whether a workflow shares the host's network; `false` gives it a loopback of its own.
    #[serde(default = "default_true")]
    pub network: bool,
    /// First host uid of the range per-run identities are taken from (an engine running as
    /// root gives each run its own uid from the range; otherwise the uid inside a user
    /// namespace).
    #[serde(default = "default_uid_first")]
    pub uid_first: u32,
    /// How many uids the range holds (at least the engine's `maxConcurrentRuns`).
    #[serde(default = "default_uid_count")]
    pub uid_count: u32,
    /// Most processes a run may have at once (`RLIMIT_NPROC` of its uid); 0 = no limit.
    #[serde(default = "default_pids_max")]
    pub pids_max: u64,
    /// Largest address space of each of a run's processes, in bytes (`RLIMIT_AS`); 0 = no
    /// limit.
    #[serde(default)]
    pub memory_max_bytes: u64,
    /// Keep the workdir of a run that did not end `COMPLETE` (for debugging); by default every
    /// workdir is removed when its run ends.
    #[serde(default)]
    pub keep_workdir_on_failure: bool,
    /// Size of the run's private `/tmp` (and `/dev/shm`), each a memory-backed tmpfs, in
    /// bytes.
    #[serde(default = "default_tmp_max_bytes")]
    pub tmp_max_bytes: u64,
}

/// Default `runs.sandbox.readOnlyPaths`: the system's programs, libraries and configuration.
pub const DEFAULT_READ_ONLY_PATHS: [&str; 7] =
    ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"];
/// Default `runs.sandbox.uidFirst`.
pub const DEFAULT_UID_FIRST: u32 = 2_000_000_000;
/// Default `runs.sandbox.uidCount`.
pub const DEFAULT_UID_COUNT: u32 = 65_536;
/// Default `runs.sandbox.pidsMax`.
pub const DEFAULT_PIDS_MAX: u64 = 1024;
/// Default `runs.sandbox.tmpMaxBytes`: 1 GiB.
pub const DEFAULT_TMP_MAX_BYTES: u64 = 1_073_741_824;

fn default_tmp_max_bytes() -> u64 {
    DEFAULT_TMP_MAX_BYTES
}

fn default_read_only_paths() -> Vec<PathBuf> {
    DEFAULT_READ_ONLY_PATHS.iter().map(PathBuf::from).collect()
}
fn default_true() -> bool {
    true
}
fn default_uid_first() -> u32 {
    DEFAULT_UID_FIRST
}
fn default_uid_count() -> u32 {
    DEFAULT_UID_COUNT
}
fn default_pids_max() -> u64 {
    DEFAULT_PIDS_MAX
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            read_only_paths: default_read_only_paths(),
            network: true,
            uid_first: DEFAULT_UID_FIRST,
            uid_count: DEFAULT_UID_COUNT,
            pids_max: DEFAULT_PIDS_MAX,
            memory_max_bytes: 0,
            keep_workdir_on_failure: false,
            tmp_max_bytes: DEFAULT_TMP_MAX_BYTES,
        }
    }
}

/// `runs.workdir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkdirConfig {
    /// Base directory; relative paths are resolved against the config file's folder.
    pub base: PathBuf,
    /// Per-run sub-path; placeholders `{user_id}`, `{run_id}`, `{date}`.
    #[serde(default = "default_pattern")]
    pub pattern: String,
}

fn default_pattern() -> String {
    "{user_id}/{run_id}".to_owned()
}

impl Default for WorkdirConfig {
    fn default() -> Self {
        Self {
            base: std::env::temp_dir().join("metis-runs"),
            pattern: default_pattern(),
        }
    }
}

/// Placeholders a `commandTemplate` may use.
pub const COMMAND_PLACEHOLDERS: [&str; 7] = [
    "run_id",
    "user_id",
    "workflow_url",
    "workflow_path",
    "workdir",
    "engine_params",
    "workflow_params",
];

/// Placeholders a `runs.workdir.pattern` may use.
pub const WORKDIR_PLACEHOLDERS: [&str; 3] = ["run_id", "user_id", "date"];

impl FullEngineConfig {
    /// Reads, parses and checks an `engine.yaml`; relative workdir bases are resolved against
    /// the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if cfg.runs.workdir.base.is_relative() {
            cfg.runs.workdir.base = dir.join(&cfg.runs.workdir.base);
        }
        for root in &mut cfg.engine.allowed_workflow_roots {
            // Absolute and without `.`/`..`, as the API compares it on another host.
            let joined = std::path::absolute(dir.join(&*root)).unwrap_or_else(|_| dir.join(&*root));
            *root = std::fs::canonicalize(&joined)
                .unwrap_or(joined)
                .to_string_lossy()
                .into_owned();
        }
        // Workflows write their workdirs: a root there would let one run plant the script a
        // later run executes.
        let base = std::path::absolute(&cfg.runs.workdir.base)
            .unwrap_or_else(|_| cfg.runs.workdir.base.clone());
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        for (i, root) in cfg.engine.allowed_workflow_roots.iter().enumerate() {
            let root_path = Path::new(root);
            if root_path.starts_with(&base) || base.starts_with(root_path) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("engine.allowedWorkflowRoots[{i}]"),
                    message: format!(
                        "'{root}' overlaps the workdir base {}: workflows write there, so a run could plant what a later run executes",
                        base.display()
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// Parses and checks YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            ConfigError::Invalid {
                path: path.to_owned(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                message,
            }
        })?;
        cfg.check().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let e = &self.engine;
        let err = |k: &str, m: String| Err((k.to_owned(), m));
        let token = regex::Regex::new(r"^[A-Za-z0-9_+\-.]+$").expect("static regex");
        // Name, version and id become NATS KV keys and subject tokens: keep them to
        // characters both accept.
        if !crate::nats::is_engine_name(&e.name) {
            return err(
                "engine.name",
                format!("'{}' must be letters, digits, '_' or '-'", e.name),
            );
        }
        if !crate::nats::is_engine_version(&e.version) {
            return err(
                "engine.version",
                format!("'{}' must be letters, digits, '_', '-' or '.'", e.version),
            );
        }
        if let Some(id) = &e.id
            && !crate::nats::is_engine_name(id)
        {
            return err(
                "engine.id",
                format!("'{id}' must be letters, digits, '_' or '-'"),
            );
        }
        for (key, list) in [
            ("engine.workflowTypes", &e.workflow_types),
            ("engine.workflowTypeVersions", &e.workflow_type_versions),
        ] {
            if list.is_empty() {
                return err(key, "must list at least one value".into());
            }
            if let Some(bad) = list.iter().find(|v| !token.is_match(v)) {
                return err(
                    key,
                    format!("'{bad}' must be letters, digits, '_', '-', '+' or '.'"),
                );
            }
        }
        for (key, list) in [
            ("engine.workflowTypes", &e.workflow_types),
            ("engine.workflowTypeVersions", &e.workflow_type_versions),
        ] {
            // Two values that become the same subject token would share one queue.
            for (i, a) in list.iter().enumerate() {
                if let Some(b) = list[..i]
                    .iter()
                    .find(|b| *b != a && crate::nats::token(b) == crate::nats::token(a))
                {
                    return err(
                        key,
                        format!(
                            "'{b}' and '{a}' collide: both are the NATS subject token '{}'",
                            crate::nats::token(a)
                        ),
                    );
                }
            }
        }
        for (i, root) in e.allowed_workflow_roots.iter().enumerate() {
            if root.trim().is_empty() {
                return err(
                    &format!("engine.allowedWorkflowRoots[{i}]"),
                    "must not be empty".into(),
                );
            }
        }
        for (i, scheme) in e.allowed_url_schemes.iter().enumerate() {
            let ok = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !ok || scheme.eq_ignore_ascii_case("file") {
                return err(
                    &format!("engine.allowedUrlSchemes[{i}]"),
                    format!(
                        "'{scheme}' is not a URL scheme this list may hold (letters, digits, '+', '-', '.'; not file: local files go through allowedWorkflowRoots)"
                    ),
                );
            }
        }
        for name in self.runs.env.keys() {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return err(
                    &format!("runs.env.{name}"),
                    "is not a variable name (letters, digits, '_')".into(),
                );
            }
            if matches!(name.as_str(), "HOME" | "TMPDIR") {
                return err(
                    &format!("runs.env.{name}"),
                    "is set by the engine (the run's workdir)".into(),
                );
            }
        }
        if e.max_concurrent_runs == 0 {
            return err("engine.maxConcurrentRuns", "must be at least 1".into());
        }
        let sb = &self.runs.sandbox;
        if sb.uid_first == 0
            || u64::from(sb.uid_first) + u64::from(sb.uid_count) > u64::from(u32::MAX)
        {
            return err(
                "runs.sandbox.uidFirst",
                format!(
                    "{} (+ uidCount {}) must be a range of uids above 0 (never root) and below 2^32-1",
                    sb.uid_first, sb.uid_count
                ),
            );
        }
        if (sb.uid_count as usize) < e.max_concurrent_runs {
            return err(
                "runs.sandbox.uidCount",
                format!(
                    "{} is less than engine.maxConcurrentRuns ({}): every run in flight needs a uid of its own",
                    sb.uid_count, e.max_concurrent_runs
                ),
            );
        }
        if let Some(p) = sb.read_only_paths.iter().find(|p| !p.is_absolute()) {
            return err(
                "runs.sandbox.readOnlyPaths",
                format!("'{}' must be an absolute path", p.display()),
            );
        }
        crate::command::parse_template(&e.command_template)
            .map_err(|m| ("engine.commandTemplate".to_owned(), m))?;
        for (i, p) in e.engine_params.validated_params.iter().enumerate() {
            let key = format!("engine.engineParams.validatedParams[{i}]");
            if p.names.is_empty() || p.names.iter().any(String::is_empty) {
                return err(
                    &format!("{key}.names"),
                    "must list at least one non-empty name".into(),
                );
            }
            for (j, v) in p.validate.iter().enumerate() {
                if let Validation::Regex { pattern, .. } = v
                    && let Err(re) = regex::Regex::new(pattern)
                {
                    return err(
                        &format!("{key}.validate[{j}].pattern"),
                        format!("invalid regex: {re}"),
                    );
                }
            }
            if let Some(d) = &p.default
                && let Err(m) = crate::validate::check_value(p, d)
            {
                return err(&format!("{key}.default"), m);
            }
        }
        for (i, d) in e.denied_params.iter().enumerate() {
            if d.kind == DeniedKind::Regex
                && let Err(re) = regex::Regex::new(&d.pattern)
            {
                return err(
                    &format!("engine.deniedParams[{i}].pattern"),
                    format!("invalid regex: {re}"),
                );
            }
        }
        if let Some(name) = unknown_placeholder(&self.runs.workdir.pattern, &WORKDIR_PLACEHOLDERS) {
            return err(
                "runs.workdir.pattern",
                format!(
                    "unknown placeholder {{{name}}}; known: {}",
                    WORKDIR_PLACEHOLDERS.join(", ")
                ),
            );
        }
        if self.runs.workdir.pattern.split('/').any(|c| c == "..") {
            return err("runs.workdir.pattern", "must not contain '..'".into());
        }
        // Each run's workdir is its own: its uid owns it, it is removed when the run ends.
        if !self.runs.workdir.pattern.contains("{run_id}") {
            return err(
                "runs.workdir.pattern",
                format!(
                    "'{}' must contain {{run_id}}: two runs must never share a workdir",
                    self.runs.workdir.pattern
                ),
            );
        }
        for p in &self.runs.sandbox.read_only_paths {
            let private = [Path::new("/proc"), Path::new("/dev")];
            if p == Path::new("/")
                || p == Path::new("/tmp")
                || private.iter().any(|d| p.starts_with(d))
            {
                return err(
                    "runs.sandbox.readOnlyPaths",
                    format!(
                        "'{}' would replace the sandbox's own /, /proc, /dev or /tmp (and show the host's)",
                        p.display()
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The first `{name}` in `text` that is not in `known`.
pub(crate) fn unknown_placeholder<'a>(text: &'a str, known: &[&str]) -> Option<&'a str> {
    placeholders(text).find(|p| !known.contains(p))
}

/// Every `{name}` in `text`, in order.
pub(crate) fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find('{')?;
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        rest = &rest[end + 1..];
        Some(name)
    })
}

fn scalar_to_string<E: serde::de::Error>(v: serde_yaml_ng::Value) -> Result<String, E> {
    match v {
        serde_yaml_ng::Value::String(s) => Ok(s),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Ok(b.to_string()),
        other => Err(E::custom(format!(
            "expected a string or number, got {other:?}"
        ))),
    }
}

fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_to_string(serde_yaml_ng::Value::deserialize(d)?)
}

fn strings_like<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<serde_yaml_ng::Value>::deserialize(d)?
        .into_iter()
        .map(scalar_to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
engine:
  name: generic
  version: 1
  workflowTypes: [SH]
  workflowTypeVersions: [1]
  commandTemplate: "sh {workflow_url} {engine_params} {workflow_params}"
  engineParams:
    unknownParamsBehavior: reject
    validatedParams:
      - names: [threads, t]
        cliFlag: --threads
        type: int
        default: 1
        validate:
          - type: range
            min: 1
            max: 8
  deniedParams:
    - pattern: "^exec"
      type: regex
      reason: no exec
runs:
  workdir:
    base: runs
    pattern: "{user_id}/{run_id}"
  cancelGracePeriodMs: 200
"#;

    #[track_caller]
    fn check_err(yaml: &str, key: &str, needle: &str) {
        let err = FullEngineConfig::parse(yaml, Path::new("engine.yaml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("engine.yaml") && text.contains(key) && text.contains(needle),
            "expected an error naming the file, key '{key}' and '{needle}', got: {text}"
        );
    }

    #[test]
    fn parses_a_full_config() {
        let cfg = FullEngineConfig::parse(GOOD, Path::new("engine.yaml")).unwrap();
        assert_eq!(cfg.engine.version, "1");
        assert_eq!(cfg.engine.workflow_type_versions, vec!["1"]);
        assert_eq!(
            cfg.engine.engine_params.validated_params[0].name(),
            "threads"
        );
        assert_eq!(cfg.runs.cancel_grace_period_ms, 200);
        assert_eq!(cfg.engine.max_concurrent_runs, 4);
    }

    #[test]
    fn relative_workdir_base_resolves_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let cfg = FullEngineConfig::load(&path).unwrap();
        assert_eq!(cfg.runs.workdir.base, dir.path().join("runs"));
    }

    #[test]
    fn workflow_roots_resolve_against_the_file_and_must_not_overlap_the_workdirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workflows")).unwrap();
        let path = dir.path().join("engine.yaml");
        let with_roots = GOOD.replace(
            "engine:\n",
            "engine:\n  allowedWorkflowRoots: [workflows]\n  allowedUrlSchemes: [https]\n",
        );
        std::fs::write(&path, &with_roots).unwrap();
        let cfg = FullEngineConfig::load(&path).unwrap();
        let real = std::fs::canonicalize(dir.path().join("workflows")).unwrap();
        assert_eq!(
            cfg.engine.allowed_workflow_roots,
            [real.display().to_string()]
        );
        for (roots, key) in [
            ("[runs/x]", "allowedWorkflowRoots[0]"),
            ("[.]", "allowedWorkflowRoots[0]"),
        ] {
            std::fs::write(
                &path,
                GOOD.replace(
                    "engine:\n",
                    &format!("engine:\n  allowedWorkflowRoots: {roots}\n"),
                ),
            )
            .unwrap();
            let err = FullEngineConfig::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("overlaps"),
                "{roots}: {err}"
            );
        }
        check_err(
            &GOOD.replace("engine:\n", "engine:\n  allowedUrlSchemes: [file]\n"),
            "engine.allowedUrlSchemes[0]",
            "file",
        );
        check_err(
            &GOOD.replace("runs:\n", "runs:\n  env: {HOME: /x}\n"),
            "runs.env.HOME",
            "set by the engine",
        );
    }

    #[test]
    fn errors_name_the_file_and_key() {
        check_err(
            &GOOD.replace("type: int", "type: integer"),
            "engine.engineParams.validatedParams[0].type",
            "integer",
        );
        check_err(
            &GOOD.replace("commandTemplate", "commandTemplat"),
            "engine",
            "commandTemplat",
        );
        check_err(
            &GOOD.replace("{workflow_url}", "{workflow}"),
            "engine.commandTemplate",
            "workflow",
        );
        check_err(
            &GOOD.replace("^exec", "(["),
            "engine.deniedParams[0].pattern",
            "invalid regex",
        );
        check_err(
            &GOOD.replace("default: 1", "default: 99"),
            "validatedParams[0].default",
            "at most 8",
        );
        check_err(
            &GOOD.replace("{user_id}/{run_id}", "{user}/{run_id}"),
            "runs.workdir.pattern",
            "user",
        );
        check_err(
            &GOOD.replace("{user_id}/{run_id}", "{user_id}"),
            "runs.workdir.pattern",
            "{run_id}",
        );
        check_err(
            &GOOD.replace("name: generic", "name: a.b"),
            "engine.name",
            "a.b",
        );
        check_err(
            &GOOD.replace("workflowTypes: [SH]", "workflowTypes: []"),
            "engine.workflowTypes",
            "at least one",
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = FullEngineConfig::load(Path::new("/nonexistent/engine.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/engine.yaml"),
            "{err}"
        );
    }
}
