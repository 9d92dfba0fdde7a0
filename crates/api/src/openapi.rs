//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! `#[utoipa::path]` attributes, and the interactive documentation.
//!
//! `GET /api/openapi.json` serves the document; `GET /api/docs` a Swagger UI
//! page whose assets are compiled into the binary (the
//! `utoipa-swagger-ui-vendored` crate: nothing is downloaded at build or run
//! time).
//!
//! Handlers that build their JSON with `serde_json::json!` are described by
//! the documentation-only types below, which say exactly what they emit:
//! a field that is always present but may be `null` is required and
//! nullable; a field that is left out when empty is optional and not
//! nullable.
//!
//! Adding a route to [`crate::configure`] without documenting it here breaks
//! the `openapi` tests of the behavioural suite.

#![allow(dead_code)] // Documentation-only types are never built.

use crate::problem::ApiError;
use crate::routes::series::STEPS;
use actix_web::{HttpResponse, web};
use std::sync::LazyLock;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Server};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where the interactive documentation is served.
pub const DOCS_PATH: &str = "/api/docs";
/// The security scheme of the admin endpoints.
pub const ADMIN_SCHEME: &str = "admin_token";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(OPENAPI_PATH).get(openapi_json))
        .service(web::resource(DOCS_PATH).get(docs))
        // The vendored Swagger UI assets under /api/docs/ (its own index
        // page too, pointed at the same document).
        .service(SwaggerUi::new("/api/docs/{_:.*}").config(Config::new([OPENAPI_PATH])));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Downwatch API",
        description = "Crowdsourced outage reports: people report problems with online services; \
Downwatch counts the reports per minute, learns what is normal for each service and country, \
and opens an incident when reports rise abnormally.\n\n\
Timestamps are RFC 3339 in UTC (`2022-10-25T07:00:00Z`); durations are seconds. \
Every error is `application/problem+json` (RFC 9457) with `type`, `title`, `status` and `detail`, \
and for invalid input `errors: [{\"field\", \"message\"}]` naming each field. \
A method a resource does not take is answered 405 and an unknown path 404, both as problem documents.\n\n\
Admin endpoints take `Authorization: Bearer <token>` (the `DOWNWATCH_ADMIN_TOKEN` setting): \
401 without a token, 403 with a wrong one, and 403 when no token is configured.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::routes::health::metrics,
        openapi_json,
        docs,
        crate::routes::services::list,
        crate::routes::services::create,
        crate::routes::services::get_one,
        crate::routes::services::update,
        crate::routes::reports::submit,
        crate::routes::status::status,
        crate::routes::series::series,
        crate::routes::status::breakdown,
        crate::routes::chart::chart,
        crate::routes::incidents::list,
        crate::routes::incidents::one,
        crate::routes::feeds::atom,
        crate::routes::feeds::all,
        crate::routes::stream::stream,
        crate::routes::webhooks::create,
        crate::routes::webhooks::list,
        crate::routes::webhooks::one,
        crate::routes::webhooks::update,
        crate::routes::webhooks::remove,
    ),
    components(
        schemas(Problem, FieldError, Country, Scope, StreamStatusEvent, StreamIncidentEvent, StreamCountsEvent),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            RateLimited,
            Unavailable,
            InternalError,
        ),
    ),
    modifiers(&AdminSecurity),
    tags(
        (name = "system", description = "Liveness, readiness, metrics and this documentation"),
        (name = "services", description = "The service catalogue; creating and changing services is for admins"),
        (name = "reports", description = "Reporting a problem with a service"),
        (name = "status", description = "What is down now, and a service's reports over time"),
        (name = "incidents", description = "Incident history: JSON, CSV and Atom"),
        (name = "stream", description = "Live events (Server-Sent Events)"),
        (name = "webhooks", description = "Incident events POSTed to subscribers' URLs, signed; for admins"),
    ),
)]
pub struct ApiDoc;

/// Adds the admin bearer scheme (the operations name it in their `security`).
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`DOWNWATCH_ADMIN_TOKEN`), compared in constant time. \
                         Without a token: 401; a wrong one, or none configured: 403.",
                    ))
                    .build(),
            ),
        );
        // Relative to the host that served the document.
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

/// The document, serialised once.
static DOCUMENT: LazyLock<Option<String>> = LazyLock::new(|| ApiDoc::openapi().to_json().ok());

