//! The dashboard: server-rendered HTML pages (askama templates in
//! `web/templates`, escaped by default) over the same functions as the JSON
//! API, plus the hashed static assets in `web/static`.
//!
//! Pages answer HTML errors; `/api/...` keeps its problem+json.

pub mod assets;
mod views;

use crate::body::Fields;
use crate::problem::ApiError;
use crate::routes::incidents::{decode_cursor, encode_cursor, incident_json, incident_range, tops};
use crate::routes::reports::{ReportBody, ingest};
use crate::routes::series::{parse_range, points, rfc3339};
use crate::routes::services::statuses;
use crate::routes::status::down_now;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use askama::Template;
use chrono::NaiveDate;
use downwatch_core::{GLOBAL_SCOPE, Level, Service};
use downwatch_store::IncidentQuery;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use views::*;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").get(home))
        .service(web::resource("/services/{slug}").get(service_page))
        .service(web::resource("/services/{slug}/report").post(report_form))
        .service(web::resource("/incidents/{id}").get(incident_page))
        .service(web::resource("/history").get(history))
        .service(web::resource("/static/{file}").get(assets::serve));
}

/// No inline script or style anywhere; everything from this origin.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                       script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'self'";

/// The headers every page and asset carries.
pub fn secure(mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header(("Content-Security-Policy", CSP))
        .insert_header(("Referrer-Policy", "strict-origin-when-cross-origin"))
        .insert_header(("X-Frame-Options", "DENY"));
    b
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    secure(HttpResponse::build(status))
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

fn render(status: StatusCode, t: &impl Template) -> HttpResponse {
    match t.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a page template failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned(),
            )
        }
    }
}

/// An HTML error page for what a page handler could not do.
fn error_page(e: ApiError) -> HttpResponse {
    let (status, title, detail) = match &e {
        ApiError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is nothing at this address. The service or incident may not exist.".to_owned(),
        ),
        ApiError::BadRequest(errs) | ApiError::Validation(errs) => (
            StatusCode::BAD_REQUEST,
            "Bad request",
            errs.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ApiError::Unavailable { detail, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            (*detail).to_owned(),
        ),
        other => {
            tracing::error!(error = ?other, "a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The page could not be shown. Please try again in a moment.".to_owned(),
            )
        }
    };
    render(
        status,
        &ErrorTpl {
            layout: Layout::new(title, None),
            title,
            detail,
        },
    )
}

fn page(r: Result<HttpResponse, ApiError>) -> HttpResponse {
    r.unwrap_or_else(error_page)
}

