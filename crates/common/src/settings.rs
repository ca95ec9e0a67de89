//! Settings as data: each crate that reads environment variables declares them in a table of
//! [`Setting`]s next to the code that reads them, and takes its defaults from the same
//! constants the table shows. The book renders every table (its settings page is generated,
//! never restated), so a new variable, a changed meaning or a changed default changes the
//! book, and `just book-check` fails until the page is regenerated. The tables:
//! [`crate::nats::SETTINGS`] (both services), `telemetry::SETTINGS`, `api::config::SETTINGS`,
//! `api::auth::SETTINGS`, `engine::settings::SETTINGS`.

/// One environment variable a service reads.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable, e.g. `APP_PORT`.
    pub name: &'static str,
    /// What it does, and the values it takes.
    pub meaning: &'static str,
    /// The default as the code applies it (Markdown: a literal in backticks, taken from the
    /// constant the code uses), or what happens when it is unset.
    pub default: fn() -> String,
}

/// `` `value` ``: a default shown as a literal.
#[must_use]
pub fn literal(value: impl std::fmt::Display) -> String {
    format!("`{value}`")
}

/// A duration as the `*_MS` variables take it: `` `2000` ``.
#[must_use]
pub fn millis(d: std::time::Duration) -> String {
    literal(d.as_millis())
}

/// The variable that injects a bug into an engine on purpose, for the chaos tests (read by
/// `engine::injected` in debug builds only; no setting of a deployment, so in no table).
pub const TEST_BUG: &str = "METIS_TEST_BUG";
