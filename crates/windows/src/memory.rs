//! In-process windows for the embedded single-process mode.

#[cfg(test)]
use super::PreviousDay;
use super::{
    BUCKET_RETENTION, Claim, DedupKey, DedupRule, Increment, RestoredClaim, Result, ScopeRead,
    Subscription, WindowStore,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Values that expire a fixed time after they are first set, dropped in
/// the order they were set (all share one window) without a scan. Claims
/// restored after a restart expire sooner than the window; they are set
/// oldest first before new ones, so the order still holds (one restored
/// behind a later expiry merely lingers until that one goes).
///
/// Compact, since an outage puts millions of clients in one window: keys
/// are 8 bytes ([`slot`]) and times are milliseconds since the store began
/// in a `u32` compared with wrapping arithmetic (windows are under a day),
/// so an entry costs about 35 bytes with the map's overhead.
struct Expiring<V> {
    entries: HashMap<u64, (u32, V)>,
    order: VecDeque<(u32, u64)>,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

/// Whether `at` (ms ticks) has come by `now`, across the u32 wrap.
fn reached(now: u32, at: u32) -> bool {
    now.wrapping_sub(at) as i32 >= 0
}

impl<V> Expiring<V> {
    fn expire(&mut self, now: u32) {
        while let Some(&(expiry, key)) = self.order.front() {
            if !reached(now, expiry) {
                break;
            }
            self.order.pop_front();
            // A key removed and set again has a later expiry: keep it.
            if self.entries.get(&key).is_some_and(|(e, _)| *e == expiry) {
                self.entries.remove(&key);
            }
        }
    }

    fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    fn insert(&mut self, key: u64, value: V, expiry: u32) {
        self.entries.insert(key, (expiry, value));
        self.order.push_back((expiry, key));
    }

    fn remove(&mut self, key: &u64) {
        self.entries.remove(key);
    }
}

/// A (service, salted hash) pair in 8 bytes. The hashes are SHA-256
/// output, uniformly random, so two pairs share a slot with odds of 2^-64
/// (at 18 million clients in a window, about one chance in 100,000 that one
/// report anywhere is wrongly taken as already counted).
fn slot(service_id: i64, hash: &[u8; 16]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first) ^ (service_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Default)]
struct Inner {
    /// slot(service, client) → claimed.
    claims: Expiring<()>,
    /// slot(service, address) → counted reports in the window.
    per_address: Expiring<u32>,
    buckets: BTreeMap<(i64, String), BTreeMap<i64, u32>>,
    /// name → (holder, expiry).
    leases: HashMap<String, (String, Instant)>,
    filled: bool,
}

impl Inner {
    fn trim(series: &mut BTreeMap<i64, u32>) {
        // Drop what has left the retention window behind the newest bucket.
        if let Some((&newest, _)) = series.last_key_value() {
            let keep_from = newest - BUCKET_RETENTION.as_secs() as i64;
            while let Some((&oldest, _)) = series.first_key_value() {
                if oldest >= keep_from {
                    break;
                }
                series.pop_first();
            }
        }
    }
}

pub struct MemoryWindows {
    inner: Mutex<Inner>,
    /// Where the claims' millisecond clock starts.
    base: Instant,
    /// (channel, payload) to every subscriber of this process.
    events: broadcast::Sender<(String, String)>,
}

impl Default for MemoryWindows {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            base: Instant::now(),
            events: broadcast::channel(1024).0,
        }
    }
}

impl MemoryWindows {
    pub fn new() -> Self {
        Self::default()
    }

