//! The OpenAPI document served at `/openapi.json`: generated from the handlers and types, then
//! completed with what the annotations cannot say but the code enforces ([`contract`]):
//!
//! - the `bearer` security scheme, required (with its 401) on every `/runs` route, while
//!   `/healthz`, `/readyz`, `/service-info` and `/openapi.json` stay public;
//! - a 503 on every route that reads NATS (storage unavailable);
//! - `RunRequest` is closed (`additionalProperties: false`: an unknown field is a 400), and a
//!   `workflow_params` key must be a parameter name (it becomes `--<key>`);
//! - the rules of the registered engines ([`crate::request_schema`]): engine names and
//!   versions, workflow types, URL schemes and roots, denied and declared parameters, the
//!   argument size limits — so a request the document allows is one the API accepts;
//! - OpenAPI links from the created run to its detail, status, logs and cancel, so a client
//!   (or schemathesis' stateful phase) can follow create → get → cancel.
//!
//! `schemathesis run --checks all` (`just schemathesis`) holds the code to this document.

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Metis API",
        description = "A GA4GH-WES-style workflow execution service. Run routes need `Authorization: Bearer <JWT>`; the user is the token's `sub`."
    ),
    paths(
        routes::create_run,
        routes::list_runs,
        routes::get_run,
        routes::get_status,
        routes::cancel_run,
        routes::get_logs,
        routes::service_info,
        routes::healthz,
        routes::readyz,
    ),
    components(schemas(
        common::RunRequest,
        common::RunId,
        common::State,
        common::RunLog,
        common::LogLine,
        common::LogStream,
        crate::error::ErrorBody
    ))
)]
struct ApiDoc;

/// The pattern a `workflow_params` key must match (see `common::validate`).
pub const PARAM_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

/// The document, without the rules of any engine.
#[must_use]
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    contract(&mut doc);
    doc
}

/// The document with the rules of the registered engines in `RunRequest`
/// ([`crate::request_schema`]): what `/openapi.json` serves.
#[must_use]
pub fn document_for(specs: &[common::config::EngineSpec]) -> Value {
    let mut doc = document();
    let rules = crate::request_schema::rules(specs);
    let request = &mut doc["components"]["schemas"]["RunRequest"];
    // The engine's pattern for `workflow_url` replaces the generic one.
    if let Some(url) = request["properties"]["workflow_url"].as_object_mut() {
        url.remove("pattern");
    }
    if let Some(props) = rules.get("properties").and_then(Value::as_object) {
        for (name, schema) in props {
            let target = &mut request["properties"][name];
            if let (Some(target), Some(schema)) = (target.as_object_mut(), schema.as_object()) {
                for (k, v) in schema {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
    } else if let Some(any) = rules.get("anyOf") {
        request["anyOf"] = any.clone();
    } else if let Some(note) = rules.get("description").and_then(Value::as_str) {
        request["description"] = json!(note);
    }
    doc
}

/// Adds to the generated document what the handlers enforce beyond their annotations.
fn contract(doc: &mut Value) {
    let error = |what: &str| {
        json!({
            "description": what,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    doc["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT whose `sub` is the user; verified against the API's configured key (`AUTH_JWT_*`, `AUTH_JWKS_FILE`)."
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                if path.starts_with("/runs") {
                    op["security"] = json!([{"bearer": []}]);
                    op["responses"]["401"] = error(
                        "no valid bearer token: missing, malformed, expired, not yet valid, or not signed by the configured key",
                    );
                }
                if path != "/healthz" {
                    op["responses"]["503"] = error("NATS (storage) unavailable");
                }
            }
        }
    }
    let request = &mut doc["components"]["schemas"]["RunRequest"];
    request["additionalProperties"] = json!(false);
    request["properties"]["workflow_params"]["propertyNames"] =
        json!({"type": "string", "pattern": PARAM_NAME_PATTERN});
    let link = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": {"run_id": "$response.body#/run_id"},
            "description": description
        })
    };
    doc["paths"]["/runs"]["post"]["responses"]["200"]["links"] = json!({
        "GetRun": link("get_run", "the run in full"),
        "GetStatus": link("get_status", "its state"),
        "GetLogs": link("get_logs", "its captured output"),
        "CancelRun": link("cancel_run", "cancel it"),
    });
    for (path, method) in [
        ("/runs/{run_id}/status", "get"),
        ("/runs/{run_id}/cancel", "post"),
    ] {
        doc["paths"][path][method]["responses"]["200"]["links"] = json!({
            "GetRun": link("get_run", "the run in full"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_names_auth_statuses_and_links() {
        let doc = document();
        let create = &doc["paths"]["/runs"]["post"];
        for status in ["200", "400", "401", "408", "413", "415", "429", "503"] {
            assert!(
                create["responses"].get(status).is_some(),
                "POST /runs {status}"
            );
        }
        assert_eq!(create["security"], json!([{"bearer": []}]));
        assert_eq!(
            create["responses"]["200"]["links"]["CancelRun"]["operationId"],
            "cancel_run"
        );
        for public in ["/healthz", "/readyz", "/service-info"] {
            let op = &doc["paths"][public]["get"];
            assert!(op.get("security").is_none(), "{public} is public");
            assert!(op["responses"].get("401").is_none(), "{public}");
        }
        let list = &doc["paths"]["/runs"]["get"]["parameters"];
        let size = list
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "page_size"))
            .expect("page_size");
        assert_eq!(size["in"], "query");
        assert_eq!(
            (&size["schema"]["minimum"], &size["schema"]["maximum"]),
            (&json!(1), &json!(1000))
        );
        let req = &doc["components"]["schemas"]["RunRequest"];
        assert_eq!(req["additionalProperties"], json!(false));
        assert_eq!(req["properties"]["workflow_type"]["minLength"], 1);
        // Every operation id a link names exists.
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        for name in ["get_run", "get_status", "get_logs", "cancel_run"] {
            assert!(ids.contains(&name), "{name} in {ids:?}");
        }
    }
}
