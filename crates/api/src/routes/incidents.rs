//! Incident history: the list (JSON or CSV, newest first, keyset cursor)
//! and one incident with its series. The Atom feeds are in `feeds`.

use crate::problem::ApiError;
use crate::routes::series::{MAX_POINTS, Point, Range, STEPS, parse_time, points, rfc3339};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use downwatch_core::{CountryCode, GLOBAL_SCOPE, Service};
use downwatch_store::{IncidentQuery, IncidentRow};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/incidents").get(list))
        .service(web::resource("/api/v1/incidents/{id}").get(one));
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// CSV pages may be longer: a spreadsheet wants the whole history.
const MAX_CSV_LIMIT: i64 = 1000;

pub use downwatch_detector::breakdown::{
    IncidentJson, LocationShare, PlaceCount, ProblemShare, tops,
};

/// The incident as SPEC.md shows it, with the problems and places of the
/// reports in its scope from its start to its end (or now).
pub async fn incident_json(
    state: &AppState,
    row: &IncidentRow,
    slug: &str,
    now: i64,
) -> Result<IncidentJson, ApiError> {
    Ok(downwatch_detector::breakdown::incident_json(
        state.storage.as_ref(),
        row.id,
        slug,
        &row.record,
        now,
    )
    .await?)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this service's incidents (its slug).
    service: Option<String>,
    /// Only incidents of this scope: `global`, or a country code.
    #[param(value_type = Option<crate::openapi::Scope>)]
    country: Option<String>,
    /// Only incidents that started at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only incidents that started before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only open, or only resolved, incidents.
    #[param(value_type = Option<crate::openapi::IncidentStatus>, inline)]
    status: Option<String>,
    /// Incidents per page: JSON 1 to 200 (default 50); CSV 1 to 1000
    /// (default 1000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (CSV: in the `Link` header).
    #[param(pattern = "^s[0-9]{1,20}i[0-9]{1,20}$")]
    cursor: Option<String>,
    /// `csv` for CSV, `json` for JSON; by default JSON unless `Accept`
    /// asks for `text/csv`.
    #[param(value_type = Option<crate::openapi::ListFormat>, inline)]
    format: Option<String>,
}

/// `s<started_at>i<id>`: the last incident of a page.
pub fn encode_cursor(row: &IncidentRow) -> String {
    format!("s{}i{}", row.record.started_at, row.id)
}

pub fn decode_cursor(c: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad_param("cursor", "must be a next_cursor this API returned");
    let rest = c.strip_prefix('s').ok_or_else(bad)?;
    let (s, i) = rest.split_once('i').ok_or_else(bad)?;
    // 1 to 20 digits, as the document says: `parse` would also take a sign
    // or a run of leading zeros, which no cursor has.
    let digits = |t: &str| (1..=20).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(s) || !digits(i) {
        return Err(bad());
    }
    let started: i64 = s.parse().map_err(|_| bad())?;
    let id: i64 = i.parse().map_err(|_| bad())?;
    // Only times the API can hand out (so no query overflows on them).
    if !downwatch_core::time::storable(started) {
        return Err(bad());
    }
    Ok((started, id))
}

fn wants_csv(req: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(_) => return Err(ApiError::bad_param("format", "must be csv or json")),
        None => {}
    }
    Ok(req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|m| m.trim().starts_with("text/csv"))))
}

/// Services by id, from the cached catalogue.
pub fn services_by_id(state: &AppState) -> HashMap<i64, Arc<Service>> {
    state
        .catalogue
        .all()
        .into_iter()
        .map(|s| (s.id, s))
        .collect()
}