    /// Milliseconds since the store began, wrapping every 49 days.
    fn ticks(&self, at: Instant) -> u32 {
        at.duration_since(self.base).as_millis() as u32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl WindowStore for MemoryWindows {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn claim(&self, keys: &[DedupKey], rule: DedupRule) -> Result<Vec<Claim>> {
        let now = self.ticks(Instant::now());
        let expiry = now.wrapping_add(rule.window.as_millis() as u32);
        let mut inner = self.lock();
        inner.claims.expire(now);
        inner.per_address.expire(now);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let client = slot(key.service_id, &key.client);
            let claimed_before_midnight = key.previous.is_some_and(|p| {
                inner
                    .claims
                    .entries
                    .contains_key(&slot(key.service_id, &p.client))
            });
            if claimed_before_midnight || inner.claims.entries.contains_key(&client) {
                out.push(Claim::Duplicate);
                continue;
            }
            inner.claims.insert(client, (), expiry);
            // What the address counted before midnight, under yesterday's
            // salt, still counts against its cap.
            let before_midnight = key.previous.map_or(0, |p| {
                inner
                    .per_address
                    .entries
                    .get(&slot(key.service_id, &p.address))
                    .map_or(0, |(_, n)| *n)
            });
            // The counter holds counted reports only, so a released one
            // frees its place under the cap.
            let address = slot(key.service_id, &key.address);
            let claim = match inner.per_address.get_mut(&address) {
                Some(n) if *n + before_midnight >= rule.per_address => Claim::OverCap,
                Some(n) => {
                    *n += 1;
                    Claim::Counted
                }
                None if before_midnight >= rule.per_address => Claim::OverCap,
                None => {
                    inner.per_address.insert(address, 1, expiry);
                    Claim::Counted
                }
            };
            out.push(claim);
        }
        Ok(out)
    }

    async fn release(&self, claims: &[(DedupKey, Claim)]) -> Result<()> {
        let mut inner = self.lock();
        for (key, claim) in claims {
            if !claim.holds() {
                continue;
            }
            inner.claims.remove(&slot(key.service_id, &key.client));
            if claim.counts()
                && let Some(n) = inner
                    .per_address
                    .get_mut(&slot(key.service_id, &key.address))
            {
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }

    async fn add(&self, increments: &[Increment]) -> Result<()> {
        let mut inner = self.lock();
        for inc in increments {
            let series = inner
                .buckets
                .entry((inc.service_id, inc.scope.clone()))
                .or_default();
            *series.entry(inc.minute).or_default() += inc.count;
            Inner::trim(series);
        }
        Ok(())
    }

    async fn read(&self, reads: &[ScopeRead]) -> Result<Vec<Vec<u32>>> {
        let inner = self.lock();
        let mut answers = Vec::with_capacity(reads.len());
        for r in reads {
            let mut out = vec![0; r.n];
            if let Some(series) = inner.buckets.get(&(r.service_id, r.scope.clone())) {
                let to = r.from_minute + 60 * r.n as i64;
                for (&minute, &count) in series.range(r.from_minute..to) {
                    if let Some(slot) = out.get_mut(((minute - r.from_minute) / 60) as usize) {
                        *slot = count;
                    }
                }
            }
            answers.push(out);
        }
        Ok(answers)
    }

    async fn active_scopes(
        &self,
        service_ids: &[i64],
        since_minute: i64,
    ) -> Result<Vec<Vec<String>>> {
        let inner = self.lock();
        Ok(service_ids
            .iter()
            .map(|&id| {
                inner
                    .buckets
                    .range((id, String::new())..(id + 1, String::new()))
                    .filter(|(_, series)| series.range(since_minute..).any(|(_, &c)| c > 0))
                    .map(|((_, scope), _)| scope.clone())
                    .collect()
            })
            .collect())
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.leases.get_mut(name) {
            Some((h, expiry)) if *expiry > now && h != holder => Ok(false),
            Some((h, expiry)) => {
                holder.clone_into(h);
                *expiry = now + ttl;
                Ok(true)
            }
            None => {
                inner
                    .leases
                    .insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn is_filled(&self) -> Result<bool> {
        Ok(self.lock().filled)
    }

    async fn fill(&self, counts: &[Increment]) -> Result<()> {
        let mut inner = self.lock();
        for inc in counts {
            let series = inner
                .buckets
                .entry((inc.service_id, inc.scope.clone()))
                .or_default();
            series.insert(inc.minute, inc.count);
            Inner::trim(series);
        }
        inner.filled = true;
        Ok(())
    }

    async fn mark_stale(&self) -> Result<()> {
        self.lock().filled = false;
        Ok(())
    }

    async fn restore_claims(&self, claims: &[RestoredClaim], rule: DedupRule) -> Result<()> {
        let now = self.ticks(Instant::now());
        let mut inner = self.lock();
        for c in claims {
            let expiry = now.wrapping_add(c.remaining.min(rule.window).as_millis() as u32);
            let client = slot(c.service_id, &c.client);
            if !inner.claims.entries.contains_key(&client) {
                inner.claims.insert(client, (), expiry);
            }
            if let Some(address) = c.address {
                let key = slot(c.service_id, &address);
                match inner.per_address.get_mut(&key) {
                    Some(n) => *n += 1,
                    None => inner.per_address.insert(key, 1, expiry),
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.events.send((channel.to_owned(), payload.to_owned()));
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription> {
        let mut rx = self.events.subscribe();
        let (tx, out) = mpsc::channel(1024);
        let channel = channel.to_owned();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = tx.closed() => return,
                    m = rx.recv() => m,
                };
                match message {
                    Ok((c, payload)) if c == channel => {
                        if tx.send(payload).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: i64, client: u8, address: u8) -> DedupKey {
        DedupKey {
            service_id: s,
            client: [client; 16],
            address: [address; 16],
            previous: None,
        }
    }

    fn rule(ms: u64, per_address: u32) -> DedupRule {
        DedupRule {
            window: Duration::from_millis(ms),
            per_address,
        }
    }

    #[tokio::test]
    async fn a_client_counts_once_per_service_until_its_claim_expires_or_is_released() {
        let w = MemoryWindows::new();
        let r = rule(200, 10);
        assert_eq!(
            w.claim(&[key(1, 1, 1), key(1, 1, 1), key(2, 1, 1)], r)
                .await
                .unwrap(),
            vec![Claim::Counted, Claim::Duplicate, Claim::Counted]
        );
        assert_eq!(
            w.claim(&[key(1, 1, 1)], r).await.unwrap(),
            vec![Claim::Duplicate]
        );
        w.release(&[(key(1, 1, 1), Claim::Counted)]).await.unwrap();
        assert_eq!(
            w.claim(&[key(1, 1, 1)], r).await.unwrap(),
            vec![Claim::Counted]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            w.claim(&[key(2, 1, 1)], r).await.unwrap(),
            vec![Claim::Counted]
        );
        assert!(
            w.lock().claims.order.len() <= 2,
            "expired claims are dropped"
        );
    }

    #[tokio::test]
    async fn a_claim_under_yesterdays_salt_still_holds_after_midnight() {
        let w = MemoryWindows::new();
        let r = rule(60_000, 10);
        // Before midnight, client 1 under the old salt.
        assert_eq!(
            w.claim(&[key(1, 1, 1)], r).await.unwrap(),
            vec![Claim::Counted]
        );
        // After it, the same client hashes to 2, with 1 as its previous hash
        // (its address from 1 to 3).
        let after = |client: u8, previous: u8| DedupKey {
            previous: Some(PreviousDay {
                client: [previous; 16],
                address: [previous; 16],
            }),
            ..key(1, client, 3)
        };
        assert_eq!(
            w.claim(&[after(2, 1), after(4, 5)], r).await.unwrap(),
            vec![Claim::Duplicate, Claim::Counted],
            "the client who reported before midnight is a duplicate; a new one counts"
        );
        // Another service's claim under the old salt does not hold here.
        assert_eq!(
            w.claim(
                &[DedupKey {
                    service_id: 2,
                    ..after(6, 1)
                }],
                r
            )
            .await
            .unwrap(),
            vec![Claim::Counted]
        );
    }

    #[tokio::test]
    async fn an_address_counted_up_to_its_cap_before_midnight_stays_capped_after_it() {
        let w = MemoryWindows::new();
        let r = rule(60_000, 2);
        // Address 7, clients 1 and 2 (two client ids), before midnight.
        assert_eq!(
            w.claim(&[key(1, 1, 7), key(1, 2, 7)], r).await.unwrap(),
            vec![Claim::Counted, Claim::Counted]
        );
        // After it the address hashes to 8 (7 yesterday); a third id is over
        // the cap, and so is any further one.
        let after = |client: u8| DedupKey {
            previous: Some(PreviousDay {
                client: [client + 100; 16],
                address: [7; 16],
            }),
            ..key(1, client, 8)
        };
        assert_eq!(
            w.claim(&[after(3), after(4)], r).await.unwrap(),
            vec![Claim::OverCap, Claim::OverCap]
        );
        // Another address that counted once before midnight has one place left.
        assert_eq!(
            w.claim(&[key(1, 9, 10)], r).await.unwrap(),
            vec![Claim::Counted]
        );
        let other = |client: u8| DedupKey {
            previous: Some(PreviousDay {
                client: [client + 100; 16],
                address: [10; 16],
            }),
            ..key(1, client, 11)
        };
        assert_eq!(
            w.claim(&[other(12), other(13)], r).await.unwrap(),
            vec![Claim::Counted, Claim::OverCap]
        );
    }

    #[tokio::test]
    async fn one_address_counts_at_most_its_cap_whatever_client_ids_it_sends() {
        let w = MemoryWindows::new();
        let r = rule(60_000, 2);
        let got = w
            .claim(
                &[
                    key(1, 1, 9),
                    key(1, 2, 9),
                    key(1, 3, 9),
                    key(1, 4, 8),
                    key(2, 5, 9),
                ],
                r,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Claim::Counted,
                Claim::Counted,
                Claim::OverCap,
                Claim::Counted,
                Claim::Counted
            ]
        );
        // Releasing an over-cap claim frees the client, not a place...
        w.release(&[(key(1, 3, 9), Claim::OverCap)]).await.unwrap();
        assert_eq!(
            w.claim(&[key(1, 7, 9)], r).await.unwrap(),
            vec![Claim::OverCap]
        );
        // ...releasing a counted one gives its place under the cap back.
        w.release(&[(key(1, 2, 9), Claim::Counted)]).await.unwrap();
        assert_eq!(
            w.claim(&[key(1, 6, 9)], r).await.unwrap(),
            vec![Claim::Counted]
        );
        assert_eq!(
            w.claim(&[key(1, 8, 9)], r).await.unwrap(),
            vec![Claim::OverCap]
        );
    }

    #[test]
    fn times_compare_across_the_wrap_of_the_millisecond_clock() {
        assert!(reached(10, 10));
        assert!(reached(11, 10));
        assert!(!reached(9, 10));
        // An expiry set just before the wrap, reached just after it.
        let expiry = u32::MAX - 5;
        assert!(!reached(u32::MAX - 6, expiry));
        assert!(reached(3, expiry));
        // An expiry past the wrap is not reached by a time before it.
        assert!(!reached(u32::MAX - 1, 5));
    }

    #[test]
    fn the_same_hash_for_two_services_takes_two_slots() {
        let h = [7u8; 16];
        assert_ne!(slot(1, &h), slot(2, &h));
        assert_ne!(slot(1, &h), slot(1, &[8u8; 16]));
        assert_eq!(slot(3, &h), slot(3, &h));
    }

    #[tokio::test]
    async fn minutes_read_back_what_was_added_with_gaps_as_zero() {
        let w = MemoryWindows::new();
        let inc = |minute, count| Increment {
            service_id: 7,
            scope: "global".into(),
            minute,
            count,
        };
        w.add(&[inc(600, 2), inc(720, 5), inc(600, 1)])
            .await
            .unwrap();
        assert_eq!(w.minutes(7, "global", 600, 3).await.unwrap(), vec![3, 0, 5]);
        assert_eq!(w.minutes(7, "FR", 600, 2).await.unwrap(), vec![0, 0]);
        assert_eq!(w.minutes(8, "global", 600, 1).await.unwrap(), vec![0]);
    }

    #[tokio::test]
    async fn buckets_older_than_the_retention_are_dropped() {
        let w = MemoryWindows::new();
        let r = BUCKET_RETENTION.as_secs() as i64;
        let inc = |minute| Increment {
            service_id: 1,
            scope: "global".into(),
            minute,
            count: 1,
        };
        w.add(&[inc(0), inc(r + 120)]).await.unwrap();
        assert_eq!(w.minutes(1, "global", 0, 1).await.unwrap(), vec![0]);
        assert_eq!(w.minutes(1, "global", r + 120, 1).await.unwrap(), vec![1]);
    }
}
