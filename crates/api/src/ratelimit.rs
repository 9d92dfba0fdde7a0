//! Per-address rate limits on report submission (`governor`, GCRA).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// How many reports one address may send: a sustained rate per minute and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

pub struct IpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl IpLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the address is over its limit. Addresses are keyed
    /// like clients (an IPv6 /64 is one key) so rotating within a prefix
    /// does not escape the limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = downwatch_ingest::client_key(ip);
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose limit has fully replenished, so a flood of
    /// distinct addresses cannot grow memory without bound. Call periodically.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_its_burst_is_told_how_long_to_wait_and_others_are_not() {
        let l = IpLimiter::new(RateLimit {
            per_minute: NonZeroU32::new(6).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(l.check(b).is_ok());
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_a_limit() {
        let l = IpLimiter::new(RateLimit {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        });
        assert!(l.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8:0:1::2".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:0:2::1".parse().unwrap()).is_ok());
    }
}