/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document (this one)",
            content_type = "application/json", body = Object),
        (status = 500, response = InternalError),
    ),
)]
async fn openapi_json() -> Result<HttpResponse, ApiError> {
    let doc = DOCUMENT.as_deref().ok_or_else(|| {
        ApiError::internal(std::io::Error::other(
            "the OpenAPI document could not be serialised",
        ))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.to_owned()))
}

/// The Swagger UI page: assets from `/api/docs/`, the document from
/// `/api/openapi.json` (also named as the page's `service-desc` link).
const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Downwatch API</title>
<link rel="service-desc" type="application/openapi+json" href="/api/openapi.json">
<link rel="stylesheet" type="text/css" href="/api/docs/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="/api/docs/index.css">
<link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/api/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
<noscript><p>This page needs JavaScript. The OpenAPI document it shows is
<a href="/api/openapi.json">/api/openapi.json</a>.</p></noscript>
<div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="/api/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script src="/api/docs/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"#;

/// Interactive documentation (Swagger UI) of `/api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "system",
    operation_id = "docs",
    responses(
        (status = 200, description = "The Swagger UI page; its scripts and styles are under `/api/docs/`",
            content_type = "text/html", body = String),
    ),
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS_HTML)
}

// ---------------------------------------------------------------- shared

/// A service's level: `ok`, `warning` (reports above normal, no incident),
/// or `outage` (an incident is open).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Outage,
}

/// An assigned ISO 3166-1 alpha-2 code, upper case (an enum, so a
/// well-formed but unassigned code such as `AA` is outside the document
/// as it is outside the API).
pub struct Country;

/// A string enum of the assigned country codes, after `extra` if any.
fn country_codes(extra: Option<&'static str>, description: &str) -> RefOr<Schema> {
    let codes: Vec<&str> = extra
        .into_iter()
        .chain(downwatch_core::CountryCode::all())
        .collect();
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(codes))
        .description(Some(description))
        .into()
}

impl PartialSchema for Country {
    fn schema() -> RefOr<Schema> {
        country_codes(None, "An assigned ISO 3166-1 alpha-2 code, upper case.")
    }
}

impl ToSchema for Country {}

/// An incident's scope: `global`, or an assigned country code.
pub struct Scope;

impl PartialSchema for Scope {
    fn schema() -> RefOr<Schema> {
        country_codes(
            Some("global"),
            "`global`, or an assigned ISO 3166-1 alpha-2 code.",
        )
    }
}

impl ToSchema for Scope {}

/// A series step in seconds.
pub struct Step;

impl PartialSchema for Step {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .enum_values(Some(STEPS))
            .description(Some(
                "Bucket width in seconds: 60, 300, 900, 3600 or 86400.",
            ))
            .into()
    }
}

impl ToSchema for Step {}

/// Incidents by state.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

/// Representation of the incident list.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    Csv,
    Json,
}

// -------------------------------------------------------------- problems

/// An error (RFC 9457 problem details), served as `application/problem+json`.
#[derive(ToSchema)]
#[schema(example = json!({
    "type": "urn:downwatch:problem:validation",
    "title": "Invalid request",
    "status": 422,
    "detail": "country: must be an upper-case ISO 3166-1 alpha-2 code such as \"FR\"",
    "errors": [{"field": "country", "message": "must be an upper-case ISO 3166-1 alpha-2 code such as \"FR\""}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:downwatch:problem:not-found`
    /// (`about:blank` for errors of the HTTP layer itself, such as 405).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, written for the client.
    pub detail: String,
    /// For a request that could not be read (400) or holds invalid values
    /// (422): one entry per field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// One field of the request at fault.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// The field: a body member, a query or path parameter, or `body`.
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

/// `/readyz` when something does not answer: a problem document with the
/// checks as an extension member.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotReadyProblem {
    /// `urn:downwatch:problem:not-ready`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// 503.
    pub status: u16,
    /// Names what does not answer, e.g. `not answering: database`.
    pub detail: String,
    pub checks: ReadinessChecks,
}

/// The query string, a path parameter or the body could not be read
/// (malformed JSON, not an object, a bad parameter); `errors` names the field.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:bad-request", "title": "Bad request", "status": 400,
        "detail": "step: must be one of 60, 300, 900, 3600, 86400",
        "errors": [{"field": "step", "message": "must be one of 60, 300, 900, 3600, 86400"}]})
)]
pub struct BadRequest(Problem);

/// No `Authorization: Bearer` token was sent.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`")),
    example = json!({"type": "urn:downwatch:problem:unauthorized", "title": "Unauthorized", "status": 401,
        "detail": "this endpoint needs Authorization: Bearer <admin token>"})
)]
pub struct Unauthorized(Problem);

