//! The OpenAPI document served at `/openapi.json`, generated from the handlers and types.

use utoipa::OpenApi;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Metis API",
        description = "A GA4GH-WES-style workflow execution service."
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
        common::State,
        common::RunLog,
        common::LogLine,
        common::LogStream,
        crate::error::ErrorBody
    ))
)]
struct ApiDoc;

/// The document.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
