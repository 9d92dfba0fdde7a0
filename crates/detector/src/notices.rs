//! Incident events for webhooks: what the live loop hands the store to
//! enqueue in its transaction, and the JSON body each delivery carries.

use crate::breakdown::{IncidentJson, Tops};
use crate::engine::{Happening, ScopeKey};
use crate::events::{IncidentView, rfc3339};
use crate::incident_record;
use downwatch_core::Service;
use downwatch_core::detector::Transition;
use downwatch_store::Notice;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The event name of a transition (`X-Downwatch-Event`, and `type` in the body).
pub fn event_name(t: Transition) -> &'static str {
    match t {
        Transition::Opened => "incident.opened",
        Transition::Updated => "incident.updated",
        Transition::Resolved => "incident.resolved",
        Transition::Reopened => "incident.reopened",
    }
}

/// The body of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// One of `incident.opened`, `incident.updated`, `incident.resolved`,
    /// `incident.reopened`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The end of the minute in which it happened (detector time).
    pub occurred_at: String,
    /// The incident after the event, as the read API shows it (SPEC.md's
    /// incident JSON, with its top problems and places so far).
    pub incident: IncidentJson,
}

/// Which incident of a tick's writes: its scope and sequence number.
pub type IncidentKey = (ScopeKey, u64);

/// The notices of a tick's incident events whose incidents are among the
/// writes (`write_keys[i]` names the scope and incident of write `i`);
/// `tops` holds each incident's breakdowns (empty lists when missing).
pub fn for_happenings(
    happenings: &[Happening],
    write_keys: &[IncidentKey],
    services: &[Service],
    tops: &HashMap<IncidentKey, Tops>,
) -> Vec<Notice> {
    let slugs: HashMap<i64, &str> = services.iter().map(|s| (s.id, s.slug.as_str())).collect();
    let mut out = Vec::new();
    for h in happenings {
        let Some(slug) = slugs.get(&h.service_id) else {
            continue;
        };
        for ev in &h.events {
            let Some(write) = write_keys.iter().position(|((service_id, scope), seq)| {
                *service_id == h.service_id && *scope == h.scope && *seq == ev.incident.seq
            }) else {
                continue;
            };
            let event = event_name(ev.transition);
            let record = incident_record(h.service_id, &h.scope, &ev.incident);
            let slug = (*slug).to_owned();
            let at = h.minute + 60;
            let key = ((h.service_id, h.scope.clone()), ev.incident.seq);
            let tops = tops.get(&key).cloned().unwrap_or_default();
            out.push(Notice {
                write,
                event,
                service: slug.clone(),
                scope: h.scope.clone(),
                minute: h.minute,
                body: Box::new(move |id| {
                    let payload = WebhookPayload {
                        kind: event.to_owned(),
                        occurred_at: rfc3339(at),
                        incident: IncidentJson::new(
                            IncidentView::new(id, &slug, &record, at),
                            tops.clone(),
                        ),
                    };
                    // Plain strings and numbers: serialising cannot fail.
                    serde_json::to_string(&payload).unwrap_or_default()
                }),
            });
        }
    }
    out
}
