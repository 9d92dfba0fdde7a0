//! `downwatch detect-series FILE.csv`: the detector on a bare series (for
//! evaluating detection), printing one incident per line as JSON.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use downwatch_core::detector::{DetectorParams, Incident, detect_series};
use serde_json::{Value, json};
use std::io::{Read, Write};

/// A row the series file does not hold validly, by line and column.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct SeriesError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

fn error(line: u64, field: &str, message: impl Into<String>) -> SeriesError {
    SeriesError {
        line,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS` read as UTC.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc().timestamp())
        })
}

/// Reads `timestamp,count` (or `timestamp,value`) rows in increasing time.
pub fn parse(input: impl Read) -> Result<Vec<(i64, f64)>, SeriesError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| error(1, "header", format!("unreadable: {e}")))?
        .clone();
    let names: Vec<String> = headers.iter().map(str::to_ascii_lowercase).collect();
    let value_name = match names.as_slice() {
        [t, v] if t == "timestamp" && (v == "count" || v == "value") => v.clone(),
        _ => {
            return Err(error(
                1,
                "header",
                "expected the header timestamp,count or timestamp,value",
            ));
        }
    };
    let mut points: Vec<(i64, f64)> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            error(line, "row", format!("unreadable: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 2 {
            return Err(error(
                line,
                "row",
                format!("expected 2 fields, found {}", record.len()),
            ));
        }
        let t = parse_timestamp(&record[0]).ok_or_else(|| {
            error(
                line,
                "timestamp",
                format!(
                    "{:?} is neither RFC 3339 nor YYYY-MM-DD HH:MM:SS",
                    &record[0]
                ),
            )
        })?;
        let v: f64 = record[1]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                error(
                    line,
                    &value_name,
                    format!("{:?} is not a non-negative number", &record[1]),
                )
            })?;
        if let Some(&(prev, _)) = points.last()
            && t <= prev
        {
            return Err(error(line, "timestamp", "must be after the previous row's"));
        }
        points.push((t, v));
    }
    Ok(points)
}

fn rfc3339(secs: i64) -> Value {
    DateTime::<Utc>::from_timestamp(secs, 0).map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(SecondsFormat::Secs, true))
    })
}

/// An incident with SPEC's incident fields. `series_end` stands for "now"
/// for an incident still open at the end of the series.
pub fn incident_json(i: &Incident, series: &str, series_end: i64) -> Value {
    json!({
        "id": i.seq + 1,
        "service": series,
        "scope": downwatch_core::GLOBAL_SCOPE,
        "status": if i.is_open() { "open" } else { "resolved" },
        "level_max": i.level_max,
        "started_at": rfc3339(i.started_at),
        "detected_at": rfc3339(i.detected_at),
        "peak_at": rfc3339(i.peak_at),
        "peak_reports_per_min": i.peak_reports_per_min,
        "baseline_per_min_at_peak": (i.baseline_per_min_at_peak * 1000.0).round() / 1000.0,
        "ended_at": i.ended_at.map_or(Value::Null, rfc3339),
        "duration_s": i.duration_s(series_end),
        "total_reports": i.total_reports,
        // A bare series has no problems or places.
        "top_problems": [],
        "top_locations": [],
    })
}

/// Runs the detector over `input` and writes one JSON line per incident;
/// returns how many.
pub fn run(
    input: impl Read,
    series: &str,
    step: i64,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let points = parse(input)?;
    let end = points.last().map_or(0, |&(t, _)| t + step);
    let incidents = detect_series(&points, step, &DetectorParams::default());
    for i in &incidents {
        writeln!(out, "{}", incident_json(i, series, end))?;
    }
    Ok(incidents.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_timestamp_forms_and_both_headers_are_read() {
        let a = parse(
            "timestamp,count\n2024-01-01T00:00:00Z,3\n2024-01-01T00:01:00+00:00,4\n".as_bytes(),
        )
        .unwrap();
        let b = parse(
            "Timestamp , Value\n2024-01-01 00:00:00, 3\n2024-01-01 00:01:00,4.0\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, vec![(1_704_067_200, 3.0), (1_704_067_260, 4.0)]);
    }

    #[test]
    fn bad_rows_are_reported_by_line_and_field() {
        let e = parse("ts,count\n".as_bytes()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "header"));
        let e =
            parse("timestamp,count\n2024-01-01T00:00:00Z,1\nyesterday,2\n".as_bytes()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "timestamp"));
        let e = parse("timestamp,value\n2024-01-01T00:00:00Z,-1\n".as_bytes()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "value"));
        let e = parse("timestamp,count\n2024-01-01T00:00:00Z,NaN\n".as_bytes()).unwrap_err();
        assert_eq!(e.field, "count");
        let e =
            parse("timestamp,count\n2024-01-01T00:01:00Z,1\n2024-01-01T00:00:00Z,1\n".as_bytes())
                .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "timestamp"));
        let e = parse("timestamp,count\n2024-01-01T00:00:00Z,1,9\n".as_bytes()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "row"));
    }

    #[test]
    fn an_empty_series_has_no_incidents() {
        let mut out = Vec::new();
        assert_eq!(
            run("timestamp,count\n".as_bytes(), "x", 60, &mut out).unwrap(),
            0
        );
        assert!(out.is_empty());
    }
}