/// The token is wrong, or no admin token is configured (admin is then off).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:forbidden", "title": "Forbidden", "status": 403,
        "detail": "the admin token is not valid"})
)]
pub struct Forbidden(Problem);

/// No such service or incident.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:not-found", "title": "Not found", "status": 404,
        "detail": "no service \"nope\""})
)]
pub struct NotFound(Problem);

/// A service with this slug exists.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:conflict", "title": "Conflict", "status": 409,
        "detail": "service acme-cloud exists"})
)]
pub struct Conflict(Problem);

/// The body is over 4 KiB.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:payload-too-large", "title": "Payload too large",
        "status": 413, "detail": "the request body must be at most 4096 bytes"})
)]
pub struct PayloadTooLarge(Problem);

/// The body is not `application/json` (nor another `application/*+json`).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:unsupported-media-type",
        "title": "Unsupported media type", "status": 415, "detail": "send the body as application/json"})
)]
pub struct UnsupportedMediaType(Problem);

/// The body is well-formed but holds invalid values, is missing a required
/// field or has an unknown one; `errors` names every field at fault.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:validation", "title": "Invalid request", "status": 422,
        "detail": "contry: is not a known field",
        "errors": [{"field": "contry", "message": "is not a known field"}]})
)]
pub struct ValidationFailed(Problem);

/// This client (by IP address) is over its rate limit.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    example = json!({"type": "urn:downwatch:problem:rate-limited", "title": "Too many requests",
        "status": 429, "detail": "too many reports from this address; retry in 12 s"})
)]
pub struct RateLimited(Problem);

/// Storage cannot serve or take the request now (database not answering,
/// ingest queue full, shutting down); nothing was stored. Retry later.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    example = json!({"type": "urn:downwatch:problem:unavailable", "title": "Service unavailable",
        "status": 503, "detail": "the database is not answering; try again shortly"})
)]
pub struct Unavailable(Problem);

/// An unexpected failure, logged on the server; no details are sent.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:downwatch:problem:internal", "title": "Internal server error",
        "status": 500, "detail": "something went wrong on our side; it has been logged"})
)]
pub struct InternalError(Problem);

// ---------------------------------------------------------------- system

/// `/healthz`: the process runs.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthResponse {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `/readyz`: the database and the window store answer.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyResponse {
    /// `ready`, or `degraded` while the window store is being rebuilt from
    /// the database after it lost its data (reports are taken meanwhile).
    #[schema(example = "ready", pattern = "^(ready|degraded)$")]
    pub status: String,
    /// What is degraded, when `status` is `degraded`.
    #[schema(nullable = false)]
    pub detail: Option<String>,
    pub checks: ReadinessChecks,
}

/// What `/readyz` asked.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessChecks {
    pub database: ReadinessCheck,
    pub window_store: ReadinessCheck,
}

/// One backend and whether it answered within 2 s.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessCheck {
    /// e.g. `sqlite`, `postgres`, `memory`, `redis`.
    pub backend: String,
    pub ok: bool,
    /// Window store only: whether it holds what the database says (`false`
    /// after it lost its data, until the refill within seconds).
    #[schema(nullable = false)]
    pub filled: Option<bool>,
}

// -------------------------------------------------------------- services

/// A service of the catalogue with its current status.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The service's identifier in URLs.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", example = "whatsapp")]
    pub slug: String,
    #[schema(example = "WhatsApp")]
    pub name: String,
    #[schema(required = true, example = "messaging")]
    pub category: Option<String>,
    /// Homepage.
    #[schema(required = true, example = "https://www.whatsapp.com")]
    pub url: Option<String>,
    /// The problem kinds a report may name, in the order to show them.
    #[schema(min_items = 1, max_items = 32, example = json!(["app", "messaging", "login"]))]
    pub problems: Vec<String>,
    pub status: ServiceStatus,
}

