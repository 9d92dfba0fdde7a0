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

/// Properties over generated input: any text is read or refused by line and
/// field, never a panic; a well-formed series reads back exactly.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const FIELDS: [&str; 5] = ["header", "row", "timestamp", "count", "value"];

    fn check_refusal(input: &[u8]) {
        if let Err(e) = parse(input) {
            let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            assert!(
                (1..=lines).contains(&e.line),
                "line {} outside 1..={lines}: {e}",
                e.line
            );
            assert!(FIELDS.contains(&e.field.as_str()), "field {}", e.field);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_bytes_are_read_or_refused_by_line(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            check_refusal(&input);
        }

        #[test]
        fn any_rows_under_a_good_header_are_read_or_refused_by_line(
            rows in proptest::collection::vec("[0-9T:Z +.,eE-]{0,30}", 0..20)
        ) {
            let input = format!("timestamp,count\n{}", rows.join("\n"));
            check_refusal(input.as_bytes());
        }

        #[test]
        fn a_well_formed_series_reads_back_exactly_and_runs(
            start in 0i64..4_000_000_000,
            gaps in proptest::collection::vec(1i64..100_000, 0..60),
            counts in proptest::collection::vec(0u32..100_000, 60),
            spaced in any::<bool>(),
            step in proptest::sample::select(vec![60i64, 300, 900, 3600]),
        ) {
            let mut t = start;
            let mut want = Vec::new();
            let mut csv = String::from("timestamp,count\n");
            for (i, gap) in gaps.iter().enumerate() {
                t += gap;
                let ts = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
                let shown = if spaced {
                    ts.format("%Y-%m-%d %H:%M:%S").to_string()
                } else {
                    ts.to_rfc3339_opts(SecondsFormat::Secs, true)
                };
                csv.push_str(&format!("{shown},{}\n", counts[i]));
                want.push((t, f64::from(counts[i])));
            }
            prop_assert_eq!(parse(csv.as_bytes()).unwrap(), want.clone());
            let mut out = Vec::new();
            let n = run(csv.as_bytes(), "s", step, &mut out).unwrap();
            let lines: Vec<Value> = out
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            prop_assert_eq!(lines.len(), n);
            for l in &lines {
                // The rise starts no later than it is detected.
                prop_assert!(l["started_at"].as_str() <= l["detected_at"].as_str(), "{}", l);
                prop_assert!(l["total_reports"].as_u64().is_some(), "{}", l);
            }
        }
    }
}
