//! Redis windows, shared by every instance of a production deployment.
//!
//! Key layout (every key of one service shares the hash tag `{s<id>}`, so a
//! Redis Cluster keeps them on one slot):
//! - `<prefix>{s<id>}:d:<client hex>`: de-duplication claim, `SET NX PX`.
//! - `<prefix>{s<id>}:a:<address hex>`: counted reports of one address in
//!   the window, `INCR` with `PEXPIRE` on the first.
//! - `<prefix>{s<id>}:m:<scope>:<minute>`: counted reports of one minute,
//!   `INCRBY` with an expiry of [`BUCKET_RETENTION`](super::BUCKET_RETENTION).
//! - `<prefix>{s<id>}:scopes`: sorted set of the service's scopes, scored by
//!   the last minute they had reports (`ZADD GT`), same expiry.
//!
//! Not per service:
//! - `<prefix>lease:<name>`: who holds a lease (the detector's), `SET PX`.
//! - `<prefix>filled`: set when the buckets were filled from the database;
//!   its absence means Redis lost its data (or never had it).
//! - channel `<prefix>events:<name>`: pub/sub between instances.

use super::{
    BUCKET_RETENTION, Claim, DedupKey, DedupRule, Increment, RestoredClaim, Result, ScopeRead,
    Subscription, WindowError, WindowStore,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt::Write;
use std::time::Duration;

/// Claims the reports of one service atomically, one after the other: each
/// client's key, then a place under its address's cap (the counter holds
/// counted reports only). KEYS are (client, address, previous client,
/// previous address) quadruples of one service, which share its hash tag, so
/// it is cluster-safe. The previous keys are the client's under yesterday's
/// salt, just after midnight: a claim there makes the report a duplicate,
/// and the address's count there counts against the cap. When there are
/// none they are `<prefix>{s<id>}:-` (short, in the same slot and the
/// deployment's key space, and ending in `:-` where real keys end in hex).
/// One call per service per batch: Redis runs the loop instead of parsing a
/// command per report. Returns, per report, 1 counted, 2 over the address
/// cap, 0 duplicate.
const CLAIM_LUA: &str = r"
local out = {}
local window, cap = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS, 4 do
  local r = 0
  local yesterday = string.sub(KEYS[i + 2], -2) ~= ':-'
  if yesterday and redis.call('EXISTS', KEYS[i + 2]) == 1 then
    r = 0
  elseif redis.call('SET', KEYS[i], '1', 'NX', 'PX', window) then
    -- INCR first: one call for the usual report under its cap; one over
    -- it is taken back at once (the script is atomic, nobody sees it).
    local n = redis.call('INCR', KEYS[i + 1])
    if n == 1 then redis.call('PEXPIRE', KEYS[i + 1], window) end
    if yesterday then n = n + (tonumber(redis.call('GET', KEYS[i + 3])) or 0) end
    if n <= cap then
      r = 1
    else
      redis.call('DECR', KEYS[i + 1])
      r = 2
    end
  end
  out[#out + 1] = r
end
return out
";

/// Gives a claim back; ARGV[1] = 1 when it also took a place under the cap.
const RELEASE_LUA: &str = r"
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
return 0
";

/// Takes the lease KEYS[1] for ARGV[1] for ARGV[2] ms, or renews it if
/// ARGV[1] holds it. Returns 1 when ARGV[1] holds it afterwards.
const LEASE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
";

pub struct RedisWindows {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    claim_script: redis::Script,
    lease_script: redis::Script,
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
            client,
            conn,
            prefix: prefix.to_owned(),
            claim_script: redis::Script::new(CLAIM_LUA),
            lease_script: redis::Script::new(LEASE_LUA),
        })
    }

    /// Deletes every key under this store's prefix (SCAN, so Redis keeps
    /// serving meanwhile); returns how many. For throwaway prefixes:
    /// benchmarks and tests.
    pub async fn forget_all(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                deleted += keys.len();
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Two of these per report on the hot path: built by hand.
    fn hashed_key(&self, service_id: i64, kind: char, hash: &[u8; 16]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.prefix.len() + 60);
        s.push_str(&self.prefix);
        let _ = write!(s, "{{s{service_id}}}:{kind}:");
        for b in hash {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// One EVALSHA per service in the batch; `order` maps each reply back
    /// to its report.
    fn claim_pipeline(&self, keys: &[DedupKey], rule: DedupRule) -> (redis::Pipeline, Vec<usize>) {
        let window_ms = rule.window.as_millis().max(1) as u64;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i].service_id);
        let mut pipe = redis::pipe();
        for group in order.chunk_by(|&a, &b| keys[a].service_id == keys[b].service_id) {
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.claim_script.get_hash())
                .arg(group.len() * 4);
            // One service per group: its "no previous hash" key, made once.
            let none = format!("{}{{s{}}}:-", self.prefix, keys[group[0]].service_id);
            for &i in group {
                let k = &keys[i];
                cmd.arg(self.hashed_key(k.service_id, 'd', &k.client))
                    .arg(self.hashed_key(k.service_id, 'a', &k.address));
                match &k.previous {
                    Some(p) => cmd
                        .arg(self.hashed_key(k.service_id, 'd', &p.client))
                        .arg(self.hashed_key(k.service_id, 'a', &p.address)),
                    None => cmd.arg(&none).arg(&none),
                };
            }
            cmd.arg(window_ms).arg(rule.per_address);
        }
        (pipe, order)
    }

    fn bucket_key(&self, service_id: i64, scope: &str, minute: i64) -> String {
        format!("{}{{s{service_id}}}:m:{scope}:{minute}", self.prefix)
    }

    /// Set while the buckets hold what was filled from the database.
    fn filled_key(&self) -> String {
        format!("{}filled", self.prefix)
    }

    fn scopes_key(&self, service_id: i64) -> String {
        format!("{}{{s{service_id}}}:scopes", self.prefix)
    }

    fn channel(&self, name: &str) -> String {
        format!("{}events:{name}", self.prefix)
    }

    async fn subscribed(
        client: &redis::Client,
        channel: &str,
    ) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }

    /// Forwards the messages of one channel to `tx` until it closes,
    /// reconnecting after a lost connection.
    async fn forward(
        client: redis::Client,
        channel: String,
        tx: tokio::sync::mpsc::Sender<String>,
        mut first: Option<redis::aio::PubSub>,
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let pubsub = match first.take() {
                Some(p) => Ok(p),
                None => tokio::select! {
                    () = tx.closed() => return,
                    p = Self::subscribed(&client, &channel) => p,
                },
            };
            match pubsub {
                Ok(mut pubsub) => {
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            () = tx.closed() => return,
                            m = messages.next() => m,
                        };
                        let Some(message) = message else { break };
                        match message.get_payload::<String>() {
                            Ok(payload) => {
                                if tx.send(payload).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "unreadable pub/sub message"),
                        }
                    }
                    tracing::warn!(%channel, "pub/sub connection lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, %channel, "pub/sub subscription failed"),
            }
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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
        let (pipe, order) = self.claim_pipeline(keys, rule);
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<i64>> = match pipe.query_async(&mut conn).await {
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
        let mut claims = vec![Claim::Duplicate; keys.len()];
        for (&i, r) in order.iter().zip(replies.into_iter().flatten()) {
            claims[i] = match r {
                1 => Claim::Counted,
                2 => Claim::OverCap,
                _ => Claim::Duplicate,
            };
        }
        Ok(claims)
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
            let scopes = self.scopes_key(inc.service_id);
            pipe.cmd("ZADD")
                .arg(&scopes)
                .arg("GT")
                .arg(inc.minute)
                .arg(&inc.scope)
                .ignore();
            pipe.cmd("EXPIRE").arg(&scopes).arg(retention).ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn read(&self, reads: &[ScopeRead]) -> Result<Vec<Vec<u32>>> {
        let mut pipe = redis::pipe();
        let mut any = false;
        for r in reads.iter().filter(|r| r.n > 0) {
            let keys: Vec<String> = (0..r.n as i64)
                .map(|i| self.bucket_key(r.service_id, &r.scope, r.from_minute + 60 * i))
                .collect();
            pipe.cmd("MGET").arg(keys);
            any = true;
        }
        let mut replies: Vec<Vec<Option<u32>>> = if any {
            let mut conn = self.conn.clone();
            pipe.query_async(&mut conn).await?
        } else {
            Vec::new()
        };
        replies.reverse();
        Ok(reads
            .iter()
            .map(|r| {
                if r.n == 0 {
                    return Vec::new();
                }
                replies
                    .pop()
                    .unwrap_or_default()
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect()
            })
            .collect())
    }

    async fn active_scopes(
        &self,
        service_ids: &[i64],
        since_minute: i64,
    ) -> Result<Vec<Vec<String>>> {
        if service_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &id in service_ids {
            pipe.cmd("ZRANGE")
                .arg(self.scopes_key(id))
                .arg(since_minute)
                .arg("+inf")
                .arg("BYSCORE");
        }
        let mut conn = self.conn.clone();
        let mut scopes: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        for s in &mut scopes {
            s.sort();
        }
        Ok(scopes)
    }

    async fn read_tick(
        &self,
        reads: &[ScopeRead],
        service_ids: &[i64],
        since_minute: i64,
    ) -> Result<(Vec<Vec<u32>>, Vec<Vec<String>>)> {
        // Bucket values and scope names are both strings on the wire, so
        // one pipeline answers both as lists of optional strings.
        let mut pipe = redis::pipe();
        let reads_with_keys: Vec<&ScopeRead> = reads.iter().filter(|r| r.n > 0).collect();
        for r in &reads_with_keys {
            let keys: Vec<String> = (0..r.n as i64)
                .map(|i| self.bucket_key(r.service_id, &r.scope, r.from_minute + 60 * i))
                .collect();
            pipe.cmd("MGET").arg(keys);
        }
        for &id in service_ids {
            pipe.cmd("ZRANGE")
                .arg(self.scopes_key(id))
                .arg(since_minute)
                .arg("+inf")
                .arg("BYSCORE");
        }
        if reads_with_keys.is_empty() && service_ids.is_empty() {
            return Ok((vec![Vec::new(); reads.len()], Vec::new()));
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
        let mut replies = replies.into_iter();
        let counts = reads
            .iter()
            .map(|r| {
                if r.n == 0 {
                    return Vec::new();
                }
                replies
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.and_then(|v| v.parse().ok()).unwrap_or_default())
                    .collect()
            })
            .collect();
        let scopes = replies
            .map(|names| {
                let mut names: Vec<String> = names.into_iter().flatten().collect();
                names.sort();
                names
            })
            .collect();
        Ok((counts, scopes))
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let held: i64 = self
            .lease_script
            .key(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    async fn is_filled(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.filled_key())
            .query_async(&mut conn)
            .await?;
        Ok(exists)
    }

    async fn fill(&self, counts: &[Increment]) -> Result<()> {
        let retention = BUCKET_RETENTION.as_secs();
        let mut pipe = redis::pipe();
        for inc in counts {
            let key = self.bucket_key(inc.service_id, &inc.scope, inc.minute);
            pipe.cmd("SET")
                .arg(&key)
                .arg(inc.count)
                .arg("EX")
                .arg(retention)
                .ignore();
            let scopes = self.scopes_key(inc.service_id);
            pipe.cmd("ZADD")
                .arg(&scopes)
                .arg("GT")
                .arg(inc.minute)
                .arg(&inc.scope)
                .ignore();
            pipe.cmd("EXPIRE").arg(&scopes).arg(retention).ignore();
        }
        pipe.cmd("SET").arg(self.filled_key()).arg(1).ignore();
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn mark_stale(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.filled_key())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn restore_claims(&self, claims: &[RestoredClaim], rule: DedupRule) -> Result<()> {
        let window = rule.window.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for c in claims {
            let ttl = (c.remaining.as_millis() as u64).clamp(1, window);
            pipe.cmd("SET")
                .arg(self.hashed_key(c.service_id, 'd', &c.client))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .ignore();
            if let Some(address) = &c.address {
                let key = self.hashed_key(c.service_id, 'a', address);
                pipe.cmd("INCR").arg(&key).ignore();
                // Oldest first: the first sets the expiry, as the first
                // counted report's INCR did (NX: Redis 7).
                pipe.cmd("PEXPIRE").arg(&key).arg(ttl).arg("NX").ignore();
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.channel(channel))
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription> {
        // Subscribed before returning, so nothing published afterwards is missed.
        let channel = self.channel(channel);
        let first = Self::subscribed(&self.client, &channel).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(Self::forward(self.client.clone(), channel, tx, Some(first)));
        Ok(rx)
    }
}
