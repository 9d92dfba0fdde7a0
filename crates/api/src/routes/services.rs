//! The service catalogue: list, search, read; admin create and patch.

use crate::body::read_object;
use crate::problem::ApiError;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use downwatch_core::{
    Level, NewService, ProblemList, Service, ServicePatch, Slug, parse_category, parse_name,
    parse_url,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/services").get(list).post(create))
        .service(
            web::resource("/api/v1/services/{slug}")
                .get(get_one)
                .patch(update),
        );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub level: Level,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<i64>,
}

#[derive(Serialize)]
pub struct ServiceView<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub category: Option<&'a str>,
    pub url: Option<&'a str>,
    pub problems: Vec<&'a str>,
    pub status: StatusView,
}

/// Each service's level now, if not `ok`: `outage` with its open incident
/// (a global one wins over a country one), or `warning` when a scope of it is
/// at warning with no incident open.
pub async fn statuses(state: &AppState) -> Result<HashMap<i64, StatusView>, ApiError> {
    let mut map: HashMap<i64, (StatusView, bool)> = HashMap::new();
    for inc in state.storage.open_incidents().await? {
        let global = inc.scope == downwatch_core::GLOBAL_SCOPE;
        let replace = map.get(&inc.service_id).is_none_or(|(_, g)| !g);
        if replace {
            let view = StatusView {
                level: Level::Outage,
                incident_id: Some(inc.id),
            };
            map.insert(inc.service_id, (view, global));
        }
    }
    for l in state.storage.alert_levels().await? {
        if Level::parse(&l.level) == Some(Level::Warning) {
            map.entry(l.service_id).or_insert((
                StatusView {
                    level: Level::Warning,
                    incident_id: None,
                },
                false,
            ));
        }
    }
    Ok(map.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

pub fn view<'a>(s: &'a Service, statuses: &HashMap<i64, StatusView>) -> ServiceView<'a> {
    let status = statuses.get(&s.id).copied().unwrap_or(StatusView {
        level: Level::Ok,
        incident_id: None,
    });
    ServiceView {
        slug: s.slug.as_str(),
        name: &s.name,
        category: s.category.as_deref(),
        url: s.url.as_deref(),
        problems: s.problems.iter().map(|p| p.as_str()).collect(),
        status,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Search: services whose name or slug contains this (case-insensitive,
    /// trimmed; at most 100 characters).
    #[param(max_length = 100)]
    q: Option<String>,
    /// Only services of this category (case-insensitive).
    category: Option<String>,
}

/// `GET /api/v1/services?q=&category=`: the catalogue, each with its status.
#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "services",
    operation_id = "listServices",
    summary = "List and search services",
    description = "The catalogue, sorted by slug, each service with its current status.",
    params(ListQuery),
    responses(
        (status = 200, description = "The matching services", body = crate::openapi::ServiceList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    if q.chars().count() > 100 {
        return Err(ApiError::bad_param("q", "at most 100 characters"));
    }
    let q = q.to_lowercase();
    let category = query.category.as_deref().map(str::to_lowercase);
    let open = statuses(&state).await?;
    let all = state.catalogue.all();
    let services: Vec<ServiceView> = all
        .iter()
        .filter(|s| {
            q.is_empty() || s.name.to_lowercase().contains(&q) || s.slug.as_str().contains(&q)
        })
        .filter(|s| {
            category.as_deref().is_none_or(|c| {
                s.category
                    .as_deref()
                    .is_some_and(|sc| sc.to_lowercase() == c)
            })
        })
        .map(|s| view(s, &open))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "services": services })))
}

