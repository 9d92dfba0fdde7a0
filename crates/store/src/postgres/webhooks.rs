//! Webhook subscriptions and the outbox on PostgreSQL, shared by every
//! instance: a claim locks the queue's row with `FOR NO KEY UPDATE SKIP
//! LOCKED` and leases it in the same statement, so two workers never take
//! one queue. (The detector's transaction holds `FOR KEY SHARE` on the
//! subscriptions it enqueues for, which keeps them from being deleted
//! meanwhile and does not conflict with a claim.)

use super::PgStore;
use crate::Result;
use crate::webhooks::{
    Attempt, AttemptOutcome, ClaimedWebhook, DELIVERY_COLUMNS, Delivery, LAST_ATTEMPT_JOIN,
    NewWebhook, Notice, Subscription, WEBHOOK_COLUMNS, Webhook, WebhookRow, WebhookStore,
    list_json, plan,
};
use async_trait::async_trait;
use sqlx::postgres::PgConnection;

/// Writes the deliveries `notices` make, inside the detector's transaction.
pub(super) async fn enqueue(tx: &mut PgConnection, notices: &[Notice], ids: &[i64]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let subs: Vec<Subscription> =
        // Locked against deletion until the deliveries are written.
        sqlx::query_as("SELECT id, services, scopes, events FROM webhooks ORDER BY id FOR KEY SHARE")
            .fetch_all(&mut *tx)
            .await?;
    let now = chrono::Utc::now().timestamp_millis();
    for e in plan(&subs, notices, ids) {
        sqlx::query(
            "INSERT INTO webhook_deliveries
             (webhook_id, event, event_key, incident_id, payload, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (webhook_id, event_key) DO NOTHING",
        )
        .bind(e.webhook_id)
        .bind(e.event)
        .bind(&e.event_key)
        .bind(e.incident_id)
        .bind(&e.payload)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: &NewWebhook, now: i64) -> Result<Webhook> {
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
        .fetch_one(&self.pool)
        .await?;
        self.webhook(id).await?.ok_or_else(|| {
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

    async fn claim_webhook(
        &self,
        owner: &str,
        now: i64,
        lease: i64,
    ) -> Result<Option<ClaimedWebhook>> {
        // A read first: an idle queue (the usual case) costs no write lock.
        let any: Option<i64> =
            sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE state = 'pending' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        if any.is_none() {
            return Ok(None);
        }
        // The queue served longest ago first, so a busy one starves none.
        Ok(sqlx::query_as(
            "UPDATE webhooks SET lease_owner = $1, lease_until = $2
             WHERE id = (
                 SELECT w.id FROM webhooks w
                 WHERE (w.lease_until IS NULL OR w.lease_until <= $3)
                   AND (w.retry_at IS NULL OR w.retry_at <= $3)
                   AND EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.webhook_id = w.id AND d.state = 'pending')
                 ORDER BY COALESCE(w.lease_until, 0), w.id LIMIT 1
                 FOR NO KEY UPDATE SKIP LOCKED)
             RETURNING id, url, secret",
        )
        .bind(owner)
        .bind(now + lease)
        .bind(now)
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

    async fn record_attempt(&self, a: &Attempt) -> Result<()> {
        let (state, delivered_at, next, retry_at) = match a.outcome {
            AttemptOutcome::Delivered => ("delivered", Some(a.at), None, None),
            AttemptOutcome::RetryAt(t) => ("pending", None, Some(t), Some(t)),
            AttemptOutcome::GaveUp => ("failed", None, None, None),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $1,
             last_error = $2, last_attempt_at = $3, state = $4, delivered_at = $5, next_attempt_at = $6
             WHERE id = $7",
        )
        .bind(a.status)
        .bind(&a.error)
        .bind(a.at)
        .bind(state)
        .bind(delivered_at)
        .bind(next)
        .bind(a.delivery_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE webhooks SET retry_at = $1 WHERE id = $2")
            .bind(retry_at)
            .bind(a.webhook_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_webhook(&self, id: i64, owner: &str) -> Result<()> {
        // The lease time stays as "last served", which orders the next claims.
        sqlx::query(
            "UPDATE webhooks SET lease_owner = NULL, lease_until = $1
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_deliveries(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending'
             AND COALESCE(delivered_at, last_attempt_at, created_at) < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