/// A service's level now; an outage names its open incident (a global one
/// wins over a country's).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    pub level: Level,
    /// The open incident, at `outage` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Int64)]
    pub incident_id: Option<i64>,
}

/// `GET /api/v1/services`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceList {
    /// Sorted by slug.
    pub services: Vec<Service>,
}

/// A new service (admin). Unknown members are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slug": "acme-cloud", "name": "ACME Cloud", "category": "cloud",
    "url": "https://acme.example", "problems": ["console", "api"]}))]
pub struct ServiceCreate {
    /// Its identifier in URLs; cannot be changed later.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub slug: String,
    /// Display name: 1 to 100 characters after trimming, no control characters.
    #[schema(schema_with = name_required)]
    pub name: String,
    /// At most 40 characters; blank or `null` for none.
    #[schema(schema_with = category_text)]
    pub category: Option<String>,
    /// An absolute http(s) URL of at most 300 characters; blank or `null` for none.
    #[schema(schema_with = homepage_url)]
    pub url: Option<String>,
    #[schema(schema_with = new_problem_kinds)]
    pub problems: Option<Vec<String>>,
}

/// Changes to a service (admin): only the members sent change. `slug` cannot
/// be changed; unknown members are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ACME Cloud Platform", "problems": ["console", "api", "billing"]}))]
pub struct ServicePatch {
    /// A new display name (not `null`): 1 to 100 characters after trimming.
    #[schema(schema_with = name_changed)]
    pub name: Option<String>,
    /// A new category; `null` or blank removes it.
    #[schema(schema_with = category_text)]
    pub category: Option<String>,
    /// A new homepage; `null` or blank removes it.
    #[schema(schema_with = homepage_url)]
    pub url: Option<String>,
    #[schema(schema_with = changed_problem_kinds)]
    pub problems: Option<Vec<String>>,
}

// Text the server trims before checking: the patterns allow the whitespace
// `str::trim` removes around the content and bound the content itself, so
// the document and the server accept the same strings (schemathesis checks
// both directions). `\s` is not used: Python's also matches \x1c-\x1f, which
// `trim` keeps.

/// What `str::trim` removes (Unicode White_Space).
const WS: &str = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Neither white space nor a control character.
const SOLID: &str = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f]";
/// Not a control character.
const PRINTABLE: &str = r"[^\x00-\x1f\x7f-\x9f]";

/// Text of 1 to `max` characters once trimmed (`optional`: or blank), no
/// control characters, white space around it allowed.
fn trimmed_text(max: usize, optional: bool, nullable: bool, description: &str) -> Schema {
    let core = format!("{SOLID}(?:{PRINTABLE}{{0,{}}}{SOLID})?", max - 2);
    let core = if optional {
        format!("(?:{core})?")
    } else {
        core
    };
    let types: &[Type] = if nullable {
        &[Type::String, Type::Null]
    } else {
        &[Type::String]
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter(types.iter().cloned()))
        .pattern(Some(format!("^{WS}*{core}{WS}*$")))
        .description(Some(description))
        .into()
}

fn name_required() -> Schema {
    trimmed_text(
        100,
        false,
        false,
        "Display name: 1 to 100 characters after trimming, no control characters.",
    )
}

fn name_changed() -> Schema {
    trimmed_text(
        100,
        false,
        false,
        "A new display name (not `null`): 1 to 100 characters after trimming.",
    )
}

fn category_text() -> Schema {
    trimmed_text(
        40,
        true,
        true,
        "At most 40 characters after trimming; blank or `null` for none (in a change: removes it).",
    )
}

fn city_text() -> Schema {
    trimmed_text(
        80,
        true,
        true,
        "Free text, at most 80 characters after trimming, no control characters; blank is the same as absent.",
    )
}

/// An absolute http(s) URL of at most 300 characters once trimmed, or blank.
fn homepage_url() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(format!(
            "^{WS}*(?:http://{SOLID}{{1,293}}|https://{SOLID}{{1,292}})?{WS}*$"
        )))
        .description(Some(
            "An absolute http(s) URL of at most 300 characters (no white space inside); blank or `null` for none (in a change: removes it).",
        ))
        .into()
}

