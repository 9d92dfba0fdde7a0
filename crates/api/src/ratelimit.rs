//! Per-address rate limits on report submission (`governor`, GCRA).

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// How many reports one address may send: a sustained rate per minute and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

/// One GCRA state per address (an IPv6 /64 counts as one). The map holds an
/// address only until its state is indistinguishable from a fresh one (for
/// one report at 30 a minute, four seconds), and `housekeeping` drops those,
/// so under a flood of distinct addresses memory is bounded by the addresses
/// seen in the last few seconds, not by all addresses ever seen.
pub struct IpLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl IpLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> IpLimiter<C> {
    pub fn with_clock(limit: RateLimit, clock: C) -> Self {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
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

    /// Forgets addresses whose limit has fully replenished. Called every
    /// few seconds, so a flood of distinct addresses cannot grow memory
    /// beyond the addresses of those seconds.
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
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
    fn a_flood_of_distinct_addresses_is_forgotten_once_their_limits_replenish() {
        let clock = governor::clock::FakeRelativeClock::default();
        let l = IpLimiter::with_clock(
            RateLimit {
                per_minute: NonZeroU32::new(30).unwrap(),
                burst: NonZeroU32::new(30).unwrap(),
            },
            clock.clone(),
        );
        for n in 0..100_000u32 {
            assert!(l.check(IpAddr::V4(n.into())).is_ok());
        }
        assert_eq!(l.tracked(), 100_000);
        // governor keeps a key until two emission intervals (2 s each at 30
        // a minute) after its last report.
        clock.advance(Duration::from_secs(1));
        l.housekeeping();
        assert_eq!(l.tracked(), 100_000);
        // A second wave meanwhile, then the first wave has replenished.
        for n in 100_000..150_000u32 {
            assert!(l.check(IpAddr::V4(n.into())).is_ok());
        }
        clock.advance(Duration::from_millis(3_500));
        l.housekeeping();
        assert_eq!(l.tracked(), 50_000);
        // An address over its burst is remembered until it has replenished.
        let busy: IpAddr = "198.51.100.1".parse().unwrap();
        while l.check(busy).is_ok() {}
        clock.advance(Duration::from_secs(3));
        l.housekeeping();
        assert_eq!(l.tracked(), 1);
        assert!(l.check(busy).is_ok());
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
