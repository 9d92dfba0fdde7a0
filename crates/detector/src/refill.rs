//! Rebuilding the window store from the database after it lost its data
//! (Redis flushed or restarted without persistence; in embedded mode, every
//! start): the minute buckets of the last hours from the rollups, and the
//! de-duplication claims of the counted reports still inside their window,
//! so a client who already reported does not count twice and an address
//! keeps its cap.
//!
//! Every instance checks every few seconds; a lease makes one of them do
//! it. The detector does not step on a store that is not filled.

use crate::live::LiveError;
use downwatch_store::{ClaimCursor, Storage};
use downwatch_windows::{BUCKET_RETENTION, DedupRule, Increment, RestoredClaim, WindowStore};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

/// The lease that makes one instance refill.
pub const LEASE: &str = "refill";

/// Claims read from the database per page.
const PAGE: u32 = 10_000;

pub struct Refiller {
    storage: Arc<dyn Storage>,
    windows: Arc<dyn WindowStore>,
    dedup: DedupRule,
    holder: String,
    refills: Counter,
}

/// What one refill put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refilled {
    pub buckets: usize,
    pub claims: usize,
}

impl Refiller {
    pub fn new(
        storage: Arc<dyn Storage>,
        windows: Arc<dyn WindowStore>,
        dedup: DedupRule,
        refills: Counter,
    ) -> Self {
        Self {
            storage,
            windows,
            dedup,
            holder: format!(
                "refill-{}-{}",
                std::process::id(),
                crate::live::rand_suffix()
            ),
            refills,
        }
    }

    /// Refills the store if it lost its data and no other instance is at
    /// it; `Some` with what was put back when this call refilled.
    pub async fn ensure_filled(&self, now: i64) -> Result<Option<Refilled>, LiveError> {
        if self.windows.is_filled().await? {
            return Ok(None);
        }
        // Long enough for a big refill; renewed by nobody, so a holder
        // that died leaves it to another instance after a minute.
        if !self
            .windows
            .lease(LEASE, &self.holder, Duration::from_secs(60))
            .await?
        {
            return Ok(None);
        }
        // Claims first: filling the buckets marks the store filled.
        let claims = self.restore_claims(now).await?;
        let buckets = self.fill_buckets(now).await?;
        self.refills.inc();
        tracing::info!(
            buckets,
            claims,
            "window store refilled from the database (minute buckets and de-duplication claims)"
        );
        Ok(Some(Refilled { buckets, claims }))
    }

    async fn fill_buckets(&self, now: i64) -> Result<usize, LiveError> {
        let from = (now - BUCKET_RETENTION.as_secs() as i64).div_euclid(60) * 60 + 60;
        let rows = self.storage.recent_minute_counts(from).await?;
        let counts: Vec<Increment> = rows
            .into_iter()
            .map(|r| Increment {
                service_id: r.service_id,
                scope: r.scope,
                minute: r.minute,
                count: u32::try_from(r.counted).unwrap_or(u32::MAX),
            })
            .collect();
        self.windows.fill(&counts).await?;
        Ok(counts.len())
    }

    /// The claims of every counted report of the last window, a page at a
    /// time per service, oldest first.
    async fn restore_claims(&self, now: i64) -> Result<usize, LiveError> {
        let window_us = i64::try_from(self.dedup.window.as_micros()).unwrap_or(i64::MAX);
        let now_us = now.saturating_mul(1_000_000);
        let since = now - self.dedup.window.as_secs() as i64;
        let mut restored = 0;
        for service in self.storage.list_services().await? {
            let mut after: Option<ClaimCursor> = None;
            loop {
                let page = self
                    .storage
                    .counted_claims(service.id, since, after, PAGE)
                    .await?;
                let Some(last) = page.last() else {
                    break;
                };
                after = Some(last.cursor());
                let claims: Vec<RestoredClaim> = page
                    .iter()
                    .filter_map(|row| {
                        let left = window_us - (now_us - row.received_at);
                        Some(RestoredClaim {
                            service_id: service.id,
                            client: row.client_hash.as_slice().try_into().ok()?,
                            address: row.address_hash.as_deref().and_then(|a| a.try_into().ok()),
                            remaining: Duration::from_micros(u64::try_from(left).ok()?),
                        })
                    })
                    .collect();
                restored += claims.len();
                self.windows.restore_claims(&claims, self.dedup).await?;
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
        Ok(restored)
    }
}
