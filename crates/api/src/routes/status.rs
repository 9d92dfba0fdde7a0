//! `GET /api/v1/status`: what is down now, and `GET .../breakdown`: which
//! problems and places the reports name.

use crate::problem::ApiError;
use crate::routes::incidents::tops;
use crate::routes::series::{parse_time, rfc3339};
use crate::routes::services::{StatusView, statuses};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use downwatch_core::{CountryCode, GLOBAL_SCOPE, Level};
use downwatch_detector::model::ScopeModel;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/status").get(status))
        .service(web::resource("/api/v1/services/{slug}/breakdown").get(breakdown));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// The levels and counts of one country (ISO 3166-1 alpha-2, upper
    /// case) instead of the global ones.
    #[param(value_type = Option<crate::openapi::Country>)]
    country: Option<String>,
}

#[derive(Serialize)]
pub struct StatusEntry {
    pub slug: String,
    pub name: String,
    pub level: Level,
    pub reports_15m: i64,
    pub baseline_15m: Option<f64>,
    /// Reports over baseline in the last 15 minutes, one decimal.
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<i64>,
}

fn parse_country(c: Option<&str>) -> Result<Option<CountryCode>, ApiError> {
    c.map(|c| CountryCode::parse(c).map_err(|e| ApiError::bad_param("country", e)))
        .transpose()
}

/// Levels of one country's scopes: outage with its incident, or warning.
async fn country_statuses(
    state: &AppState,
    country: &str,
) -> Result<HashMap<i64, StatusView>, ApiError> {
    let mut map = HashMap::new();
    for inc in state.storage.open_incidents().await? {
        if inc.scope == country {
            map.insert(
                inc.service_id,
                StatusView {
                    level: Level::Outage,
                    incident_id: Some(inc.id),
                },
            );
        }
    }
    for l in state.storage.alert_levels().await? {
        if l.scope == country && Level::parse(&l.level) == Some(Level::Warning) {
            map.entry(l.service_id).or_insert(StatusView {
                level: Level::Warning,
                incident_id: None,
            });
        }
    }
    Ok(map)
}

/// `GET /api/v1/status?country=`: services at `warning` or `outage`, most
/// severe first (then by ratio to normal).
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    operation_id = "getStatus",
    summary = "What is down now",
    description = "The services at `warning` or `outage`, most severe first, then by ratio to \
                   normal, with their reports over the last 15 minutes.",
    params(StatusQuery),
    responses(
        (status = 200, description = "The services not at `ok`", body = crate::openapi::StatusResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn status(
    state: web::Data<AppState>,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    let country = parse_country(query.country.as_deref())?;
    let now = state.now().timestamp();
    let out = down_now(&state, country, now).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "generated_at": rfc3339(now),
        "country": country,
        "services": out,
    })))
}

/// The services at `warning` or `outage` (of one country, or globally),
/// most severe first, then by ratio to normal.
pub async fn down_now(
    state: &AppState,
    country: Option<CountryCode>,
    now: i64,
) -> Result<Vec<StatusEntry>, ApiError> {
    let scope = country.map_or(GLOBAL_SCOPE.to_owned(), |c| c.as_str().to_owned());
    let levels = match country {
        None => statuses(state).await?,
        Some(c) => country_statuses(state, c.as_str()).await?,
    };
    // The last 15 minutes, the current one included.
    let to = now.div_euclid(60) * 60 + 60;
    let from = to - 900;
    let mut out = Vec::with_capacity(levels.len());
    for service in state.catalogue.all() {
        let Some(view) = levels.get(&service.id) else {
            continue;
        };
        let reports: i64 = state
            .storage
            .counts(service.id, &scope, from, to, 900)
            .await?
            .iter()
            .map(|b| b.1)
            .sum();
        let baseline = ScopeModel::load(state.storage.as_ref(), service.id, &scope)
            .await?
            .map(|m| m.buckets(from, 900, 1)[0].0);
        let ratio = baseline.map(|b| (reports as f64 / b.max(0.1) * 10.0).round() / 10.0);
        out.push(StatusEntry {
            slug: service.slug.to_string(),
            name: service.name.clone(),
            level: view.level,
            reports_15m: reports,
            baseline_15m: baseline.map(|b| (b * 100.0).round() / 100.0),
            ratio,
            incident_id: view.incident_id,
        });
    }
    out.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| b.ratio.unwrap_or(0.0).total_cmp(&a.ratio.unwrap_or(0.0)))
            .then_with(|| a.slug.cmp(&b.slug))
    });
    Ok(out)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BreakdownQuery {
    /// Start (RFC 3339); default: 24 hours before `to`. The range may span
    /// at most 366 days.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End (RFC 3339); default: now.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only reports from this country (ISO 3166-1 alpha-2, upper case).
    #[param(value_type = Option<crate::openapi::Country>)]
    country: Option<String>,
}

/// Longest range of a breakdown (hourly facets: 8,784 hours at most).
const MAX_BREAKDOWN_DAYS: i64 = 366;
/// Places listed, the largest.
const MAX_LOCATIONS: usize = 50;

/// `GET /api/v1/services/{slug}/breakdown?from=&to=&country=`: counted
/// reports by problem and by place, with shares, largest first.
#[utoipa::path(
    get,
    path = "/api/v1/services/{slug}/breakdown",
    tag = "status",
    operation_id = "getBreakdown",
    summary = "A service's reports by problem and place",
    description = "Counted reports in the range by problem kind and by place (country and \
                   city), with their shares, largest first; by default the last 24 hours.",
    params(("slug" = String, Path, description = "The service's slug"), BreakdownQuery),
    responses(
        (status = 200, description = "The breakdown", body = crate::openapi::Breakdown),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn breakdown(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    query: web::Query<BreakdownQuery>,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(&slug).await?;
    let country = parse_country(query.country.as_deref())?;
    let now = state.now().timestamp();
    let to = query
        .to
        .as_deref()
        .map(|t| parse_time("to", t).map(|t| t.timestamp()))
        .transpose()?
        // Up to now, this second included.
        .unwrap_or(now + 1);
    let from = query
        .from
        .as_deref()
        .map(|t| parse_time("from", t).map(|t| t.timestamp()))
        .transpose()?
        .unwrap_or(to - 86_400);
    if from >= to {
        return Err(ApiError::bad_param("from", "must be before `to`"));
    }
    if to - from > MAX_BREAKDOWN_DAYS * 86_400 {
        return Err(ApiError::bad_param(
            "from",
            format!("the range may span at most {MAX_BREAKDOWN_DAYS} days"),
        ));
    }
    let facets = state
        .storage
        .facet_counts(service.id, country.as_ref().map(|c| c.as_str()), from, to)
        .await?;
    let (total, problems, places) = tops(facets, MAX_LOCATIONS);
    let share = |n: i64| {
        if total > 0 {
            (n as f64 / total as f64 * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "service": service.slug.as_str(),
        "country": country,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "total": total,
        "problems": problems.iter().map(|(p, n)| serde_json::json!({
            "problem": p, "reports": n, "share": share(*n),
        })).collect::<Vec<_>>(),
        "locations": places.iter().map(|(c, city, n)| serde_json::json!({
            "country": c, "city": city, "reports": n, "share": share(*n),
        })).collect::<Vec<_>>(),
    })))
}
