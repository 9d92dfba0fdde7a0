//! Webhook subscriptions and the outbox on SQLite (one writer: a claim is
//! a single `UPDATE … RETURNING`, so two workers cannot take one queue).

use super::SqliteStore;
use crate::Result;
use crate::webhooks::{
    Attempt, CLEAR_IDLE_RETRIES, ClaimedWebhook, DELIVERY_COLUMNS, Delivery, LAST_ATTEMPT_JOIN,
    NewWebhook, Notice, Recorded, Subscription, WEBHOOK_COLUMNS, Webhook, WebhookRow, WebhookStore,
    expire_sql, list_json, plan, subscription_after_attempt,
};
use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;

/// The database's clock in epoch milliseconds (`julianday` works on every
/// SQLite; 'now' is fixed within a statement).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Writes the deliveries `notices` make, inside the detector's transaction.
pub(super) async fn enqueue(
    tx: &mut SqliteConnection,
    notices: &[Notice],
    ids: &[i64],
) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    // A disabled subscription gets nothing (its receiver is gone or unwanted).
    let subs: Vec<Subscription> = sqlx::query_as(
        "SELECT id, services, scopes, events FROM webhooks WHERE disabled_at IS NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let insert = format!(
        "INSERT INTO webhook_deliveries
         (webhook_id, event, event_key, incident_id, payload, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, {NOW_MS}, {NOW_MS}) ON CONFLICT (webhook_id, event_key) DO NOTHING"
    );
    for e in plan(&subs, notices, ids) {
        sqlx::query(&insert)
            .bind(e.webhook_id)
            .bind(e.event)
            .bind(&e.event_key)
            .bind(e.incident_id)
            .bind(&e.payload)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: &NewWebhook, now: i64, max: i64) -> Result<Option<Webhook>> {
        // The write lock first: the count and the insert see the same table.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks")
            .fetch_one(&mut *tx)
            .await?;
        if count >= max {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhooks (url, secret, services, scopes, events, description, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&w.url)
        .bind(&w.secret)
        .bind(list_json(&w.services))
        .bind(list_json(&w.scopes))
        .bind(list_json(&w.events))
        .bind(&w.description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.webhook(id).await?.map(Some).ok_or_else(|| {
            crate::StoreError::Corrupt(format!("webhook {id} vanished as it was created"))
        })
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let q =
            format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w {LAST_ATTEMPT_JOIN} ORDER BY w.id");
        let rows: Vec<WebhookRow> = sqlx::query_as(&q).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Webhook::from).collect())
    }

    async fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        let q =
            format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w {LAST_ATTEMPT_JOIN} WHERE w.id = ?");
        let row: Option<WebhookRow> = sqlx::query_as(&q)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Webhook::from))
    }

    async fn delete_webhook(&self, id: i64) -> Result<bool> {
        // The deliveries go with it (ON DELETE CASCADE).
        let n = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn disable_webhook(&self, id: i64, reason: &str) -> Result<bool> {
        let q = format!(
            "UPDATE webhooks SET disabled_at = COALESCE(disabled_at, {NOW_MS}),
             disabled_reason = COALESCE(disabled_reason, ?) WHERE id = ?"
        );
        let n = sqlx::query(&q)
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn enable_webhook(&self, id: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE webhooks SET disabled_at = NULL, disabled_reason = NULL,
             given_up_in_a_row = 0, retry_at = NULL WHERE id = ?",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        let q = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ?
             ORDER BY id DESC LIMIT ?"
        );
        Ok(sqlx::query_as(&q)
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim_webhook(&self, owner: &str, lease: i64) -> Result<Option<ClaimedWebhook>> {
        // A read first: an idle queue (the usual case) costs no write lock.
        let any: Option<i64> =
            sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE state = 'pending' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        if any.is_none() {
            return Ok(None);
        }
        // The queue served longest ago first, so a busy one starves none.
        let q = format!(
            "UPDATE webhooks SET lease_owner = ?1, lease_until = {NOW_MS} + ?2
             WHERE id = (
                 SELECT w.id FROM webhooks w
                 WHERE w.disabled_at IS NULL
                   AND (w.lease_until IS NULL OR w.lease_until <= {NOW_MS})
                   AND (w.retry_at IS NULL OR w.retry_at <= {NOW_MS})
                   AND EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.webhook_id = w.id AND d.state = 'pending')
                 ORDER BY COALESCE(w.lease_until, 0), w.id LIMIT 1)
             RETURNING id, url, secret"
        );
        Ok(sqlx::query_as(&q)
            .bind(owner)
            .bind(lease)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn pending_deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        let q = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE webhook_id = ? AND state = 'pending' ORDER BY id LIMIT ?"
        );
        Ok(sqlx::query_as(&q)
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn record_attempt(&self, owner: &str, a: &Attempt) -> Result<Recorded> {
        let state = a.outcome.state();
        let wait = a.outcome.wait();
        // One writer: under the write lock nobody can take the lease over
        // between the checks and the writes.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let q = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = ?1,
             last_error = ?2, last_attempt_at = {NOW_MS}, state = ?3,
             delivered_at = CASE WHEN ?3 = 'delivered' THEN {NOW_MS} END,
             next_attempt_at = {NOW_MS} + ?4
             WHERE id = ?5 AND webhook_id = ?6 AND state = 'pending'
               AND EXISTS (SELECT 1 FROM webhooks WHERE id = ?6 AND lease_owner = ?7)"
        );
        let n = sqlx::query(&q)
            .bind(a.status)
            .bind(&a.error)
            .bind(state)
            .bind(wait)
            .bind(a.delivery_id)
            .bind(a.webhook_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(Recorded::Fenced);
        }
        let disabled: bool = sqlx::query_scalar(&subscription_after_attempt(NOW_MS, '?'))
            .bind(wait)
            .bind(state)
            .bind(a.disable_after)
            .bind(&a.disable_reason)
            .bind(a.webhook_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Recorded::Written { disabled })
    }

    async fn release_webhook(&self, id: i64, owner: &str) -> Result<()> {
        // The lease time stays as "last served", which orders the next claims.
        let q = format!(
            "UPDATE webhooks SET lease_owner = NULL, lease_until = {NOW_MS}
             WHERE id = ? AND lease_owner = ?"
        );
        sqlx::query(&q)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_deliveries(&self, keep: i64) -> Result<u64> {
        let q = format!(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending'
             AND COALESCE(delivered_at, last_attempt_at, created_at) < {NOW_MS} - ?"
        );
        Ok(sqlx::query(&q)
            .bind(keep)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn expire_deliveries(&self, ttl: i64, error: &str) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(&expire_sql(NOW_MS, "?1", "?2"))
            .bind(error)
            .bind(ttl)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            sqlx::query(CLEAR_IDLE_RETRIES).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}
