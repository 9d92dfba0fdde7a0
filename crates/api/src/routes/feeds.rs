//! Atom feeds of incidents: every service's, and one service's. Feed
//! readers (and the pages' `<link rel="alternate">`) follow new incidents
//! and their resolution without polling the JSON API.
//!
//! A feed's entries cost a breakdown read per incident (50 of them), so
//! each feed's contents are kept for 30 s ([`FeedCache`]); only the base
//! URL of its links is applied per request (see `public_url`).

use crate::problem::ApiError;
use crate::public_url::base_url;
use crate::routes::incidents::{incident_json, services_by_id};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use atom_syndication::{Content, Entry, Feed, Link, Person, Text};
use downwatch_core::GLOBAL_SCOPE;
use downwatch_store::{IncidentQuery, IncidentRow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/incidents.atom").get(all))
        .service(web::resource("/api/v1/services/{slug}/incidents.atom").get(atom));
}

/// Entries per feed: the latest incidents.
const FEED_ENTRIES: i64 = 50;
/// How long a feed's contents are served from memory.
const FEED_TTL: Duration = Duration::from_secs(30);
/// Feeds kept at most (one per service, and every service's): beyond it,
/// the expired ones go, then all.
const MAX_FEEDS: usize = 1024;

/// One incident's entry, without the base URL of its links.
#[derive(Debug, Clone, PartialEq)]
struct EntryData {
    incident_id: i64,
    title: String,
    summary: String,
    updated: i64,
    published: i64,
}

/// A feed's contents, without the base URL of its links.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedData {
    title: String,
    updated: i64,
    entries: Vec<EntryData>,
}

/// Each feed's contents for [`FEED_TTL`], by path.
#[derive(Default)]
pub struct FeedCache {
    feeds: Mutex<HashMap<String, (Instant, Arc<FeedData>)>>,
}

impl FeedCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<FeedData>)>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The contents of the feed at `path` if made less than [`FEED_TTL`]
    /// before `now`.
    fn get(&self, path: &str, now: Instant) -> Option<Arc<FeedData>> {
        let feeds = self.lock();
        let (at, data) = feeds.get(path)?;
        (now.saturating_duration_since(*at) < FEED_TTL).then(|| data.clone())
    }

    fn put(&self, path: &str, data: Arc<FeedData>, now: Instant) {
        let mut feeds = self.lock();
        if feeds.len() >= MAX_FEEDS {
            feeds.retain(|_, (at, _)| now.saturating_duration_since(*at) < FEED_TTL);
            if feeds.len() >= MAX_FEEDS {
                feeds.clear();
            }
        }
        feeds.insert(path.to_owned(), (now, data));
    }
}

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
    let path = "/api/v1/incidents.atom";
    let data = match state.feeds.get(path, Instant::now()) {
        Some(d) => d,
        None => {
            let rows = state
                .storage
                .incidents(&IncidentQuery {
                    limit: FEED_ENTRIES,
                    ..IncidentQuery::default()
                })
                .await?;
            let d =
                Arc::new(contents(&state, &rows, "Downwatch: incidents of every service").await?);
            state.feeds.put(path, d.clone(), Instant::now());
            d
        }
    };
    Ok(render(&data, &base_url(&state, &req), path, "/history"))
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
    let path = format!("/api/v1/services/{}/incidents.atom", service.slug);
    let data = match state.feeds.get(&path, Instant::now()) {
        Some(d) => d,
        None => {
            let rows = state
                .storage
                .incidents(&IncidentQuery {
                    service_id: Some(service.id),
                    limit: FEED_ENTRIES,
                    ..IncidentQuery::default()
                })
                .await?;
            let title = format!("{}: incidents on Downwatch", service.name);
            let d = Arc::new(contents(&state, &rows, &title).await?);
            state.feeds.put(&path, d.clone(), Instant::now());
            d
        }
    };
    let page = format!("/services/{}", service.slug);
    Ok(render(&data, &base_url(&state, &req), &path, &page))
}

