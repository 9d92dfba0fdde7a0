//! The detector's events, fanned out to this instance's stream clients.
//! One subscription per process (to the window store's channel, so Redis
//! pub/sub brings every instance's events); a bounded broadcast to the
//! clients, where a slow one misses messages instead of holding others up.

use downwatch_detector::events::{CHANNEL, Event};
use downwatch_windows::WindowStore;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Messages a client may fall behind before it skips some.
const BACKLOG: usize = 256;

/// A message ready for Server-Sent Events: its event name and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: &'static str,
    pub data: Arc<str>,
}

#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Message>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl EventHub {
    /// Subscribes to the detector channel and forwards what arrives until
    /// the process ends.
    pub async fn start(
        windows: &Arc<dyn WindowStore>,
    ) -> Result<Self, downwatch_windows::WindowError> {
        let hub = Self::default();
        let mut sub = windows.subscribe(CHANNEL).await?;
        let tx = hub.tx.clone();
        tokio::spawn(async move {
            while let Some(payload) = sub.recv().await {
                match serde_json::from_str::<Event>(&payload) {
                    // No client connected is not an error.
                    Ok(e) => {
                        let _ = tx.send(Message {
                            event: e.name(),
                            data: payload.into(),
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable detector event"),
                }
            }
        });
        Ok(hub)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }
}
