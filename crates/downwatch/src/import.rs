//! `downwatch import FILE.csv`: bulk-load historical reports.
//!
//! The file (header `service,problem,country,city,reported_at`, columns in
//! any order) is read twice. The first pass validates every row with the
//! domain parsers and plans the services: unknown ones are created (named
//! by their slug, with the default problem kinds plus those seen), and
//! well-formed kinds a service does not list yet are added to it. A bad row
//! stops the import before anything is written, named by its line and
//! field. The second pass streams the rows, in chunks of [`CHUNK_ROWS`],
//! into one [`ImportSession`] (a single transaction: the services, the
//! reports and their rollups are stored together or not at all), parsing
//! the next chunk on a blocking thread while the database takes the last.
//! Imported reports all count, with no client hash (no client is known).

use crate::detect_series::parse_timestamp;
use anyhow::Context;
use downwatch_core::{
    City, CountryCode, NewService, ProblemKind, ProblemList, ReportRecord, Service, ServicePatch,
    Slug,
};
use downwatch_store::Storage;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// The columns of an import file, all required, in any order.
pub const COLUMNS: [&str; 5] = ["service", "problem", "country", "city", "reported_at"];

/// Rows handed to the database at a time: memory stays bounded however
/// long the file.
pub const CHUNK_ROWS: usize = 50_000;

/// A rejected row (or header): its line in the file (the header is line 1)
/// and the field at fault, if one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RowError {
    pub line: u64,
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "line {}, field {field}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

fn row_error(line: u64, field: &'static str, message: impl Into<String>) -> RowError {
    RowError {
        line,
        field: Some(field),
        message: message.into(),
    }
}

/// A value quoted for an error message, cut short if long.
fn shown(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// One row of an import file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub service: Slug,
    pub problem: ProblemKind,
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    pub reported_at: chrono::DateTime<chrono::Utc>,
}

/// The position of each of [`COLUMNS`] in the file's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns([usize; 5]);

impl Columns {
    /// Reads the header: every column of [`COLUMNS`] once, nothing else.
    pub fn from_header(header: &csv::ByteRecord) -> Result<Self, RowError> {
        let expected = COLUMNS.join(",");
        let mut found: [Option<usize>; 5] = [None; 5];
        for (i, name) in header.iter().enumerate() {
            let name = String::from_utf8_lossy(name);
            let Some(k) = COLUMNS.iter().position(|c| name.eq_ignore_ascii_case(c)) else {
                return Err(row_error(
                    1,
                    "header",
                    format!("unknown column {} (expected {expected})", shown(&name)),
                ));
            };
            if found[k].replace(i).is_some() {
                return Err(row_error(
                    1,
                    "header",
                    format!("column {} appears twice", COLUMNS[k]),
                ));
            }
        }
        let mut at = [0; 5];
        for (k, f) in found.iter().enumerate() {
            at[k] = f.ok_or_else(|| {
                row_error(
                    1,
                    "header",
                    format!("missing column {} (expected {expected})", COLUMNS[k]),
                )
            })?;
        }
        Ok(Self(at))
    }

    fn field<'r>(
        &self,
        record: &'r csv::ByteRecord,
        k: usize,
        line: u64,
    ) -> Result<&'r str, RowError> {
        let bytes = record
            .get(self.0[k])
            .ok_or_else(|| row_error(line, COLUMNS[k], "missing"))?;
        std::str::from_utf8(bytes).map_err(|_| row_error(line, COLUMNS[k], "not valid UTF-8"))
    }
}

