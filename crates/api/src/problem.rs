//! Errors as `application/problem+json` (RFC 9457). Clients see a type,
//! title, status and a detail written for them; causes are logged, never sent.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use downwatch_core::FieldError;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Fields of a well-formed body or query that do not hold valid values.
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    /// A query parameter or the body itself could not be read.
    #[error("bad request")]
    BadRequest(Vec<FieldError>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Storage cannot take or serve the request now; the client may retry.
    #[error("unavailable: {detail}")]
    Unavailable {
        detail: &'static str,
        retry_after_secs: u64,
    },
    /// A bug or an unexpected failure: logged with its cause, sent as a bare 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_param(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest(vec![FieldError::new(field, message)])
    }
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

impl From<downwatch_store::StoreError> for ApiError {
    fn from(e: downwatch_store::StoreError) -> Self {
        match e {
            downwatch_store::StoreError::Conflict(m) => ApiError::Conflict(m),
            downwatch_store::StoreError::Database(_) => {
                tracing::error!(error = ?e, "database request failed");
                ApiError::Unavailable {
                    detail: "the database is not answering; try again shortly",
                    retry_after_secs: 5,
                }
            }
            other => ApiError::internal(other),
        }
    }
}

#[derive(Serialize)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub title: &'a str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<&'a [FieldError]>,
}

impl Problem<'_> {
    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        HttpResponse::build(status)
            .content_type(PROBLEM_JSON)
            .body(body)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (kind, title, detail, errors): (&str, &str, String, Option<&[FieldError]>) = match self
        {
            ApiError::Validation(errs) => (
                "urn:downwatch:problem:validation",
                "Invalid request",
                describe(errs),
                Some(errs),
            ),
            ApiError::BadRequest(errs) => (
                "urn:downwatch:problem:bad-request",
                "Bad request",
                describe(errs),
                Some(errs),
            ),
            ApiError::NotFound(what) => (
                "urn:downwatch:problem:not-found",
                "Not found",
                what.clone(),
                None,
            ),
            ApiError::Conflict(what) => (
                "urn:downwatch:problem:conflict",
                "Conflict",
                what.clone(),
                None,
            ),
            ApiError::PayloadTooLarge { limit } => (
                "urn:downwatch:problem:payload-too-large",
                "Payload too large",
                format!("the request body must be at most {limit} bytes"),
                None,
            ),
            ApiError::UnsupportedMediaType => (
                "urn:downwatch:problem:unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json".into(),
                None,
            ),
            ApiError::RateLimited { retry_after_secs } => (
                "urn:downwatch:problem:rate-limited",
                "Too many requests",
                format!("too many reports from this address; retry in {retry_after_secs} s"),
                None,
            ),
            ApiError::Unauthorized => (
                "urn:downwatch:problem:unauthorized",
                "Unauthorized",
                "this endpoint needs Authorization: Bearer <admin token>".into(),
                None,
            ),
            ApiError::Forbidden(why) => (
                "urn:downwatch:problem:forbidden",
                "Forbidden",
                (*why).into(),
                None,
            ),
            ApiError::Unavailable { detail, .. } => (
                "urn:downwatch:problem:unavailable",
                "Service unavailable",
                (*detail).into(),
                None,
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    "urn:downwatch:problem:internal",
                    "Internal server error",
                    "something went wrong on our side; it has been logged".into(),
                    None,
                )
            }
        };
        let mut resp = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors,
        }
        .response();
        let retry = match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn describe(errs: &[FieldError]) -> String {
    errs.iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rewrites error responses that actix itself produced (unknown route, wrong
/// method, an extractor's refusal) as problem+json, so every error has one shape.
pub fn problem_for_framework_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    // Problems, and the dashboard's own HTML error pages, are kept as they are.
    let is_problem = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()) || v.as_bytes().starts_with(b"text/html")
    });
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (title, detail) = match status {
        StatusCode::NOT_FOUND => ("Not found", "no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Method not allowed",
            "this resource does not take that method".to_owned(),
        ),
        s => (
            s.canonical_reason().unwrap_or("Error"),
            if s.is_server_error() {
                "something went wrong on our side; it has been logged".to_owned()
            } else {
                "the request could not be processed".to_owned()
            },
        ),
    };
    let problem = Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
        errors: None,
    }
    .response();
    let (req, old) = res.into_parts();
    let mut new = problem;
    // Keep headers such as Allow on a 405.
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(req, new).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
