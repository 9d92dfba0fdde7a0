//! Webhooks: incident events delivered to subscribers' URLs, signed.
//!
//! The detector writes deliveries into an outbox table in the transaction
//! that writes the incidents (`downwatch_store::webhooks`); the
//! [`worker::Deliverer`] of every instance sends them. URLs must resolve to
//! public addresses ([`address`]), checked at creation and at each delivery.

pub mod address;
pub mod metrics;
pub mod sign;
pub mod worker;

pub use address::{UrlError, check_url};
pub use metrics::WebhookMetrics;
pub use sign::{new_secret, signature, verify};
pub use worker::{Deliverer, DeliveryConfig};
