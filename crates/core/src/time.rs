//! The one way times are written: RFC 3339 in UTC with a `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

/// The last second the API, imports and the databases take: 9999-12-31T23:59:59Z.
/// The first is the epoch, 1970-01-01T00:00:00Z. Within these bounds a time
/// in microseconds (SQLite's encoding) cannot overflow.
pub const LAST_SECOND: i64 = 253_402_300_799;

/// Whether unix seconds `secs` lie between the epoch and [`LAST_SECOND`].
pub fn storable(secs: i64) -> bool {
    (0..=LAST_SECOND).contains(&secs)
}

/// Unix seconds as RFC 3339 to the second (`2022-10-25T07:00:00Z`); the
/// epoch when out of range.
pub fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Unix milliseconds as RFC 3339 to the millisecond (`2022-10-25T07:00:00.250Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_a_z_to_the_second_or_the_millisecond() {
        assert_eq!(rfc3339(1_666_681_200), "2022-10-25T07:00:00Z");
        assert_eq!(rfc3339_ms(1_666_681_200_250), "2022-10-25T07:00:00.250Z");
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
    }
}
