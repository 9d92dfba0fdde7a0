//! Sliding windows: per-minute counts and de-duplication keys.
//!
//! Derived state: the database is the source of truth and these can be
//! rebuilt from its rollups. Embedded mode keeps them in process; production
//! mode keeps them in Redis so several instances share them.

mod memory;
mod redis_store;

pub use memory::MemoryWindows;
pub use redis_store::RedisWindows;

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    #[error("invalid window store configuration: {0}")]
    Config(String),
}

pub type Result<T, E = WindowError> = std::result::Result<T, E>;

/// Who sent a report to which service. `client` is the address with the
/// optional client id (people behind one NAT), `address` the address alone,
/// so rotating client ids cannot multiply one address's counted reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub service_id: i64,
    pub client: [u8; 16],
    pub address: [u8; 16],
    /// The same client under yesterday's salt, during the first window of a
    /// UTC day: a claim taken under it before midnight still holds, and the
    /// address's reports counted before midnight still count against its
    /// cap, so the salt's rotation does not let everyone count again.
    pub previous: Option<PreviousDay>,
}

/// A client's hashes under yesterday's salt (see [`DedupKey::previous`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PreviousDay {
    pub client: [u8; 16],
    pub address: [u8; 16],
}

/// The de-duplication rule: one counted report per client per service per
/// `window`, and at most `per_address` counted per address per service per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupRule {
    pub window: Duration,
    pub per_address: u32,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// New client, address under its cap: the report counts.
    Counted,
    /// The client already has a counted report in the window.
    Duplicate,
    /// New client, but its address has used up its counted reports.
    OverCap,
}

impl Claim {
    pub fn counts(self) -> bool {
        self == Claim::Counted
    }
    /// Whether the claim took something that must be given back if the
    /// report is then not stored.
    pub fn holds(self) -> bool {
        self != Claim::Duplicate
    }
}

/// Counted reports to add to one minute bucket of one service and scope
/// (`"global"` or a country code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    pub service_id: i64,
    pub scope: String,
    /// Epoch seconds, floored to the minute.
    pub minute: i64,
    pub count: u32,
}

/// A counted report's claim, read back from the database to rebuild
/// de-duplication after the window store lost it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredClaim {
    pub service_id: i64,
    pub client: [u8; 16],
    /// `None` for reports stored before addresses were kept (or imported).
    pub address: Option<[u8; 16]>,
    /// What is left of the window since the report was received.
    pub remaining: Duration,
}

/// `n` consecutive minute buckets of one scope to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRead {
    pub service_id: i64,
    pub scope: String,
    /// Epoch seconds, floored to the minute.
    pub from_minute: i64,
    pub n: usize,
}

/// Messages published to every instance's subscribers (the detector's events).
pub type Subscription = tokio::sync::mpsc::Receiver<String>;

/// Checks a Redis key prefix: at most 64 bytes, no braces (they would
/// break the per-service hash tags), no white space.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > 64 || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace) {
        Err("expected at most 64 characters without braces or spaces".to_owned())
    } else {
        Ok(())
    }
}

/// How long minute buckets are kept: the longest detector window (an hour)
/// plus room for a late tick.
pub const BUCKET_RETENTION: Duration = Duration::from_secs(3 * 3600);

#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// `"memory"` or `"redis"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    async fn ping(&self) -> Result<()>;

    /// Claims each key in order under `rule` (a key earlier in `keys` counts
    /// as already claimed).
    async fn claim(&self, keys: &[DedupKey], rule: DedupRule) -> Result<Vec<Claim>>;

    /// Gives back claims (as [`claim`](Self::claim) answered them) of reports
    /// that were then not stored, so a retry of the same report still counts.
    async fn release(&self, claims: &[(DedupKey, Claim)]) -> Result<()>;

    /// Adds counts to minute buckets in one round trip.
    async fn add(&self, increments: &[Increment]) -> Result<()>;

    /// Counts of `n` consecutive minutes from `from_minute` (epoch seconds,
    /// floored to the minute); missing or expired buckets read as 0.
    async fn minutes(
        &self,
        service_id: i64,
        scope: &str,
        from_minute: i64,
        n: usize,
    ) -> Result<Vec<u32>> {
        let read = ScopeRead {
            service_id,
            scope: scope.to_owned(),
            from_minute,
            n,
        };
        Ok(self.read(&[read]).await?.pop().unwrap_or_default())
    }

    /// Many [`minutes`](Self::minutes) reads in one round trip, answers in order.
    async fn read(&self, reads: &[ScopeRead]) -> Result<Vec<Vec<u32>>>;

    /// For each service, its scopes with counts in a minute at or after
    /// `since_minute`, sorted.
    async fn active_scopes(
        &self,
        service_ids: &[i64],
        since_minute: i64,
    ) -> Result<Vec<Vec<String>>>;

    /// A detector tick's reads in one round trip: the buckets of `reads`, and
    /// the scopes of `service_ids` with counts since `since_minute` (as
    /// [`read`](Self::read) and [`active_scopes`](Self::active_scopes)).
    async fn read_tick(
        &self,
        reads: &[ScopeRead],
        service_ids: &[i64],
        since_minute: i64,
    ) -> Result<(Vec<Vec<u32>>, Vec<Vec<String>>)> {
        let counts = self.read(reads).await?;
        let scopes = self.active_scopes(service_ids, since_minute).await?;
        Ok((counts, scopes))
    }

    /// Takes or renews the lease `name` for `holder` for `ttl`; `false` while
    /// another holder has it. One instance at a time runs what it guards.
    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Whether the store still holds what [`fill`](Self::fill) put in it:
    /// `false` on a new store or after Redis lost its data.
    async fn is_filled(&self) -> Result<bool>;

    /// Sets minute buckets to `counts` (read from the database rollups) and
    /// marks the store filled. Buckets not named are left as they are.
    async fn fill(&self, counts: &[Increment]) -> Result<()>;

    /// Takes the `filled` mark away, so the next refill rebuilds buckets and
    /// claims from the database: for when ingest skipped the store for a
    /// while and it kept its data (counts and claims are missing from it).
    async fn mark_stale(&self) -> Result<()>;

    /// Puts back the claims of counted reports (oldest first): each client's
    /// claim for what is left of its window, and one place under its
    /// address's cap per report, the cap expiring with the address's oldest
    /// report as it would have. Claims taken meanwhile are kept; a report
    /// both taken meanwhile and restored costs its address one extra place
    /// for the rest of the window (the cap errs on counting fewer).
    async fn restore_claims(&self, claims: &[RestoredClaim], rule: DedupRule) -> Result<()>;

    /// Sends `payload` to every subscriber of `channel`, in every instance.
    async fn publish(&self, channel: &str, payload: &str) -> Result<()>;

    /// Subscribes to `channel`; the subscription ends when the receiver is
    /// dropped. Redis subscriptions reconnect by themselves.
    async fn subscribe(&self, channel: &str) -> Result<Subscription>;
}
