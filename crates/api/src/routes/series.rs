//! A service's report series from the per-minute rollups.

use crate::problem::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use downwatch_core::{CountryCode, GLOBAL_SCOPE};
use downwatch_detector::model::ScopeModel;
use serde::{Deserialize, Serialize};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/services/{slug}/series").get(series));
}

/// Steps a series may be asked for, in seconds.
pub const STEPS: [i64; 5] = [60, 300, 900, 3600, 86_400];
/// Most points one request may ask for, so no query scans unbounded history.
pub const MAX_POINTS: i64 = 10_000;
const DEFAULT_STEP: i64 = 900;
const DEFAULT_RANGE: i64 = 86_400;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesQuery {
    /// Start (RFC 3339), rounded down to the step; default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// End (RFC 3339), rounded up to the step; default: now.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Bucket width in seconds; default 900. At most 10,000 buckets a request.
    #[param(value_type = Option<crate::openapi::Step>, inline)]
    step: Option<String>,
    /// Only reports from this country (ISO 3166-1 alpha-2, upper case).
    #[param(value_type = Option<crate::openapi::Country>)]
    country: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: String,
    /// Bucket start, unix seconds (not serialised).
    #[serde(skip)]
    pub secs: i64,
    pub reports: i64,
    /// Expected reports in the bucket, as the detector has learnt them;
    /// `null` until the detector has seen the scope.
    pub baseline: Option<f64>,
    /// The count at which the detector would open an incident.
    pub threshold: Option<f64>,
}

/// The points of `[from, to)` at `step` for one scope: counts from the
/// rollups, baseline and threshold from the scope's saved detector.
pub async fn points(
    state: &AppState,
    service_id: i64,
    scope: &str,
    range: &Range,
) -> Result<Vec<Point>, ApiError> {
    let counts = state
        .storage
        .counts(service_id, scope, range.from, range.to, range.step)
        .await?;
    let n = ((range.to - range.from) / range.step) as usize;
    let model = ScopeModel::load(state.storage.as_ref(), service_id, scope).await?;
    let expected = model.map(|m| m.buckets(range.from, range.step, n));
    let mut counts = counts.into_iter().peekable();
    let mut points = Vec::with_capacity(n);
    let mut t = range.from;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    for i in 0..n {
        let reports = match counts.peek() {
            Some(&(bucket, n)) if bucket == t => {
                counts.next();
                n
            }
            _ => 0,
        };
        let (baseline, threshold) = match &expected {
            Some(e) => (Some(round(e[i].0)), Some(e[i].1)),
            None => (None, None),
        };
        points.push(Point {
            t: rfc3339(t),
            secs: t,
            reports,
            baseline,
            threshold,
        });
        t += range.step;
    }
    Ok(points)
}

/// An RFC 3339 time between the epoch and the end of year 9999 (what the
/// databases hold; anything else could only overflow or find nothing).
pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_param(
                field,
                "must be an RFC 3339 timestamp such as 2022-10-25T07:00:00Z",
            )
        })?;
    if !downwatch_core::time::storable(t.timestamp()) {
        return Err(ApiError::bad_param(
            field,
            "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ));
    }
    Ok(t)
}

pub use downwatch_core::time::rfc3339;

/// A validated range: `[from, to)` aligned to `step`.
#[derive(Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub step: i64,
}

pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    step: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Range, ApiError> {
    let step = match step {
        None => DEFAULT_STEP,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|s| STEPS.contains(s))
            .ok_or_else(|| {
                ApiError::bad_param("step", "must be one of 60, 300, 900, 3600, 86400")
            })?,
    };
    let to_t = to.map(|t| parse_time("to", t)).transpose()?;
    let from_t = from.map(|t| parse_time("from", t)).transpose()?;
    let to = to_t.map_or(now.timestamp(), |t| t.timestamp());
    // The default start never goes before the epoch (a simulated clock in 1970).
    let from = from_t.map_or((to - DEFAULT_RANGE).max(0), |t| t.timestamp());
    if from >= to {
        return Err(ApiError::bad_param("from", "must be before `to`"));
    }
    let from = from.div_euclid(step) * step;
    let to = to.div_euclid(step) * step + if to.rem_euclid(step) == 0 { 0 } else { step };
    let points = (to - from) / step;
    if points > MAX_POINTS {
        return Err(ApiError::bad_param(
            "from",
            format!(
                "the range holds {points} points at step {step}; at most {MAX_POINTS}: narrow it or use a larger step"
            ),
        ));
    }
    Ok(Range { from, to, step })
}

