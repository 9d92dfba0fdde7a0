//! In-process windows for the embedded single-process mode.

use super::{BUCKET_RETENTION, DedupKey, Increment, Result, WindowStore};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Inner {
    /// Key → when its claim expires.
    claims: HashMap<DedupKey, Instant>,
    /// Claims in the order they were made, to expire them without a scan.
    claim_order: VecDeque<(Instant, DedupKey)>,
    buckets: HashMap<(i64, String), BTreeMap<i64, u32>>,
}

impl Inner {
    fn expire_claims(&mut self, now: Instant) {
        while let Some(&(expiry, key)) = self.claim_order.front() {
            if expiry > now {
                break;
            }
            self.claim_order.pop_front();
            // A key released and claimed again has a later expiry: keep it.
            if self.claims.get(&key) == Some(&expiry) {
                self.claims.remove(&key);
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryWindows {
    inner: Mutex<Inner>,
}

impl MemoryWindows {
    pub fn new() -> Self {
        Self::default()
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

    async fn claim(&self, keys: &[DedupKey], ttl: Duration) -> Result<Vec<bool>> {
        let now = Instant::now();
        let expiry = now + ttl;
        let mut inner = self.lock();
        inner.expire_claims(now);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let fresh = !inner.claims.contains_key(key);
            if fresh {
                inner.claims.insert(*key, expiry);
                inner.claim_order.push_back((expiry, *key));
            }
            out.push(fresh);
        }
        Ok(out)
    }

    async fn release(&self, keys: &[DedupKey]) -> Result<()> {
        let mut inner = self.lock();
        for key in keys {
            inner.claims.remove(key);
        }
        Ok(())
    }

    async fn add(&self, increments: &[Increment]) -> Result<()> {
        let retention = BUCKET_RETENTION.as_secs() as i64;
        let mut inner = self.lock();
        for inc in increments {
            let series = inner
                .buckets
                .entry((inc.service_id, inc.scope.clone()))
                .or_default();
            *series.entry(inc.minute).or_default() += inc.count;
            // Drop what has left the retention window behind the newest bucket.
            if let Some((&newest, _)) = series.last_key_value() {
                let keep_from = newest - retention;
                while let Some((&oldest, _)) = series.first_key_value() {
                    if oldest >= keep_from {
                        break;
                    }
                    series.pop_first();
                }
            }
        }
        Ok(())
    }

    async fn minutes(
        &self,
        service_id: i64,
        scope: &str,
        from_minute: i64,
        n: usize,
    ) -> Result<Vec<u32>> {
        let inner = self.lock();
        let mut out = vec![0; n];
        if let Some(series) = inner.buckets.get(&(service_id, scope.to_owned())) {
            let to = from_minute + 60 * n as i64;
            for (&minute, &count) in series.range(from_minute..to) {
                if let Some(slot) = out.get_mut(((minute - from_minute) / 60) as usize) {
                    *slot = count;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: i64, c: u8) -> DedupKey {
        DedupKey {
            service_id: s,
            client: [c; 16],
        }
    }

    #[tokio::test]
    async fn a_claim_is_new_once_per_key_until_it_expires_or_is_released() {
        let w = MemoryWindows::new();
        let ttl = Duration::from_millis(200);
        assert_eq!(
            w.claim(&[key(1, 1), key(1, 1), key(2, 1)], ttl)
                .await
                .unwrap(),
            vec![true, false, true]
        );
        assert_eq!(w.claim(&[key(1, 1)], ttl).await.unwrap(), vec![false]);
        w.release(&[key(1, 1)]).await.unwrap();
        assert_eq!(w.claim(&[key(1, 1)], ttl).await.unwrap(), vec![true]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(w.claim(&[key(2, 1)], ttl).await.unwrap(), vec![true]);
        assert!(
            w.lock().claim_order.len() <= 2,
            "expired claims are dropped"
        );
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
