//! Client identity without keeping addresses: a salted hash, salt per UTC day.

use downwatch_store::{Storage, StoreError};
use sha2::{Digest, Sha256};
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

/// Hashes client addresses with the salt of the current UTC day. Salts live
/// in the database so every instance hashes alike; yesterday's is deleted,
/// after which old hashes cannot be tied back to an address.
pub struct ClientHasher {
    storage: Arc<dyn Storage>,
    current: RwLock<Option<(i64, Arc<[u8]>)>>,
}

impl ClientHasher {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            current: RwLock::new(None),
        }
    }

    pub async fn hash(
        &self,
        ip: IpAddr,
        client_id: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<[u8; 16], StoreError> {
        let day = now.timestamp().div_euclid(86_400);
        let salt = self.salt(day).await?;
        let mut h = Sha256::new();
        h.update(&salt);
        match client_key(ip) {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        // A separator no client id can contain keeps (ip, id) pairs distinct.
        h.update([0u8]);
        h.update(client_id.unwrap_or("").as_bytes());
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Ok(out)
    }

    /// Loads the salt of `now`'s day. Called at start-up and then every
    /// minute, so the submission path never waits on the database for it.
    pub async fn refresh(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let day = now.timestamp().div_euclid(86_400);
        if self.read().as_ref().is_some_and(|(d, _)| *d == day) {
            return Ok(());
        }
        let candidate: [u8; 32] = rand::random();
        let salt: Arc<[u8]> = self.storage.salt_for_day(day, &candidate).await?.into();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((day, salt));
        Ok(())
    }

    async fn salt(&self, day: i64) -> Result<Arc<[u8]>, StoreError> {
        if let Some((d, salt)) = self.read().as_ref()
            && *d == day
        {
            return Ok(salt.clone());
        }
        let candidate: [u8; 32] = rand::random();
        match self.storage.salt_for_day(day, &candidate).await {
            Ok(salt) => {
                let salt: Arc<[u8]> = salt.into();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((day, salt.clone()));
                Ok(salt)
            }
            // Just past midnight with the database away: yesterday's salt
            // for a little longer costs a few double counts, not reports.
            Err(e) => match self.read().as_ref() {
                Some((_, salt)) => {
                    tracing::warn!(error = ?e, "new day's salt unavailable; keeping the previous one");
                    Ok(salt.clone())
                }
                None => Err(e),
            },
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<(i64, Arc<[u8]>)>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
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
