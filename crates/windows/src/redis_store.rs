//! Redis windows, shared by every instance of a production deployment.
//!
//! Key layout (every key of one service shares the hash tag `{s<id>}`, so a
//! Redis Cluster keeps them on one slot):
//! - `<prefix>{s<id>}:d:<client hex>`: de-duplication claim, `SET NX PX`.
//! - `<prefix>{s<id>}:a:<address hex>`: counted reports of one address in
//!   the window, `INCR` with `PEXPIRE` on the first.
//! - `<prefix>{s<id>}:m:<scope>:<minute>`: counted reports of one minute,
//!   `INCRBY` with an expiry of [`BUCKET_RETENTION`](super::BUCKET_RETENTION).

use super::{
    BUCKET_RETENTION, Claim, DedupKey, DedupRule, Increment, Result, WindowError, WindowStore,
};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt::Write;
use std::time::Duration;

/// Claims one report atomically: the client's key, then a place under its
/// address's cap (the counter holds counted reports only). Both keys share
/// the service's hash tag, so it is cluster-safe.
/// Returns 1 counted, 2 over the address cap, 0 duplicate.
const CLAIM_LUA: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  local n = tonumber(redis.call('GET', KEYS[2]) or '0')
  if n < tonumber(ARGV[2]) then
    if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
    return 1
  end
  return 2
end
return 0
";

/// Gives a claim back; ARGV[1] = 1 when it also took a place under the cap.
const RELEASE_LUA: &str = r"
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
return 0
";

pub struct RedisWindows {
    conn: ConnectionManager,
    prefix: String,
    claim_script: redis::Script,
}

impl RedisWindows {
    /// Connects to `url`; every key is prefixed with `prefix` (so one Redis
    /// can serve several deployments, or several tests).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        super::validate_prefix(prefix).map_err(WindowError::Config)?;
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            claim_script: redis::Script::new(CLAIM_LUA),
        })
    }

    fn hashed_key(&self, service_id: i64, kind: char, hash: &[u8; 16]) -> String {
        let mut s = format!("{}{{s{service_id}}}:{kind}:", self.prefix);
        for b in hash {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    fn claim_pipeline(&self, keys: &[DedupKey], rule: DedupRule) -> redis::Pipeline {
        let window_ms = rule.window.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("EVALSHA")
                .arg(self.claim_script.get_hash())
                .arg(2)
                .arg(self.hashed_key(k.service_id, 'd', &k.client))
                .arg(self.hashed_key(k.service_id, 'a', &k.address))
                .arg(window_ms)
                .arg(rule.per_address);
        }
        pipe
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

    async fn claim(&self, keys: &[DedupKey], rule: DedupRule) -> Result<Vec<Claim>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.claim_pipeline(keys, rule);
        let mut conn = self.conn.clone();
        let replies: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            // A restarted Redis has forgotten the script: load it once, retry.
            Err(e) if e.code() == Some("NOSCRIPT") => {
                self.claim_script
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await?;
                pipe.query_async(&mut conn).await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(replies
            .into_iter()
            .map(|r| match r {
                1 => Claim::Counted,
                2 => Claim::OverCap,
                _ => Claim::Duplicate,
            })
            .collect())
    }

    async fn release(&self, claims: &[(DedupKey, Claim)]) -> Result<()> {
        let held: Vec<&(DedupKey, Claim)> = claims.iter().filter(|(_, c)| c.holds()).collect();
        if held.is_empty() {
            return Ok(());
        }
        // Rare (a failed commit): plain EVAL. The counter is decremented only
        // while it exists, so an expired one is not recreated without a TTL.
        let mut pipe = redis::pipe();
        for (k, claim) in held {
            pipe.cmd("EVAL")
                .arg(RELEASE_LUA)
                .arg(2)
                .arg(self.hashed_key(k.service_id, 'd', &k.client))
                .arg(self.hashed_key(k.service_id, 'a', &k.address))
                .arg(u8::from(claim.counts()))
                .ignore();
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
