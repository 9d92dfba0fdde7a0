//! Webhook subscriptions (admin): create, list, read with recent
//! deliveries, enable or disable, delete. Deliveries themselves are sent by
//! the worker of `downwatch-webhooks`; see docs/architecture.md.

use crate::body::read_object;
use crate::problem::ApiError;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use downwatch_core::time::rfc3339_ms as time;
use downwatch_core::{CountryCode, GLOBAL_SCOPE, Slug};
use downwatch_store::webhooks::{Delivery, EVENTS, MAX_WEBHOOKS, NewWebhook, Webhook};
use serde::Serialize;

pub fn config(cfg: &mut web::ServiceConfig) {
    // Every answer here is for one admin's eyes (a secret once, URLs that
    // may carry credentials): no cache, shared or private, may keep it.
    let no_store = || DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store"));
    cfg.service(
        web::resource("/api/v1/webhooks")
            .wrap(no_store())
            .get(list)
            .post(create),
    )
    .service(
        web::resource("/api/v1/webhooks/{id}")
            .wrap(no_store())
            .get(one)
            .patch(update)
            .delete(remove),
    );
}

/// Deliveries shown with one subscription.
const RECENT: i64 = 20;
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 200;
const MAX_DESCRIPTION: usize = 200;
const MAX_ITEMS: usize = 300;

#[derive(Serialize)]
struct Counts {
    pending: i64,
    delivered: i64,
    failed: i64,
}

#[derive(Serialize)]
struct WebhookView<'a> {
    id: i64,
    url: &'a str,
    services: Option<&'a [String]>,
    scopes: Option<&'a [String]>,
    events: Option<&'a [String]>,
    description: Option<&'a str>,
    created_at: String,
    state: &'static str,
    disabled_at: Option<String>,
    disabled_reason: Option<&'a str>,
    deliveries: Counts,
    last_attempt_at: Option<String>,
    last_status: Option<i64>,
    last_error: Option<&'a str>,
    retry_at: Option<String>,
    /// Only in the answer to the creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recent_deliveries: Option<Vec<DeliveryView<'a>>>,
}

fn view(w: &Webhook) -> WebhookView<'_> {
    WebhookView {
        id: w.id,
        url: &w.url,
        services: w.services.as_deref(),
        scopes: w.scopes.as_deref(),
        events: w.events.as_deref(),
        description: w.description.as_deref(),
        created_at: time(w.created_at),
        state: if w.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        },
        disabled_at: w.disabled_at.map(time),
        disabled_reason: w.disabled_reason.as_deref(),
        deliveries: Counts {
            pending: w.pending,
            delivered: w.delivered,
            failed: w.failed,
        },
        last_attempt_at: w.last_attempt_at.map(time),
        last_status: w.last_status,
        last_error: w.last_error.as_deref(),
        retry_at: w.retry_at.map(time),
        secret: None,
        recent_deliveries: None,
    }
}

#[derive(Serialize)]
struct DeliveryView<'a> {
    id: i64,
    event: &'a str,
    incident_id: i64,
    state: &'a str,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<&'a str>,
    last_attempt_at: Option<String>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
    created_at: String,
}

fn delivery_view(d: &Delivery) -> DeliveryView<'_> {
    DeliveryView {
        id: d.id,
        event: &d.event,
        incident_id: d.incident_id,
        state: &d.state,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error.as_deref(),
        last_attempt_at: d.last_attempt_at.map(time),
        next_attempt_at: (d.state == "pending")
            .then_some(d.next_attempt_at)
            .flatten()
            .map(time),
        delivered_at: d.delivered_at.map(time),
        created_at: time(d.created_at),
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::bad_param("id", "must be a positive integer"))
}

/// A list member: absent or `null` means "all"; an empty list is refused
/// (it would receive nothing), and so is a long one, before any of its
/// entries is looked at.
fn bounded_list(f: &mut crate::body::Fields, name: &str) -> Option<Vec<String>> {
    let items = f.string_list(name)?;
    if items.is_empty() {
        f.error(name, "must not be empty; leave it out (or null) for all");
        return None;
    }
    if items.len() > MAX_ITEMS {
        f.error(name, format!("at most {MAX_ITEMS} entries"));
        return None;
    }
    Some(items)
}

