//! The HTTP route table, from the OpenAPI document the API serves (`api::openapi::document()`,
//! the same value `GET /openapi.json` returns): every path and method, whether it needs a
//! bearer token, what it does (the handler's doc comment, which utoipa made the operation's
//! summary and description) and every status it can answer. A new route, a removed status or
//! a reworded handler doc changes the page.

use anyhow::{Context, Result};
#[cfg(test)]
use serde_json::Value;

use super::{cell, preamble};

/// Generates `routes.md`.
pub fn generate() -> Result<(String, Vec<String>)> {
    let doc = api::openapi::document();
    let paths = doc["paths"]
        .as_object()
        .context("the OpenAPI document has no `paths`")?;
    let mut problems = Vec::new();
    let mut md = preamble(
        "routes",
        "api::openapi::document(), the document GET /openapi.json serves",
    );
    md.push_str(&format!(
        "\nFrom the OpenAPI document (`{}` {}), which `GET /openapi.json` serves in full and \
         `just schemathesis` holds the code to. Every error body is `{{\"msg\": \"…\", \"status_code\": N}}`.\n\n\
         | route | token | what it does | answers |\n| --- | --- | --- | --- |\n",
        doc["info"]["title"].as_str().unwrap_or("Metis API"),
        doc["info"]["version"].as_str().unwrap_or_default()
    ));
    for (path, item) in paths {
        let Some(ops) = item.as_object() else {
            continue;
        };
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = ops.get(method) else {
                continue;
            };
            let what = [&op["summary"], &op["description"]]
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if what.is_empty() {
                problems.push(format!(
                    "{} {path} has no summary: document its handler",
                    method.to_uppercase()
                ));
            }
            let token = if op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()))
            {
                "bearer"
            } else {
                "—"
            };
            let answers: Vec<String> = op["responses"]
                .as_object()
                .map(|r| r.keys().map(|code| format!("`{code}`")).collect())
                .unwrap_or_default();
            md.push_str(&format!(
                "| `{} {path}` | {token} | {} | {} |\n",
                method.to_uppercase(),
                cell(&what),
                answers.join(" ")
            ));
        }
    }
    md.push_str("| `GET /openapi.json` | — | This document. | `200` |\n");
    Ok((md, problems))
}

/// The operations of the document, as `METHOD path`.
#[cfg(test)]
fn operations(doc: &Value) -> Vec<String> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(m, _)| matches!(m.as_str(), "get" | "post" | "put" | "patch" | "delete"))
                .map(move |(m, _)| format!("{} {path}", m.to_uppercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_of_the_document_is_a_row() {
        let (md, problems) = generate().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let ops = operations(&api::openapi::document());
        assert!(ops.len() >= 8, "{ops:?}");
        for op in ops {
            assert!(md.contains(&format!("| `{op}` |")), "{op} missing:\n{md}");
        }
        assert!(md.contains("| `POST /runs` | bearer |"), "{md}");
        assert!(md.contains("| `GET /healthz` | — |"), "{md}");
    }
}
