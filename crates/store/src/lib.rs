//! Storage: the `Storage` trait and its SQLite and PostgreSQL implementations.
//!
//! The database is the source of truth. Queries are runtime-checked
//! (`sqlx::query_as` + `FromRow`) so the project builds without a database;
//! the shared behavioural suite exercises every query on both backends.

mod postgres;
mod sqlite;
pub mod webhooks;

pub use postgres::PgStore;
pub use postgres::{create_pg_database, drop_pg_database};
pub use sqlite::SqliteStore;
pub use webhooks::{Notice, WebhookStore};

use async_trait::async_trait;
use downwatch_core::CountryCode;
use downwatch_core::{NewService, ProblemList, ReportRecord, Service, ServicePatch, Slug};
use std::collections::BTreeMap;
use std::collections::HashMap;
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

/// The persisted detector state of one scope (see `detector_scopes`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScopeStateRow {
    pub service_id: i64,
    pub scope: String,
    /// The last minute the detector has stepped (epoch seconds).
    pub last_minute: i64,
    /// `ok`, `warning` or `outage`.
    pub level: String,
    /// Reports expected in `last_minute` (the baseline).
    pub expected: f64,
    pub incident_id: Option<i64>,
    /// The serialised `ScopeDetector`.
    pub state: String,
}

/// An incident's stored facts; times are unix seconds (UTC).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IncidentRecord {
    pub service_id: i64,
    pub scope: String,
    /// `outage` (or `warning`).
    pub level_max: String,
    pub started_at: i64,
    pub detected_at: i64,
    pub peak_at: i64,
    pub peak_reports_per_min: f64,
    pub baseline_per_min_at_peak: f64,
    /// `None` while open.
    pub ended_at: Option<i64>,
    pub total_reports: i64,
}

impl IncidentRecord {
    pub fn status(&self) -> &'static str {
        if self.ended_at.is_some() {
            "resolved"
        } else {
            "open"
        }
    }
}

/// A stored incident.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IncidentRow {
    pub id: i64,
    #[sqlx(flatten)]
    pub record: IncidentRecord,
}

/// An incident to write: updates row `id` when given (re-inserting it if it
/// was deleted meanwhile), else inserts. An open incident whose scope already
/// has an open one (another instance got there first) adopts that row
/// instead of adding a second.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentWrite {
    pub id: Option<i64>,
    pub record: IncidentRecord,
}

/// Filters of an incident listing, newest (`started_at`, then id) first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncidentQuery {
    pub service_id: Option<i64>,
    pub scope: Option<String>,
    /// Incidents that started at or after this (unix seconds).
    pub from: Option<i64>,
    /// Incidents that started before this.
    pub to: Option<i64>,
    pub open: Option<bool>,
    /// Keyset cursor: strictly older than this `(started_at, id)`.
    pub before: Option<(i64, i64)>,
    pub limit: i64,
}

/// A scope's level as the detector last saved it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScopeLevel {
    pub service_id: i64,
    pub scope: String,
    pub level: String,
}

/// One minute of one scope's rollup.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MinuteCount {
    pub service_id: i64,
    pub scope: String,
    pub minute: i64,
    pub counted: i64,
}

/// A counted report as a de-duplication claim.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimRow {
    pub id: i64,
    pub client_hash: Vec<u8>,
    pub address_hash: Option<Vec<u8>>,
    /// Epoch microseconds.
    pub received_at: i64,
}

/// Where the next page of [`Storage::counted_claims`] starts: after this
/// row, in (received_at, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimCursor {
    /// Epoch microseconds.
    pub received_at: i64,
    pub id: i64,
}

impl ClaimCursor {
    /// Just before everything received at or after `since` (epoch seconds).
    pub fn before(since: i64) -> Self {
        Self {
            received_at: since.saturating_mul(1_000_000) - 1,
            id: i64::MAX,
        }
    }
}

impl ClaimRow {
    pub fn cursor(&self) -> ClaimCursor {
        ClaimCursor {
            received_at: self.received_at,
            id: self.id,
        }
    }
}

