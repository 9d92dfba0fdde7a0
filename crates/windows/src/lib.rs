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

/// One client for one service: a report with a key already claimed within
/// the de-duplication window is stored but not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub service_id: i64,
    pub client: [u8; 16],
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

/// How long minute buckets are kept: the longest detector window (an hour)
/// plus room for a late tick.
pub const BUCKET_RETENTION: Duration = Duration::from_secs(3 * 3600);

#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// `"memory"` or `"redis"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    async fn ping(&self) -> Result<()>;

    /// Claims each key for `ttl`, in order; `true` where the claim is new
    /// (the report counts), `false` where the key was already held (also
    /// when the same key appears earlier in `keys`).
    async fn claim(&self, keys: &[DedupKey], ttl: Duration) -> Result<Vec<bool>>;

    /// Gives back claims made for reports that were then not stored, so a
    /// retry of the same report still counts.
    async fn release(&self, keys: &[DedupKey]) -> Result<()>;

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
    ) -> Result<Vec<u32>>;
}
