//! PostgreSQL storage: production mode, shared by every instance.

use super::{
    ClaimCursor, ClaimRow, IncidentQuery, IncidentRecord, IncidentRow, IncidentWrite, MinuteCount,
    OpenIncident, Result, ScopeLevel, ScopeStateRow, ServiceRow, Storage, StoreError,
    is_unique_violation,
};
use super::{FacetCount, ROLLUP_LEVELS, merge_facets, rollup_for, split_hours};
use super::{ImportSession, RollupSums, UPSERT_SLICE};
use async_trait::async_trait;
use downwatch_core::{NewService, ReportRecord, Service, ServicePatch};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

mod webhooks;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?.application_name("downwatch");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast while the database is down: requests get a 503, not a hang.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }
}

const SERVICE_COLUMNS: &str = "id, slug, name, category, url, problems";

// Floored, not rounded: a time with a fraction of a second (written by
// something other than the detector) must not move to the next second, or a
// cursor built from it would repeat the row on the next page.
const INCIDENT_COLUMNS: &str = "id, service_id, scope, level_max,
    FLOOR(EXTRACT(EPOCH FROM started_at))::int8 AS started_at,
    FLOOR(EXTRACT(EPOCH FROM detected_at))::int8 AS detected_at,
    FLOOR(EXTRACT(EPOCH FROM peak_at))::int8 AS peak_at, peak_reports_per_min,
    baseline_per_min_at_peak, FLOOR(EXTRACT(EPOCH FROM ended_at))::int8 AS ended_at,
    total_reports";

/// A batch of reports and its rollups in one statement. Ids are drawn in a
/// materialised CTE, so the ids returned (in input order) are the stored ones.
static INSERT_BATCH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut sql = String::from(
        "WITH input AS MATERIALIZED (
           SELECT nextval('reports_id_seq') AS id, u.*
           FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                       $6::bytea[], $7::bool[], $8::timestamptz[])
                WITH ORDINALITY AS u(service_id, problem, country, city, client_hash,
                                     address_hash, counted, received_at, ord)
         ),
         ins AS (
           INSERT INTO reports (id, service_id, problem, country, city, client_hash,
                                address_hash, counted, received_at)
           SELECT id, service_id, problem, country, city, client_hash, address_hash, counted,
                  received_at
           FROM input
         )",
    );
    let mut p = 9;
    for (i, (table, column, _)) in ROLLUP_LEVELS.iter().enumerate() {
        sql.push_str(&format!(
            ", r{i} AS (
               INSERT INTO {table} (service_id, scope, {column}, counted, received)
               SELECT * FROM UNNEST(${}::int8[], ${}::text[], ${}::int8[], ${}::int8[], ${}::int8[])
               ON CONFLICT (service_id, scope, {column}) DO UPDATE
               SET counted = {table}.counted + EXCLUDED.counted,
                   received = {table}.received + EXCLUDED.received
             )",
            p,
            p + 1,
            p + 2,
            p + 3,
            p + 4
        ));
        p += 5;
    }
    sql.push_str(&format!(
        ", facets AS (
           INSERT INTO report_facets (service_id, hour, problem, country, city, counted)
           SELECT * FROM UNNEST(${}::int8[], ${}::int8[], ${}::text[], ${}::text[], ${}::text[],
                                ${}::int8[])
           ON CONFLICT (service_id, hour, problem, country, city) DO UPDATE
           SET counted = report_facets.counted + EXCLUDED.counted
         )
         SELECT id FROM input ORDER BY ord",
        p,
        p + 1,
        p + 2,
        p + 3,
        p + 4,
        p + 5
    ));
    sql
});

fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// Binds a record as parameters $1 to $11 (the column order of the INSERT
/// below); times go in as unix seconds and are converted by `to_timestamp`.
fn bind_incident<'q>(q: Query<'q>, r: &'q IncidentRecord) -> Query<'q> {
    q.bind(r.service_id)
        .bind(&r.scope)
        .bind(r.status())
        .bind(&r.level_max)
        .bind(r.started_at as f64)
        .bind(r.detected_at as f64)
        .bind(r.peak_at as f64)
        .bind(r.peak_reports_per_min)
        .bind(r.baseline_per_min_at_peak)
        .bind(r.ended_at.map(|t| t as f64))
        .bind(r.total_reports)
}