#[async_trait]
pub trait Storage: WebhookStore + Send + Sync + 'static {
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

    /// Starts a bulk import (`downwatch import`): one transaction that
    /// creates and patches services and appends reports with their rollups
    /// (see [`ImportSession`]). Nothing of it is visible before `commit`, and
    /// nothing remains if the session is dropped without it.
    async fn begin_import(&self) -> Result<Box<dyn ImportSession>>;

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

    /// Counted reports per minute of every scope of one service in
    /// `[from, to)`, ordered by minute; zero minutes omitted.
    async fn minute_counts(&self, service_id: i64, from: i64, to: i64) -> Result<Vec<MinuteCount>>;

    /// Counted reports per minute of every service and scope since
    /// `from` (for rebuilding the window store).
    async fn recent_minute_counts(&self, from: i64) -> Result<Vec<MinuteCount>>;

    /// One page of a service's counted reports received since `since`
    /// (epoch seconds), oldest first, after `after` (the last row of the
    /// previous page): the de-duplication claims they stand for, for
    /// rebuilding the window store.
    async fn counted_claims(
        &self,
        service_id: i64,
        since: i64,
        after: Option<ClaimCursor>,
        limit: u32,
    ) -> Result<Vec<ClaimRow>>;

    /// Scopes the detector last left at `warning` or `outage`.
    async fn alert_levels(&self) -> Result<Vec<ScopeLevel>>;

    /// Every scope's persisted detector state.
    async fn scope_states(&self) -> Result<Vec<ScopeStateRow>>;

    /// One scope's persisted detector state (for baselines on charts).
    async fn scope_state(&self, service_id: i64, scope: &str) -> Result<Option<ScopeStateRow>>;

    /// One detector tick in one transaction: writes `incidents` (see
    /// [`IncidentWrite`]) and upserts `states`. Returns the incident ids in
    /// input order.
    async fn save_detection(
        &self,
        incidents: &[IncidentWrite],
        states: &[ScopeStateRow],
    ) -> Result<Vec<i64>> {
        self.save_detection_with(incidents, states, &[]).await
    }

    /// [`save_detection`](Self::save_detection), and in the same transaction
    /// one webhook delivery per subscription each of `notices` matches
    /// (an event already enqueued is not enqueued again).
    async fn save_detection_with(
        &self,
        incidents: &[IncidentWrite],
        states: &[ScopeStateRow],
        notices: &[Notice],
    ) -> Result<Vec<i64>>;

    /// Backfill: replaces the resolved incidents of one service that started
    /// in `[from, to)` by `incidents` (open ones adopt the scope's open row),
    /// in one transaction. Returns how many were removed.
    async fn replace_incidents(
        &self,
        service_id: i64,
        from: i64,
        to: i64,
        incidents: &[IncidentRecord],
    ) -> Result<u64>;

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<IncidentRow>>;

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>>;

    /// Counted reports of one service in `[from, to)` by problem, country
    /// and city (`country` filters one country). Exact: whole hours come
    /// from the hourly facets, the partial hours at the edges from the reports.
    async fn facet_counts(
        &self,
        service_id: i64,
        country: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<FacetCount>>;

    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
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

/// One row of a rollup a batch of reports adds to.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RollupDelta {
    counted: i32,
    received: i32,
}

/// The count rollups: table, time column, bucket width in seconds. Every
/// batch of reports adds to all three in its transaction.
const ROLLUP_LEVELS: [(&str, &str, i64); 3] = [
    ("report_minutes", "minute", 60),
    ("report_hours", "hour", 3600),
    ("report_days", "day", 86_400),
];

/// The rollup that serves buckets of `step` seconds starting at `from`:
/// the coarsest whose buckets tile them exactly.
fn rollup_for(from: i64, step: i64) -> (&'static str, &'static str) {
    let (table, column, _) = ROLLUP_LEVELS
        .iter()
        .rev()
        .find(|(_, _, w)| step % w == 0 && from.rem_euclid(*w) == 0)
        .copied()
        .unwrap_or(ROLLUP_LEVELS[0]);
    (table, column)
}

#[cfg(test)]
type RollupKey = (i64, String, i64);

