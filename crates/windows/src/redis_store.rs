//! Redis windows, shared by every instance of a production deployment.
//!
//! Key layout (every key of one service shares the hash tag `{s<id>}`, so a
//! Redis Cluster keeps them on one slot):
//! - `<prefix>{s<id>}:d:<client hex>`: de-duplication claim, `SET NX EX`.
//! - `<prefix>{s<id>}:m:<scope>:<minute>`: counted reports of one minute,
//!   `INCRBY` with an expiry of [`BUCKET_RETENTION`](super::BUCKET_RETENTION).

use super::{BUCKET_RETENTION, DedupKey, Increment, Result, WindowError, WindowStore};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt::Write;
use std::time::Duration;

pub struct RedisWindows {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisWindows {
    /// Connects to `url`; every key is prefixed with `prefix` (so one Redis
    /// can serve several deployments, or several tests).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        if prefix.contains(['{', '}']) || prefix.len() > 64 {
            return Err(WindowError::Config(
                "the key prefix must be at most 64 bytes without braces".into(),
            ));
        }
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn dedup_key(&self, k: &DedupKey) -> String {
        let mut s = format!("{}{{s{}}}:d:", self.prefix, k.service_id);
        for b in k.client {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    fn bucket_key(&self, service_id: i64, scope: &str, minute: i64) -> String {
        format!("{}{{s{service_id}}}:m:{scope}:{minute}", self.prefix)
    }
}

#[async_trait]
impl WindowStore for RedisWindows {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn claim(&self, keys: &[DedupKey], ttl: Duration) -> Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET")
                .arg(self.dedup_key(k))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(replies.into_iter().map(|r| r.is_some()).collect())
    }

    async fn release(&self, keys: &[DedupKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("DEL").arg(self.dedup_key(k)).ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn add(&self, increments: &[Increment]) -> Result<()> {
        if increments.is_empty() {
            return Ok(());
        }
        let retention = BUCKET_RETENTION.as_secs();
        let mut pipe = redis::pipe();
        for inc in increments {
            let key = self.bucket_key(inc.service_id, &inc.scope, inc.minute);
            pipe.cmd("INCRBY").arg(&key).arg(inc.count).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(retention).ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn minutes(
        &self,
        service_id: i64,
        scope: &str,
        from_minute: i64,
        n: usize,
    ) -> Result<Vec<u32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (0..n as i64)
            .map(|i| self.bucket_key(service_id, scope, from_minute + 60 * i))
            .collect();
        let mut conn = self.conn.clone();
        let values: Vec<Option<u32>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}
