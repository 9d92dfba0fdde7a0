//! SQLite storage: the embedded default, one file, one process.

use super::{
    ClaimCursor, ClaimRow, IncidentQuery, IncidentRecord, IncidentRow, IncidentWrite, MinuteCount,
    OpenIncident, Result, ScopeLevel, ScopeStateRow, ServiceRow, Storage, StoreError,
    is_unique_violation,
};
use super::{FacetCount, ROLLUP_LEVELS, merge_facets, rollup_for, split_hours};
use super::{ImportSession, RollupSums};
use async_trait::async_trait;
use downwatch_core::{NewService, ReportRecord, Service, ServicePatch};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

mod webhooks;

pub struct SqliteStore {
    pool: SqlitePool,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a 201 promises the report survives a crash, so every
            // commit is on disk before it is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }
}

const SERVICE_COLUMNS: &str = "id, slug, name, category, url, problems";

/// Incident times are stored as microseconds, like report times.
const INCIDENT_COLUMNS: &str =
    "id, service_id, scope, level_max, started_at / 1000000 AS started_at,
    detected_at / 1000000 AS detected_at, peak_at / 1000000 AS peak_at, peak_reports_per_min,
    baseline_per_min_at_peak, ended_at / 1000000 AS ended_at, total_reports";

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>>;

/// Binds a record as parameters ?1 to ?11 (the column order of the
/// INSERT below).
fn bind_incident<'q>(q: Query<'q>, r: &'q IncidentRecord) -> Query<'q> {
    const M: i64 = 1_000_000;
    q.bind(r.service_id)
        .bind(&r.scope)
        .bind(r.status())
        .bind(&r.level_max)
        .bind(r.started_at * M)
        .bind(r.detected_at * M)
        .bind(r.peak_at * M)
        .bind(r.peak_reports_per_min)
        .bind(r.baseline_per_min_at_peak)
        .bind(r.ended_at.map(|t| t * M))
        .bind(r.total_reports)
}

async fn update_incident(tx: &mut SqliteConnection, id: i64, r: &IncidentRecord) -> Result<bool> {
    let q = sqlx::query(
        "UPDATE incidents SET service_id = ?1, scope = ?2, status = ?3, level_max = ?4,
         started_at = ?5, detected_at = ?6, peak_at = ?7, peak_reports_per_min = ?8,
         baseline_per_min_at_peak = ?9, ended_at = ?10, total_reports = ?11 WHERE id = ?12",
    );
    let done = bind_incident(q, r).bind(id).execute(&mut *tx).await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts, or when the scope already has an open incident and this one is
/// open too, updates that one (the partial unique index refuses a second).
async fn insert_or_adopt(tx: &mut SqliteConnection, r: &IncidentRecord) -> Result<i64> {
    let q = sqlx::query(
        "INSERT INTO incidents (service_id, scope, status, level_max, started_at, detected_at,
         peak_at, peak_reports_per_min, baseline_per_min_at_peak, ended_at, total_reports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (service_id, scope) WHERE status = 'open' DO NOTHING RETURNING id",
    );
    if let Some(row) = bind_incident(q, r).fetch_optional(&mut *tx).await? {
        return Ok(row.try_get("id")?);
    }
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM incidents WHERE service_id = ? AND scope = ? AND status = 'open'",
    )
    .bind(r.service_id)
    .bind(&r.scope)
    .fetch_one(&mut *tx)
    .await?;
    update_incident(tx, id, r).await?;
    Ok(id)
}

/// Adds a batch to every rollup, in the same transaction as its reports.
async fn write_rollups(tx: &mut SqliteConnection, reports: &[ReportRecord]) -> Result<()> {
    let mut sums = RollupSums::default();
    sums.add(reports);
    write_sums(tx, &mut sums).await
}

async fn get_service_on(conn: &mut SqliteConnection, slug: &str) -> Result<Option<Service>> {
    let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = ?");
    sqlx::query_as::<_, ServiceRow>(&q)
        .bind(slug)
        .fetch_optional(&mut *conn)
        .await?
        .map(Service::try_from)
        .transpose()
}

/// Creates a service on `conn` (a pool connection or a transaction).
async fn create_service_on(conn: &mut SqliteConnection, s: &NewService) -> Result<Service> {
    let now = now_micros();
    let q = format!(
        "INSERT INTO services (slug, name, category, url, problems, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {SERVICE_COLUMNS}"
    );
    sqlx::query_as::<_, ServiceRow>(&q)
        .bind(s.slug.as_str())
        .bind(&s.name)
        .bind(&s.category)
        .bind(&s.url)
        .bind(s.problems.to_stored())
        .bind(now)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("service {} exists", s.slug))
            } else {
                e.into()
            }
        })?
        .try_into()
}

