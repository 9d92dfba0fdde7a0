//! Wiring: the one place that picks implementations (by URL scheme) and
//! builds the server. Binds its own listener so tests can ask for port 0.

use crate::catalogue;
use crate::config::Settings;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{HttpServer, web};
use anyhow::Context;
use downwatch_api::auth::AdminToken;
use downwatch_api::catalogue::Catalogue;
use downwatch_api::metrics::Metrics;
use downwatch_api::ratelimit::IpLimiter;
use downwatch_api::state::{ApiConfig, AppState};
use downwatch_core::detector::DetectorParams;
use downwatch_detector::live::{Live, LiveConfig};
use downwatch_detector::refill::Refiller;
use downwatch_ingest::{ClientHasher, Ingest, IngestConfig, IngestWorkers};
use downwatch_store::Storage;
use downwatch_windows::{DedupRule, MemoryWindows, RedisWindows, WindowStore};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Connects to the configured database and applies its migrations.
pub async fn connect_storage(settings: &Settings) -> anyhow::Result<Arc<dyn Storage>> {
    let storage = downwatch_store::connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "DATABASE_URL: cannot open {}",
                redact(&settings.database_url)
            )
        })?;
    storage.migrate().await.with_context(|| {
        format!(
            "DATABASE_URL: migrating {} failed",
            redact(&settings.database_url)
        )
    })?;
    Ok(storage)
}

pub async fn connect_windows(settings: &Settings) -> anyhow::Result<Arc<dyn WindowStore>> {
    Ok(match &settings.redis_url {
        None => Arc::new(MemoryWindows::new()),
        Some(url) => Arc::new(
            RedisWindows::connect(url, &settings.redis_prefix)
                .await
                .with_context(|| format!("REDIS_URL: cannot connect to {}", redact(url)))?,
        ),
    })
}