/// Parses one record (trimmed by the reader) found at `line`.
pub fn parse_row(
    record: &csv::ByteRecord,
    columns: &Columns,
    line: u64,
) -> Result<ImportRow, RowError> {
    let field = |k: usize| columns.field(record, k, line);
    let bad = |k: usize, value: &str, why: String| {
        row_error(line, COLUMNS[k], format!("{why} (got {})", shown(value)))
    };
    let s = field(0)?;
    let service = Slug::parse(s).map_err(|e| bad(0, s, e))?;
    let s = field(1)?;
    let problem = ProblemKind::parse(s).map_err(|e| bad(1, s, e))?;
    let s = field(2)?;
    let country = if s.is_empty() {
        None
    } else {
        Some(CountryCode::parse(s).map_err(|e| bad(2, s, e))?)
    };
    let s = field(3)?;
    let city = City::parse(s).map_err(|e| bad(3, s, e))?;
    let s = field(4)?;
    let secs = parse_timestamp(s).ok_or_else(|| {
        bad(
            4,
            s,
            "expected RFC 3339 or YYYY-MM-DD HH:MM:SS (UTC)".to_owned(),
        )
    })?;
    if !downwatch_core::time::storable(secs) {
        return Err(bad(
            4,
            s,
            "must be between 1970-01-01 and 9999-12-31".to_owned(),
        ));
    }
    let reported_at = chrono::DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| bad(4, s, "out of range".to_owned()))?;
    Ok(ImportRow {
        service,
        problem,
        country,
        city,
        reported_at,
    })
}

/// Reads every row of an import file, parsed, with its line; stops at the
/// first bad row or the first error of `f`. Returns the number of rows.
pub fn for_each_row(
    input: impl Read,
    mut f: impl FnMut(ImportRow, u64) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let header = reader
        .byte_headers()
        .map_err(|e| read_error(e, "header"))?
        .clone();
    if header.is_empty() || header.iter().all(<[u8]>::is_empty) {
        return Err(row_error(
            1,
            "header",
            format!("the file is empty (expected {})", COLUMNS.join(",")),
        )
        .into());
    }
    let columns = Columns::from_header(&header)?;
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| read_error(e, "row"))?
    {
        let line = record.position().map_or(0, csv::Position::line);
        f(parse_row(&record, &columns, line)?, line)?;
        rows += 1;
    }
    Ok(rows)
}

/// A reader error, as a [`RowError`] where it is one of a row.
fn read_error(e: csv::Error, what: &str) -> anyhow::Error {
    if let csv::ErrorKind::UnequalLengths {
        pos,
        expected_len,
        len,
    } = e.kind()
    {
        return RowError {
            line: pos.as_ref().map_or(0, csv::Position::line),
            field: None,
            message: format!(
                "{len} fields where the header has {expected_len} ({})",
                COLUMNS.join(",")
            ),
        }
        .into();
    }
    anyhow::Error::new(e).context(format!("cannot read the {what}"))
}

/// What the import does to one service of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedService {
    slug: Slug,
    /// Its id when it exists.
    existing: Option<i64>,
    /// Its problem list once imported.
    problems: ProblemList,
    /// Kinds of the file it does not list yet (in order of first use).
    added: Vec<ProblemKind>,
}

/// The result of validating a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rows: u64,
    services: Vec<PlannedService>,
}

impl Plan {
    /// Slugs of the services the import creates.
    pub fn new_services(&self) -> Vec<&str> {
        self.services
            .iter()
            .filter(|s| s.existing.is_none())
            .map(|s| s.slug.as_str())
            .collect()
    }

    /// Problem kinds added to existing services, as `slug:kind`.
    pub fn added_problems(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| s.existing.is_some())
            .flat_map(|s| s.added.iter().map(move |k| format!("{}:{k}", s.slug)))
            .collect()
    }
}

/// First pass: every row parsed, the services planned against `existing`.
pub fn validate(input: impl Read, existing: &[Service]) -> anyhow::Result<Plan> {
    let known: HashMap<&str, &Service> = existing.iter().map(|s| (s.slug.as_str(), s)).collect();
    let mut index: HashMap<Slug, usize> = HashMap::new();
    let mut services: Vec<PlannedService> = Vec::new();
    let rows = for_each_row(input, |row, line| {
        let i = match index.get(&row.service) {
            Some(&i) => i,
            None => {
                let found = known.get(row.service.as_str());
                services.push(PlannedService {
                    slug: row.service.clone(),
                    existing: found.map(|s| s.id),
                    problems: found.map_or_else(ProblemList::defaults, |s| s.problems.clone()),
                    added: Vec::new(),
                });
                index.insert(row.service, services.len() - 1);
                services.len() - 1
            }
        };
        let s = &mut services[i];
        if !s.problems.contains(row.problem.as_str()) {
            s.problems = s.problems.clone().with(row.problem.clone()).map_err(|e| {
                row_error(
                    line,
                    "problem",
                    format!("{} would list too many problem kinds: {e}", s.slug),
                )
            })?;
            s.added.push(row.problem);
        }
        Ok(())
    })?;
    Ok(Plan { rows, services })
}

