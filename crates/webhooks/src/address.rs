//! Where webhooks may go: public unicast addresses only, unless the operator
//! allows private ones (`DOWNWATCH_WEBHOOK_ALLOW_PRIVATE`). Otherwise anyone
//! holding the admin token could make the server call into its own network
//! (SSRF). The rule is applied when a subscription is created and again at
//! every delivery, because what a name resolves to can change: the
//! [`GuardedResolver`] resolves, checks every address, and hands only the
//! checked addresses to the HTTP client, which connects to one of them.

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2000;

/// How long a name may take to resolve: an admin's request (and a
/// delivery) must not hang on a DNS server that never answers.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be an absolute http:// or https:// URL of at most {MAX_URL_LEN} characters")]
    Malformed,
    #[error("must not contain a user name or password (the payload is signed instead)")]
    Credentials,
    #[error("the host {0} does not resolve")]
    Unresolved(String),
    #[error("the host {host} did not resolve within {secs} s")]
    LookupTimeout { host: String, secs: u64 },
    #[error(
        "{host} resolves to {addr}, a private, loopback, link-local or otherwise non-public \
         address; webhooks go to public addresses unless DOWNWATCH_WEBHOOK_ALLOW_PRIVATE is set"
    )]
    Private { host: String, addr: IpAddr },
}

fn public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(o[0] == 0 // "this network", 0.0.0.0 reaches the local host
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT), 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || o[0] >= 240) // reserved
}

/// Whether `ip` is a public unicast address, one a webhook may be sent to
/// without `DOWNWATCH_WEBHOOK_ALLOW_PRIVATE`.
///
/// IPv6 addresses that embed an IPv4 one at a fixed place (mapped,
/// translated, the well-known NAT64 prefix) are judged by that IPv4
/// address. The transition prefixes whose IPv4 address cannot be judged
/// so are refused outright: the local-use NAT64 prefix `64:ff9b:1::/48`
/// (RFC 8215: each network places the IPv4 address as its prefix length
/// says, and its translator reaches its own IPv4 network), 6to4
/// `2002::/16` (deprecated by RFC 7526; a relay forwards to whatever IPv4
/// host the address embeds, 10.0.0.1 as readily as any) and Teredo
/// `2001::/32` (the client's address is obfuscated and reached through a
/// relay). No webhook receiver needs them.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => public_v4(a),
        IpAddr::V6(a) => {
            let s = a.segments();
            let low_v4 = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
            if a.to_ipv4_mapped().is_some() // ::ffff:a.b.c.d
                || s[..6] == [0, 0, 0, 0, 0xffff, 0] // translated, ::ffff:0:a.b.c.d
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            // well-known NAT64, 64:ff9b::a.b.c.d
            {
                return public_v4(low_v4());
            }
            !(s[..6] == [0; 6] // ::, ::1 and the deprecated IPv4-compatible form
                || a.is_multicast()
                || a.is_unique_local()
                || a.is_unicast_link_local()
                || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
                || s[0] == 0x2002 // 6to4, 2002::/16
                || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32
                || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking, 2001:2::/48
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..4] == [0x100, 0, 0, 0] // discard-only, 100::/64
                || a == Ipv6Addr::LOCALHOST)
        }
    }
}

/// Refuses `addrs` of `host` if one is not public (and private ones are not
/// allowed), or if there are none.
pub fn check_addrs(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Result<(), UrlError> {
    if addrs.is_empty() {
        return Err(UrlError::Unresolved(host.to_owned()));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(UrlError::Private {
            host: host.to_owned(),
            addr: bad.ip(),
        });
    }
    Ok(())
}

/// Parses a webhook URL and checks where its host resolves now.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<Url, UrlError> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_LEN {
        return Err(UrlError::Malformed);
    }
    let url = Url::parse(raw).map_err(|_| UrlError::Malformed)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(UrlError::Malformed);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = resolve(&url, port).await?;
    check_addrs(&host, &addrs, allow_private)?;
    Ok(url)
}

