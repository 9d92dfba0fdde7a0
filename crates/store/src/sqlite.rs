//! SQLite storage: the embedded default, one file, one process.

use super::{OpenIncident, Result, ServiceRow, Storage, StoreError, is_unique_violation, rollups};
use async_trait::async_trait;
use downwatch_core::{NewService, ReportRecord, Service, ServicePatch};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

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
        let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = ?");
        sqlx::query_as::<_, ServiceRow>(&q)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .map(Service::try_from)
            .transpose()
    }

    async fn create_service(&self, s: &NewService) -> Result<Service> {
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
            .fetch_one(&self.pool)
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

    async fn update_service(&self, slug: &str, patch: &ServicePatch) -> Result<Option<Service>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = ?");
        let Some(row) = sqlx::query_as::<_, ServiceRow>(&q)
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut s = Service::try_from(row)?;
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
        tx.commit().await?;
        Ok(Some(s))
    }

    async fn insert_reports(&self, reports: &[ReportRecord]) -> Result<Vec<i64>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut ids = Vec::with_capacity(reports.len());
        for r in reports {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO reports (service_id, problem, country, city, client_hash, counted, received_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(r.service_id)
            .bind(r.problem.as_str())
            .bind(r.country.map(|c| c.as_str().to_owned()))
            .bind(r.city.as_ref().map(|c| c.as_str()))
            .bind(&r.client_hash[..])
            .bind(r.counted)
            .bind(r.received_at.timestamp_micros())
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        for ((service, scope, minute), d) in rollups(reports) {
            sqlx::query(
                "INSERT INTO report_minutes (service_id, scope, minute, counted, received)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (service_id, scope, minute) DO UPDATE
                 SET counted = counted + excluded.counted, received = received + excluded.received",
            )
            .bind(service)
            .bind(scope)
            .bind(minute)
            .bind(d.counted)
            .bind(d.received)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn counts(
        &self,
        service_id: i64,
        scope: &str,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT ?3 + ((minute - ?3) / ?5) * ?5 AS t, SUM(counted)
             FROM report_minutes
             WHERE service_id = ?1 AND scope = ?2 AND minute >= ?3 AND minute < ?4
             GROUP BY t ORDER BY t",
        )
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
}
