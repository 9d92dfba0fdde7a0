//! The HTTP API (actix-web). Handlers parse input into domain types, call
//! storage and ingest through their traits, and answer JSON, or problem+json
//! for every error.

pub mod auth;
pub mod body;
pub mod catalogue;
pub mod client_ip;
pub mod events;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod problem;
pub mod public_url;
pub mod ratelimit;
pub mod routes;
pub mod stale;
pub mod state;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, Next, from_fn};
use actix_web::{App, Error, web};
use problem::ApiError;
use state::AppState;

/// Every route of the API, as a table of contents.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Report submission first: routes are tried in order, and it is the
    // one that bursts.
    routes::reports::config(cfg);
    routes::health::config(cfg);
    routes::services::config(cfg);
    routes::series::config(cfg);
    routes::status::config(cfg);
    routes::incidents::config(cfg);
    routes::feeds::config(cfg);
    routes::chart::config(cfg);
    routes::stream::config(cfg);
    routes::webhooks::config(cfg);
    openapi::config(cfg);
    pages::config(cfg);
}

/// The whole application: routes, error shape, metrics and headers.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::QueryConfig::default().error_handler(|err, _req| {
            ApiError::bad_param(
                "query",
                format!("the query string could not be read: {err}"),
            )
            .into()
        }))
        .configure(configure)
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such resource".into()))
        }))
        .wrap(from_fn(stale::stale_if_error))
        .wrap(ErrorHandlers::new().default_handler(problem::problem_for_framework_errors))
        .wrap(from_fn(count_requests))
        .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
}

async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    if let Some(state) = state {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        state
            .metrics
            .requests
            .get_or_create(&metrics::RequestLabels {
                method,
                route,
                status: res.status().as_u16(),
            })
            .inc();
    }
    Ok(res)
}
