//! Stale-if-error: while the database is down, a read that was answered
//! before is answered again from memory rather than with a 503.
//!
//! Every successful GET whose body is complete in memory (JSON, pages,
//! charts, CSV; not the event stream) is remembered by path and query; a
//! later 503 for the same request (the database not answering) is replaced
//! by the remembered answer with `Age` and `Warning: 110` headers, so the
//! "what is down now" pages keep working during our own outage. Bounded by
//! entries and bytes, oldest dropped first. Reports are never served from
//! here: only GET is cached.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpResponse};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most answers kept, and most bytes of them.
const MAX_ENTRIES: usize = 2_048;
const MAX_BYTES: usize = 32 << 20;
/// Larger bodies (a big CSV export) are not kept.
const MAX_BODY: usize = 1 << 20;
/// Older answers are not served: a day-old "what is down now" misleads.
const MAX_AGE: Duration = Duration::from_secs(6 * 3600);

struct Entry {
    body: Bytes,
    headers: HeaderMap,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Keys in the order they were stored; a key stored again appears twice
    /// and its older place is skipped when evicting.
    order: VecDeque<(String, Instant)>,
    bytes: usize,
}

#[derive(Default)]
pub struct StaleCache {
    inner: Mutex<Inner>,
}

impl StaleCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, key: String, body: Bytes, headers: HeaderMap) {
        let at = Instant::now();
        let mut inner = self.lock();
        inner.bytes += body.len();
        if let Some(old) = inner
            .entries
            .insert(key.clone(), Entry { body, headers, at })
        {
            inner.bytes -= old.body.len();
        }
        inner.order.push_back((key, at));
        while inner.entries.len() > MAX_ENTRIES
            || inner.bytes > MAX_BYTES
            || inner.order.len() > 2 * MAX_ENTRIES
        {
            let Some((key, at)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&key).is_some_and(|e| e.at == at)
                && let Some(e) = inner.entries.remove(&key)
            {
                inner.bytes -= e.body.len();
            }
        }
    }

    fn get(&self, key: &str) -> Option<(Bytes, HeaderMap, Duration)> {
        let inner = self.lock();
        let e = inner.entries.get(key)?;
        let age = e.at.elapsed();
        (age <= MAX_AGE).then(|| (e.body.clone(), e.headers.clone(), age))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

fn key(req: &actix_web::HttpRequest) -> String {
    let mut k = req.path().to_owned();
    if !req.query_string().is_empty() {
        k.push('?');
        k.push_str(req.query_string());
    }
    k
}

/// Headers worth replaying: what the body is and how it may be used.
fn kept_headers(from: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_SECURITY_POLICY,
        header::CONTENT_DISPOSITION,
        header::LINK,
        header::REFERRER_POLICY,
        header::X_FRAME_OPTIONS,
    ] {
        for v in from.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    h
}

/// The middleware (`from_fn`).
pub async fn stale_if_error(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let cache = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|s| s.clone().into_inner());
    let wanted = req.method() == Method::GET
        && !matches!(
            req.path(),
            "/healthz" | "/readyz" | "/metrics" | "/api/v1/stream"
        );
    let res = next.call(req).await?.map_into_boxed_body();
    let Some(state) = cache.filter(|_| wanted) else {
        return Ok(res);
    };
    let cache = &state.stale;
    match res.status() {
        StatusCode::OK => {
            let (req, res) = res.into_parts();
            let (head, body) = res.into_parts();
            match body.try_into_bytes() {
                Ok(bytes) => {
                    // An answer its handler marked no-store (admin views)
                    // is not kept in memory either.
                    let no_store = head
                        .headers()
                        .get(header::CACHE_CONTROL)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("no-store"));
                    if bytes.len() <= MAX_BODY && !no_store {
                        cache.put(key(&req), bytes.clone(), kept_headers(head.headers()));
                    }
                    Ok(ServiceResponse::new(
                        req,
                        head.set_body(BoxBody::new(bytes)),
                    ))
                }
                Err(body) => Ok(ServiceResponse::new(req, head.set_body(body))),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let Some((body, headers, age)) = cache.get(&key(res.request())) else {
                return Ok(res);
            };
            let mut out = HttpResponse::Ok();
            for (name, value) in &headers {
                out.append_header((name.clone(), value.clone()));
            }
            out.insert_header((header::AGE, age.as_secs().to_string()))
                .insert_header((
                    header::WARNING,
                    HeaderValue::from_static(
                        "110 downwatch \"Response is Stale: the database is not answering\"",
                    ),
                ))
                .insert_header((header::CACHE_CONTROL, "no-store"));
            let (req, _) = res.into_parts();
            Ok(ServiceResponse::new(req, out.body(body)))
        }
        _ => Ok(res),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_keeps_the_newest_answer_per_request() {
        let c = StaleCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            c.put(
                format!("/a?{i}"),
                Bytes::from_static(b"x"),
                HeaderMap::new(),
            );
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.get("/a?0").is_none(), "the oldest went first");
        c.put("/b".into(), Bytes::from_static(b"one"), HeaderMap::new());
        c.put("/b".into(), Bytes::from_static(b"two"), HeaderMap::new());
        assert_eq!(c.get("/b").unwrap().0, Bytes::from_static(b"two"));
        // Bytes: a few big bodies push out the rest.
        let big = Bytes::from(vec![b'x'; MAX_BODY]);
        for i in 0..40 {
            c.put(format!("/big{i}"), big.clone(), HeaderMap::new());
        }
        assert!(c.lock().bytes <= MAX_BYTES);
        assert!(c.get("/big39").is_some());
    }
}