/// A bounded list's entries, each checked (and normalised), without repeats.
fn checked_list(
    f: &mut crate::body::Fields,
    name: &str,
    items: Option<Vec<String>>,
    check: impl Fn(&str) -> Result<String, String>,
) -> Option<Vec<String>> {
    let items = items?;
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in &items {
        match check(item) {
            Ok(v) => {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Err(e) => {
                f.error(name, e);
                return None;
            }
        }
    }
    Some(out)
}

/// `POST /api/v1/webhooks` (admin): subscribe a URL to incident events.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    summary = "Subscribe a URL to incident events (admin)",
    description = "Incident events (opened, updated, resolved, reopened) of the chosen services \
                   and scopes are POSTed to `url` as JSON, signed with \
                   `X-Downwatch-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`, \
                   and retried with exponential back-off until a 2xx answer. The URL must resolve \
                   to public addresses only (checked now, with at most 5 s for its name to \
                   resolve, and at every delivery) unless the server sets \
                   `DOWNWATCH_WEBHOOK_ALLOW_PRIVATE`. The secret is shown in this answer only \
                   (sent with `Cache-Control: no-store`, as every webhook answer is). A server \
                   keeps at most 100 subscriptions (409 beyond).",
    request_body(content = WebhookCreate, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Subscribed", body = WebhookCreated,
            headers(("Location" = String, description = "`/api/v1/webhooks/{id}`"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 409, response = crate::openapi::Conflict),
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
    let url = match f.required_string("url") {
        Some(u) => {
            match downwatch_webhooks::check_url(&u, state.config.webhook_allow_private).await {
                Ok(u) => Some(u.to_string()),
                Err(e) => {
                    f.error("url", e.to_string());
                    None
                }
            }
        }
        None => None,
    };
    let secret = f.string("secret");
    if let Some(s) = &secret
        && (!(MIN_SECRET..=MAX_SECRET).contains(&s.chars().count())
            || s.chars().any(char::is_control))
    {
        f.error(
            "secret",
            format!("{MIN_SECRET} to {MAX_SECRET} characters without control characters"),
        );
    }
    let services = bounded_list(&mut f, "services");
    let mut unknown = Vec::new();
    for slug in services.iter().flatten() {
        if Slug::parse(slug).is_ok() && state.catalogue.get(slug).await?.is_none() {
            unknown.push(slug.clone());
        }
    }
    let services = checked_list(&mut f, "services", services, |s| {
        let slug = Slug::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        if unknown.iter().any(|u| u == s) {
            return Err(format!("no service {s:?}"));
        }
        Ok(slug.as_str().to_owned())
    });
    let scopes = bounded_list(&mut f, "scopes");
    let scopes = checked_list(&mut f, "scopes", scopes, |s| {
        if s == GLOBAL_SCOPE {
            return Ok(s.to_owned());
        }
        CountryCode::parse(s)
            .map(|c| c.as_str().to_owned())
            .map_err(|e| format!("\"global\" or a country code: {e}"))
    });
    let events = bounded_list(&mut f, "events");
    let events = checked_list(&mut f, "events", events, |s| {
        if EVENTS.contains(&s) {
            Ok(s.to_owned())
        } else {
            Err(format!("{s:?} is not one of {}", EVENTS.join(", ")))
        }
    });
    let description = f.string("description").map(|d| d.trim().to_owned());
    if let Some(d) = &description
        && (d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control))
    {
        f.error(
            "description",
            format!("at most {MAX_DESCRIPTION} characters without control characters"),
        );
    }
    f.finish()?;
    let Some(url) = url else {
        return Err(ApiError::internal(std::io::Error::other(
            "validated url missing",
        )));
    };
    let secret = secret.unwrap_or_else(downwatch_webhooks::new_secret);
    let created = state
        .storage
        .create_webhook(
            &NewWebhook {
                url,
                secret: secret.clone(),
                services,
                scopes,
                events,
                description: description.filter(|d| !d.is_empty()),
            },
            chrono::Utc::now().timestamp_millis(),
            MAX_WEBHOOKS,
        )
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "this server already has {MAX_WEBHOOKS} webhook subscriptions, the most it \
                 keeps; delete one first"
            ))
        })?;
    let mut v = view(&created);
    v.secret = Some(&secret);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/webhooks/{}", created.id)))
        .json(v))
}