/// The contents of a feed of `rows`.
async fn contents(
    state: &AppState,
    rows: &[IncidentRow],
    title: &str,
) -> Result<FeedData, ApiError> {
    let services = services_by_id(state);
    let now = state.now().timestamp();
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
        entries.push(EntryData {
            incident_id: row.id,
            title,
            summary,
            updated: r.ended_at.unwrap_or(r.detected_at).max(r.detected_at),
            published: r.detected_at,
        });
    }
    let updated = rows
        .iter()
        .map(|r| r.record.ended_at.unwrap_or(r.record.detected_at))
        .max()
        .unwrap_or(0);
    Ok(FeedData {
        title: title.to_owned(),
        updated,
        entries,
    })
}

/// The feed document: its `self` link at `base` + `path`, its page at `page`.
fn render(data: &FeedData, base: &str, path: &str, page: &str) -> HttpResponse {
    let fixed = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .fixed_offset()
    };
    let entries: Vec<Entry> = data
        .entries
        .iter()
        .map(|e| {
            let mut entry = Entry::default();
            entry.set_id(format!("{base}/api/v1/incidents/{}", e.incident_id));
            entry.set_title(Text::plain(e.title.clone()));
            entry.set_updated(fixed(e.updated));
            entry.set_published(Some(fixed(e.published)));
            entry.set_links(vec![Link {
                href: format!("{base}/incidents/{}", e.incident_id),
                rel: "alternate".into(),
                mime_type: Some("text/html".into()),
                ..Link::default()
            }]);
            entry.set_summary(Some(Text::plain(e.summary.clone())));
            entry.set_content(Some(Content {
                content_type: Some("text".into()),
                value: Some(e.summary.clone()),
                ..Content::default()
            }));
            entry
        })
        .collect();
    let mut feed = Feed::default();
    feed.set_id(format!("{base}{path}"));
    feed.set_title(Text::plain(data.title.clone()));
    feed.set_updated(fixed(data.updated));
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
    HttpResponse::Ok()
        .content_type("application/atom+xml; charset=utf-8")
        .body(feed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(title: &str) -> Arc<FeedData> {
        Arc::new(FeedData {
            title: title.to_owned(),
            updated: 0,
            entries: Vec::new(),
        })
    }

    #[test]
    fn a_feed_is_served_from_memory_for_thirty_seconds_by_path() {
        let cache = FeedCache::default();
        let t0 = Instant::now();
        assert!(cache.get("/a.atom", t0).is_none());
        cache.put("/a.atom", data("a"), t0);
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(cache.get("/a.atom", later(29)).unwrap().title, "a");
        assert!(cache.get("/b.atom", later(1)).is_none(), "by path");
        assert!(cache.get("/a.atom", later(30)).is_none(), "expired");
        // Bounded: a full cache drops what expired first.
        for i in 0..MAX_FEEDS {
            cache.put(&format!("/{i}.atom"), data("x"), later(40));
        }
        cache.put("/new.atom", data("new"), later(80));
        assert_eq!(cache.lock().len(), 1);
    }

    #[test]
    fn links_and_ids_take_the_base_given() {
        let d = FeedData {
            title: "T".to_owned(),
            updated: 0,
            entries: vec![EntryData {
                incident_id: 7,
                title: "e".to_owned(),
                summary: "s".to_owned(),
                updated: 0,
                published: 0,
            }],
        };
        let r = render(
            &d,
            "https://status.example.org",
            "/api/v1/incidents.atom",
            "/history",
        );
        let body = actix_web::body::MessageBody::try_into_bytes(r.into_body()).unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for href in [
            "https://status.example.org/api/v1/incidents.atom",
            "https://status.example.org/history",
            "https://status.example.org/api/v1/incidents/7",
            "https://status.example.org/incidents/7",
        ] {
            assert!(text.contains(href), "{href} in {text}");
        }
    }
}