/// Sums a batch into rollup rows of buckets `width` seconds wide, sorted:
/// the plain reference [`RollupSums`] is tested against.
#[cfg(test)]
fn rollups(reports: &[ReportRecord], width: i64) -> BTreeMap<RollupKey, RollupDelta> {
    let mut out: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    for r in reports {
        let t = r.received_at.timestamp().div_euclid(width) * width;
        let mut add = |scope: String| {
            let d = out.entry((r.service_id, scope, t)).or_default();
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

/// (service, hour, problem, country or "", city or "").
#[cfg(test)]
type FacetKey = (i64, i64, String, String, String);

/// Counted reports of a batch per hour, problem and place, sorted (the
/// reference for [`RollupSums`]' facets).
#[cfg(test)]
fn facets(reports: &[ReportRecord]) -> BTreeMap<FacetKey, i32> {
    let mut out: BTreeMap<FacetKey, i32> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.counted) {
        let hour = r.received_at.timestamp().div_euclid(3600) * 3600;
        let key = (
            r.service_id,
            hour,
            r.problem.as_str().to_owned(),
            r.country.map(|c| c.as_str().to_owned()).unwrap_or_default(),
            r.city
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Counted reports of one (problem, country, city) in a range; `""` for a
/// missing country or city.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FacetCount {
    pub problem: String,
    pub country: String,
    pub city: String,
    pub counted: i64,
}

/// `[start, end)` in unix seconds.
type Span = (i64, i64);

/// The full hours inside `[from, to)` (served by the facets) and the
/// partial edges (served by the raw reports, at most two hours).
fn split_hours(from: i64, to: i64) -> (Option<Span>, Vec<Span>) {
    let hf = from.div_euclid(3600) * 3600 + if from.rem_euclid(3600) == 0 { 0 } else { 3600 };
    let ht = to.div_euclid(3600) * 3600;
    if hf >= ht {
        return (None, vec![(from, to)]);
    }
    let mut edges = Vec::new();
    if from < hf {
        edges.push((from, hf));
    }
    if ht < to {
        edges.push((ht, to));
    }
    (Some((hf, ht)), edges)
}

/// Sums facet rows from several sources.
fn merge_facets(rows: impl IntoIterator<Item = FacetCount>) -> Vec<FacetCount> {
    let mut sum: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for r in rows {
        *sum.entry((r.problem, r.country, r.city)).or_default() += r.counted;
    }
    sum.into_iter()
        .map(|((problem, country, city), counted)| FacetCount {
            problem,
            country,
            city,
            counted,
        })
        .collect()
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

/// A bulk import in progress: one transaction, so a file is stored whole or
/// not at all. Reports go in with [`add_reports`](Self::add_reports) in
/// chunks; their rollups (minutes, hours, days, facets) are summed in memory
/// and written in the same transaction, at [`commit`](Self::commit) or
/// whenever the sums grow large. Dropped without `commit`, it rolls back.
#[async_trait]
pub trait ImportSession: Send {
    /// A service as this transaction sees it. On PostgreSQL its row stays
    /// locked against other changes to the service until the import ends
    /// (reports to it can still be ingested meanwhile).
    async fn get_service(&mut self, slug: &str) -> Result<Option<Service>>;

    /// Creates a service in the transaction; `Conflict` when the slug exists.
    async fn create_service(&mut self, service: &NewService) -> Result<Service>;

    /// Applies a patch in the transaction; `None` when no such service.
    async fn update_service(&mut self, slug: &str, patch: &ServicePatch)
    -> Result<Option<Service>>;

    /// Appends reports (any number; tens of thousands per call suit both
    /// backends) and adds them to the rollup sums. Returns how many rows
    /// were written.
    async fn add_reports(&mut self, reports: &[ReportRecord]) -> Result<u64>;

    /// Writes the remaining rollups and commits the whole import.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Key of an import's rollup sums: service, country (`None` for the global
/// scope), bucket start (unix seconds).
type SumKey = (i64, Option<CountryCode>, i64);

/// Key of an import's facet sums: service, hour, problem (interned), country,
/// city (interned, `""` for none).
type FacetSumKey = (i64, i64, u32, Option<CountryCode>, u32);

/// Rollup rows to upsert, as columns (for UNNEST), sorted by
/// (service, scope, time) like [`rollups`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RollupRows {
    pub service: Vec<i64>,
    pub scope: Vec<String>,
    pub time: Vec<i64>,
    pub counted: Vec<i64>,
    pub received: Vec<i64>,
}

/// Facet rows to upsert, as columns, sorted like [`facets`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FacetRows {
    pub service: Vec<i64>,
    pub hour: Vec<i64>,
    pub problem: Vec<String>,
    pub country: Vec<String>,
    pub city: Vec<String>,
    pub counted: Vec<i64>,
}

/// The rollups and facets of a set of reports, summed in memory: an ingest
/// batch, or an import's reports between writes. They are far smaller than the reports (one entry per service,
/// scope and minute), and an import writes them out when they pass
/// [`RollupSums::FLUSH_AT`] entries, so memory stays bounded whatever the
/// size of the file. Sums are `i64`; the database refuses what its
/// `INTEGER` columns cannot hold.
#[derive(Debug, Default)]
pub(crate) struct RollupSums {
    /// (counted, received) per key, one map per entry of [`ROLLUP_LEVELS`].
    levels: [HashMap<SumKey, (i64, i64)>; 3],
    facets: HashMap<FacetSumKey, i64>,
    /// Problem and city strings of the facet keys.
    names: HashMap<String, u32>,
    name_list: Vec<String>,
}

impl RollupSums {
    /// Entries past which an import writes its sums before going on.
    pub(crate) const FLUSH_AT: usize = 500_000;

    pub(crate) fn add(&mut self, reports: &[ReportRecord]) {
        for r in reports {
            let secs = r.received_at.timestamp();
            let counted = i64::from(r.counted);
            for ((_, _, width), map) in ROLLUP_LEVELS.iter().zip(self.levels.iter_mut()) {
                let t = secs.div_euclid(*width) * width;
                let mut add = |country: Option<CountryCode>| {
                    let e = map.entry((r.service_id, country, t)).or_insert((0, 0));
                    e.0 += counted;
                    e.1 += 1;
                };
                add(None);
                if r.country.is_some() {
                    add(r.country);
                }
            }
            if r.counted {
                let hour = secs.div_euclid(3600) * 3600;
                let problem = self.intern(r.problem.as_str());
                let city = self.intern(r.city.as_ref().map_or("", |c| c.as_str()));
                *self
                    .facets
                    .entry((r.service_id, hour, problem, r.country, city))
                    .or_insert(0) += 1;
            }
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.names.get(s) {
            return i;
        }
        let i = self.name_list.len() as u32;
        self.names.insert(s.to_owned(), i);
        self.name_list.push(s.to_owned());
        i
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(HashMap::len).sum::<usize>() + self.facets.len()
    }

    /// Takes the sums out as sorted rows (one [`RollupRows`] per entry of
    /// [`ROLLUP_LEVELS`]), leaving this empty.
    pub(crate) fn take(&mut self) -> ([RollupRows; 3], FacetRows) {
        fn scope(c: &Option<CountryCode>) -> &str {
            c.as_ref()
                .map_or(downwatch_core::GLOBAL_SCOPE, CountryCode::as_str)
        }
        let levels = std::mem::take(&mut self.levels).map(|map| {
            let mut entries: Vec<(SumKey, (i64, i64))> = map.into_iter().collect();
            entries.sort_unstable_by(|((s1, c1, t1), _), ((s2, c2, t2), _)| {
                (s1, scope(c1), t1).cmp(&(s2, scope(c2), t2))
            });
            let mut rows = RollupRows::default();
            for ((service, country, t), (counted, received)) in entries {
                rows.service.push(service);
                rows.scope.push(scope(&country).to_owned());
                rows.time.push(t);
                rows.counted.push(counted);
                rows.received.push(received);
            }
            rows
        });
        let names = std::mem::take(&mut self.name_list);
        self.names.clear();
        let name = |i: &u32| names[*i as usize].as_str();
        fn country(c: &Option<CountryCode>) -> &str {
            c.as_ref().map_or("", CountryCode::as_str)
        }
        let mut entries: Vec<(FacetSumKey, i64)> =
            std::mem::take(&mut self.facets).into_iter().collect();
        entries.sort_unstable_by(|((s1, h1, p1, co1, ci1), _), ((s2, h2, p2, co2, ci2), _)| {
            (s1, h1, name(p1), country(co1), name(ci1)).cmp(&(
                s2,
                h2,
                name(p2),
                country(co2),
                name(ci2),
            ))
        });
        let mut facets = FacetRows::default();
        for ((service, hour, problem, co, city), counted) in entries {
            facets.service.push(service);
            facets.hour.push(hour);
            facets.problem.push(name(&problem).to_owned());
            facets.country.push(country(&co).to_owned());
            facets.city.push(name(&city).to_owned());
            facets.counted.push(counted);
        }
        (levels, facets)
    }
}

/// Rows of an upsert written per statement, so one statement's parameters
/// stay a few megabytes however large the sums.
pub(crate) const UPSERT_SLICE: usize = 50_000;

#[cfg(test)]
mod import_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use downwatch_core::{City, ProblemKind};

    fn report(
        service_id: i64,
        secs: i64,
        problem: &str,
        country: Option<&str>,
        city: Option<&str>,
        counted: bool,
    ) -> ReportRecord {
        ReportRecord {
            service_id,
            problem: ProblemKind::parse(problem).unwrap(),
            country: country.map(|c| CountryCode::parse(c).unwrap()),
            city: city.and_then(|c| City::parse(c).unwrap()),
            client_hash: [0; 16],
            address_hash: None,
            counted,
            received_at: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        }
    }

    /// The import's sums, taken in two parts, add up to what the ingest
    /// path's `rollups` and `facets` compute for the whole batch, in the
    /// same order.
    #[test]
    fn import_sums_match_the_ingest_rollups_and_facets() {
        let batch = [
            report(2, 61, "app", Some("FR"), Some("Paris"), true),
            report(1, 119, "login", Some("FR"), None, false),
            report(1, 60, "app", Some("FR"), Some("Paris"), true),
            report(1, 3600, "app", None, None, true),
            report(1, 86_399, "app", Some("DE"), Some("Berlin"), true),
            report(1, -30, "website", Some("DE"), None, true),
            report(1, 90_000, "app", Some("DE"), Some("Berlin"), true),
        ];
        let mut sums = RollupSums::default();
        sums.add(&batch[..3]);
        sums.add(&batch[3..]);
        assert_ne!(sums.len(), 0);
        let (levels, facet_rows) = sums.take();
        assert_eq!(sums.len(), 0);
        for ((_, _, width), rows) in ROLLUP_LEVELS.iter().zip(&levels) {
            let mut want = RollupRows::default();
            for ((s, scope, t), d) in rollups(&batch, *width) {
                want.service.push(s);
                want.scope.push(scope);
                want.time.push(t);
                want.counted.push(i64::from(d.counted));
                want.received.push(i64::from(d.received));
            }
            assert_eq!(rows, &want, "width {width}");
        }
        let mut want = FacetRows::default();
        for ((s, h, p, co, ci), n) in facets(&batch) {
            want.service.push(s);
            want.hour.push(h);
            want.problem.push(p);
            want.country.push(co);
            want.city.push(ci);
            want.counted.push(i64::from(n));
        }
        assert_eq!(facet_rows, want);
        // Taken sums start again from nothing.
        sums.add(&batch[..1]);
        let (levels, facet_rows) = sums.take();
        assert_eq!(levels[0].service, vec![2, 2]);
        assert_eq!(facet_rows.city, vec!["Paris".to_owned()]);
    }
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
            address_hash: None,
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
        let r = rollups(&batch, 60);
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

    #[test]
    fn hour_and_day_rollups_floor_to_their_width_and_facets_count_counted_only() {
        let batch = [
            report(1, 3599, None, true),
            report(1, 3600, Some("DE"), true),
            report(1, 86_399, Some("DE"), false),
        ];
        let hours = rollups(&batch, 3600);
        assert_eq!(hours[&(1, "global".to_owned(), 0)].counted, 1);
        assert_eq!(hours[&(1, "global".to_owned(), 3600)].received, 1);
        assert_eq!(hours[&(1, "DE".to_owned(), 82_800)].received, 1);
        let days = rollups(&batch, 86_400);
        let d = days[&(1, "global".to_owned(), 0)];
        assert_eq!((d.counted, d.received), (2, 3));
        let f = facets(&batch);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            f[&(1, 3600, "app".to_owned(), "DE".to_owned(), String::new())],
            1
        );
    }

    #[test]
    fn the_coarsest_rollup_that_tiles_the_buckets_serves_a_series() {
        assert_eq!(rollup_for(0, 86_400), ("report_days", "day"));
        assert_eq!(rollup_for(3600, 86_400), ("report_hours", "hour"));
        assert_eq!(rollup_for(7200, 3600), ("report_hours", "hour"));
        assert_eq!(rollup_for(7200, 900), ("report_minutes", "minute"));
        assert_eq!(rollup_for(60, 3600), ("report_minutes", "minute"));
    }

    #[test]
    fn ranges_split_into_whole_hours_and_raw_edges() {
        assert_eq!(split_hours(0, 7200), (Some((0, 7200)), vec![]));
        assert_eq!(
            split_hours(1800, 9000),
            (Some((3600, 7200)), vec![(1800, 3600), (7200, 9000)])
        );
        assert_eq!(split_hours(1800, 3000), (None, vec![(1800, 3000)]));
        assert_eq!(split_hours(1800, 5400), (None, vec![(1800, 5400)]));
    }
}
