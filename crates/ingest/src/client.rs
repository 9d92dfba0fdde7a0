//! Client identity without keeping addresses: a salted hash, salt per UTC day.

use downwatch_store::{Storage, StoreError};
use downwatch_windows::PreviousDay;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What identifies one client: the address (an IPv6 client's whole /64,
/// which privacy extensions rotate within) and the optional client id the
/// page sends, so people behind one NAT are still told apart.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A client as the ingest path knows it: salted hashes, never the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity {
    pub client: [u8; 16],
    pub address: [u8; 16],
    /// Both hashes under yesterday's salt, during the first de-duplication
    /// window of a UTC day (see [`ClientHasher::with_overlap`]).
    pub previous: Option<PreviousDay>,
}

fn digest16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Hashes client addresses with the salt of the current UTC day. Salts live
/// in the database so every instance hashes alike; today's and tomorrow's are
/// loaded ahead (the submission path never waits on the database for one at
/// midnight) and older ones are deleted, after which old hashes cannot be
/// tied back to an address.
///
/// A client who reported just before midnight would count again just after
/// it, under the new salt: for the first `overlap` of a day (the
/// de-duplication window) yesterday's salt is kept too, and each client's
/// hashes under it are handed to de-duplication as `previous`.
pub struct ClientHasher {
    storage: Arc<dyn Storage>,
    salts: RwLock<BTreeMap<i64, Arc<[u8]>>>,
    overlap: i64,
}

impl ClientHasher {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            salts: RwLock::new(BTreeMap::new()),
            overlap: 15 * 60,
        }
    }

    /// How long into a UTC day yesterday's salt is still used (and kept):
    /// the de-duplication window.
    #[must_use]
    pub fn with_overlap(mut self, overlap: std::time::Duration) -> Self {
        self.overlap = i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Whether `now` is in the first `overlap` of its UTC day.
    fn just_after_midnight(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        now.timestamp().rem_euclid(86_400) < self.overlap
    }

    /// The salted hashes of a client: with its client id (stored with the
    /// report) and of its address alone (for the per-address cap).
    pub async fn identify(
        &self,
        ip: IpAddr,
        client_id: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClientIdentity, StoreError> {
        let salt = self.salt(day_of(now)).await?;
        let address = match client_key(ip) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let id = client_id.unwrap_or("").as_bytes();
        // Only a salt already at hand: yesterday's is never made anew.
        let yesterday = if self.just_after_midnight(now) {
            self.read().get(&(day_of(now) - 1)).cloned()
        } else {
            None
        };
        // Distinct separators keep the two hashes (and (ip, id) pairs) apart.
        Ok(ClientIdentity {
            client: digest16(&[&salt, &address, b"\0", id]),
            address: digest16(&[&salt, &address, b"\x01"]),
            previous: yesterday.map(|y| PreviousDay {
                client: digest16(&[&y, &address, b"\0", id]),
                address: digest16(&[&y, &address, b"\x01"]),
            }),
        })
    }

    /// Loads today's and tomorrow's salts and deletes older ones. Called at
    /// start-up and then every minute.
    pub async fn refresh(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let today = day_of(now);
        // Yesterday's salt lives on (here and in the database) for the
        // first window of the day. A server started in that window does not
        // load it: its clients may count once more, as before this overlap.
        let oldest = if self.just_after_midnight(now) {
            today - 1
        } else {
            today
        };
        for day in [today, today + 1] {
            if !self.read().contains_key(&day) {
                self.load(day).await?;
            }
        }
        self.salts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d, _| *d >= oldest);
        self.storage.forget_salts_before(oldest).await
    }

    async fn load(&self, day: i64) -> Result<Arc<[u8]>, StoreError> {
        let candidate: [u8; 32] = rand::random();
        let salt: Arc<[u8]> = self.storage.salt_for_day(day, &candidate).await?.into();
        self.salts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(day, salt.clone());
        Ok(salt)
    }

    async fn salt(&self, day: i64) -> Result<Arc<[u8]>, StoreError> {
        if let Some(salt) = self.read().get(&day) {
            return Ok(salt.clone());
        }
        match self.load(day).await {
            Ok(salt) => Ok(salt),
            // The database away when no salt is cached for the day: the
            // newest one known costs a few double counts, not reports.
            Err(e) => match self.read().values().next_back() {
                Some(salt) => {
                    tracing::warn!(error = ?e, "the day's salt is unavailable; using the newest known");
                    Ok(salt.clone())
                }
                None => Err(e),
            },
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i64, Arc<[u8]>>> {
        self.salts.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn day_of(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
