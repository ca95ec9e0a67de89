//! Per-run working directories: `runs.workdir.base` joined with `runs.workdir.pattern`.
//!
//! The pattern's placeholders (`{user_id}`, `{run_id}`, `{date}`) come partly from the request
//! (the user id is a header), so each value is made into exactly one safe path component:
//! `/`, `\` and NUL become `_`, and `.`/`..`/empty become `_`. A user called `../../etc` gets
//! a directory named `.._.._etc` under the base, never a path outside it.
//!
//! Directories are created `0700` (only the engine's user reads a run's files). The run's own
//! directory may exist only as a real directory (a retried run), never as a symlink, and it
//! must resolve (symlinks followed) under the base: a workflow that planted a symlink where a
//! later run's directory will be cannot send that run elsewhere.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use common::RunId;

use crate::EngineError;

/// `value` as one path component that cannot climb out of its parent.
#[must_use]
pub fn component(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => cleaned,
    }
}

/// The workdir of one run: `base/<pattern with placeholders replaced>`.
#[must_use]
pub fn expand(
    base: &Path,
    pattern: &str,
    run_id: &RunId,
    user_id: &str,
    now: DateTime<Utc>,
) -> PathBuf {
    let date = now.format("%Y-%m-%d").to_string();
    let run = run_id.to_string();
    let mut path = base.to_path_buf();
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let expanded = part
            .replace("{user_id}", &component(user_id))
            .replace("{run_id}", &component(&run))
            .replace("{date}", &component(&date));
        path.push(component(&expanded));
    }
    path
}

/// Creates the run's workdir under `base`: parents as needed, all `0700`; an existing entry
/// is accepted only as a real directory; the result must resolve under `base`.
pub async fn create(base: &Path, path: &Path) -> Result<(), EngineError> {
    let err = |source| EngineError::Workdir {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        let mut parents = tokio::fs::DirBuilder::new();
        parents.recursive(true).mode(0o700);
        parents.create(parent).await.map_err(err)?;
    }
    let mut builder = tokio::fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = tokio::fs::symlink_metadata(path).await.map_err(err)?;
            if !meta.is_dir() {
                return Err(err(std::io::Error::other(
                    "it exists and is not a directory (a symlink is never followed)",
                )));
            }
        }
        Err(e) => return Err(err(e)),
    }
    let real = tokio::fs::canonicalize(path).await.map_err(err)?;
    let real_base = tokio::fs::canonicalize(base).await.map_err(err)?;
    if !real.starts_with(&real_base) {
        return Err(err(std::io::Error::other(format!(
            "it resolves to {}, outside the workdir base {}",
            real.display(),
            real_base.display()
        ))));
    }
    Ok(())
}

/// Creates `path` and its missing parents, each `0700`.
pub async fn create_private(path: &Path) -> Result<(), EngineError> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
        .create(path)
        .await
        .map_err(|source| EngineError::Workdir {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    #[track_caller]
    fn check(pattern: &str, user: &str, expect: &str) {
        let id = RunId::from_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let now = Utc.with_ymd_and_hms(2024, 3, 9, 23, 59, 0).unwrap();
        let got = expand(Path::new("/base"), pattern, &id, user, now);
        assert_eq!(
            got,
            PathBuf::from(expect),
            "pattern {pattern:?}, user {user:?}"
        );
        assert!(got.starts_with("/base"), "{got:?} escaped the base");
    }

    #[test]
    fn placeholders_expand_into_components() {
        let id = "01890a5d-ac96-774b-bcce-b302099a8057";
        check("{user_id}/{run_id}", "alice", &format!("/base/alice/{id}"));
        check(
            "{date}/{user_id}-{run_id}",
            "bob",
            &format!("/base/2024-03-09/bob-{id}"),
        );
        check("runs/./{run_id}/", "alice", &format!("/base/runs/{id}"));
        check("fixed", "alice", "/base/fixed");
    }

    #[test]
    fn hostile_user_ids_stay_under_the_base() {
        let id = "01890a5d-ac96-774b-bcce-b302099a8057";
        check(
            "{user_id}/{run_id}",
            "../../etc",
            &format!("/base/.._.._etc/{id}"),
        );
        check("{user_id}/{run_id}", "..", &format!("/base/_/{id}"));
        check("{user_id}/{run_id}", "", &format!("/base/_/{id}"));
        check("{user_id}/{run_id}", "/abs", &format!("/base/_abs/{id}"));
        check("{user_id}", "a\\b\0c", "/base/a_b_c");
    }

    #[tokio::test]
    async fn create_makes_parents_and_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c");
        create(dir.path(), &path).await.unwrap();
        assert!(path.is_dir());
        use std::os::unix::fs::PermissionsExt;
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}: {mode:o}");
        }
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let err = create(dir.path(), &blocker.join("sub"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("create the workdir") && err.contains("file/sub"),
            "{err}"
        );
        // An existing directory is reused (a retried run); a planted symlink is not.
        create(dir.path(), &path).await.unwrap();
        let outside = tempfile::tempdir().unwrap();
        let planted = dir.path().join("a/planted");
        std::os::unix::fs::symlink(outside.path(), &planted).unwrap();
        assert!(create(dir.path(), &planted).await.is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
