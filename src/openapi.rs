//! The OpenAPI 3.1 description of the API, generated from the handlers'
//! `#[utoipa::path]` annotations and the request/response types' `ToSchema`
//! derives. `routes::ROUTES` and this list must name the same routes; a test
//! checks it against the running server.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    auth, console, consumers, dead, docs, health, jobs, lanes, metrics, outcomes, queues, schedules,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orderly",
        description = "A self-hosted, strictly ordered job queue. Jobs published to a queue \
            are delivered one at a time per ordering lane (`key`), in `seq` order, by push \
            to your HTTP endpoint or to your own workers through claim/ack.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        metrics::scrape,
        health::healthz,
        health::readyz,
        docs::openapi_json,
        docs::page,
        docs::asset,
        console::page,
        console::asset,
        auth::register,
        auth::login,
        auth::me,
        auth::create_key,
        auth::list_keys,
        auth::delete_key,
        queues::list,
        queues::put,
        queues::get,
        queues::delete,
        queues::pause,
        queues::resume,
        jobs::publish,
        jobs::list,
        jobs::publish_batch,
        consumers::claim,
        outcomes::outcomes,
        lanes::list,
        lanes::get,
        lanes::pause,
        lanes::resume,
        dead::list,
        dead::redrive,
        schedules::list,
        schedules::put,
        schedules::get,
        schedules::delete,
        jobs::get,
        jobs::cancel,
        consumers::ack,
        consumers::nack,
        consumers::extend,
        dead::retry,
        dead::skip,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and bearer tokens"),
        (name = "queues", description = "Queue definitions, pause/resume and progress"),
        (name = "jobs", description = "Publishing, reading, listing and cancelling jobs"),
        (name = "consumers", description = "Pull delivery: claim, then ack / nack / extend under a fenced lease"),
        (name = "lanes", description = "Lanes with unfinished jobs, stuck first; pause and resume one lane"),
        (name = "dead letters", description = "Dead and blocked jobs: list, redrive, retry, skip"),
        (name = "schedules", description = "Cron schedules: a job published to the queue at every tick, exactly once across processes"),
        (name = "operations", description = "Health, readiness, metrics, this documentation and the operators' console"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the authenticated operations name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The `access_token` from `POST /v1/auth/login`, or an API key \
                         (`ok_…`, from `POST /v1/auth/keys`) on queue and job routes \
                         within its scopes",
                    ))
                    .build(),
            ),
        );
    }
}

/// The served document, as JSON.
pub fn spec_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let json = doc
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    camel_case_links(&json)
}

/// utoipa 5.5 writes Link objects' fields in snake case (`"operation_id"`,
/// `"request_body"`); OpenAPI spells them `operationId`, `requestBody`. No
/// other key of the document has these names, and inside strings a quote
/// is escaped, so the keys are renamed in the text (keeping its order).
fn camel_case_links(json: &str) -> String {
    json.replace("\"operation_id\": ", "\"operationId\": ")
        .replace("\"operation_ref\": ", "\"operationRef\": ")
        .replace("\"request_body\": ", "\"requestBody\": ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::ROUTES;

    fn spec() -> serde_json::Value {
        serde_json::from_str(&spec_json()).expect("the spec is JSON")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_package_version() {
        let spec = spec();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            spec["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn the_document_describes_exactly_the_registered_routes() {
        let spec = spec();
        let described: BTreeSet<(String, String)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let registered: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(described, registered);
    }

    #[test]
    fn error_codes_are_a_closed_enum_in_the_document() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        assert_eq!(
            schemas["ErrorDetail"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
        let listed: BTreeSet<&str> = schemas["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode is an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for code in [
            "validation_failed",
            "insufficient_scope",
            "lease_lost",
            "not_a_pull_queue",
            "unavailable",
        ] {
            assert!(listed.contains(code), "{code} missing from {listed:?}");
        }
    }

    #[test]
    fn publish_and_claim_link_to_the_job_routes() {
        let spec = spec();
        let publish = &spec["paths"]["/v1/queues/{queue}/jobs"]["post"]["responses"]["202"];
        assert_eq!(publish["links"]["GetJob"]["operationId"], "get_job");
        assert_eq!(
            publish["links"]["GetJob"]["parameters"]["id"],
            "$response.body#/id"
        );
        let claim = &spec["paths"]["/v1/queues/{queue}/claim"]["post"]["responses"]["200"];
        assert_eq!(claim["links"]["AckJob"]["operationId"], "ack_job");
        assert_eq!(
            claim["links"]["AckJob"]["requestBody"]["lease"],
            "$response.body#/jobs/0/lease"
        );
    }
}
