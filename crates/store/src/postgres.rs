//! PostgreSQL storage: production mode, shared by every instance.

use super::{OpenIncident, Result, ServiceRow, Storage, StoreError, is_unique_violation, rollups};
use async_trait::async_trait;
use downwatch_core::{NewService, ReportRecord, Service, ServicePatch};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

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
        let mut tx = self.pool.begin().await?;
        let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE slug = $1 FOR UPDATE");
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
        tx.commit().await?;
        Ok(Some(s))
    }

    async fn insert_reports(&self, reports: &[ReportRecord]) -> Result<Vec<i64>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let n = reports.len();
        let mut tx = self.pool.begin().await?;
        // Ids are drawn first so they pair with their reports without relying
        // on the order of RETURNING rows.
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('reports_id_seq') FROM generate_series(1, $1)")
                .bind(n as i64)
                .fetch_all(&mut *tx)
                .await?;
        let mut service_ids = Vec::with_capacity(n);
        let mut problems = Vec::with_capacity(n);
        let mut countries = Vec::with_capacity(n);
        let mut cities = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut counted = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        for r in reports {
            service_ids.push(r.service_id);
            problems.push(r.problem.as_str());
            countries.push(r.country.map(|c| c.as_str().to_owned()));
            cities.push(r.city.as_ref().map(|c| c.as_str()));
            hashes.push(r.client_hash.to_vec());
            counted.push(r.counted);
            received.push(r.received_at);
        }
        sqlx::query(
            "INSERT INTO reports (id, service_id, problem, country, city, client_hash, counted, received_at)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[],
                                  $6::bytea[], $7::bool[], $8::timestamptz[])",
        )
        .bind(&ids)
        .bind(&service_ids)
        .bind(&problems)
        .bind(&countries)
        .bind(&cities)
        .bind(&hashes)
        .bind(&counted)
        .bind(&received)
        .execute(&mut *tx)
        .await?;

        let deltas = rollups(reports);
        let mut r_service = Vec::with_capacity(deltas.len());
        let mut r_scope = Vec::with_capacity(deltas.len());
        let mut r_minute = Vec::with_capacity(deltas.len());
        let mut r_counted = Vec::with_capacity(deltas.len());
        let mut r_received = Vec::with_capacity(deltas.len());
        for ((service, scope, minute), d) in deltas {
            r_service.push(service);
            r_scope.push(scope);
            r_minute.push(minute);
            r_counted.push(d.counted);
            r_received.push(d.received);
        }
        sqlx::query(
            "INSERT INTO report_minutes (service_id, scope, minute, counted, received)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int4[], $5::int4[])
             ON CONFLICT (service_id, scope, minute) DO UPDATE
             SET counted = report_minutes.counted + EXCLUDED.counted,
                 received = report_minutes.received + EXCLUDED.received",
        )
        .bind(&r_service)
        .bind(&r_scope)
        .bind(&r_minute)
        .bind(&r_counted)
        .bind(&r_received)
        .execute(&mut *tx)
        .await?;
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
            "SELECT $3 + ((minute - $3) / $5) * $5 AS t, SUM(counted)::int8
             FROM report_minutes
             WHERE service_id = $1 AND scope = $2 AND minute >= $3 AND minute < $4
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
}