/// What an import did; printed as one JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Reports stored.
    pub rows: u64,
    /// Services the file named that did not exist.
    pub services_created: u64,
    /// Problem kinds added to services that existed.
    pub problems_added: u64,
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Imports a file: validated whole first, then loaded in one transaction.
pub async fn run(storage: &dyn Storage, path: &Path) -> anyhow::Result<Summary> {
    let file = path.display().to_string();
    run_inner(storage, path).await.with_context(|| file.clone())
}

async fn run_inner(storage: &dyn Storage, path: &Path) -> anyhow::Result<Summary> {
    let existing = storage.list_services().await?;
    let owned = path.to_owned();
    let plan = tokio::task::spawn_blocking(move || validate(open(&owned)?, &existing))
        .await
        .context("the validation thread failed")??;

    let mut session = storage.begin_import().await?;
    let mut ids: HashMap<Slug, i64> = HashMap::with_capacity(plan.services.len());
    let mut created = 0;
    // Services to extend at the end, so their rows stay locked only briefly.
    let mut extend: Vec<&PlannedService> = Vec::new();
    for s in &plan.services {
        if let Some(id) = s.existing {
            ids.insert(s.slug.clone(), id);
            if !s.added.is_empty() {
                extend.push(s);
            }
            continue;
        }
        // Created meanwhile by someone else: extend it instead.
        if let Some(found) = session.get_service(s.slug.as_str()).await? {
            ids.insert(s.slug.clone(), found.id);
            extend.push(s);
            continue;
        }
        let new = session
            .create_service(&NewService {
                slug: s.slug.clone(),
                name: s.slug.to_string(),
                category: None,
                url: None,
                problems: s.problems.clone(),
            })
            .await?;
        ids.insert(s.slug.clone(), new.id);
        created += 1;
    }

    let (sender, mut chunks) = tokio::sync::mpsc::channel(2);
    let source = path.to_owned();
    let producer = tokio::task::spawn_blocking(move || read_chunks(&source, &ids, &sender));
    let mut rows = 0;
    while let Some(chunk) = chunks.recv().await {
        let chunk: Vec<ReportRecord> = chunk?;
        rows += session.add_reports(&chunk).await?;
    }
    let read = producer.await.context("the reading thread failed")??;
    anyhow::ensure!(
        read == plan.rows && rows == plan.rows,
        "the file changed during the import ({} rows validated, {read} read, {rows} stored); nothing was imported",
        plan.rows
    );

    let mut problems_added = 0;
    for planned in extend {
        let current = session
            .get_service(planned.slug.as_str())
            .await?
            .with_context(|| format!("service {} disappeared during the import", planned.slug))?;
        let mut problems = current.problems.clone();
        for kind in &planned.added {
            if !problems.contains(kind.as_str()) {
                problems = problems
                    .with(kind.clone())
                    .map_err(|e| anyhow::anyhow!("service {}: {e}", planned.slug))?;
                problems_added += 1;
            }
        }
        if problems != current.problems {
            let patch = ServicePatch {
                problems: Some(problems),
                ..ServicePatch::default()
            };
            session
                .update_service(planned.slug.as_str(), &patch)
                .await?;
        }
    }
    session.commit().await?;
    Ok(Summary {
        rows,
        services_created: created,
        problems_added,
    })
}