/// A URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub struct Application {
    port: u16,
    server: Server,
    workers: IngestWorkers,
    tasks: Vec<JoinHandle<()>>,
    state: web::Data<AppState>,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let storage = connect_storage(settings).await?;
        let services = match &settings.services_file {
            Some(path) => catalogue::from_file(path)?,
            None => catalogue::bundled()?,
        };
        if let Some(n) = storage.seed_catalogue(&services).await? {
            tracing::info!(services = n, "seeded the service catalogue");
        }
        let windows = connect_windows(settings).await?;

        let metrics = Metrics::new();
        let dedup = DedupRule {
            window: settings.dedup_window,
            per_address: settings.counted_per_address,
        };
        // Windows lost (a new process in embedded mode, a Redis that lost
        // its data): rebuilt before the first report is taken, so nobody
        // who already reported counts twice.
        let refiller = Arc::new(Refiller::new(
            storage.clone(),
            windows.clone(),
            dedup,
            metrics.detector.window_refills.clone(),
        ));
        if let Err(e) = refiller.ensure_filled(settings.clock.timestamp()).await {
            tracing::warn!(error = %e, "refilling the window store failed; retrying every 5 s");
        }
        let (ingest, workers) = Ingest::start(
            storage.clone(),
            windows.clone(),
            IngestConfig {
                queue_capacity: settings.ingest_queue,
                max_batch: settings.ingest_max_batch,
                workers: if storage.backend() == "sqlite" {
                    1
                } else {
                    settings.ingest_workers
                },
                dedup,
            },
            metrics.ingest.clone(),
        );
        let hasher = ClientHasher::new(storage.clone()).with_overlap(settings.dedup_window);
        hasher
            .refresh(settings.clock.now())
            .await
            .context("loading today's client salt")?;
        let catalogue = Catalogue::new(storage.clone());
        catalogue
            .refresh()
            .await
            .context("loading the service catalogue")?;
        let events = downwatch_api::events::EventHub::start(&windows)
            .await
            .context("subscribing to detector events")?;
        let state = web::Data::new(AppState {
            events,
            hasher,
            storage,
            windows,
            ingest,
            catalogue,
            limiter: IpLimiter::new(settings.rate_limit),
            admin: AdminToken::new(settings.admin_token.as_deref()),
            stale: Default::default(),
            feeds: Default::default(),
            metrics,
            config: ApiConfig {
                trusted_proxies: settings.trusted_proxies.clone(),
                country_header: settings.country_header.clone(),
                commit_timeout: settings.commit_timeout,
                clock: settings.clock,
                webhook_allow_private: settings.webhook_allow_private,
                public_url: settings.public_url.clone(),
            },
        });

        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("DOWNWATCH_BIND: cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let server = HttpServer::new(move || downwatch_api::app(app_state.clone()))
            .workers(settings.http_workers)
            .shutdown_timeout(15)
            .listen(listener)?
            .run();

        let mut tasks = vec![
            // Often: a flood of distinct addresses is forgotten seconds after
            // it passes, which is what bounds the limiter's memory.
            tokio::spawn(every(Duration::from_secs(5), {
                let state = state.clone();
                move || {
                    state.limiter.housekeeping();
                    async {}
                }
            })),
            tokio::spawn(every(Duration::from_secs(60), {
                let state = state.clone();
                move || {
                    let state = state.clone();
                    async move {
                        if let Err(e) = state.hasher.refresh(state.config.clock.now()).await {
                            tracing::warn!(error = ?e, "client salt refresh failed");
                        }
                    }
                }
            })),
            // Every instance watches for a window store that lost its data
            // (the lease picks one to refill it), detector or not.
            tokio::spawn(every(Duration::from_secs(5), {
                let refiller = refiller.clone();
                let clock = settings.clock;
                move || {
                    let refiller = refiller.clone();
                    async move {
                        let now = clock.timestamp();
                        if let Err(e) = refiller.ensure_filled(now).await {
                            tracing::warn!(error = %e, "refilling the window store failed");
                        }
                    }
                }
            })),
            tokio::spawn(every(Duration::from_secs(30), {
                let state = state.clone();
                move || {
                    let state = state.clone();
                    async move {
                        if let Err(e) = state.catalogue.refresh().await {
                            tracing::warn!(error = ?e, "catalogue refresh failed");
                        }
                    }
                }
            })),
        ];
        if settings.detector {
            let live = Live::new(
                state.storage.clone(),
                state.windows.clone(),
                DetectorParams::default(),
                LiveConfig {
                    interval: settings.detect_interval,
                    lease_ttl: (settings.detect_interval * 3).max(Duration::from_secs(15)),
                    dedup,
                    ..LiveConfig::default()
                },
                state.metrics.detector.clone(),
            )
            .with_clock(settings.clock);
            tasks.push(tokio::spawn(live.run()));
        }
        let deliverer = downwatch_webhooks::Deliverer::new(
            state.storage.clone(),
            downwatch_webhooks::DeliveryConfig {
                backoff: settings.webhook_backoff,
                max_attempts: settings.webhook_max_attempts,
                timeout: settings.webhook_timeout,
                allow_private: settings.webhook_allow_private,
                ..downwatch_webhooks::DeliveryConfig::default()
            },
            state.metrics.webhooks.clone(),
        )
        .context("building the webhook HTTP client")?;
        tasks.push(tokio::spawn(deliverer.run()));
        if settings.clock.is_simulated() {
            tracing::warn!(
                now = %settings.clock.now(),
                speed = settings.clock.speed(),
                "simulated clock (DOWNWATCH_CLOCK): reports are stamped with its time; for demos and tests only"
            );
        }
        tracing::info!(
            %port,
            database = state.storage.backend(),
            windows = state.windows.backend(),
            "downwatch is listening"
        );
        Ok(Self {
            port,
            server,
            workers,
            tasks,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests, signals are handled by actix).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until stopped, then stores everything still queued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        for t in &self.tasks {
            t.abort();
        }
        self.workers.shutdown().await;
        tracing::info!("ingest queue drained; stopped");
        served.context("the HTTP server failed")
    }
}

async fn every<F, Fut>(period: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        f().await;
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact("postgres://dw:secret@db/dw"),
            "postgres://dw:***@db/dw"
        );
        assert_eq!(redact("postgres://dw@db/dw"), "postgres://dw@db/dw");
        assert_eq!(redact("sqlite://downwatch.db"), "sqlite://downwatch.db");
    }
}
