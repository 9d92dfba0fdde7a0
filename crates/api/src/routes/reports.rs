//! Report submission: the one write that anonymous people make, in bursts.
//!
//! The steps, each of which may refuse the report with a counted reason:
//! rate limit → service → media type and size → fields → client hash →
//! queue → commit. Only a committed report is answered 201.

use crate::body::{Fields, read_object};
use crate::problem::ApiError;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use downwatch_core::{City, CountryCode, ProblemKind, Service};
use downwatch_ingest::{CommitError, Submission, SubmitError};
use serde::Serialize;
use std::sync::Arc;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/services/{slug}/reports").post(submit));
}

/// The longest `client_id` kept, in characters: an opaque id a page generates once.
const MAX_CLIENT_ID: usize = 64;

#[derive(Serialize)]
struct Created<'a> {
    id: i64,
    service: &'a str,
    problem: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<CountryCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    counted: bool,
    received_at: String,
}

/// `POST /api/v1/services/{slug}/reports`.
#[utoipa::path(
    post,
    path = "/api/v1/services/{slug}/reports",
    tag = "reports",
    operation_id = "submitReport",
    summary = "Report a problem",
    description = "Reports a problem with a service. A 201 means the report is in the database; \
                   when it cannot be stored now the answer is 503, never 201. Each client (by IP \
                   address) is rate-limited. The body must be JSON of at most 4 KiB.",
    params(("slug" = String, Path, description = "The service's slug")),
    request_body(content = crate::openapi::ReportRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = crate::openapi::ReportResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::RateLimited),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let stored = ingest(&state, &req, &slug, ReportBody::Json(payload)).await?;
    Ok(HttpResponse::Created().json(Created {
        id: stored.id,
        service: stored.service.slug.as_str(),
        problem: stored.problem.as_str(),
        country: stored.country,
        city: stored.city.as_ref().map(City::as_str),
        counted: stored.counted,
        received_at: stored
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

/// The body of a report: the API's JSON, or the fields of a page's form.
pub enum ReportBody {
    Json(web::Payload),
    Fields(Fields),
}

/// A report in the database.
pub struct Stored {
    pub id: i64,
    pub service: Arc<Service>,
    pub problem: ProblemKind,
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    pub counted: bool,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// The path of every report, from the API or from a page: counted as
/// received, then each step may refuse it with a counted reason.
pub async fn ingest(
    state: &AppState,
    req: &HttpRequest,
    slug: &str,
    body: ReportBody,
) -> Result<Stored, ApiError> {
    state.metrics.reports_received.inc();
    let result = accept(state, req, slug, body).await;
    if let Err(e) = &result {
        state.metrics.rejected(reason(e));
    }
    result
}

async fn accept(
    state: &AppState,
    req: &HttpRequest,
    slug: &str,
    body: ReportBody,
) -> Result<Stored, ApiError> {
    let ip = state.client_ip(req);
    state
        .limiter
        .check(ip)
        .map_err(|wait| ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        })?;
    let service = state.service(slug).await?;

    let mut f = match body {
        ReportBody::Json(payload) => read_object(req, payload).await?,
        ReportBody::Fields(f) => f,
    };
    let problem = f.required_string("problem").and_then(|p| {
        if let Some(kind) = service.problems.iter().find(|k| k.as_str() == p) {
            Some(kind.clone())
        } else {
            let known: Vec<&str> = service.problems.iter().map(|k| k.as_str()).collect();
            f.error(
                "problem",
                format!(
                    "{p:?} is not a problem kind of {}; one of: {}",
                    service.slug,
                    known.join(", ")
                ),
            );
            None
        }
    });
    let country = f.string("country").and_then(|c| {
        CountryCode::parse(&c)
            .map_err(|e| f.error("country", e))
            .ok()
    });
    let city = f
        .string("city")
        .and_then(|c| City::parse(&c).map_err(|e| f.error("city", e)).ok())
        .flatten();
    let client_id = f.string("client_id").filter(|id| {
        let ok = id.chars().count() <= MAX_CLIENT_ID && !id.chars().any(char::is_control);
        if !ok {
            f.error(
                "client_id",
                format!("at most {MAX_CLIENT_ID} characters without control characters"),
            );
        }
        ok
    });
    f.finish()?;
    let Some(problem) = problem else {
        return Err(ApiError::internal(std::io::Error::other(
            "validated problem missing",
        )));
    };
    let country = country.or_else(|| state.header_country(req));

    let received_at = state.now();
    let client = state
        .hasher
        .identify(ip, client_id.as_deref(), received_at)
        .await?;
    let pending = state
        .ingest
        .submit(Submission {
            service_id: service.id,
            problem: problem.clone(),
            country,
            city: city.clone(),
            client,
            received_at,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull => queue_full(),
            SubmitError::Closed => ApiError::Unavailable {
                detail: "the server is shutting down",
                retry_after_secs: 5,
            },
        })?;
    let not_stored = ApiError::Unavailable {
        detail: "the report could not be stored now; try again shortly",
        retry_after_secs: 5,
    };
    let accepted = match tokio::time::timeout(state.config.commit_timeout, pending).await {
        Ok(Ok(Ok(a))) => a,
        Ok(Ok(Err(CommitError::Shed))) => return Err(queue_full()),
        Ok(Ok(Err(CommitError::Unavailable))) | Ok(Err(_)) | Err(_) => return Err(not_stored),
    };
    Ok(Stored {
        id: accepted.id,
        service,
        problem,
        country,
        city,
        counted: accepted.counted,
        received_at,
    })
}

fn queue_full() -> ApiError {
    ApiError::Unavailable {
        detail: "too many reports are waiting to be stored; try again in a moment",
        retry_after_secs: 2,
    }
}

/// The label a refused report is counted under in `downwatch_reports_rejected`.
fn reason(e: &ApiError) -> &'static str {
    match e {
        ApiError::RateLimited { .. } => "rate_limited",
        ApiError::NotFound(_) => "unknown_service",
        ApiError::UnsupportedMediaType => "media_type",
        ApiError::PayloadTooLarge { .. } => "too_large",
        ApiError::BadRequest(_) => "malformed",
        ApiError::Validation(_) => "invalid",
        ApiError::Unavailable { .. } => "unavailable",
        _ => "other",
    }
}