/// The addresses of a URL's host: itself when it is an IP literal.
async fn resolve(url: &Url, port: u16) -> Result<Vec<SocketAddr>, UrlError> {
    match url.host() {
        Some(url::Host::Ipv4(a)) => Ok(vec![SocketAddr::new(IpAddr::V4(a), port)]),
        Some(url::Host::Ipv6(a)) => Ok(vec![SocketAddr::new(IpAddr::V6(a), port)]),
        Some(url::Host::Domain(d)) => within(d, LOOKUP_TIMEOUT, tokio::net::lookup_host((d, port)))
            .await
            .map(Iterator::collect),
        None => Err(UrlError::Malformed),
    }
}

/// A lookup of `host`, given up after `limit`.
async fn within<T>(
    host: &str,
    limit: Duration,
    lookup: impl Future<Output = std::io::Result<T>>,
) -> Result<T, UrlError> {
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(_)) => Err(UrlError::Unresolved(host.to_owned())),
        Err(_) => Err(UrlError::LookupTimeout {
            host: host.to_owned(),
            secs: limit.as_secs(),
        }),
    }
}

/// Checks a URL whose host is an IP literal (the client's resolver is not
/// asked for those); names are checked by [`GuardedResolver`].
pub fn check_literal(url: &Url, allow_private: bool) -> Result<(), UrlError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(UrlError::Malformed),
    };
    check_addrs(
        url.host_str().unwrap_or_default(),
        &[SocketAddr::new(ip, 0)],
        allow_private,
    )
}

/// The HTTP client's resolver: resolves with the system resolver, refuses
/// a name if any of its addresses is not public, and otherwise gives the
/// client exactly the addresses it checked.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is replaced by the URL's when the client connects.
            let addrs: Vec<SocketAddr> = within(
                &host,
                LOOKUP_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), 0)),
            )
            .await?
            .collect();
            check_addrs(&host, &addrs, allow_private)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn private_loopback_link_local_and_special_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "::ffff:0:7f00:1",
            // Local-use NAT64, 6to4 and Teredo are refused whatever they embed.
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::808:808",
            "2002:a00:1::1",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "100::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4007:80e::200e",
            "::ffff:8.8.8.8",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "64:ff9b:2::1",
            "2001:4860:4860::8888",
            "2003::1",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn urls_are_parsed_and_private_hosts_refused_unless_allowed() {
        for bad in [
            "ftp://example.com/x",
            "not a url",
            "/relative",
            "http://",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                check_url(bad, true).await,
                Err(UrlError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            check_url("https://user:pw@93.184.215.14/", false).await,
            Err(UrlError::Credentials)
        );
        for private in [
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://10.0.0.7/x",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/",
        ] {
            assert!(
                matches!(
                    check_url(private, false).await,
                    Err(UrlError::Private { .. })
                ),
                "{private}"
            );
            assert!(check_url(private, true).await.is_ok(), "{private}");
        }
        let ok = check_url(" https://93.184.215.14/hooks/dw ", false)
            .await
            .unwrap();
        assert_eq!(ok.as_str(), "https://93.184.215.14/hooks/dw");
        assert!(check_literal(&ok, false).is_ok());
        let loopback = Url::parse("http://127.0.0.1/").unwrap();
        assert!(check_literal(&loopback, false).is_err());
        assert!(check_literal(&loopback, true).is_ok());
        let teredo = Url::parse("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/").unwrap();
        assert!(check_literal(&teredo, false).is_err());
    }

    #[tokio::test]
    async fn a_lookup_that_never_answers_is_given_up_naming_the_host() {
        let slow = std::future::pending::<std::io::Result<Vec<SocketAddr>>>();
        let e = within("dns.example", Duration::from_millis(20), slow)
            .await
            .unwrap_err();
        assert!(matches!(e, UrlError::LookupTimeout { ref host, .. } if host == "dns.example"));
        let failed = async { Err::<(), _>(std::io::Error::other("NXDOMAIN")) };
        assert_eq!(
            within("nx.example", LOOKUP_TIMEOUT, failed).await,
            Err(UrlError::Unresolved("nx.example".to_owned()))
        );
        assert_eq!(
            UrlError::LookupTimeout {
                host: "dns.example".to_owned(),
                secs: LOOKUP_TIMEOUT.as_secs()
            }
            .to_string(),
            "the host dns.example did not resolve within 5 s"
        );
    }
}