/// A list of 1 to 32 distinct problem kinds, or `null`.
fn problem_kinds(description: &str) -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z][a-z0-9-]{0,31}$")),
        )
        .min_items(Some(1))
        .max_items(Some(32))
        .unique_items(true)
        .description(Some(description))
        .examples([serde_json::json!(["console", "api", "login"])])
        .into()
}

fn new_problem_kinds() -> Schema {
    problem_kinds(
        "The problem kinds reports may name, in the order to show them: 1 to 32 distinct \
         `^[a-z][a-z0-9-]{0,31}$`. Absent or `null`: app, website, login, connection, \
         messaging, other.",
    )
}

fn changed_problem_kinds() -> Schema {
    problem_kinds(
        "A new list of 1 to 32 distinct problem kinds, in the order to show them; `null` \
         leaves the list as it is.",
    )
}

// --------------------------------------------------------------- reports

/// A report. Unknown members are refused (422).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"problem": "login", "country": "FR", "city": "Paris"}))]
pub struct ReportRequest {
    /// One of the service's problem kinds.
    #[schema(pattern = "^[a-z][a-z0-9-]{0,31}$")]
    pub problem: String,
    /// An assigned upper-case ISO 3166-1 alpha-2 code. When absent, the
    /// server may take it from a configured proxy header.
    #[schema(value_type = Option<Country>)]
    pub country: Option<String>,
    /// Free text, at most 80 characters after trimming, no control
    /// characters; blank is the same as absent.
    #[schema(schema_with = city_text)]
    pub city: Option<String>,
    /// An opaque id the page generates once (at most 64 characters, no control
    /// characters), so one person's reports count once per window.
    #[schema(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub client_id: Option<String>,
}

/// A stored report. `counted` is false for a repeat from the same client
/// within the deduplication window: stored, but not counted.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": 1234, "service": "whatsapp", "problem": "login", "country": "FR",
    "city": "Paris", "counted": true, "received_at": "2022-10-25T07:00:01.234Z"}))]
pub struct ReportResponse {
    #[schema(format = Int64)]
    pub id: i64,
    /// The service's slug.
    pub service: String,
    pub problem: String,
    /// The report's country (sent, or from the proxy header); absent if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// Trimmed; absent if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub city: Option<String>,
    pub counted: bool,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    pub received_at: String,
}

// ---------------------------------------------------------------- status

/// `GET /api/v1/status`: the services at `warning` or `outage`, most severe
/// first, then by ratio to normal.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusResponse {
    #[schema(format = DateTime)]
    pub generated_at: String,
    /// The country asked for; `null` for the global view.
    #[schema(required = true, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    pub services: Vec<StatusEntry>,
}

/// A service that is not `ok`, with its last 15 minutes.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusEntry {
    pub slug: String,
    pub name: String,
    pub level: Level,
    /// Counted reports in the last 15 minutes (the current one included).
    #[schema(format = Int64)]
    pub reports_15m: i64,
    /// Expected reports over those 15 minutes; `null` until the detector
    /// has learnt the scope.
    #[schema(required = true)]
    pub baseline_15m: Option<f64>,
    /// Reports over baseline, one decimal; `null` with the baseline.
    #[schema(required = true)]
    pub ratio: Option<f64>,
    /// The open incident, at `outage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Int64)]
    pub incident_id: Option<i64>,
}

/// Counted reports of a service per bucket.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesResponse {
    /// The service's slug.
    pub service: String,
    /// The country asked for; `null` for all reports.
    #[schema(required = true, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// Start of the first bucket (aligned to `step`).
    #[schema(format = DateTime)]
    pub from: String,
    /// End of the last bucket (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    #[schema(inline)]
    pub step: Step,
    /// One per bucket, oldest first, empty buckets included.
    pub points: Vec<Point>,
}

/// One bucket.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Bucket start.
    #[schema(format = DateTime)]
    pub t: String,
    /// Counted reports in the bucket.
    #[schema(format = Int64)]
    pub reports: i64,
    /// Expected reports in the bucket as the detector learnt them; `null`
    /// until the detector has seen the scope.
    #[schema(required = true)]
    pub baseline: Option<f64>,
    /// The count at which the detector would open an incident; `null` with
    /// the baseline.
    #[schema(required = true)]
    pub threshold: Option<f64>,
}

