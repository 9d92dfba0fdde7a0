//! Storage: the `Storage` trait and its SQLite and PostgreSQL implementations.
//!
//! The database is the source of truth. Queries are runtime-checked
//! (`sqlx::query_as` + `FromRow`) so the project builds without a database;
//! the shared behavioural suite exercises every query on both backends.

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use downwatch_core::{NewService, ProblemList, ReportRecord, Service, ServicePatch, Slug};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. an existing slug).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database did not answer or refused the statement.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row no longer parses into a domain value.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open incident, as far as the status of a service needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OpenIncident {
    pub id: i64,
    pub service_id: i64,
    pub scope: String,
}

/// Counts of one bucket of a series: bucket start (epoch seconds) and counted reports.
pub type Bucket = (i64, i64);

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    async fn migrate(&self) -> Result<()>;

    /// A trivial round trip, for readiness.
    async fn ping(&self) -> Result<()>;

    /// Seeds the catalogue on the first start only: `Some(n)` services
    /// inserted, `None` when this database was seeded before (even if its
    /// services were renamed or added to since).
    async fn seed_catalogue(&self, services: &[NewService]) -> Result<Option<usize>>;

    async fn list_services(&self) -> Result<Vec<Service>>;

    async fn get_service(&self, slug: &str) -> Result<Option<Service>>;

    /// Creates a service; `Conflict` when the slug exists.
    async fn create_service(&self, service: &NewService) -> Result<Service>;

    /// Applies a patch; `None` when no such service.
    async fn update_service(&self, slug: &str, patch: &ServicePatch) -> Result<Option<Service>>;

    /// Stores reports and their per-minute rollups in one transaction and
    /// returns their ids in input order. Once this returns `Ok`, the reports
    /// are committed.
    async fn insert_reports(&self, reports: &[ReportRecord]) -> Result<Vec<i64>>;

    /// Counted reports of one service and scope in `[from, to)`, summed into
    /// buckets of `step` seconds starting at `from`; empty buckets omitted.
    async fn counts(
        &self,
        service_id: i64,
        scope: &str,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<Vec<Bucket>>;

    /// The salt of UTC day `day` (days since the epoch): `candidate` if this
    /// call creates it, else the one stored first, so instances agree.
    async fn salt_for_day(&self, day: i64, candidate: &[u8]) -> Result<Vec<u8>>;

    /// Deletes the salts of days before `day`.
    async fn forget_salts_before(&self, day: i64) -> Result<()>;

    async fn open_incidents(&self) -> Result<Vec<OpenIncident>>;
}

/// Connects to the database a URL names, by its scheme.
pub async fn connect(url: &str) -> Result<Arc<dyn Storage>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// One row of the per-minute rollup a batch of reports adds to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RollupDelta {
    counted: i32,
    received: i32,
}

/// Sums a batch into rollup rows, sorted by key so concurrent writers lock
/// rows in the same order and cannot deadlock.
fn rollups(reports: &[ReportRecord]) -> BTreeMap<(i64, String, i64), RollupDelta> {
    let mut out: BTreeMap<(i64, String, i64), RollupDelta> = BTreeMap::new();
    for r in reports {
        let minute = downwatch_core::minute_of(r.received_at);
        let mut add = |scope: String| {
            let d = out.entry((r.service_id, scope, minute)).or_default();
            d.received += 1;
            d.counted += i32::from(r.counted);
        };
        add(downwatch_core::GLOBAL_SCOPE.to_owned());
        if let Some(c) = r.country {
            add(c.as_str().to_owned());
        }
    }
    out
}

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: i64,
    slug: String,
    name: String,
    category: Option<String>,
    url: Option<String>,
    problems: String,
}

impl TryFrom<ServiceRow> for Service {
    type Error = StoreError;
    fn try_from(r: ServiceRow) -> Result<Self> {
        Ok(Service {
            id: r.id,
            slug: Slug::parse(&r.slug).map_err(|e| StoreError::Corrupt(format!("slug: {e}")))?,
            name: r.name,
            category: r.category,
            url: r.url,
            problems: ProblemList::from_stored(&r.problems)
                .map_err(|e| StoreError::Corrupt(format!("problems of {}: {e}", r.slug)))?,
        })
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use downwatch_core::{CountryCode, ProblemKind};

    fn report(service_id: i64, secs: i64, country: Option<&str>, counted: bool) -> ReportRecord {
        ReportRecord {
            service_id,
            problem: ProblemKind::parse("app").unwrap(),
            country: country.map(|c| CountryCode::parse(c).unwrap()),
            city: None,
            client_hash: [0; 16],
            counted,
            received_at: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        }
    }

    #[test]
    fn rollups_sum_global_and_country_scopes_per_minute() {
        let batch = [
            report(1, 60, Some("FR"), true),
            report(1, 119, Some("FR"), false),
            report(1, 120, None, true),
            report(2, 61, None, true),
        ];
        let r = rollups(&batch);
        let get = |s: i64, scope: &str, m: i64| r[&(s, scope.to_owned(), m)];
        assert_eq!(
            get(1, "global", 60),
            RollupDelta {
                counted: 1,
                received: 2
            }
        );
        assert_eq!(
            get(1, "FR", 60),
            RollupDelta {
                counted: 1,
                received: 2
            }
        );
        assert_eq!(
            get(1, "global", 120),
            RollupDelta {
                counted: 1,
                received: 1
            }
        );
        assert_eq!(
            get(2, "global", 60),
            RollupDelta {
                counted: 1,
                received: 1
            }
        );
        assert_eq!(r.len(), 4);
        let keys: Vec<_> = r.keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
