//! Liveness, readiness and metrics.

use crate::problem::PROBLEM_JSON;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use prometheus_client::encoding::text::encode;
use serde_json::json;
use std::time::Duration;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz))
        .service(web::resource("/readyz").get(readyz))
        .service(web::resource("/metrics").get(metrics));
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    operation_id = "healthz",
    summary = "Liveness",
    responses((status = 200, description = "The process runs", body = crate::openapi::HealthResponse)),
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the database and the window store answer; 503 naming what does not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 when the database and the window store answer within 2 s (`degraded` \
                   while the window store is rebuilt from the database after losing its data); \
                   503 naming the one that does not.",
    responses(
        (status = 200, description = "Both answer", body = crate::openapi::ReadyResponse),
        (status = 503, description = "One of them does not answer: a problem document with the checks",
            body = crate::openapi::NotReadyProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    ),
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let limit = Duration::from_secs(2);
    let db = matches!(
        tokio::time::timeout(limit, state.storage.ping()).await,
        Ok(Ok(()))
    );
    let windows = matches!(
        tokio::time::timeout(limit, state.windows.ping()).await,
        Ok(Ok(()))
    );
    // Answering but emptied (Redis lost its data): ingestion goes on and a
    // refill is seconds away, so this is degraded, not unready.
    let filled = windows
        && matches!(
            tokio::time::timeout(limit, state.windows.is_filled()).await,
            Ok(Ok(true))
        );
    let checks = json!({
        "database": {"backend": state.storage.backend(), "ok": db},
        "window_store": {"backend": state.windows.backend(), "ok": windows, "filled": filled},
    });
    if db && windows {
        let body = if filled {
            json!({"status": "ready", "checks": checks})
        } else {
            json!({
                "status": "degraded",
                "detail": "the window store lost its data and is being rebuilt from the database; \
                           counts and de-duplication may lag until then",
                "checks": checks,
            })
        };
        return HttpResponse::Ok().json(body);
    }
    let down: Vec<&str> = [(db, "database"), (windows, "window store")]
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| *name)
        .collect();
    // A problem document with the checks as an extension member.
    HttpResponse::ServiceUnavailable()
        .content_type(PROBLEM_JSON)
        .insert_header(("Retry-After", "5"))
        .json(json!({
            "type": "urn:downwatch:problem:not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": format!("not answering: {}", down.join(", ")),
            "checks": checks,
        }))
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    operation_id = "metrics",
    summary = "Metrics",
    description = "Prometheus/OpenMetrics text: requests by route and status, reports received, \
                   counted and rejected by reason, ingest queue depth and flush latency, detector \
                   tick duration, open incidents.",
    responses(
        (status = 200, description = "The metrics, in the OpenMetrics text format",
            body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .ingest_queue_depth
        .set(state.ingest.queue_depth() as i64);
    let mut out = String::new();
    if encode(&mut out, &state.metrics.registry).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(out)
}