/// Counted reports of a service by problem and by place, largest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    pub service: String,
    /// The country asked for; `null` for all reports.
    #[schema(required = true, pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// Counted reports in the range.
    #[schema(format = Int64)]
    pub total: i64,
    pub problems: Vec<ProblemCount>,
    /// At most 50 places; reports without a country are not listed.
    pub locations: Vec<LocationCount>,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProblemCount {
    pub problem: String,
    #[schema(format = Int64)]
    pub reports: i64,
    /// Of `total`, three decimals.
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationCount {
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// `null` for the reports of that country that named no city.
    #[schema(required = true)]
    pub city: Option<String>,
    #[schema(format = Int64)]
    pub reports: i64,
    /// Of `total`, three decimals.
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
}

// ------------------------------------------------------------- incidents

/// An incident: an abnormal rise of reports for a service, globally or in
/// one country.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    #[schema(format = Int64)]
    pub id: i64,
    /// The service's slug.
    pub service: String,
    /// `global`, or the country code of a country's incident.
    #[schema(pattern = "^(global|[A-Z]{2})$")]
    pub scope: String,
    pub status: IncidentStatus,
    /// The most severe level reached.
    pub level_max: Level,
    /// The first bucket of the abnormal rise (earlier than `detected_at`).
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub detected_at: String,
    #[schema(format = DateTime)]
    pub peak_at: String,
    pub peak_reports_per_min: f64,
    pub baseline_per_min_at_peak: f64,
    /// `null` while open.
    #[schema(required = true, format = DateTime)]
    pub ended_at: Option<String>,
    /// Seconds from start to end (or to now while open).
    #[schema(format = Int64)]
    pub duration_s: i64,
    #[schema(format = Int64)]
    pub total_reports: i64,
    /// At most 5, largest first.
    pub top_problems: Vec<ProblemShare>,
    /// At most 5, largest first.
    pub top_locations: Vec<LocationShare>,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProblemShare {
    pub problem: String,
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationShare {
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    #[schema(required = true)]
    pub city: Option<String>,
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
}

/// A page of incidents, newest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentList {
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One incident and its reports from an hour before it started to an hour
/// after it ended (or now).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentDetail {
    pub incident: Incident,
    pub series: IncidentSeries,
}

/// The incident's scope, at 60 s steps (coarser for a long incident, so at
/// most 10,000 points).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentSeries {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    #[schema(inline)]
    pub step: Step,
    pub points: Vec<Point>,
}

// ---------------------------------------------------------------- stream

/// The event stream's `status` event data: a scope of a service changed level.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamStatusEvent {
    /// `status`.
    #[serde(rename = "type")]
    pub kind: String,
    pub service: String,
    #[schema(pattern = "^(global|[A-Z]{2})$")]
    pub scope: String,
    pub level: Level,
    pub previous_level: Level,
    #[schema(format = DateTime)]
    pub at: String,
}

/// The event stream's `incident` event data: an incident opened, was
/// updated (new peak), resolved or reopened.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamIncidentEvent {
    /// `incident`.
    #[serde(rename = "type")]
    pub kind: String,
    pub transition: Transition,
    pub incident: StreamIncident,
}

/// What happened to an incident: opened, a new peak (`updated`), resolved,
/// or reopened within the grace period after resolving.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Opened,
    Updated,
    Resolved,
    Reopened,
}

/// An incident as the event stream carries it: without `top_problems` and
/// `top_locations`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamIncident {
    #[schema(format = Int64)]
    pub id: i64,
    pub service: String,
    #[schema(pattern = "^(global|[A-Z]{2})$")]
    pub scope: String,
    pub status: IncidentStatus,
    pub level_max: Level,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub detected_at: String,
    #[schema(format = DateTime)]
    pub peak_at: String,
    pub peak_reports_per_min: f64,
    pub baseline_per_min_at_peak: f64,
    #[schema(required = true, format = DateTime)]
    pub ended_at: Option<String>,
    #[schema(format = Int64)]
    pub duration_s: i64,
    #[schema(format = Int64)]
    pub total_reports: i64,
}

/// The event stream's `counts` event data: each minute, the services that
/// had reports.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamCountsEvent {
    /// `counts`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub minute: String,
    pub services: Vec<StreamServiceCount>,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamServiceCount {
    pub service: String,
    pub reports: u32,
    pub baseline: f64,
    pub level: Level,
}