/// `GET /api/v1/services/{slug}/series?from=&to=&step=&country=`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{slug}/series",
    tag = "status",
    operation_id = "getSeries",
    summary = "A service's reports over time",
    description = "Counted reports per bucket with the detector's baseline and threshold; \
                   by default the last 24 hours at 15-minute steps.",
    params(("slug" = String, Path, description = "The service's slug"), SeriesQuery),
    responses(
        (status = 200, description = "The series", body = crate::openapi::SeriesResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn series(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    query: web::Query<SeriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let service = state.service(&slug).await?;
    let range = parse_range(
        query.from.as_deref(),
        query.to.as_deref(),
        query.step.as_deref(),
        state.now(),
    )?;
    let country = query
        .country
        .as_deref()
        .map(|c| CountryCode::parse(c).map_err(|e| ApiError::bad_param("country", e)))
        .transpose()?;
    let scope = country.map_or(GLOBAL_SCOPE.to_owned(), |c| c.as_str().to_owned());
    let points = points(&state, service.id, &scope, &range).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "service": service.slug.as_str(),
        "country": country,
        "from": rfc3339(range.from),
        "to": rfc3339(range.to),
        "step": range.step,
        "points": points,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-05T12:34:56Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(errs) => errs[0].field.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_last_24_hours_at_15_minutes_aligned() {
        let r = parse_range(None, None, None, now()).unwrap();
        assert_eq!(r.step, 900);
        assert_eq!(r.from % 900, 0);
        assert_eq!(r.to % 900, 0);
        assert_eq!((r.to - r.from) / 900, 97, "a partial bucket at each end");
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(
            field_of(parse_range(None, None, Some("120"), now()).unwrap_err()),
            "step"
        );
        assert_eq!(
            field_of(parse_range(Some("yesterday"), None, None, now()).unwrap_err()),
            "from"
        );
        assert_eq!(
            field_of(
                parse_range(
                    Some("2024-03-05T00:00:00Z"),
                    Some("2024-03-04T00:00:00Z"),
                    None,
                    now()
                )
                .unwrap_err()
            ),
            "from"
        );
        // 10,001 minutes at step 60.
        let e = parse_range(
            Some("2024-01-01T00:00:00Z"),
            Some("2024-01-07T22:41:00Z"),
            Some("60"),
            now(),
        );
        assert_eq!(field_of(e.unwrap_err()), "from");
        assert!(
            parse_range(
                Some("2024-01-01T00:00:00Z"),
                Some("2024-01-07T22:40:00Z"),
                Some("60"),
                now()
            )
            .is_ok()
        );
    }

    #[test]
    fn daily_buckets_start_at_utc_midnight() {
        let r = parse_range(
            Some("2024-03-01T10:00:00+02:00"),
            Some("2024-03-03T00:00:00Z"),
            Some("86400"),
            now(),
        )
        .unwrap();
        assert_eq!(rfc3339(r.from), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(r.to), "2024-03-03T00:00:00Z");
    }
}

/// Properties of the range parser over generated query values.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(errs) => errs[0].field.clone(),
            other => panic!("not a named 400: {other:?}"),
        }
    }

    /// Timestamps as clients send them: valid, odd offsets, or nonsense.
    fn time_text() -> impl Strategy<Value = String> {
        prop_oneof![
            (-62_135_596_800i64..253_402_300_799, -86_399i32..86_399).prop_map(|(t, off)| {
                let off = chrono::FixedOffset::east_opt(off / 60 * 60).unwrap();
                DateTime::from_timestamp(t, 0)
                    .unwrap()
                    .with_timezone(&off)
                    .to_rfc3339()
            }),
            "\\PC{0,40}",
            "[0-9T:Z+.-]{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_query_is_a_bounded_aligned_range_or_a_named_400(
            from in proptest::option::of(time_text()),
            to in proptest::option::of(time_text()),
            step in proptest::option::of(prop_oneof![
                proptest::sample::select(vec!["60", "300", "900", "3600", "86400"]).prop_map(str::to_owned),
                "-?[0-9]{0,25}",
                "\\PC{0,10}",
            ]),
            now in 0i64..4_000_000_000,
        ) {
            let now = DateTime::from_timestamp(now, 0).unwrap();
            match parse_range(from.as_deref(), to.as_deref(), step.as_deref(), now) {
                Ok(r) => {
                    prop_assert!(STEPS.contains(&r.step));
                    prop_assert!(r.from < r.to);
                    prop_assert_eq!(r.from % r.step, 0);
                    prop_assert_eq!(r.to % r.step, 0);
                    prop_assert!((r.to - r.from) / r.step <= MAX_POINTS);
                    // Within what the databases hold (`to` may round up a step).
                    prop_assert!(r.from >= 0 && r.to <= downwatch_core::time::LAST_SECOND + 86_400);
                }
                Err(e) => {
                    let f = field_of(e);
                    prop_assert!(["from", "to", "step"].contains(&f.as_str()), "{}", f);
                }
            }
        }
    }
}
