//! The absolute base URL of links the server writes (Atom feeds' ids and
//! links, the embed snippet of an incident page). A cache in front of the
//! server keeps such an answer for everyone, so it must not take the base
//! from whatever a client claims: `DOWNWATCH_PUBLIC_URL` when it is set;
//! otherwise the `Host` header, and `X-Forwarded-Host` / `X-Forwarded-Proto`
//! only from a trusted proxy (`DOWNWATCH_TRUSTED_PROXIES`). `Forwarded` is
//! never read.

use crate::state::AppState;
use actix_web::HttpRequest;
use actix_web::http::header::{HOST, HeaderMap};
use actix_web::http::uri::Authority;
use std::net::{IpAddr, Ipv4Addr};

/// `scheme://host[:port][/prefix]`, without a trailing slash.
pub fn base_url(state: &AppState, req: &HttpRequest) -> String {
    if let Some(url) = &state.config.public_url {
        return url.clone();
    }
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
        .to_canonical();
    let trusted = state
        .config
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer));
    let headers = req.headers();
    let forwarded = |name: &str| trusted.then(|| first(headers, name)).flatten();
    let scheme = match forwarded("x-forwarded-proto").as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ if req.app_config().secure() => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .and_then(|h| authority(&h))
        .or_else(|| {
            headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(authority)
        })
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| req.app_config().host().to_owned());
    format!("{scheme}://{host}")
}

/// The first (client-most) value of a header that may hold a list.
fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next()?.trim().to_ascii_lowercase())
}

/// `host[:port]` when `s` is exactly that (no user info, path or spaces).
fn authority(s: &str) -> Option<String> {
    let a = Authority::try_from(s.trim()).ok()?;
    (!a.as_str().contains('@') && !a.host().is_empty()).then(|| a.as_str().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_authorities_are_taken_from_headers() {
        assert_eq!(
            authority("Status.Example:8443").as_deref(),
            Some("status.example:8443")
        );
        assert_eq!(authority("[::1]:80").as_deref(), Some("[::1]:80"));
        for bad in ["", "a b", "user@evil.example", "evil.example/x", "\"><x>"] {
            assert_eq!(authority(bad), None, "{bad}");
        }
    }
}