/// `GET /api/v1/services/{slug}`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{slug}",
    tag = "services",
    operation_id = "getService",
    summary = "One service",
    description = "One service with its current status.",
    params(("slug" = String, Path, description = "The service's slug")),
    responses(
        (status = 200, description = "The service", body = crate::openapi::Service),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn get_one(
    state: web::Data<AppState>,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(&slug).await?;
    let open = statuses(&state).await?;
    Ok(HttpResponse::Ok().json(view(&service, &open)))
}

/// `POST /api/v1/services` (admin): 201, or 409 on an existing slug.
#[utoipa::path(
    post,
    path = "/api/v1/services",
    tag = "services",
    operation_id = "createService",
    summary = "Create a service (admin)",
    description = "Adds a service to the catalogue. The body is read only with a valid admin \
                   token; it must be JSON of at most 4 KiB.",
    request_body(content = crate::openapi::ServiceCreate, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Service,
            headers(("Location" = String, description = "`/api/v1/services/{slug}`"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let mut f = read_object(&req, payload).await?;
    let slug = f
        .required_string("slug")
        .and_then(|s| Slug::parse(&s).map_err(|e| f.error("slug", e)).ok());
    let name = f
        .required_string("name")
        .and_then(|s| parse_name(&s).map_err(|e| f.error("name", e)).ok());
    let category = f
        .string("category")
        .and_then(|s| parse_category(&s).map_err(|e| f.error("category", e)).ok())
        .flatten();
    let url = f
        .string("url")
        .and_then(|s| parse_url(&s).map_err(|e| f.error("url", e)).ok())
        .flatten();
    let problems = match f.string_list("problems") {
        None => Some(ProblemList::defaults()),
        Some(kinds) => ProblemList::parse(&kinds)
            .map_err(|e| f.error("problems", e))
            .ok(),
    };
    f.finish()?;
    let (Some(slug), Some(name), Some(problems)) = (slug, name, problems) else {
        return Err(ApiError::internal(std::io::Error::other(
            "validated fields missing",
        )));
    };
    let created = state
        .storage
        .create_service(&NewService {
            slug,
            name,
            category,
            url,
            problems,
        })
        .await?;
    let created = std::sync::Arc::new(created);
    state.catalogue.put(created.clone());
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/services/{}", created.slug)))
        .json(view(&created, &HashMap::new())))
}

/// `PATCH /api/v1/services/{slug}` (admin): rename, recategorise, change problem kinds.
#[utoipa::path(
    patch,
    path = "/api/v1/services/{slug}",
    tag = "services",
    operation_id = "updateService",
    summary = "Change a service (admin)",
    description = "Renames, recategorises or changes the problem kinds of a service; members \
                   left out are kept. The slug cannot change.",
    params(("slug" = String, Path, description = "The service's slug")),
    request_body(content = crate::openapi::ServicePatch, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The service as changed", body = crate::openapi::Service),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    slug: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let mut f = read_object(&req, payload).await?;
    let mut patch = ServicePatch::default();
    if f.nullable_string("slug").is_some() {
        f.error("slug", "cannot be changed: it is the service's address");
    }
    match f.nullable_string("name") {
        Some(Some(n)) => patch.name = parse_name(&n).map_err(|e| f.error("name", e)).ok(),
        Some(None) => f.error("name", "must not be null"),
        None => {}
    }
    if let Some(c) = f.nullable_string("category") {
        patch.category = match c {
            None => Some(None),
            Some(c) => parse_category(&c).map_err(|e| f.error("category", e)).ok(),
        };
    }
    if let Some(u) = f.nullable_string("url") {
        patch.url = match u {
            None => Some(None),
            Some(u) => parse_url(&u).map_err(|e| f.error("url", e)).ok(),
        };
    }
    if let Some(kinds) = f.string_list("problems") {
        patch.problems = ProblemList::parse(&kinds)
            .map_err(|e| f.error("problems", e))
            .ok();
    }
    f.finish()?;
    let updated = state
        .storage
        .update_service(&slug, &patch)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no service {:?}", slug.as_str())))?;
    let updated = std::sync::Arc::new(updated);
    state.catalogue.put(updated.clone());
    let open = statuses(&state).await?;
    Ok(HttpResponse::Ok().json(view(&updated, &open)))
}