async fn update_incident(tx: &mut PgConnection, id: i64, r: &IncidentRecord) -> Result<bool> {
    let q = sqlx::query(
        "UPDATE incidents SET service_id = $1, scope = $2, status = $3, level_max = $4,
         started_at = to_timestamp($5), detected_at = to_timestamp($6), peak_at = to_timestamp($7),
         peak_reports_per_min = $8, baseline_per_min_at_peak = $9, ended_at = to_timestamp($10),
         total_reports = $11 WHERE id = $12",
    );
    let done = bind_incident(q, r).bind(id).execute(&mut *tx).await?;
    Ok(done.rows_affected() == 1)
}

/// Inserts, or when the scope already has an open incident and this one is
/// open too, updates that one (the partial unique index refuses a second).
async fn insert_or_adopt(tx: &mut PgConnection, r: &IncidentRecord) -> Result<i64> {
    let q = sqlx::query(
        "INSERT INTO incidents (service_id, scope, status, level_max, started_at, detected_at,
         peak_at, peak_reports_per_min, baseline_per_min_at_peak, ended_at, total_reports)
         VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($6), to_timestamp($7), $8, $9,
         to_timestamp($10), $11)
         ON CONFLICT (service_id, scope) WHERE status = 'open' DO NOTHING RETURNING id",
    );
    if let Some(row) = bind_incident(q, r).fetch_optional(&mut *tx).await? {
        return Ok(row.try_get("id")?);
    }
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM incidents WHERE service_id = $1 AND scope = $2 AND status = 'open'",
    )
    .bind(r.service_id)
    .bind(&r.scope)
    .fetch_one(&mut *tx)
    .await?;
    update_incident(tx, id, r).await?;
    Ok(id)
}

