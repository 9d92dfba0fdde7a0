//! `GET /api/v1/stream`: the detector's events as Server-Sent Events
//! (`status`, `incident`, `counts`), with keep-alive comments.

use crate::events::Message;
use crate::state::AppState;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/stream").get(stream));
}

/// A comment every so often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One SSE frame.
pub fn frame(m: &Message) -> Bytes {
    // The JSON holds no newline (serde_json escapes them), so one data line.
    Bytes::from(format!("event: {}\ndata: {}\n\n", m.event, m.data))
}

/// `GET /api/v1/stream`: Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    operation_id = "stream",
    summary = "Live events",
    description = "Server-Sent Events, each with one JSON `data` line: `status` (a scope of a \
                   service changed level; data: `StreamStatusEvent`), `incident` (opened, updated, \
                   resolved or reopened; data: `StreamIncidentEvent`) and `counts` (each minute, \
                   the counts of the services that had reports; data: `StreamCountsEvent`). \
                   Comments keep an idle stream open; a client too slow to keep up is told how \
                   many events it missed, in a comment.",
    responses(
        (status = 200, description = "The event stream", body = String, content_type = "text/event-stream"),
    ),
)]
async fn stream(state: web::Data<AppState>) -> HttpResponse {
    let rx = state.events.subscribe();
    let hello = Bytes::from_static(b"retry: 3000\n: downwatch events\n\n");
    let body = futures_util::stream::unfold((rx, Some(hello)), |(mut rx, first)| async move {
        if let Some(b) = first {
            return Some((Ok::<_, actix_web::Error>(b), (rx, None)));
        }
        let out = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Ok(m)) => frame(&m),
            // Too slow: it missed some, and is told so; others are unaffected.
            Ok(Err(RecvError::Lagged(n))) => Bytes::from(format!(": missed {n} events\n\n")),
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok(out), (rx, None)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