/// `GET /api/v1/incidents?service=&country=&from=&to=&status=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    operation_id = "listIncidents",
    summary = "Incident history",
    description = "Incidents, newest first, a page at a time. `format=csv` or `Accept: text/csv` \
                   gives RFC 4180 CSV (UTF-8 with a byte-order mark, CRLF) with one row per \
                   incident: id, service, scope, status, level_max, started_at, detected_at, \
                   peak_at, peak_reports_per_min, baseline_per_min_at_peak, ended_at, duration_s, \
                   total_reports, top_problem, top_problem_share, top_country, top_city, \
                   top_location_share.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of incidents",
            content(
                (crate::openapi::IncidentList = "application/json"),
                (String = "text/csv"),
            ),
            headers(("Link" = String, description = "CSV only, when there is a next page: \
                      `<?format=csv&cursor=…>; rel=\"next\"`"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let csv = wants_csv(&req, query.format.as_deref())?;
    let service = match &query.service {
        Some(slug) => Some(state.service(slug).await?),
        None => None,
    };
    let scope = query
        .country
        .as_deref()
        .map(|c| {
            if c == GLOBAL_SCOPE {
                Ok(GLOBAL_SCOPE.to_owned())
            } else {
                CountryCode::parse(c)
                    .map(|c| c.as_str().to_owned())
                    .map_err(|e| ApiError::bad_param("country", e))
            }
        })
        .transpose()?;
    let from = query
        .from
        .as_deref()
        .map(|t| parse_time("from", t).map(|t| t.timestamp()))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|t| parse_time("to", t).map(|t| t.timestamp()))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_param("from", "must be before `to`"));
    }
    let open = match query.status.as_deref() {
        None => None,
        Some("open") => Some(true),
        Some("resolved") => Some(false),
        Some(_) => return Err(ApiError::bad_param("status", "must be open or resolved")),
    };
    let max = if csv { MAX_CSV_LIMIT } else { MAX_LIMIT };
    let limit = match query.limit.as_deref() {
        None => {
            if csv {
                MAX_CSV_LIMIT
            } else {
                DEFAULT_LIMIT
            }
        }
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::bad_param("limit", format!("must be 1 to {max}")))?,
    };
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = state
        .storage
        .incidents(&IncidentQuery {
            service_id: service.as_ref().map(|s| s.id),
            scope,
            from,
            to,
            open,
            before,
            // One more than asked shows whether there is a next page.
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if more {
        rows.last().map(encode_cursor)
    } else {
        None
    };
    let by_id = services_by_id(&state);
    let now = state.now().timestamp();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let slug = by_id
            .get(&row.record.service_id)
            .map_or_else(|| row.record.service_id.to_string(), |s| s.slug.to_string());
        out.push(incident_json(&state, row, &slug, now).await?);
    }
    if csv {
        let mut resp = HttpResponse::Ok();
        resp.content_type("text/csv; charset=utf-8").insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"downwatch-incidents.csv\"",
        ));
        if let Some(c) = &next_cursor {
            resp.insert_header((
                header::LINK,
                format!("<?format=csv&cursor={c}>; rel=\"next\""),
            ));
        }
        return Ok(resp.body(to_csv(&out).map_err(ApiError::internal)?));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "incidents": out,
        "next_cursor": next_cursor,
    })))
}