/// Applies a patch inside write transaction `tx` (which excludes every
/// other writer).
async fn update_service_in(
    tx: &mut SqliteConnection,
    slug: &str,
    patch: &ServicePatch,
) -> Result<Option<Service>> {
    let Some(mut s) = get_service_on(tx, slug).await? else {
        return Ok(None);
    };
    patch.apply(&mut s);
    sqlx::query(
        "UPDATE services SET name = ?, category = ?, url = ?, problems = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(&s.name)
    .bind(&s.category)
    .bind(&s.url)
    .bind(s.problems.to_stored())
    .bind(now_micros())
    .bind(s.id)
    .execute(&mut *tx)
    .await?;
    Ok(Some(s))
}

async fn write_incident(tx: &mut SqliteConnection, w: &IncidentWrite) -> Result<i64> {
    if let Some(id) = w.id
        && update_incident(tx, id, &w.record).await?
    {
        return Ok(id);
    }
    insert_or_adopt(tx, &w.record).await
}

#[async_trait]
impl Storage for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn seed_catalogue(&self, services: &[NewService]) -> Result<Option<usize>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let first = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('catalogue_seeded', datetime('now'))
             ON CONFLICT (key) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(None);
        }
        let now = now_micros();
        let mut n = 0;
        for s in services {
            n += sqlx::query(
                "INSERT INTO services (slug, name, category, url, problems, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slug) DO NOTHING",
            )
            .bind(s.slug.as_str())
            .bind(&s.name)
            .bind(&s.category)
            .bind(&s.url)
            .bind(s.problems.to_stored())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(Some(n))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let q = format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY slug");
        sqlx::query_as::<_, ServiceRow>(&q)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Service::try_from)
            .collect()
    }

    async fn get_service(&self, slug: &str) -> Result<Option<Service>> {
        let mut conn = self.pool.acquire().await?;
        get_service_on(&mut conn, slug).await
    }

    async fn create_service(&self, s: &NewService) -> Result<Service> {
        let mut conn = self.pool.acquire().await?;
        create_service_on(&mut conn, s).await
    }

    async fn update_service(&self, slug: &str, patch: &ServicePatch) -> Result<Option<Service>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let updated = update_service_in(&mut tx, slug, patch).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn insert_reports(&self, reports: &[ReportRecord]) -> Result<Vec<i64>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // The write lock is ours until commit, so the ids are ours to draw:
        // one multi-row INSERT per hundred reports instead of one per report.
        let first: i64 = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'reports'), 0),
                        COALESCE((SELECT MAX(id) FROM reports), 0)) + 1",
        )
        .fetch_one(&mut *tx)
        .await?;
        const N: usize = REPORT_ROWS_PER_STATEMENT;
        let full = values_sql(INSERT_REPORTS_HEAD, INSERT_REPORTS_ROW, N, "");
        for (chunk_no, chunk) in reports.chunks(N).enumerate() {
            let partial;
            let sql = if chunk.len() == N {
                &full
            } else {
                partial = values_sql(INSERT_REPORTS_HEAD, INSERT_REPORTS_ROW, chunk.len(), "");
                &partial
            };
            let mut q = sqlx::query(sql);
            for (i, r) in chunk.iter().enumerate() {
                q = q
                    .bind(first + (chunk_no * N + i) as i64)
                    .bind(r.service_id)
                    .bind(r.problem.as_str())
                    .bind(r.country.as_ref().map(|c| c.as_str()))
                    .bind(r.city.as_ref().map(|c| c.as_str()))
                    .bind(&r.client_hash[..])
                    .bind(r.address_hash.as_ref().map(|a| &a[..]))
                    .bind(r.counted)
                    .bind(r.received_at.timestamp_micros());
            }
            q.execute(&mut *tx).await?;
        }
        write_rollups(&mut tx, reports).await?;
        tx.commit().await?;
        Ok((first..first + reports.len() as i64).collect())
    }

    async fn counted_claims(
        &self,
        service_id: i64,
        since: i64,
        after: Option<ClaimCursor>,
        limit: u32,
    ) -> Result<Vec<ClaimRow>> {
        let after = after.unwrap_or_else(|| ClaimCursor::before(since));
        Ok(sqlx::query_as(
            "SELECT id, client_hash, address_hash, received_at
             FROM reports
             WHERE service_id = ?1 AND counted AND received_at >= ?2
               AND (received_at, id) > (?2, ?3)
             ORDER BY received_at, id
             LIMIT ?4",
        )
        .bind(service_id)
        .bind(after.received_at)
        .bind(after.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn counts(
        &self,
        service_id: i64,
        scope: &str,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let (table, column) = rollup_for(from, step);
        let sql = format!(
            "SELECT ?3 + (({column} - ?3) / ?5) * ?5 AS t, SUM(counted)
             FROM {table}
             WHERE service_id = ?1 AND scope = ?2 AND {column} >= ?3 AND {column} < ?4
             GROUP BY t ORDER BY t"
        );
        Ok(sqlx::query_as(&sql)
            .bind(service_id)
            .bind(scope)
            .bind(from)
            .bind(to)
            .bind(step)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn salt_for_day(&self, day: i64, candidate: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO client_salts (day, salt) VALUES (?, ?) ON CONFLICT (day) DO NOTHING",
        )
        .bind(day)
        .bind(candidate)
        .execute(&mut *tx)
        .await?;
        let salt: Vec<u8> = sqlx::query_scalar("SELECT salt FROM client_salts WHERE day = ?")
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(salt)
    }

    async fn forget_salts_before(&self, day: i64) -> Result<()> {
        sqlx::query("DELETE FROM client_salts WHERE day < ?")
            .bind(day)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn open_incidents(&self) -> Result<Vec<OpenIncident>> {
        Ok(
            sqlx::query_as("SELECT id, service_id, scope FROM incidents WHERE status = 'open'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn minute_counts(&self, service_id: i64, from: i64, to: i64) -> Result<Vec<MinuteCount>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, minute, counted FROM report_minutes
             WHERE service_id = ? AND minute >= ? AND minute < ? AND counted > 0
             ORDER BY minute, scope",
        )
        .bind(service_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn recent_minute_counts(&self, from: i64) -> Result<Vec<MinuteCount>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, minute, counted FROM report_minutes
             WHERE minute >= ? AND counted > 0",
        )
        .bind(from)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn alert_levels(&self) -> Result<Vec<ScopeLevel>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, level FROM detector_scopes WHERE level <> 'ok'",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn scope_states(&self) -> Result<Vec<ScopeStateRow>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, last_minute, level, expected, incident_id, state
             FROM detector_scopes",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn scope_state(&self, service_id: i64, scope: &str) -> Result<Option<ScopeStateRow>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, last_minute, level, expected, incident_id, state
             FROM detector_scopes WHERE service_id = ? AND scope = ?",
        )
        .bind(service_id)
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn save_detection_with(
        &self,
        incidents: &[IncidentWrite],
        states: &[ScopeStateRow],
        notices: &[crate::Notice],
    ) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut ids = Vec::with_capacity(incidents.len());
        for w in incidents {
            ids.push(write_incident(&mut tx, w).await?);
        }
        for st in states {
            sqlx::query(
                "INSERT INTO detector_scopes
                 (service_id, scope, last_minute, level, expected, incident_id, state)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (service_id, scope) DO UPDATE SET last_minute = excluded.last_minute,
                 level = excluded.level, expected = excluded.expected,
                 incident_id = excluded.incident_id, state = excluded.state",
            )
            .bind(st.service_id)
            .bind(&st.scope)
            .bind(st.last_minute)
            .bind(&st.level)
            .bind(st.expected)
            .bind(st.incident_id)
            .bind(&st.state)
            .execute(&mut *tx)
            .await?;
        }
        // Each scope points at its latest incident (writes come oldest
        // first); an update of the row it already points at changes nothing.
        for (w, id) in incidents.iter().zip(&ids) {
            if w.id == Some(*id) {
                continue;
            }
            sqlx::query(
                "UPDATE detector_scopes SET incident_id = ? WHERE service_id = ? AND scope = ?",
            )
            .bind(id)
            .bind(w.record.service_id)
            .bind(&w.record.scope)
            .execute(&mut *tx)
            .await?;
        }
        webhooks::enqueue(&mut tx, notices, &ids).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn replace_incidents(
        &self,
        service_id: i64,
        from: i64,
        to: i64,
        incidents: &[IncidentRecord],
    ) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let removed = sqlx::query(
            "DELETE FROM incidents WHERE service_id = ? AND status = 'resolved'
             AND started_at >= ? AND started_at < ?",
        )
        .bind(service_id)
        .bind(from * 1_000_000)
        .bind(to * 1_000_000)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for r in incidents {
            insert_or_adopt(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn incidents(&self, q: &IncidentQuery) -> Result<Vec<IncidentRow>> {
        const M: i64 = 1_000_000;
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE (?1 IS NULL OR service_id = ?1) AND (?2 IS NULL OR scope = ?2)
             AND (?3 IS NULL OR started_at >= ?3) AND (?4 IS NULL OR started_at < ?4)
             AND (?5 IS NULL OR (status = 'open') = ?5)
             AND (?6 IS NULL OR started_at < ?6 OR (started_at = ?6 AND id < ?7))
             ORDER BY started_at DESC, id DESC LIMIT ?8"
        );
        Ok(sqlx::query_as(&sql)
            .bind(q.service_id)
            .bind(&q.scope)
            .bind(q.from.map(|t| t * M))
            .bind(q.to.map(|t| t * M))
            .bind(q.open)
            .bind(q.before.map(|b| b.0 * M))
            .bind(q.before.map(|b| b.1))
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn facet_counts(
        &self,
        service_id: i64,
        country: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<FacetCount>> {
        const M: i64 = 1_000_000;
        let (hours, edges) = split_hours(from, to);
        let mut rows: Vec<FacetCount> = Vec::new();
        if let Some((hf, ht)) = hours {
            rows.extend(
                sqlx::query_as::<_, FacetCount>(
                    "SELECT problem, country, city, SUM(counted) AS counted
                     FROM report_facets
                     WHERE service_id = ?1 AND hour >= ?2 AND hour < ?3
                     AND (?4 IS NULL OR country = ?4)
                     GROUP BY problem, country, city",
                )
                .bind(service_id)
                .bind(hf)
                .bind(ht)
                .bind(country)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        for (a, b) in edges {
            rows.extend(
                sqlx::query_as::<_, FacetCount>(
                    "SELECT problem, COALESCE(country, '') AS country, COALESCE(city, '') AS city,
                     COUNT(*) AS counted
                     FROM reports
                     WHERE service_id = ?1 AND counted = 1
                     AND received_at >= ?2 AND received_at < ?3
                     AND (?4 IS NULL OR country = ?4)
                     GROUP BY 1, 2, 3",
                )
                .bind(service_id)
                .bind(a * M)
                .bind(b * M)
                .bind(country)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        Ok(merge_facets(rows))
    }

    async fn begin_import(&self) -> Result<Box<dyn ImportSession>> {
        Ok(Box::new(SqliteImport {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            sums: RollupSums::default(),
            insert_full: values_sql(
                IMPORT_REPORTS_HEAD,
                "(?, ?, ?, ?, ?, ?, ?)",
                IMPORT_ROWS_PER_STATEMENT,
                "",
            ),
        }))
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Reports per multi-row INSERT of a live batch (9 parameters each).
const REPORT_ROWS_PER_STATEMENT: usize = 100;
const INSERT_REPORTS_HEAD: &str = "INSERT INTO reports (id, service_id, problem, country, city, client_hash, address_hash, counted, received_at) VALUES ";
const INSERT_REPORTS_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rows per multi-row INSERT of an import (7 parameters each for reports).
const IMPORT_ROWS_PER_STATEMENT: usize = 100;

/// `head` followed by `n` copies of `row`, comma-separated, then `tail`.
fn values_sql(head: &str, row: &str, n: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 1) + tail.len());
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

const IMPORT_REPORTS_HEAD: &str = "INSERT INTO reports (service_id, problem, country, city, client_hash, counted, received_at) VALUES ";

fn rollup_upsert_tail(table: &str, column: &str) -> String {
    format!(
        " ON CONFLICT (service_id, scope, {column}) DO UPDATE
         SET counted = {table}.counted + excluded.counted,
             received = {table}.received + excluded.received"
    )
}

const FACET_UPSERT_HEAD: &str =
    "INSERT INTO report_facets (service_id, hour, problem, country, city, counted) VALUES ";
const FACET_UPSERT_TAIL: &str = " ON CONFLICT (service_id, hour, problem, country, city) DO UPDATE
     SET counted = report_facets.counted + excluded.counted";

/// An import into SQLite: one write transaction (`BEGIN IMMEDIATE`),
/// multi-row prepared INSERTs, rollups summed in memory and upserted the
/// same way.
struct SqliteImport {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    sums: RollupSums,
    /// The INSERT of a full statement's worth of reports.
    insert_full: String,
}

/// Upserts summed rollups and facets, many rows per statement, tables and
/// rows in one fixed order.
async fn write_sums(tx: &mut SqliteConnection, sums: &mut RollupSums) -> Result<()> {
    const N: usize = IMPORT_ROWS_PER_STATEMENT;
    let (levels, facets) = sums.take();
    for ((table, column, _), rows) in ROLLUP_LEVELS.iter().zip(levels) {
        let head =
            format!("INSERT INTO {table} (service_id, scope, {column}, counted, received) VALUES ");
        let tail = rollup_upsert_tail(table, column);
        let full = values_sql(&head, "(?, ?, ?, ?, ?)", N, &tail);
        let len = rows.service.len();
        for a in (0..len).step_by(N) {
            let b = (a + N).min(len);
            let partial;
            let sql = if b - a == N {
                &full
            } else {
                partial = values_sql(&head, "(?, ?, ?, ?, ?)", b - a, &tail);
                &partial
            };
            let mut q = sqlx::query(sql);
            for i in a..b {
                q = q
                    .bind(rows.service[i])
                    .bind(rows.scope[i].as_str())
                    .bind(rows.time[i])
                    .bind(rows.counted[i])
                    .bind(rows.received[i]);
            }
            q.execute(&mut *tx).await?;
        }
    }
    let full = values_sql(
        FACET_UPSERT_HEAD,
        "(?, ?, ?, ?, ?, ?)",
        N,
        FACET_UPSERT_TAIL,
    );
    let len = facets.service.len();
    for a in (0..len).step_by(N) {
        let b = (a + N).min(len);
        let partial;
        let sql = if b - a == N {
            &full
        } else {
            partial = values_sql(
                FACET_UPSERT_HEAD,
                "(?, ?, ?, ?, ?, ?)",
                b - a,
                FACET_UPSERT_TAIL,
            );
            &partial
        };
        let mut q = sqlx::query(sql);
        for i in a..b {
            q = q
                .bind(facets.service[i])
                .bind(facets.hour[i])
                .bind(facets.problem[i].as_str())
                .bind(facets.country[i].as_str())
                .bind(facets.city[i].as_str())
                .bind(facets.counted[i]);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

#[async_trait]
impl ImportSession for SqliteImport {
    async fn get_service(&mut self, slug: &str) -> Result<Option<Service>> {
        // The write transaction already excludes every other writer.
        get_service_on(&mut self.tx, slug).await
    }

    async fn create_service(&mut self, s: &NewService) -> Result<Service> {
        create_service_on(&mut self.tx, s).await
    }

    async fn update_service(
        &mut self,
        slug: &str,
        patch: &ServicePatch,
    ) -> Result<Option<Service>> {
        update_service_in(&mut self.tx, slug, patch).await
    }

    async fn add_reports(&mut self, reports: &[ReportRecord]) -> Result<u64> {
        const ROW: &str = "(?, ?, ?, ?, ?, ?, ?)";
        let mut written = 0;
        for chunk in reports.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let partial;
            let sql = if chunk.len() == IMPORT_ROWS_PER_STATEMENT {
                &self.insert_full
            } else {
                partial = values_sql(IMPORT_REPORTS_HEAD, ROW, chunk.len(), "");
                &partial
            };
            let mut q = sqlx::query(sql);
            for r in chunk {
                q = q
                    .bind(r.service_id)
                    .bind(r.problem.as_str())
                    .bind(r.country.as_ref().map(|c| c.as_str()))
                    .bind(r.city.as_ref().map(|c| c.as_str()))
                    .bind(&r.client_hash[..])
                    .bind(r.counted)
                    .bind(r.received_at.timestamp_micros());
            }
            written += q.execute(&mut *self.tx).await?.rows_affected();
        }
        self.sums.add(reports);
        if self.sums.len() >= RollupSums::FLUSH_AT {
            write_sums(&mut self.tx, &mut self.sums).await?;
        }
        Ok(written)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let SqliteImport {
            mut tx, mut sums, ..
        } = *self;
        write_sums(&mut tx, &mut sums).await?;
        tx.commit().await?;
        Ok(())
    }
}