/// `GET /api/v1/webhooks` (admin).
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    summary = "List webhook subscriptions (admin)",
    description = "Every subscription, oldest first, with its deliveries counted by state and \
                   its latest attempt. Secrets are not shown.",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The subscriptions", body = WebhookList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let all = state.storage.webhooks().await?;
    let views: Vec<WebhookView> = all.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "webhooks": views })))
}

/// `GET /api/v1/webhooks/{id}` (admin): one subscription and its latest deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    summary = "One webhook subscription and its deliveries (admin)",
    description = "The subscription and its 20 latest deliveries, newest first: state, attempts, \
                   the last HTTP status or error, and when the next attempt is due.",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The subscription", body = WebhookDetail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn one(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let id = parse_id(&id)?;
    let w = state
        .storage
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook {id}")))?;
    let deliveries = state.storage.webhook_deliveries(id, RECENT).await?;
    let mut v = view(&w);
    v.recent_deliveries = Some(deliveries.iter().map(delivery_view).collect());
    Ok(HttpResponse::Ok().json(v))
}

/// `PATCH /api/v1/webhooks/{id}` (admin): enable or disable a subscription.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "updateWebhook",
    summary = "Enable or disable a webhook subscription (admin)",
    description = "`{\"state\": \"active\"}` enables a subscription the server disabled \
                   (after 3 deliveries in a row were given up) or an admin did: events are \
                   enqueued for it again and its pending deliveries are sent. \
                   `{\"state\": \"disabled\"}` stops it by hand: no events are enqueued for it, \
                   and what is pending waits (pending deliveries are given up after 24 hours).",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    request_body(content = WebhookUpdate, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The subscription", body = WebhookSubscription),
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
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let id = parse_id(&id)?;
    let mut f = read_object(&req, payload).await?;
    let wanted = f.required_string("state");
    if let Some(s) = &wanted
        && !matches!(s.as_str(), "active" | "disabled")
    {
        f.error("state", "must be \"active\" or \"disabled\"");
    }
    f.finish()?;
    let found = match wanted.as_deref() {
        Some("active") => state.storage.enable_webhook(id).await?,
        _ => {
            state
                .storage
                .disable_webhook(id, "disabled by an admin")
                .await?
        }
    };
    let w = match found {
        true => state.storage.webhook(id).await?,
        false => None,
    }
    .ok_or_else(|| ApiError::NotFound(format!("no webhook {id}")))?;
    Ok(HttpResponse::Ok().json(view(&w)))
}

/// `DELETE /api/v1/webhooks/{id}` (admin).
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    summary = "Delete a webhook subscription (admin)",
    description = "Removes the subscription and its deliveries, pending ones included.",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.admin.check(&req)?;
    let id = parse_id(&id)?;
    if state.storage.delete_webhook(id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no webhook {id}")))
    }
}

// ------------------------------------------------ documentation-only types

/// A new subscription. Unknown members are refused (422).
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/downwatch", "services": ["whatsapp"],
    "scopes": ["global", "FR"], "description": "on-call channel"}))]
#[allow(dead_code)]
pub struct WebhookCreate {
    /// An absolute http(s) URL that resolves to public addresses only.
    #[schema(max_length = 2000, pattern = "^https?://")]
    pub url: String,
    /// The HMAC key of the signatures: 16 to 200 characters. Absent: a
    /// random one is made and returned once.
    #[schema(min_length = 16, max_length = 200)]
    pub secret: Option<String>,
    /// Service slugs; absent or `null`: every service (new ones too).
    #[schema(min_items = 1, max_items = 300)]
    pub services: Option<Vec<String>>,
    /// `global` and/or country codes (a country's own incidents);
    /// absent or `null`: every scope.
    #[schema(min_items = 1, max_items = 300, example = json!(["global", "FR"]))]
    pub scopes: Option<Vec<String>>,
    /// Events to receive; absent or `null`: all of them.
    #[schema(min_items = 1, max_items = 4)]
    pub events: Option<Vec<WebhookEvent>>,
    /// A note for admins, at most 200 characters.
    #[schema(max_length = 200)]
    pub description: Option<String>,
}

