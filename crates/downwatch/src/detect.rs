//! `downwatch detect --from T --to T [--service S]`: the detector over the
//! stored rollups, writing the incidents it finds (see
//! `downwatch_detector::backfill`).

use crate::detect_series::parse_timestamp;
use anyhow::{Context, bail};
use downwatch_core::detector::DetectorParams;
use downwatch_detector::backfill::{self, Summary};
use downwatch_store::Storage;

/// The longest range one run may cover.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// A time on the command line: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or a
/// bare date (its midnight, UTC).
pub fn parse_time(arg: &str, name: &str) -> anyhow::Result<i64> {
    let t = arg.trim();
    if let Some(secs) = parse_timestamp(t) {
        return Ok(secs);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(dt.and_utc().timestamp());
    }
    bail!(
        "--{name}: expected an RFC 3339 time, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD (UTC), got {arg:?}"
    )
}

pub async fn run(
    storage: &dyn Storage,
    from: &str,
    to: &str,
    service: Option<&str>,
) -> anyhow::Result<Summary> {
    let from = parse_time(from, "from")?;
    let to = parse_time(to, "to")?;
    if from >= to {
        bail!("--from must be before --to");
    }
    if to - from > MAX_RANGE_DAYS * 86_400 {
        bail!("--from to --to spans more than {MAX_RANGE_DAYS} days; run it in parts");
    }
    let services = match service {
        Some(slug) => vec![
            storage
                .get_service(slug)
                .await?
                .with_context(|| format!("--service: no service {slug:?}"))?,
        ],
        None => storage.list_services().await?,
    };
    Ok(backfill::detect(storage, &DetectorParams::default(), &services, from, to).await?)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_read_in_three_forms_and_bad_ones_name_the_option() {
        assert_eq!(
            parse_time("2022-10-25T07:00:00Z", "from").unwrap(),
            1_666_681_200
        );
        assert_eq!(
            parse_time("2022-10-25 07:00:00", "from").unwrap(),
            1_666_681_200
        );
        assert_eq!(parse_time("2022-10-25", "to").unwrap(), 1_666_656_000);
        let e = parse_time("yesterday", "to").unwrap_err().to_string();
        assert!(e.starts_with("--to:"), "{e}");
    }
}
