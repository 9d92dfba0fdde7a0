//! Atom feeds of incidents: every service's, and one service's. Feed
//! readers (and the pages' `<link rel="alternate">`) follow new incidents
//! and their resolution without polling the JSON API.

use crate::problem::ApiError;
use crate::routes::incidents::{incident_json, services_by_id};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use atom_syndication::{Content, Entry, Feed, Link, Person, Text};
use downwatch_core::GLOBAL_SCOPE;
use downwatch_store::{IncidentQuery, IncidentRow};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/incidents.atom").get(all))
        .service(web::resource("/api/v1/services/{slug}/incidents.atom").get(atom));
}

/// Entries per feed: the latest incidents.
const FEED_ENTRIES: i64 = 50;

/// `GET /api/v1/incidents.atom`: the latest incidents of every service.
#[utoipa::path(
    get,
    path = "/api/v1/incidents.atom",
    tag = "incidents",
    operation_id = "allIncidentsFeed",
    summary = "Every service's incidents as an Atom feed",
    description = "The 50 latest incidents of all services, newest first, as an Atom feed; \
                   an entry is updated when its incident resolves.",
    responses(
        (status = 200, description = "The feed", body = String, content_type = "application/atom+xml"),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn all(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let rows = state
        .storage
        .incidents(&IncidentQuery {
            limit: FEED_ENTRIES,
            ..IncidentQuery::default()
        })
        .await?;
    feed(
        &state,
        &req,
        &rows,
        "Downwatch: incidents of every service",
        "/api/v1/incidents.atom",
        "/history",
    )
    .await
}

/// `GET /api/v1/services/{slug}/incidents.atom`: the service's latest incidents.
#[utoipa::path(
    get,
    path = "/api/v1/services/{slug}/incidents.atom",
    tag = "incidents",
    operation_id = "incidentFeed",
    summary = "A service's incidents as an Atom feed",
    description = "The service's 50 latest incidents, newest first, as an Atom feed.",
    params(("slug" = String, Path, description = "The service's slug")),
    responses(
        (status = 200, description = "The feed", body = String, content_type = "application/atom+xml"),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn atom(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(&slug).await?;
    let rows = state
        .storage
        .incidents(&IncidentQuery {
            service_id: Some(service.id),
            limit: FEED_ENTRIES,
            ..IncidentQuery::default()
        })
        .await?;
    feed(
        &state,
        &req,
        &rows,
        &format!("{}: incidents on Downwatch", service.name),
        &format!("/api/v1/services/{}/incidents.atom", service.slug),
        &format!("/services/{}", service.slug),
    )
    .await
}

/// A feed of `rows`, its `self` link at `path` and its page at `page`.
async fn feed(
    state: &AppState,
    req: &HttpRequest,
    rows: &[IncidentRow],
    title: &str,
    path: &str,
    page: &str,
) -> Result<HttpResponse, ApiError> {
    let services = services_by_id(state);
    let now = state.now().timestamp();
    let base = {
        let conn = req.connection_info();
        format!("{}://{}", conn.scheme(), conn.host())
    };
    let fixed = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .fixed_offset()
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let r = &row.record;
        let (slug, name) = services.get(&r.service_id).map_or_else(
            || (r.service_id.to_string(), r.service_id.to_string()),
            |s| (s.slug.to_string(), s.name.clone()),
        );
        let j = incident_json(state, row, &slug, now).await?;
        let place = if r.scope == GLOBAL_SCOPE {
            String::new()
        } else {
            format!(" in {}", r.scope)
        };
        let title = match r.ended_at {
            None => format!("{name}: problems{place} since {}", j.view.started_at),
            Some(_) => format!(
                "{name}: problems{place} from {} to {}",
                j.view.started_at,
                j.view.ended_at.as_deref().unwrap_or_default()
            ),
        };
        let problems: Vec<String> = j
            .top_problems
            .iter()
            .map(|p| format!("{} {:.0}%", p.problem, p.share * 100.0))
            .collect();
        let summary = format!(
            "Status: {}. Reports: {}, peak {} a minute (normal: {:.1}). Duration: {} min. Most reported: {}.",
            j.view.status,
            j.view.total_reports,
            j.view.peak_reports_per_min,
            j.view.baseline_per_min_at_peak,
            j.view.duration_s / 60,
            if problems.is_empty() {
                "–".to_owned()
            } else {
                problems.join(", ")
            }
        );
        let mut entry = Entry::default();
        entry.set_id(format!("{base}/api/v1/incidents/{}", row.id));
        entry.set_title(Text::plain(title));
        entry.set_updated(fixed(
            r.ended_at.unwrap_or(r.detected_at).max(r.detected_at),
        ));
        entry.set_published(Some(fixed(r.detected_at)));
        entry.set_links(vec![Link {
            href: format!("{base}/incidents/{}", row.id),
            rel: "alternate".into(),
            mime_type: Some("text/html".into()),
            ..Link::default()
        }]);
        entry.set_summary(Some(Text::plain(summary.clone())));
        entry.set_content(Some(Content {
            content_type: Some("text".into()),
            value: Some(summary),
            ..Content::default()
        }));
        entries.push(entry);
    }
    let updated = rows
        .iter()
        .map(|r| r.record.ended_at.unwrap_or(r.record.detected_at))
        .max()
        .unwrap_or(0);
    let mut feed = Feed::default();
    feed.set_id(format!("{base}{path}"));
    feed.set_title(Text::plain(title));
    feed.set_updated(fixed(updated));
    feed.set_authors(vec![Person {
        name: "Downwatch".into(),
        ..Person::default()
    }]);
    feed.set_links(vec![
        Link {
            href: format!("{base}{path}"),
            rel: "self".into(),
            mime_type: Some("application/atom+xml".into()),
            ..Link::default()
        },
        Link {
            href: format!("{base}{page}"),
            rel: "alternate".into(),
            mime_type: Some("text/html".into()),
            ..Link::default()
        },
    ]);
    feed.set_entries(entries);
    Ok(HttpResponse::Ok()
        .content_type("application/atom+xml; charset=utf-8")
        .body(feed.to_string()))
}
