//! The service catalogue, cached in memory: every report names a service,
//! and the hot path should not ask the database which ones exist.

use downwatch_core::Service;
use downwatch_store::{Storage, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

pub struct Catalogue {
    storage: Arc<dyn Storage>,
    by_slug: RwLock<HashMap<String, Arc<Service>>>,
    /// Slugs the database did not know at the last look, forgotten at each
    /// refresh: a flood of reports to made-up slugs costs no queries.
    misses: RwLock<HashSet<String>>,
}

/// Most remembered misses; past it, lookups go to the database.
const MAX_MISSES: usize = 10_000;

impl Catalogue {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            by_slug: RwLock::new(HashMap::new()),
            misses: RwLock::new(HashSet::new()),
        }
    }

    /// Reloads every service (at start, and periodically so instances see
    /// each other's admin changes).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let all = self.storage.list_services().await?;
        let map = all
            .into_iter()
            .map(|s| (s.slug.as_str().to_owned(), Arc::new(s)))
            .collect();
        *self.by_slug.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.misses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// A service by slug: from memory, else from the database (another
    /// instance may have just created it).
    pub async fn get(&self, slug: &str) -> Result<Option<Arc<Service>>, StoreError> {
        if let Some(s) = self.read().get(slug) {
            return Ok(Some(s.clone()));
        }
        if downwatch_core::Slug::parse(slug).is_err()
            || self
                .misses
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(slug)
        {
            return Ok(None);
        }
        let found = self.storage.get_service(slug).await?.map(Arc::new);
        match &found {
            Some(s) => self.put(s.clone()),
            None => {
                let mut misses = self.misses.write().unwrap_or_else(|p| p.into_inner());
                if misses.len() < MAX_MISSES {
                    misses.insert(slug.to_owned());
                }
            }
        }
        Ok(found)
    }

    pub fn put(&self, s: Arc<Service>) {
        self.misses
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(s.slug.as_str());
        self.by_slug
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.slug.as_str().to_owned(), s);
    }

    /// Every cached service, sorted by slug.
    pub fn all(&self) -> Vec<Arc<Service>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.slug.cmp(&b.slug));
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Service>>> {
        self.by_slug.read().unwrap_or_else(|p| p.into_inner())
    }
}
