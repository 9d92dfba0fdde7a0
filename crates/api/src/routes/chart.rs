//! `GET /api/v1/services/{slug}/chart.svg`: the embeddable chart (drawn by
//! `downwatch-chart`, with plotters).

use crate::problem::ApiError;
use crate::routes::series::{Range, STEPS, parse_range, points};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use downwatch_chart::{ChartIncident, ChartInput, ChartPoint, render_svg};
use downwatch_core::{CountryCode, GLOBAL_SCOPE};
use downwatch_store::IncidentQuery;
use serde::Deserialize;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/services/{slug}/chart.svg").get(chart));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ChartQuery {
    /// Start (RFC 3339); default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End (RFC 3339); default: now.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Bucket width in seconds; default: the finest giving at most 200 buckets.
    #[param(value_type = Option<crate::openapi::Step>, inline)]
    step: Option<String>,
    /// Only reports from this country (ISO 3166-1 alpha-2, upper case).
    #[param(value_type = Option<crate::openapi::Country>)]
    country: Option<String>,
    /// Width in pixels; default 600.
    #[param(value_type = Option<u32>, minimum = 200, maximum = 4000)]
    width: Option<String>,
    /// Height in pixels; default 300.
    #[param(value_type = Option<u32>, minimum = 200, maximum = 4000)]
    height: Option<String>,
}

/// Buckets a chart aims for when no step is given: enough to show a spike,
/// few enough to read at 600 px.
const TARGET_BUCKETS: i64 = 200;
/// Incidents that started this long before the range may still overlap it.
const LOOKBACK: i64 = 30 * 86_400;

fn size(field: &str, v: Option<&str>, default: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (200..=4000).contains(n))
            .ok_or_else(|| ApiError::bad_param(field, "must be 200 to 4000 (pixels)")),
    }
}

fn step_name(step: i64) -> &'static str {
    match step {
        60 => "minute",
        300 => "5 minutes",
        900 => "15 minutes",
        3600 => "hour",
        _ => "day",
    }
}

/// `GET /api/v1/services/{slug}/chart.svg?from=&to=&country=`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{slug}/chart.svg",
    tag = "status",
    operation_id = "getChart",
    summary = "An embeddable chart",
    description = "An SVG chart of the service's reports against the baseline band, incidents \
                   shaded, with a title and a time axis in UTC.",
    params(("slug" = String, Path, description = "The service's slug"), ChartQuery),
    responses(
        (status = 200, description = "The chart", body = String, content_type = "image/svg+xml"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn chart(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    query: web::Query<ChartQuery>,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(&slug).await?;
    let width = size("width", query.width.as_deref(), 600)?;
    let height = size("height", query.height.as_deref(), 300)?;
    let country = query
        .country
        .as_deref()
        .map(|c| CountryCode::parse(c).map_err(|e| ApiError::bad_param("country", e)))
        .transpose()?;
    let now = state.now();
    // Without a step, the finest that keeps the chart readable.
    let range = match query.step.as_deref() {
        Some(_) => parse_range(
            query.from.as_deref(),
            query.to.as_deref(),
            query.step.as_deref(),
            now,
        )?,
        None => {
            let probe = parse_range(
                query.from.as_deref(),
                query.to.as_deref(),
                Some("86400"),
                now,
            );
            let span = match &probe {
                Ok(r) => r.to - r.from,
                Err(_) => 86_400,
            };
            let step = STEPS
                .iter()
                .copied()
                .find(|s| span / s <= TARGET_BUCKETS)
                .unwrap_or(86_400)
                .to_string();
            parse_range(query.from.as_deref(), query.to.as_deref(), Some(&step), now)?
        }
    };
    let scope = country.map_or(GLOBAL_SCOPE.to_owned(), |c| c.as_str().to_owned());
    let pts = points(&state, service.id, &scope, &range).await?;
    let incidents = state
        .storage
        .incidents(&IncidentQuery {
            service_id: Some(service.id),
            scope: Some(scope.clone()),
            from: Some(range.from - LOOKBACK),
            to: Some(range.to),
            limit: 500,
            ..IncidentQuery::default()
        })
        .await?;
    let Range { from, to, step } = range;
    let day = |t: i64| {
        DateTime::<Utc>::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let input = ChartInput {
        title: match country {
            None => format!("{}: user reports", service.name),
            Some(c) => format!("{}: user reports from {}", service.name, c.as_str()),
        },
        subtitle: format!(
            "Reports per {}, UTC, {} to {} · Downwatch",
            step_name(step),
            day(from),
            day(to)
        ),
        from,
        to,
        step,
        points: pts
            .iter()
            .map(|p| ChartPoint {
                t: p.secs,
                reports: p.reports as f64,
                baseline: p.baseline.unwrap_or(0.0),
                threshold: p.threshold,
            })
            .collect(),
        incidents: incidents
            .iter()
            .filter(|i| i.record.ended_at.is_none_or(|e| e > from))
            .map(|i| ChartIncident {
                start: i.record.started_at,
                end: i.record.ended_at,
            })
            .collect(),
    };
    let svg = render_svg(&input, width, height).map_err(|e| {
        tracing::error!(error = %e, "chart rendering failed");
        ApiError::internal(e)
    })?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=60"))
        // Opened on its own, the SVG may not run anything.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .body(svg))
}