/// Adds a batch to every rollup, in the same transaction as its reports.
/// The sums come out sorted, so concurrent writers lock rows in the same
/// order and cannot deadlock.
/// Creates a service on `conn` (a pool connection or a transaction).
async fn create_service_on(conn: &mut PgConnection, s: &NewService) -> Result<Service> {
    let q = format!(
        "INSERT INTO services (slug, name, category, url, problems) VALUES ($1, $2, $3, $4, $5)
         RETURNING {SERVICE_COLUMNS}"
    );
    sqlx::query_as::<_, ServiceRow>(&q)
        .bind(s.slug.as_str())
        .bind(&s.name)
        .bind(&s.category)
        .bind(&s.url)
        .bind(s.problems.to_stored())
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

/// Reads a service, locking its row until the transaction ends. NO KEY
/// UPDATE: serialises with other changes to the service but not with the
/// foreign-key checks of reports ingested meanwhile.
async fn lock_service(tx: &mut PgConnection, slug: &str) -> Result<Option<Service>> {
    let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = $1 FOR NO KEY UPDATE");
    sqlx::query_as::<_, ServiceRow>(&q)
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?
        .map(Service::try_from)
        .transpose()
}

/// Applies a patch inside transaction `tx`.
async fn update_service_in(
    tx: &mut PgConnection,
    slug: &str,
    patch: &ServicePatch,
) -> Result<Option<Service>> {
    let Some(mut s) = lock_service(tx, slug).await? else {
        return Ok(None);
    };
    patch.apply(&mut s);
    sqlx::query(
        "UPDATE services SET name = $2, category = $3, url = $4, problems = $5, updated_at = now()
         WHERE id = $1",
    )
    .bind(s.id)
    .bind(&s.name)
    .bind(&s.category)
    .bind(&s.url)
    .bind(s.problems.to_stored())
    .execute(&mut *tx)
    .await?;
    Ok(Some(s))
}

async fn write_incident(tx: &mut PgConnection, w: &IncidentWrite) -> Result<i64> {
    if let Some(id) = w.id
        && update_incident(tx, id, &w.record).await?
    {
        return Ok(id);
    }
    insert_or_adopt(tx, &w.record).await
}

#[async_trait]
impl Storage for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('catalogue_seeded', now()::text) ON CONFLICT (key) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(None);
        }
        let mut n = 0;
        for s in services {
            n += sqlx::query(
                "INSERT INTO services (slug, name, category, url, problems) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (slug) DO NOTHING",
            )
            .bind(s.slug.as_str())
            .bind(&s.name)
            .bind(&s.category)
            .bind(&s.url)
            .bind(s.problems.to_stored())
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
        let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = $1");
        sqlx::query_as::<_, ServiceRow>(&q)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .map(Service::try_from)
            .transpose()
    }

    async fn create_service(&self, s: &NewService) -> Result<Service> {
        let mut conn = self.pool.acquire().await?;
        create_service_on(&mut conn, s).await
    }

    async fn update_service(&self, slug: &str, patch: &ServicePatch) -> Result<Option<Service>> {
        let mut tx = self.pool.begin().await?;
        let updated = update_service_in(&mut tx, slug, patch).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn insert_reports(&self, reports: &[ReportRecord]) -> Result<Vec<i64>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let n = reports.len();
        let mut service_ids = Vec::with_capacity(n);
        let mut problems = Vec::with_capacity(n);
        let mut countries = Vec::with_capacity(n);
        let mut cities = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut addresses = Vec::with_capacity(n);
        let mut counted = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        for r in reports {
            service_ids.push(r.service_id);
            problems.push(r.problem.as_str());
            countries.push(r.country.as_ref().map(|c| c.as_str()));
            cities.push(r.city.as_ref().map(|c| c.as_str()));
            hashes.push(&r.client_hash[..]);
            addresses.push(r.address_hash.as_ref().map(|a| &a[..]));
            counted.push(r.counted);
            received.push(r.received_at);
        }
        let mut sums = RollupSums::default();
        sums.add(reports);
        let (levels, facets) = sums.take();
        // One statement, one round trip, its own transaction: the reports
        // and every rollup commit together or not at all, and row locks on
        // the hot rollup rows are held for one statement and its commit.
        let mut attempt = 0;
        loop {
            let mut q = sqlx::query_scalar::<_, i64>(&INSERT_BATCH)
                .bind(&service_ids)
                .bind(&problems)
                .bind(&countries)
                .bind(&cities)
                .bind(&hashes)
                .bind(&addresses)
                .bind(&counted)
                .bind(&received);
            for rows in &levels {
                q = q
                    .bind(&rows.service)
                    .bind(&rows.scope)
                    .bind(&rows.time)
                    .bind(&rows.counted)
                    .bind(&rows.received);
            }
            let result = q
                .bind(&facets.service)
                .bind(&facets.hour)
                .bind(&facets.problem)
                .bind(&facets.country)
                .bind(&facets.city)
                .bind(&facets.counted)
                .fetch_all(&self.pool)
                .await;
            match result {
                // Rows are locked in one order by every writer, so a deadlock
                // is not expected; if one happens nothing was written: retry once.
                Err(e) if attempt == 0 && is_deadlock(&e) => attempt += 1,
                other => return Ok(other?),
            }
        }
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
            "SELECT $3 + (({column} - $3) / $5) * $5 AS t, SUM(counted)::int8
             FROM {table}
             WHERE service_id = $1 AND scope = $2 AND {column} >= $3 AND {column} < $4
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO client_salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING",
        )
        .bind(day)
        .bind(candidate)
        .execute(&mut *tx)
        .await?;
        let salt: Vec<u8> = sqlx::query_scalar("SELECT salt FROM client_salts WHERE day = $1")
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(salt)
    }

    async fn forget_salts_before(&self, day: i64) -> Result<()> {
        sqlx::query("DELETE FROM client_salts WHERE day < $1")
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
            "SELECT service_id, scope, minute, counted::int8 AS counted FROM report_minutes
             WHERE service_id = $1 AND minute >= $2 AND minute < $3 AND counted > 0
             ORDER BY minute, scope",
        )
        .bind(service_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn counted_claims(
        &self,
        service_id: i64,
        since: i64,
        after: Option<ClaimCursor>,
        limit: u32,
    ) -> Result<Vec<ClaimRow>> {
        let after = after.unwrap_or_else(|| ClaimCursor::before(since));
        // Microseconds as an exact interval from the epoch (to_timestamp
        // goes through a double); the plain bound lets the index do the range.
        Ok(sqlx::query_as(
            "SELECT id, client_hash, address_hash,
                    (EXTRACT(EPOCH FROM received_at) * 1000000)::int8 AS received_at
             FROM reports
             WHERE service_id = $1 AND counted
               AND received_at >= TIMESTAMPTZ 'epoch' + $2 * INTERVAL '1 microsecond'
               AND (received_at, id) > (TIMESTAMPTZ 'epoch' + $2 * INTERVAL '1 microsecond', $3)
             ORDER BY received_at, id
             LIMIT $4",
        )
        .bind(service_id)
        .bind(after.received_at)
        .bind(after.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn recent_minute_counts(&self, from: i64) -> Result<Vec<MinuteCount>> {
        Ok(sqlx::query_as(
            "SELECT service_id, scope, minute, counted::int8 AS counted FROM report_minutes
             WHERE minute >= $1 AND counted > 0",
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
             FROM detector_scopes WHERE service_id = $1 AND scope = $2",
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
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(incidents.len());
        for w in incidents {
            ids.push(write_incident(&mut tx, w).await?);
        }
        if !states.is_empty() {
            // One statement for every scope: a tick writes hundreds of them.
            let mut service_ids = Vec::with_capacity(states.len());
            let mut scopes = Vec::with_capacity(states.len());
            let mut minutes = Vec::with_capacity(states.len());
            let mut levels = Vec::with_capacity(states.len());
            let mut expected = Vec::with_capacity(states.len());
            let mut incident_ids = Vec::with_capacity(states.len());
            let mut blobs = Vec::with_capacity(states.len());
            for st in states {
                service_ids.push(st.service_id);
                scopes.push(st.scope.as_str());
                minutes.push(st.last_minute);
                levels.push(st.level.as_str());
                expected.push(st.expected);
                incident_ids.push(st.incident_id);
                blobs.push(st.state.as_str());
            }
            sqlx::query(
                "INSERT INTO detector_scopes
                 (service_id, scope, last_minute, level, expected, incident_id, state)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[],
                                      $5::float8[], $6::int8[], $7::text[])
                 ON CONFLICT (service_id, scope) DO UPDATE SET last_minute = excluded.last_minute,
                 level = excluded.level, expected = excluded.expected,
                 incident_id = excluded.incident_id, state = excluded.state",
            )
            .bind(&service_ids)
            .bind(&scopes)
            .bind(&minutes)
            .bind(&levels)
            .bind(&expected)
            .bind(&incident_ids)
            .bind(&blobs)
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
                "UPDATE detector_scopes SET incident_id = $1 WHERE service_id = $2 AND scope = $3",
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
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query(
            "DELETE FROM incidents WHERE service_id = $1 AND status = 'resolved'
             AND started_at >= to_timestamp($2) AND started_at < to_timestamp($3)",
        )
        .bind(service_id)
        .bind(from as f64)
        .bind(to as f64)
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
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE ($1::int8 IS NULL OR service_id = $1) AND ($2::text IS NULL OR scope = $2)
             AND ($3::float8 IS NULL OR started_at >= to_timestamp($3))
             AND ($4::float8 IS NULL OR started_at < to_timestamp($4))
             AND ($5::bool IS NULL OR (status = 'open') = $5)
             AND ($6::float8 IS NULL OR (started_at, id) < (to_timestamp($6), $7::int8))
             ORDER BY started_at DESC, id DESC LIMIT $8"
        );
        Ok(sqlx::query_as(&sql)
            .bind(q.service_id)
            .bind(&q.scope)
            .bind(q.from.map(|t| t as f64))
            .bind(q.to.map(|t| t as f64))
            .bind(q.open)
            .bind(q.before.map(|b| b.0 as f64))
            .bind(q.before.map(|b| b.1))
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
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
        let (hours, edges) = split_hours(from, to);
        let mut rows: Vec<FacetCount> = Vec::new();
        if let Some((hf, ht)) = hours {
            rows.extend(
                sqlx::query_as::<_, FacetCount>(
                    "SELECT problem, country, city, SUM(counted)::int8 AS counted
                     FROM report_facets
                     WHERE service_id = $1 AND hour >= $2 AND hour < $3
                     AND ($4::text IS NULL OR country = $4)
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
                     COUNT(*)::int8 AS counted
                     FROM reports
                     WHERE service_id = $1 AND counted
                     AND received_at >= to_timestamp($2) AND received_at < to_timestamp($3)
                     AND ($4::text IS NULL OR country = $4)
                     GROUP BY 1, 2, 3",
                )
                .bind(service_id)
                .bind(a as f64)
                .bind(b as f64)
                .bind(country)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        Ok(merge_facets(rows))
    }

    async fn begin_import(&self) -> Result<Box<dyn ImportSession>> {
        Ok(Box::new(PgImport {
            tx: self.pool.begin().await?,
            sums: RollupSums::default(),
            buf: Vec::with_capacity(8 << 20),
        }))
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Creates database `name` on the PostgreSQL server `server_url` points at
/// (through whichever database it names) and returns the URL of the new
/// one. For benchmarks and tests that need a database of their own.
pub async fn create_pg_database(server_url: &str, name: &str) -> Result<String> {
    use sqlx::Connection;
    let url = with_database(server_url, name)?;
    let mut c = PgConnection::connect(server_url).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut c)
        .await?;
    Ok(url)
}

/// Drops database `name` (if it exists) on the server `server_url` points
/// at, disconnecting its sessions.
pub async fn drop_pg_database(server_url: &str, name: &str) -> Result<()> {
    use sqlx::Connection;
    with_database(server_url, name)?;
    let mut c = PgConnection::connect(server_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut c)
        .await?;
    Ok(())
}

/// `url` with its database replaced by `name` (`[a-z0-9_]`, so it needs no
/// quoting anywhere).
fn with_database(url: &str, name: &str) -> Result<String> {
    let bad = || StoreError::UnsupportedUrl(url.to_owned());
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Conflict(format!(
            "database name {name:?}: expected [a-z0-9_]{{1,63}}"
        )));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// The columns an import writes with COPY, in the order of its rows.
const COPY_REPORTS: &str = "COPY reports (service_id, problem, country, city, client_hash, counted, received_at) FROM STDIN";

/// An import into PostgreSQL: reports by COPY (text format), rollups summed
/// in memory and upserted with UNNEST, all in one transaction.
struct PgImport {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    sums: RollupSums,
    /// The COPY data of one `add_reports`, reused.
    buf: Vec<u8>,
}

/// Appends a non-negative integer in decimal.
fn push_uint(buf: &mut Vec<u8>, mut n: u64, min_digits: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < min_digits.max(1) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Appends a value in COPY's text format: backslash, tab, newline and
/// carriage return escaped (the domain types already refuse control
/// characters; this does not rely on it).
fn push_copy_text(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// Appends a UTC time as `YYYY-MM-DD HH:MM:SS[.ffffff]+00`.
fn push_timestamp(buf: &mut Vec<u8>, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let n = t.naive_utc();
    let Ok(year) = u64::try_from(n.year()) else {
        // Before year 0: COPY will refuse it, with its own message.
        buf.extend_from_slice(t.to_rfc3339().as_bytes());
        return;
    };
    push_uint(buf, year, 4);
    buf.push(b'-');
    push_uint(buf, u64::from(n.month()), 2);
    buf.push(b'-');
    push_uint(buf, u64::from(n.day()), 2);
    buf.push(b' ');
    push_uint(buf, u64::from(n.hour()), 2);
    buf.push(b':');
    push_uint(buf, u64::from(n.minute()), 2);
    buf.push(b':');
    push_uint(buf, u64::from(n.second()), 2);
    let micros = (n.nanosecond() / 1000).min(999_999);
    if micros != 0 {
        buf.push(b'.');
        push_uint(buf, u64::from(micros), 6);
    }
    buf.extend_from_slice(b"+00");
}

/// Appends one report as a line of COPY text in the order of [`COPY_REPORTS`].
fn push_copy_row(buf: &mut Vec<u8>, r: &ReportRecord) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if r.service_id < 0 {
        buf.push(b'-');
    }
    push_uint(buf, r.service_id.unsigned_abs(), 1);
    buf.push(b'\t');
    push_copy_text(buf, r.problem.as_str());
    buf.push(b'\t');
    match &r.country {
        Some(c) => push_copy_text(buf, c.as_str()),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.push(b'\t');
    match &r.city {
        Some(c) => push_copy_text(buf, c.as_str()),
        None => buf.extend_from_slice(b"\\N"),
    }
    // bytea in hex form, its backslash escaped for COPY.
    buf.extend_from_slice(b"\t\\\\x");
    for b in r.client_hash {
        buf.push(HEX[usize::from(b >> 4)]);
        buf.push(HEX[usize::from(b & 15)]);
    }
    buf.extend_from_slice(if r.counted { b"\tt\t" } else { b"\tf\t" });
    push_timestamp(buf, r.received_at);
    buf.push(b'\n');
}

/// Upserts summed rollups and facets: one UNNEST statement per table (per
/// slice of rows for a large import), tables and rows in one fixed order.
async fn write_sums(tx: &mut PgConnection, sums: &mut RollupSums) -> Result<()> {
    let (levels, facets) = sums.take();
    for ((table, column, _), rows) in ROLLUP_LEVELS.iter().zip(levels) {
        let sql = format!(
            "INSERT INTO {table} (service_id, scope, {column}, counted, received)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
             ON CONFLICT (service_id, scope, {column}) DO UPDATE
             SET counted = {table}.counted + EXCLUDED.counted,
                 received = {table}.received + EXCLUDED.received"
        );
        let n = rows.service.len();
        for a in (0..n).step_by(UPSERT_SLICE) {
            let b = (a + UPSERT_SLICE).min(n);
            sqlx::query(&sql)
                .bind(&rows.service[a..b])
                .bind(&rows.scope[a..b])
                .bind(&rows.time[a..b])
                .bind(&rows.counted[a..b])
                .bind(&rows.received[a..b])
                .execute(&mut *tx)
                .await?;
        }
    }
    let n = facets.service.len();
    for a in (0..n).step_by(UPSERT_SLICE) {
        let b = (a + UPSERT_SLICE).min(n);
        sqlx::query(
            "INSERT INTO report_facets (service_id, hour, problem, country, city, counted)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[],
                                  $6::int8[])
             ON CONFLICT (service_id, hour, problem, country, city) DO UPDATE
             SET counted = report_facets.counted + EXCLUDED.counted",
        )
        .bind(&facets.service[a..b])
        .bind(&facets.hour[a..b])
        .bind(&facets.problem[a..b])
        .bind(&facets.country[a..b])
        .bind(&facets.city[a..b])
        .bind(&facets.counted[a..b])
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl ImportSession for PgImport {
    async fn get_service(&mut self, slug: &str) -> Result<Option<Service>> {
        lock_service(&mut self.tx, slug).await
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
        if reports.is_empty() {
            return Ok(0);
        }
        self.buf.clear();
        for r in reports {
            push_copy_row(&mut self.buf, r);
        }
        let mut copy = self.tx.copy_in_raw(COPY_REPORTS).await?;
        copy.send(self.buf.as_slice()).await?;
        // The server works through the rows while their sums are added here.
        self.sums.add(reports);
        let n = copy.finish().await?;
        if self.sums.len() >= RollupSums::FLUSH_AT {
            write_sums(&mut self.tx, &mut self.sums).await?;
        }
        Ok(n)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let PgImport {
            mut tx, mut sums, ..
        } = *self;
        write_sums(&mut tx, &mut sums).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod import_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use downwatch_core::{City, CountryCode, ProblemKind};

    #[test]
    fn copy_rows_escape_text_and_write_nulls_bytea_and_utc_times() {
        let mut buf = Vec::new();
        let mut r = ReportRecord {
            service_id: 42,
            problem: ProblemKind::parse("login").unwrap(),
            country: Some(CountryCode::parse("FR").unwrap()),
            city: City::parse(r"C:\Paris").unwrap(),
            client_hash: [0xab; 16],
            address_hash: None,
            counted: true,
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 5_000).unwrap(),
        };
        push_copy_row(&mut buf, &r);
        r.country = None;
        r.city = None;
        r.counted = false;
        r.client_hash = [0; 16];
        r.received_at = chrono::DateTime::from_timestamp(-62_135_596_800 + 86_399, 0).unwrap();
        push_copy_row(&mut buf, &r);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "42\tlogin\tFR\tC:\\\\Paris\t\\\\x{}\tt\t2023-11-14 22:13:20.000005+00",
                "ab".repeat(16)
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "42\tlogin\t\\N\t\\N\t\\\\x{}\tf\t0001-01-01 23:59:59+00",
                "0".repeat(32)
            )
        );
        let mut esc = Vec::new();
        push_copy_text(&mut esc, "a\tb\nc\rd\\");
        assert_eq!(esc, b"a\\tb\\nc\\rd\\\\");
    }

    #[test]
    fn a_scratch_database_url_keeps_the_server_and_options() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "dw_b_1").unwrap(),
            "postgres://u@h:5432/dw_b_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "x").unwrap(),
            "postgresql://h/x"
        );
        assert!(with_database("postgres://h/db", "x\"; DROP").is_err());
    }
}