/// A text cell a spreadsheet will not run as a formula.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// RFC 4180 CSV (quoted where needed, CRLF), with a byte-order mark so
/// spreadsheets read it as UTF-8.
pub fn to_csv(incidents: &[IncidentJson]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    w.write_record([
        "id",
        "service",
        "scope",
        "status",
        "level_max",
        "started_at",
        "detected_at",
        "peak_at",
        "peak_reports_per_min",
        "baseline_per_min_at_peak",
        "ended_at",
        "duration_s",
        "total_reports",
        "top_problem",
        "top_problem_share",
        "top_country",
        "top_city",
        "top_location_share",
    ])?;
    for i in incidents {
        let v = &i.view;
        let p = i.top_problems.first();
        let l = i.top_locations.first();
        w.write_record([
            v.id.to_string(),
            cell(&v.service),
            cell(&v.scope),
            v.status.clone(),
            v.level_max.clone(),
            v.started_at.clone(),
            v.detected_at.clone(),
            v.peak_at.clone(),
            v.peak_reports_per_min.to_string(),
            v.baseline_per_min_at_peak.to_string(),
            v.ended_at.clone().unwrap_or_default(),
            v.duration_s.to_string(),
            v.total_reports.to_string(),
            p.map(|p| cell(&p.problem)).unwrap_or_default(),
            p.map(|p| p.share.to_string()).unwrap_or_default(),
            l.and_then(|l| l.country.clone()).unwrap_or_default(),
            l.and_then(|l| l.city.as_deref().map(cell))
                .unwrap_or_default(),
            l.map(|l| l.share.to_string()).unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The range of an incident's series: an hour either side, at 60 s steps
/// unless that would exceed the point limit.
pub fn incident_range(started_at: i64, ended_at: Option<i64>, now: i64) -> Range {
    let end = ended_at.unwrap_or(now).max(started_at + 60);
    let (from, to) = (started_at - 3600, end + 3600);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| (to - from) / s < MAX_POINTS)
        .unwrap_or(86_400);
    let from = from.div_euclid(step) * step;
    let to = to.div_euclid(step) * step + if to.rem_euclid(step) == 0 { 0 } else { step };
    Range { from, to, step }
}

/// `GET /api/v1/incidents/{id}`: the incident and its series.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "incidents",
    operation_id = "getIncident",
    summary = "One incident with its series",
    description = "The incident and its scope's reports at 60 s steps from an hour before it \
                   started to an hour after it ended (or now).",
    params(("id" = i64, Path, minimum = 1, description = "The incident's id")),
    responses(
        (status = 200, description = "The incident", body = crate::openapi::IncidentDetail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = 500, response = crate::openapi::InternalError),
    ),
)]
async fn one(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::bad_param("id", "must be a positive integer"))?;
    let row = state
        .storage
        .incident(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no incident {id}")))?;
    let by_id = services_by_id(&state);
    let slug = by_id
        .get(&row.record.service_id)
        .map_or_else(|| row.record.service_id.to_string(), |s| s.slug.to_string());
    let now = state.now().timestamp();
    let json = incident_json(&state, &row, &slug, now).await?;
    let range = incident_range(row.record.started_at, row.record.ended_at, now);
    let points: Vec<Point> =
        points(&state, row.record.service_id, &row.record.scope, &range).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "incident": json,
        "series": {
            "from": rfc3339(range.from),
            "to": rfc3339(range.to),
            "step": range.step,
            "points": points,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(
            decode_cursor("s1700000000i42").unwrap(),
            (1_700_000_000, 42)
        );
        for bad in [
            "",
            "x",
            "s12",
            "s12ix",
            "i4s2",
            "s+1i1",
            "s1i-1",
            "s1i000000000000000000001",
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formula_like_cells_are_defused() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("Paris"), "Paris");
    }

    #[test]
    fn long_incidents_get_a_coarser_series_within_the_point_limit() {
        let r = incident_range(1_000_020, Some(1_000_020 + 3600), 0);
        assert_eq!(r.step, 60);
        assert!(r.from <= 1_000_020 - 3600 && r.to >= 1_000_020 + 7200);
        let r = incident_range(0, Some(30 * 86_400), 0);
        assert!((r.to - r.from) / r.step <= MAX_POINTS, "{r:?}");
        assert_eq!(r.step, 300);
    }
}

/// Properties of the cursor: what the API hands out comes back; anything
/// else is a 400 naming `cursor`, never a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn cursors_round_trip(s in 0..=downwatch_core::time::LAST_SECOND, i in 0..=i64::MAX) {
            prop_assert_eq!(decode_cursor(&format!("s{s}i{i}")).unwrap(), (s, i));
        }

        #[test]
        fn any_text_is_a_cursor_or_a_named_400(c in "\\PC{0,40}|s[-+]?[0-9]{0,22}i[-+]?[0-9]{0,22}") {
            if let Err(e) = decode_cursor(&c) {
                match e {
                    ApiError::BadRequest(errs) => prop_assert_eq!(errs[0].field.as_str(), "cursor"),
                    other => prop_assert!(false, "not a named 400: {:?}", other),
                }
            }
        }
    }
}