/// Second pass (on a blocking thread): the rows as reports, in chunks.
/// Stops early when the receiver is gone (the import failed).
fn read_chunks(
    path: &Path,
    ids: &HashMap<Slug, i64>,
    sender: &tokio::sync::mpsc::Sender<anyhow::Result<Vec<ReportRecord>>>,
) -> anyhow::Result<u64> {
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let result = for_each_row(open(path)?, |row, line| {
        let service_id = *ids.get(&row.service).with_context(|| {
            format!(
                "line {line}: service {} was not in the file when it was validated",
                row.service
            )
        })?;
        chunk.push(ReportRecord {
            service_id,
            problem: row.problem,
            country: row.country,
            city: row.city,
            client_hash: [0; 16],
            address_hash: None,
            counted: true,
            received_at: row.reported_at,
        });
        if chunk.len() == CHUNK_ROWS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
            sender
                .blocking_send(Ok(full))
                .map_err(|_| anyhow::anyhow!("the import stopped"))?;
        }
        Ok(())
    });
    match result {
        Ok(rows) => {
            if !chunk.is_empty() {
                // A closed channel means the import failed; it reports why.
                let _ = sender.blocking_send(Ok(chunk));
            }
            Ok(rows)
        }
        Err(e) => {
            let message = format!("{e:#}");
            let _ = sender.blocking_send(Err(e));
            Err(anyhow::anyhow!(message))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rows_of(csv: &str) -> anyhow::Result<Vec<(u64, ImportRow)>> {
        let mut out = Vec::new();
        for_each_row(csv.as_bytes(), |row, line| {
            out.push((line, row));
            Ok(())
        })?;
        Ok(out)
    }

    fn row_err(csv: &str) -> RowError {
        let e = rows_of(csv).unwrap_err();
        e.downcast_ref::<RowError>()
            .unwrap_or_else(|| panic!("not a row error: {e:#}"))
            .clone()
    }

    #[test]
    fn rows_parse_in_both_time_forms_with_empty_places_and_columns_in_any_order() {
        let rows = rows_of(
            "service,problem,country,city,reported_at\n\
             whatsapp,login,FR, Paris ,2024-03-01T10:00:30Z\n\
             whatsapp,app,,,2024-03-01 10:01:00\n\
             \"x-1\",other,DE,\"Frankfurt, am Main\",2024-03-01T12:01:00+02:00\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        let (line, r) = &rows[0];
        assert_eq!(*line, 2);
        assert_eq!(r.service.as_str(), "whatsapp");
        assert_eq!(r.problem.as_str(), "login");
        assert_eq!(r.country.unwrap().as_str(), "FR");
        assert_eq!(r.city.as_ref().unwrap().as_str(), "Paris");
        assert_eq!(r.reported_at.timestamp(), 1_709_287_230);
        let (line, r) = &rows[1];
        assert_eq!(*line, 3);
        assert_eq!((r.country, r.city.clone()), (None, None));
        assert_eq!(r.reported_at.timestamp(), 1_709_287_260);
        assert_eq!(
            rows[2].1.city.as_ref().unwrap().as_str(),
            "Frankfurt, am Main"
        );
        assert_eq!(rows[2].1.reported_at.timestamp(), 1_709_287_260);

        let shuffled = rows_of(
            "reported_at,city,country,problem,service\n2024-03-01 10:01:00,,,app,whatsapp\n",
        )
        .unwrap();
        assert_eq!(shuffled[0].1, rows[1].1);
    }

    #[test]
    fn a_bad_value_is_named_by_line_and_field() {
        let head = "service,problem,country,city,reported_at\n";
        let good = "whatsapp,app,FR,Paris,2024-03-01T10:00:00Z\n";
        for (bad, field) in [
            ("WhatsApp,app,FR,Paris,2024-03-01T10:00:00Z\n", "service"),
            (",app,FR,Paris,2024-03-01T10:00:00Z\n", "service"),
            ("whatsapp,App,FR,Paris,2024-03-01T10:00:00Z\n", "problem"),
            ("whatsapp,,FR,Paris,2024-03-01T10:00:00Z\n", "problem"),
            ("whatsapp,app,fr,Paris,2024-03-01T10:00:00Z\n", "country"),
            ("whatsapp,app,ZZ,Paris,2024-03-01T10:00:00Z\n", "country"),
            ("whatsapp,app,FR,Paris,yesterday\n", "reported_at"),
            ("whatsapp,app,FR,Paris,\n", "reported_at"),
            (
                "whatsapp,app,FR,Paris,1969-12-31T23:59:59Z\n",
                "reported_at",
            ),
        ] {
            let e = row_err(&format!("{head}{good}{good}{bad}{good}"));
            assert_eq!((e.line, e.field), (4, Some(field)), "{bad}: {e}");
        }
        let long_city = "é".repeat(81);
        let e = row_err(&format!(
            "{head}whatsapp,app,FR,{long_city},2024-03-01T10:00:00Z\n"
        ));
        assert_eq!((e.line, e.field), (2, Some("city")));
        let e = row_err(&format!("{head}{good}whatsapp,app,FR,Paris,yesterday\n"));
        assert_eq!(
            e.to_string(),
            "line 3, field reported_at: expected RFC 3339 or YYYY-MM-DD HH:MM:SS (UTC) (got \"yesterday\")"
        );
        // A quoted field over two lines is named at the line it starts on
        // (a city cannot hold a line break).
        let e = row_err(&format!(
            "{head}{good}whatsapp,app,FR,\"Pa\nris\",2024-03-01T10:00:00Z\n{good}"
        ));
        assert_eq!((e.line, e.field), (3, Some("city")));
    }

    #[test]
    fn bad_headers_and_field_counts_are_refused() {
        for (csv, says) in [
            ("", "empty"),
            (
                "service,problem,country,city\nx,app,,\n",
                "missing column reported_at",
            ),
            (
                "service,problem,country,city,reported_at,extra\n",
                "unknown column \"extra\"",
            ),
            (
                "service,problem,country,city,reported_at,city\n",
                "column city appears twice",
            ),
        ] {
            let e = row_err(csv);
            assert_eq!((e.line, e.field), (1, Some("header")), "{csv}");
            assert!(e.message.contains(says), "{csv}: {e}");
        }
        let e = row_err(
            "service,problem,country,city,reported_at\nx,app,FR,,2024-03-01T10:00:00Z\nx,app,FR\n",
        );
        assert_eq!((e.line, e.field), (3, None));
        assert!(e.to_string().starts_with("line 3: 3 fields"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_and_header_case_are_tolerated() {
        let rows = rows_of(
            "\u{feff}Service,Problem,Country,City,Reported_At\nx,app,,,2024-03-01 10:01:00\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
    }

    fn service(id: i64, slug: &str, problems: &[&str]) -> Service {
        Service {
            id,
            slug: Slug::parse(slug).unwrap(),
            name: slug.to_owned(),
            category: None,
            url: None,
            problems: ProblemList::parse(problems).unwrap(),
        }
    }

    #[test]
    fn validation_plans_new_services_and_new_problem_kinds() {
        let existing = [service(7, "whatsapp", &["app", "login"])];
        let plan = validate(
            "service,problem,country,city,reported_at\n\
             whatsapp,app,,,2024-03-01 10:00:00\n\
             whatsapp,calls,,,2024-03-01 10:00:00\n\
             newsvc,app,,,2024-03-01 10:00:00\n\
             newsvc,streaming,,,2024-03-01 10:00:00\n\
             whatsapp,calls,,,2024-03-01 10:00:00\n"
                .as_bytes(),
            &existing,
        )
        .unwrap();
        assert_eq!(plan.rows, 5);
        assert_eq!(plan.new_services(), vec!["newsvc"]);
        assert_eq!(plan.added_problems(), vec!["whatsapp:calls".to_owned()]);
        let new = &plan.services[1];
        assert_eq!(
            new.problems.to_stored(),
            "app,website,login,connection,messaging,other,streaming"
        );
    }

    #[test]
    fn a_service_cannot_grow_past_the_problem_kind_limit() {
        let mut csv = String::from("service,problem,country,city,reported_at\n");
        for i in 0..30 {
            csv.push_str(&format!("s,kind-{i},,,2024-03-01 10:00:00\n"));
        }
        // 6 defaults + 26 = 32 kinds; the 27th new kind is on line 28.
        let e = validate(csv.as_bytes(), &[]).unwrap_err();
        let e = e.downcast_ref::<RowError>().unwrap();
        assert_eq!((e.line, e.field), (28, Some("problem")), "{e}");
    }
}

/// Properties over generated files: any bytes are read or refused by line,
/// never a panic; well-formed rows, written by a CSV writer, read back as
/// written; one bad value among good rows is named by its line and field.
#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Row {
        service: String,
        problem: String,
        country: String,
        city: String,
        secs: i64,
        spaced: bool,
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            "[a-z0-9][a-z0-9-]{0,20}",
            "[a-z][a-z0-9-]{0,10}",
            prop::sample::select(vec!["", "FR", "DE", "US", "GB", "UA", "RU", "JP"]),
            // Cities with commas, quotes, accents and scripts; no control
            // characters, at most 80 once trimmed.
            "[ a-zA-Z,\"'éßЖ京-]{0,70}",
            0i64..downwatch_core::time::LAST_SECOND,
            any::<bool>(),
        )
            .prop_map(|(service, problem, country, city, secs, spaced)| Row {
                service,
                problem,
                country: country.to_owned(),
                city,
                secs,
                spaced,
            })
    }

    fn write(rows: &[Row]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(COLUMNS).unwrap();
        for r in rows {
            let t = chrono::DateTime::from_timestamp(r.secs, 0).unwrap();
            let shown = if r.spaced {
                t.format("%Y-%m-%d %H:%M:%S").to_string()
            } else {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            w.write_record([&r.service, &r.problem, &r.country, &r.city, &shown])
                .unwrap();
        }
        w.into_inner().unwrap()
    }

    fn read(bytes: &[u8]) -> anyhow::Result<Vec<(u64, ImportRow)>> {
        let mut out = Vec::new();
        for_each_row(bytes, |row, line| {
            out.push((line, row));
            Ok(())
        })?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_bytes_are_read_or_refused_by_line(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            with_header in any::<bool>(),
        ) {
            let mut input = if with_header {
                b"service,problem,country,city,reported_at\n".to_vec()
            } else {
                Vec::new()
            };
            input.extend_from_slice(&body);
            let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            if let Err(e) = read(&input) {
                // Either a row error inside the file, or the reader's own
                // complaint (invalid UTF-8 in the header), never a panic.
                if let Some(e) = e.downcast_ref::<RowError>() {
                    prop_assert!((1..=lines).contains(&e.line), "{e}");
                }
            }
            let _ = validate(input.as_slice(), &[]);
        }

        #[test]
        fn well_formed_rows_read_back_as_written(rows in proptest::collection::vec(row(), 1..40)) {
            let got = read(&write(&rows)).unwrap();
            prop_assert_eq!(got.len(), rows.len());
            for (i, (r, (line, g))) in rows.iter().zip(&got).enumerate() {
                prop_assert_eq!(*line, i as u64 + 2);
                prop_assert_eq!(g.service.as_str(), r.service.as_str());
                prop_assert_eq!(g.problem.as_str(), r.problem.as_str());
                prop_assert_eq!(g.country.map(|c| c.as_str().to_owned()).unwrap_or_default(), r.country.clone());
                prop_assert_eq!(g.city.as_ref().map(City::as_str).unwrap_or(""), r.city.trim());
                prop_assert_eq!(g.reported_at.timestamp(), r.secs);
            }
            let plan = validate(write(&rows).as_slice(), &[]).unwrap();
            prop_assert_eq!(plan.rows, rows.len() as u64);
        }

        #[test]
        fn one_bad_value_is_named_by_its_line_and_field(
            rows in proptest::collection::vec(row(), 1..20),
            at in any::<prop::sample::Index>(),
            which in 0usize..5,
        ) {
            let mut rows = rows;
            let k = at.index(rows.len());
            let bad = &mut rows[k];
            match which {
                0 => bad.service = format!("-{}", bad.service),
                1 => bad.problem = format!("{}!", bad.problem),
                2 => bad.country = "ZZ".to_owned(),
                3 => bad.city = format!("{}\u{7}", "x".repeat(3)),
                _ => bad.secs = -1,
            }
            // -1 is written as 1969-12-31T23:59:59Z: a second before the epoch.
            let file = write(&rows);
            let e = read(&file).unwrap_err();
            let e = e.downcast_ref::<RowError>().unwrap();
            prop_assert_eq!(e.line, k as u64 + 2, "{}", e);
            prop_assert_eq!(e.field, Some(COLUMNS[which]), "{}", e);
        }
    }
}
