//! What every handler shares.

use crate::auth::AdminToken;
use crate::catalogue::Catalogue;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::ratelimit::IpLimiter;
use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use downwatch_core::{CountryCode, Service};
use downwatch_ingest::{ClientHasher, Ingest};
use downwatch_store::Storage;
use downwatch_windows::WindowStore;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// A header carrying the client's country (e.g. `CF-IPCountry`), used
    /// when a report names none.
    pub country_header: Option<HeaderName>,
    /// How long a submission waits for its batch to commit before it is
    /// answered 503 (it may still be stored; it is never answered 201 unstored).
    pub commit_timeout: Duration,
    /// What time it is: reports are stamped and pages drawn by it.
    pub clock: downwatch_core::Clock,
    /// Webhooks may name private, loopback and link-local addresses.
    pub webhook_allow_private: bool,
    /// The server's public base URL (`https://status.example.org`), for
    /// the absolute links of feeds and pages; see `public_url`.
    pub public_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            country_header: None,
            commit_timeout: Duration::from_secs(10),
            clock: downwatch_core::Clock::System,
            webhook_allow_private: false,
            public_url: None,
        }
    }
}

pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub windows: Arc<dyn WindowStore>,
    pub ingest: Ingest,
    pub catalogue: Catalogue,
    pub hasher: ClientHasher,
    pub limiter: IpLimiter,
    pub admin: AdminToken,
    pub metrics: Metrics,
    pub config: ApiConfig,
    /// The detector's events, for `/api/v1/stream`.
    pub events: crate::events::EventHub,
    /// Earlier answers to reads, served while the database is down.
    pub stale: crate::stale::StaleCache,
    /// The Atom feeds' contents, for 30 s.
    pub feeds: crate::routes::feeds::FeedCache,
}

impl AppState {
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let xff = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        crate::client_ip::resolve(peer, xff, &self.config.trusted_proxies)
    }

    /// The service a path names, or 404.
    pub async fn service(&self, slug: &str) -> Result<Arc<Service>, ApiError> {
        self.catalogue
            .get(slug)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no service {slug:?}")))
    }

    /// Now, by the server's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.config.clock.now()
    }

    pub fn header_country(&self, req: &HttpRequest) -> Option<CountryCode> {
        let name = self.config.country_header.as_ref()?;
        let value = req.headers().get(name)?.to_str().ok()?;
        CountryCode::from_header(value)
    }
}