/// An incident event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum WebhookEvent {
    #[serde(rename = "incident.opened")]
    Opened,
    #[serde(rename = "incident.updated")]
    Updated,
    #[serde(rename = "incident.resolved")]
    Resolved,
    #[serde(rename = "incident.reopened")]
    Reopened,
}

/// Whether a subscription receives events.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum WebhookState {
    Active,
    Disabled,
}

/// A change to a subscription.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"state": "active"}))]
#[allow(dead_code)]
pub struct WebhookUpdate {
    /// `active` to enable it (again), `disabled` to stop it.
    pub state: WebhookState,
}

/// Deliveries of a subscription by state.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct DeliveryCounts {
    /// Waiting to be sent, or to be retried.
    #[schema(format = Int64)]
    pub pending: i64,
    #[schema(format = Int64)]
    pub delivered: i64,
    /// Given up after the last attempt.
    #[schema(format = Int64)]
    pub failed: i64,
}

/// The three views of a subscription share their members; each is a
/// closed object (unknown members would be a documentation error).
macro_rules! subscription_schema {
    ($(#[$attr:meta])* $name:ident { $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$attr])*
        #[derive(utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct $name {
            #[schema(format = Int64)]
            pub id: i64,
            pub url: String,
            /// `null`: every service.
            #[schema(required = true)]
            pub services: Option<Vec<String>>,
            /// `null`: every scope.
            #[schema(required = true)]
            pub scopes: Option<Vec<String>>,
            /// `null`: every event.
            #[schema(required = true)]
            pub events: Option<Vec<WebhookEvent>>,
            #[schema(required = true)]
            pub description: Option<String>,
            #[schema(format = DateTime)]
            pub created_at: String,
            /// `disabled`: nothing is enqueued or sent for it (see
            /// `disabled_reason`) until it is made `active` again with `PATCH`.
            pub state: WebhookState,
            /// When it was disabled.
            #[schema(required = true, format = DateTime)]
            pub disabled_at: Option<String>,
            /// Why: deliveries given up in a row (with the last error), or
            /// an admin.
            #[schema(required = true)]
            pub disabled_reason: Option<String>,
            pub deliveries: DeliveryCounts,
            /// The latest attempt of any delivery.
            #[schema(required = true, format = DateTime)]
            pub last_attempt_at: Option<String>,
            /// Its HTTP status; `null` when it got no answer (or none was made).
            #[schema(required = true, format = Int64)]
            pub last_status: Option<i64>,
            /// Why it failed (a non-2xx status, a timeout, a refused address).
            #[schema(required = true)]
            pub last_error: Option<String>,
            /// The oldest pending delivery failed: the next attempt is not before this.
            #[schema(required = true, format = DateTime)]
            pub retry_at: Option<String>,
            $($(#[$fattr])* pub $field: $ty,)*
        }
    };
}

subscription_schema!(
    /// A subscription as admins see it (without its secret).
    WebhookSubscription {}
);

subscription_schema!(
    /// The subscription just created, with its secret (shown only now).
    WebhookCreated {
        /// The HMAC key of `X-Downwatch-Signature`.
        secret: String,
    }
);

/// `GET /api/v1/webhooks`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookSubscription>,
}

/// One delivery of an event to a subscription.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WebhookDelivery {
    /// Also sent as `X-Downwatch-Delivery`.
    #[schema(format = Int64)]
    pub id: i64,
    pub event: WebhookEvent,
    #[schema(format = Int64)]
    pub incident_id: i64,
    pub state: DeliveryState,
    #[schema(format = Int64)]
    pub attempts: i64,
    #[schema(required = true, format = Int64)]
    pub last_status: Option<i64>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub last_attempt_at: Option<String>,
    /// While pending: when the next attempt is due.
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub delivered_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Where a delivery stands.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

subscription_schema!(
    /// A subscription with its 20 latest deliveries, newest first.
    WebhookDetail {
        recent_deliveries: Vec<WebhookDelivery>,
    }
);
