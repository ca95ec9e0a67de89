//! Building a run's argv from `commandTemplate`.
//!
//! The template is split once, shell-style (quotes group words), into tokens. `{engine_params}`
//! and `{workflow_params}` must stand alone as a token and expand to zero or more arguments;
//! the scalar placeholders (`{run_id}`, `{user_id}`, `{workflow_url}`, `{workflow_path}`,
//! `{workdir}`) are replaced inside their token. Values are never re-scanned and never seen by
//! a shell, so `x; touch /tmp/pwned` or `$(id)` reach the process as one literal argument.

use crate::config::{COMMAND_PLACEHOLDERS, placeholders};

/// The values placeholders expand to.
#[derive(Debug, Clone)]
pub struct CommandContext<'a> {
    /// `{run_id}`.
    pub run_id: &'a str,
    /// `{user_id}`.
    pub user_id: &'a str,
    /// `{workflow_url}` and `{workflow_path}`.
    pub workflow_url: &'a str,
    /// `{workdir}`.
    pub workdir: &'a str,
    /// `{engine_params}`.
    pub engine_args: &'a [String],
    /// `{workflow_params}`.
    pub workflow_args: &'a [String],
}

/// Splits a template into tokens and checks its placeholders; the error is a reason.
pub fn parse_template(template: &str) -> Result<Vec<String>, String> {
    let tokens =
        shell_words::split(template).map_err(|e| format!("cannot split into words: {e}"))?;
    if tokens.is_empty() {
        return Err("must not be empty".to_owned());
    }
    for t in &tokens {
        for name in placeholders(t) {
            if !COMMAND_PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}}; known: {}",
                    COMMAND_PLACEHOLDERS.join(", ")
                ));
            }
            if matches!(name, "engine_params" | "workflow_params") && t != &format!("{{{name}}}") {
                return Err(format!(
                    "{{{name}}} must be a word of its own, not part of '{t}'"
                ));
            }
        }
    }
    if tokens[0].starts_with("{engine_params}") || tokens[0].starts_with("{workflow_params}") {
        return Err("the program (first word) must not come from parameters".to_owned());
    }
    Ok(tokens)
}

/// The argv for one run; the template must have passed [`parse_template`].
pub fn build_argv(template: &str, ctx: &CommandContext<'_>) -> Result<Vec<String>, String> {
    let tokens = parse_template(template)?;
    let mut argv =
        Vec::with_capacity(tokens.len() + ctx.engine_args.len() + ctx.workflow_args.len());
    for t in tokens {
        match t.as_str() {
            "{engine_params}" => argv.extend(ctx.engine_args.iter().cloned()),
            "{workflow_params}" => argv.extend(ctx.workflow_args.iter().cloned()),
            _ => argv.push(substitute(&t, ctx)),
        }
    }
    Ok(argv)
}

fn substitute(token: &str, ctx: &CommandContext<'_>) -> String {
    let mut out = String::with_capacity(token.len());
    let mut rest = token;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        let value = match name {
            "run_id" => Some(ctx.run_id),
            "user_id" => Some(ctx.user_id),
            "workflow_url" | "workflow_path" => Some(ctx.workflow_url),
            "workdir" => Some(ctx.workdir),
            _ => None,
        };
        out.push_str(&rest[..start]);
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(template: &str, expect: &[&str]) {
        let engine_args = vec!["--threads".to_owned(), "2".to_owned()];
        let workflow_args = vec![
            "--name".to_owned(),
            "x; touch /tmp/pwned".to_owned(),
            "--who".to_owned(),
            "$(id)".to_owned(),
        ];
        let ctx = CommandContext {
            run_id: "r1",
            user_id: "alice",
            workflow_url: "/wf/{run_id}.sh",
            workdir: "/w/alice/r1",
            engine_args: &engine_args,
            workflow_args: &workflow_args,
        };
        assert_eq!(
            build_argv(template, &ctx).unwrap(),
            expect,
            "template: {template}"
        );
    }

    #[test]
    fn expands_placeholders_into_an_argv() {
        check(
            "sh {workflow_url} {engine_params} {workflow_params}",
            &[
                "sh",
                "/wf/{run_id}.sh",
                "--threads",
                "2",
                "--name",
                "x; touch /tmp/pwned",
                "--who",
                "$(id)",
            ],
        );
        check(
            "tool --out={workdir}/out 'a b' {run_id}-{user_id}",
            &["tool", "--out=/w/alice/r1/out", "a b", "r1-alice"],
        );
        check("echo", &["echo"]);
    }

    #[test]
    fn rejects_bad_templates() {
        for (t, needle) in [
            ("", "empty"),
            ("sh 'open", "split"),
            ("sh {nope}", "{nope}"),
            ("sh x{engine_params}", "word of its own"),
            ("{workflow_params} x", "first word"),
        ] {
            let err = parse_template(t).unwrap_err();
            assert!(err.contains(needle), "template {t:?}: {err}");
        }
    }
}