/// A query string read without the API's problem+json error handler.
fn query<T: serde::de::DeserializeOwned + Default>(req: &HttpRequest) -> T {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

fn level_of(s: &Service, levels: &HashMap<i64, crate::routes::services::StatusView>) -> Level {
    levels.get(&s.id).map_or(Level::Ok, |v| v.level)
}

// ---------------------------------------------------------------- home

#[derive(Deserialize, Default)]
struct HomeQuery {
    q: Option<String>,
}

async fn home(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    page(home_inner(&state, &req).await)
}

async fn home_inner(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: HomeQuery = query(req);
    let q: String = q.q.unwrap_or_default().trim().chars().take(100).collect();
    let needle = q.to_lowercase();
    let now = state.now().timestamp();
    let down: Vec<DownRow> = down_now(state, None, now)
        .await?
        .into_iter()
        .map(|e| DownRow {
            badge: Badge::of(e.level),
            summary: down_summary(e.reports_15m, e.ratio),
            slug: e.slug,
            name: e.name,
        })
        .collect();
    let levels = statuses(state).await?;
    let mut groups: BTreeMap<String, Vec<ServiceLink>> = BTreeMap::new();
    let mut all = state.catalogue.all();
    all.sort_by_key(|s| s.name.to_lowercase());
    let mut matches = 0;
    for s in &all {
        if !needle.is_empty()
            && !s.name.to_lowercase().contains(&needle)
            && !s.slug.as_str().contains(&needle)
        {
            continue;
        }
        matches += 1;
        groups
            .entry(s.category.clone().unwrap_or_else(|| "Other".to_owned()))
            .or_default()
            .push(ServiceLink {
                slug: s.slug.to_string(),
                name: s.name.clone(),
                badge: Badge::of(level_of(s, &levels)),
            });
    }
    let groups = groups
        .into_iter()
        .map(|(category, services)| Group { category, services })
        .collect();
    Ok(render(
        StatusCode::OK,
        &HomeTpl {
            layout: Layout::new("Is it down right now?", None),
            q,
            down,
            groups,
            matches,
            generated: hhmm(now),
        },
    ))
}

fn down_summary(reports: i64, ratio: Option<f64>) -> String {
    let r = plural(reports, "report", "reports");
    match ratio {
        Some(x) if x >= 10.0 => format!("{r} in the last 15 minutes, {x:.0}× normal"),
        Some(x) if x >= 1.5 => format!("{r} in the last 15 minutes, {x:.1}× normal"),
        _ => format!("{r} in the last 15 minutes"),
    }
}

// ---------------------------------------------------------------- service

async fn service_page(state: web::Data<AppState>, slug: web::Path<String>) -> HttpResponse {
    page(service_inner(&state, &slug, None, StatusCode::OK).await)
}

async fn service_inner(
    state: &AppState,
    slug: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(slug).await?;
    let now = state.now();
    let levels = statuses(state).await?;
    let view = levels.get(&service.id).copied();
    let level = view.map_or(Level::Ok, |v| v.level);
    let since = match view.and_then(|v| v.incident_id) {
        Some(id) => state
            .storage
            .incident(id)
            .await?
            .map(|r| r.record.started_at),
        None => None,
    };
    let banner = banner_text(&service.name, level, since, now.timestamp());
    let range = parse_range(None, None, None, now)?;
    let series = points(state, service.id, GLOBAL_SCOPE, &range).await?;
    let buckets = series
        .iter()
        .map(|p| Bucket {
            time: hhmm(p.secs),
            reports: p.reports,
            baseline: p
                .baseline
                .map_or_else(|| "–".to_owned(), |b| format!("{b:.1}")),
        })
        .collect();
    let to = now.timestamp() + 1;
    let facets = state
        .storage
        .facet_counts(service.id, None, to - 86_400, to)
        .await?;
    let (total, problems, places) = tops(facets, 8);
    let problems = problems
        .into_iter()
        .map(|(p, n)| Share::new(problem_label(&p), n, total))
        .collect();
    let places = places
        .into_iter()
        .map(|(c, city, n)| Share::new(place_label(c.as_deref(), city.as_deref()), n, total))
        .collect();
    let recent = state
        .storage
        .incidents(&IncidentQuery {
            service_id: Some(service.id),
            limit: 8,
            ..IncidentQuery::default()
        })
        .await?
        .iter()
        .map(|r| IncidentLink::new(r.id, &service.name, &r.record, now.timestamp()))
        .collect();
    let kinds = service
        .problems
        .iter()
        .map(|k| Kind {
            value: k.as_str().to_owned(),
            label: problem_label(k.as_str()),
        })
        .collect();
    let t = ServiceTpl {
        layout: Layout::new(&format!("Is {} down?", service.name), Some(&service)),
        slug: service.slug.to_string(),
        name: service.name.clone(),
        badge: Badge::of(level),
        banner,
        buckets,
        total,
        problems,
        places,
        recent,
        kinds,
        notice,
        chart_alt: format!(
            "Chart of problem reports for {} over the last 24 hours, with the normal range \
             shaded; times in UTC. The same figures are in the table below.",
            service.name
        ),
    };
    Ok(render(status, &t))
}

fn banner_text(name: &str, level: Level, since: Option<i64>, now: i64) -> String {
    match (level, since) {
        (Level::Outage, Some(t)) => format!(
            "User reports indicate problems at {name} since {}",
            when_short(t, now)
        ),
        (Level::Outage, None) => format!("User reports indicate problems at {name}"),
        (Level::Warning, _) => format!("User reports indicate possible problems at {name}"),
        (Level::Ok, _) => format!("No current problems at {name}"),
    }
}

#[derive(Deserialize, Default)]
struct ReportForm {
    problem: Option<String>,
    country: Option<String>,
    city: Option<String>,
}

/// `POST /services/{slug}/report`: the report form without JavaScript,
/// through the same ingest path as the API; answers the service page with
/// the outcome.
async fn report_form(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if body.len() > crate::body::MAX_BODY {
        return error_page(ApiError::bad_param("body", "the form is too large"));
    }
    let form: ReportForm = std::str::from_utf8(&body)
        .ok()
        .and_then(|s| web::Query::<ReportForm>::from_query(s).ok())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let mut map = serde_json::Map::new();
    let non_empty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(p) = non_empty(form.problem) {
        map.insert("problem".into(), p.into());
    }
    if let Some(c) = non_empty(form.country) {
        map.insert("country".into(), c.to_uppercase().into());
    }
    if let Some(c) = non_empty(form.city) {
        map.insert("city".into(), c.into());
    }
    let outcome = ingest(&state, &req, &slug, ReportBody::Fields(Fields::new(map))).await;
    let (notice, status) = match outcome {
        Ok(stored) if stored.counted => (
            Notice::good("Thanks — your report counted."),
            StatusCode::OK,
        ),
        Ok(_) => (
            Notice::good(
                "Thanks — your report was already counted: one report per person \
                 every 15 minutes counts.",
            ),
            StatusCode::OK,
        ),
        Err(ApiError::NotFound(m)) => return error_page(ApiError::NotFound(m)),
        Err(ApiError::RateLimited { retry_after_secs }) => {
            let mut r = page(
                service_inner(
                    &state,
                    &slug,
                    Some(Notice::bad(format!(
                        "Too many reports, try again in {retry_after_secs} s."
                    ))),
                    StatusCode::TOO_MANY_REQUESTS,
                )
                .await,
            );
            if let Ok(v) = retry_after_secs.to_string().parse() {
                r.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(ApiError::BadRequest(errs) | ApiError::Validation(errs)) => (
            Notice::bad(
                errs.iter()
                    .map(|e| {
                        if e.field == "problem" && !e.message.contains("not a problem kind") {
                            "Choose what is not working.".to_owned()
                        } else {
                            format!("{}: {}", field_label(&e.field), e.message)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(ApiError::Unavailable {
            retry_after_secs, ..
        }) => (
            Notice::bad(format!(
                "Your report could not be stored right now; try again in {retry_after_secs} s."
            )),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        Err(e) => return error_page(e),
    };
    page(service_inner(&state, &slug, Some(notice), status).await)
}

fn field_label(field: &str) -> &str {
    match field {
        "problem" => "What is not working",
        "country" => "Country",
        "city" => "City",
        other => other,
    }
}

// ---------------------------------------------------------------- incident

async fn incident_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    page(incident_inner(&state, &req, &id).await)
}

async fn incident_inner(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no incident {id:?}"));
    let id: i64 = id.parse().ok().filter(|i| *i > 0).ok_or_else(not_found)?;
    let row = state.storage.incident(id).await?.ok_or_else(not_found)?;
    let r = &row.record;
    let service = state
        .catalogue
        .all()
        .into_iter()
        .find(|s| s.id == r.service_id)
        .ok_or_else(not_found)?;
    let now = state.now().timestamp();
    let j = incident_json(state, &row, service.slug.as_str(), now).await?;
    let range = incident_range(r.started_at, r.ended_at, now);
    let mut chart = format!(
        "/api/v1/services/{}/chart.svg?from={}&to={}",
        service.slug,
        rfc3339(range.from),
        rfc3339(range.to)
    );
    if r.scope != GLOBAL_SCOPE {
        chart.push_str(&format!("&country={}", enc(&r.scope)));
    }
    // The embed snippet's absolute link: never from a client's say-so.
    let base = crate::public_url::base_url(state, req);
    let scope = if r.scope == GLOBAL_SCOPE {
        "Worldwide".to_owned()
    } else {
        format!("Reports from {}", r.scope)
    };
    let ratio = if r.baseline_per_min_at_peak >= 0.05 {
        format!(
            "{:.0} reports a minute, {:.1}× the normal {:.1}",
            r.peak_reports_per_min,
            r.peak_reports_per_min / r.baseline_per_min_at_peak,
            r.baseline_per_min_at_peak
        )
    } else {
        format!(
            "{:.0} reports a minute (normally almost none)",
            r.peak_reports_per_min
        )
    };
    let title = format!("{} problems, {}", service.name, day_time(r.started_at));
    let embed = format!(
        "<img src=\"{base}{}\" alt=\"Problem reports for {} around {}\" width=\"600\" height=\"300\">",
        chart.replace('&', "&amp;"),
        attr(&service.name),
        day_time(r.started_at)
    );
    let csv = format!(
        "/api/v1/incidents?format=csv&service={}&country={}&from={}&to={}",
        service.slug,
        enc(&r.scope),
        rfc3339(r.started_at),
        rfc3339(r.started_at + 1)
    );
    let t = IncidentTpl {
        layout: Layout::new(&title, Some(&service)),
        id,
        slug: service.slug.to_string(),
        name: service.name.clone(),
        title,
        open: r.ended_at.is_none(),
        scope,
        started: day_time(r.started_at),
        detected: day_time(r.detected_at),
        peak_at: day_time(r.peak_at),
        peak: ratio,
        ended: r.ended_at.map_or_else(|| "Ongoing".to_owned(), day_time),
        duration: duration(j.view.duration_s),
        total: j.view.total_reports,
        problems: j
            .top_problems
            .iter()
            .map(|p| Share::from_share(problem_label(&p.problem), p.share))
            .collect(),
        places: j
            .top_locations
            .iter()
            .map(|l| {
                Share::from_share(
                    place_label(l.country.as_deref(), l.city.as_deref()),
                    l.share,
                )
            })
            .collect(),
        chart,
        chart_alt: format!(
            "Chart of problem reports for {} from an hour before the incident to an hour after it, \
             with the normal range shaded and the incident highlighted; times in UTC.",
            service.name
        ),
        embed,
        csv,
    };
    Ok(render(StatusCode::OK, &t))
}

// ---------------------------------------------------------------- history

#[derive(Deserialize, Default)]
struct HistoryQuery {
    service: Option<String>,
    country: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

async fn history(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    page(history_inner(&state, &req).await)
}

const HISTORY_PAGE: i64 = 25;

async fn history_inner(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let q: HistoryQuery = query(req);
    let clean = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let slug = clean(q.service);
    let country = clean(q.country).map(|c| c.to_uppercase());
    let from_day = clean(q.from);
    let to_day = clean(q.to);
    let mut errors = Vec::new();
    let service: Option<Arc<Service>> = match &slug {
        Some(s) => match state.catalogue.get(s).await? {
            Some(s) => Some(s),
            None => {
                errors.push(format!("There is no service “{s}”."));
                None
            }
        },
        None => None,
    };
    let scope = match country.as_deref() {
        None => None,
        Some("GLOBAL") => Some(GLOBAL_SCOPE.to_owned()),
        Some(c) => match downwatch_core::CountryCode::parse(c) {
            Ok(c) => Some(c.as_str().to_owned()),
            Err(_) => {
                errors.push("Country: a two-letter code such as FR, or “global”.".to_owned());
                None
            }
        },
    };
    let day = |s: &Option<String>, what: &str, errors: &mut Vec<String>| {
        s.as_deref()
            .and_then(|d| match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                Ok(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()),
                Err(_) => {
                    errors.push(format!("{what}: a date such as 2026-01-31."));
                    None
                }
            })
    };
    let from = day(&from_day, "From", &mut errors);
    let to = day(&to_day, "To", &mut errors).map(|t| t + 86_400);
    let before = q.cursor.as_deref().and_then(|c| decode_cursor(c).ok());
    let rows = if errors.is_empty() {
        state
            .storage
            .incidents(&IncidentQuery {
                service_id: service.as_ref().map(|s| s.id),
                scope: scope.clone(),
                from,
                to,
                open: None,
                before,
                limit: HISTORY_PAGE + 1,
            })
            .await?
    } else {
        Vec::new()
    };
    let more = rows.len() as i64 > HISTORY_PAGE;
    let rows = &rows[..rows.len().min(HISTORY_PAGE as usize)];
    let names: HashMap<i64, Arc<Service>> = state
        .catalogue
        .all()
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let now = state.now().timestamp();
    let incidents = rows
        .iter()
        .map(|r| {
            let s = names.get(&r.record.service_id);
            HistoryRow {
                id: r.id,
                service: s.map(|s| s.name.clone()).unwrap_or_default(),
                scope: if r.record.scope == GLOBAL_SCOPE {
                    "Worldwide".to_owned()
                } else {
                    r.record.scope.clone()
                },
                started: day_time(r.record.started_at),
                ended: r
                    .record
                    .ended_at
                    .map_or_else(|| "Ongoing".to_owned(), day_time),
                open: r.record.ended_at.is_none(),
                duration: duration(
                    r.record.ended_at.unwrap_or(now).max(r.record.started_at) - r.record.started_at,
                ),
                total: r.record.total_reports,
            }
        })
        .collect();
    let mut filters = String::new();
    for (k, v) in [
        ("service", slug.as_deref()),
        ("country", country.as_deref()),
        ("from", from_day.as_deref()),
        ("to", to_day.as_deref()),
    ] {
        if let Some(v) = v {
            filters.push_str(&format!("&{k}={}", enc(v)));
        }
    }
    let next = if more {
        rows.last()
            .map(|r| format!("/history?cursor={}{filters}", enc(&encode_cursor(r))))
    } else {
        None
    };
    let mut csv = "/api/v1/incidents?format=csv".to_owned();
    if let Some(s) = &service {
        csv.push_str(&format!("&service={}", s.slug));
    }
    if let Some(s) = &scope {
        csv.push_str(&format!("&country={}", enc(s)));
    }
    if let Some(f) = from {
        csv.push_str(&format!("&from={}", rfc3339(f)));
    }
    if let Some(t) = to {
        csv.push_str(&format!("&to={}", rfc3339(t)));
    }
    let mut services: Vec<SelectOption> = state
        .catalogue
        .all()
        .iter()
        .map(|s| SelectOption {
            value: s.slug.to_string(),
            label: s.name.clone(),
            selected: slug.as_deref() == Some(s.slug.as_str()),
        })
        .collect();
    services.sort_by_key(|o| o.label.to_lowercase());
    let t = HistoryTpl {
        layout: Layout::new("Incident history", None),
        services,
        country: country.unwrap_or_default(),
        from: from_day.unwrap_or_default(),
        to: to_day.unwrap_or_default(),
        errors,
        incidents,
        next,
        first_page: before.is_none(),
        csv,
    };
    Ok(render(StatusCode::OK, &t))
}
