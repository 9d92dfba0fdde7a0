//! Webhook subscriptions and the outbox on PostgreSQL, shared by every
//! instance: a claim locks the queue's row with `FOR NO KEY UPDATE SKIP
//! LOCKED` and leases it in the same statement, so two workers never take
//! one queue. (The detector's transaction holds `FOR KEY SHARE` on the
//! subscriptions it enqueues for, which keeps them from being deleted
//! meanwhile and does not conflict with a claim.)

use super::PgStore;
use crate::Result;
use crate::webhooks::{
    Attempt, CLEAR_IDLE_RETRIES, ClaimedWebhook, DELIVERY_COLUMNS, Delivery, LAST_ATTEMPT_JOIN,
    NewWebhook, Notice, Recorded, Subscription, WEBHOOK_COLUMNS, Webhook, WebhookRow, WebhookStore,
    expire_sql, list_json, plan, subscription_after_attempt,
};
use async_trait::async_trait;
use sqlx::postgres::PgConnection;

/// The database's clock in epoch milliseconds (the transaction's start):
/// every instance compares leases and retry times with this one clock.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

/// Writes the deliveries `notices` make, inside the detector's transaction.
pub(super) async fn enqueue(tx: &mut PgConnection, notices: &[Notice], ids: &[i64]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    // Locked against deletion until the deliveries are written; a disabled
    // subscription gets nothing (its receiver is gone or unwanted).
    let subs: Vec<Subscription> = sqlx::query_as(
        "SELECT id, services, scopes, events FROM webhooks WHERE disabled_at IS NULL
         ORDER BY id FOR KEY SHARE",
    )
    .fetch_all(&mut *tx)
    .await?;
    let insert = format!(
        "INSERT INTO webhook_deliveries
         (webhook_id, event, event_key, incident_id, payload, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, {NOW_MS}, {NOW_MS})
         ON CONFLICT (webhook_id, event_key) DO NOTHING"
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
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: &NewWebhook, now: i64, max: i64) -> Result<Option<Webhook>> {
        // Creations take turns (an advisory lock for the transaction), so two
        // cannot both count 99 and insert; claims and deliveries go on.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('downwatch:create_webhook'))")
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks")
            .fetch_one(&mut *tx)
            .await?;
        if count >= max {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhooks (url, secret, services, scopes, events, description, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
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
            format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w {LAST_ATTEMPT_JOIN} WHERE w.id = $1");
        let row: Option<WebhookRow> = sqlx::query_as(&q)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Webhook::from))
    }

    async fn delete_webhook(&self, id: i64) -> Result<bool> {
        // The deliveries go with it (ON DELETE CASCADE).
        let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn disable_webhook(&self, id: i64, reason: &str) -> Result<bool> {
        let q = format!(
            "UPDATE webhooks SET disabled_at = COALESCE(disabled_at, {NOW_MS}),
             disabled_reason = COALESCE(disabled_reason, $1) WHERE id = $2"
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
             given_up_in_a_row = 0, retry_at = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        let q = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
             ORDER BY id DESC LIMIT $2"
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
            "UPDATE webhooks SET lease_owner = $1, lease_until = {NOW_MS} + $2
             WHERE id = (
                 SELECT w.id FROM webhooks w
                 WHERE w.disabled_at IS NULL
                   AND (w.lease_until IS NULL OR w.lease_until <= {NOW_MS})
                   AND (w.retry_at IS NULL OR w.retry_at <= {NOW_MS})
                   AND EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.webhook_id = w.id AND d.state = 'pending')
                 ORDER BY COALESCE(w.lease_until, 0), w.id LIMIT 1
                 FOR NO KEY UPDATE SKIP LOCKED)
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
             WHERE webhook_id = $1 AND state = 'pending' ORDER BY id LIMIT $2"
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
        let mut tx = self.pool.begin().await?;
        // The subscription's row, locked while it is still this worker's:
        // no claim can take it over until the attempt is written (claims
        // skip locked rows).
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhooks WHERE id = $1 AND lease_owner = $2 FOR NO KEY UPDATE",
        )
        .bind(a.webhook_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(Recorded::Fenced);
        }
        let q = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $1,
             last_error = $2, last_attempt_at = {NOW_MS}, state = $3,
             delivered_at = CASE WHEN $3 = 'delivered' THEN {NOW_MS} END,
             next_attempt_at = {NOW_MS} + $4
             WHERE id = $5 AND webhook_id = $6 AND state = 'pending'"
        );
        let n = sqlx::query(&q)
            .bind(a.status)
            .bind(&a.error)
            .bind(state)
            .bind(wait)
            .bind(a.delivery_id)
            .bind(a.webhook_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(Recorded::Fenced);
        }
        let disabled: bool = sqlx::query_scalar(&subscription_after_attempt(NOW_MS, '$'))
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
             WHERE id = $1 AND lease_owner = $2"
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
             AND COALESCE(delivered_at, last_attempt_at, created_at) < {NOW_MS} - $1"
        );
        Ok(sqlx::query(&q)
            .bind(keep)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn expire_deliveries(&self, ttl: i64, error: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(&expire_sql(NOW_MS, "$1", "$2"))
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
