//! `downwatch bench import`: the bulk import against row-by-row inserts.
//!
//! Generates an import file (services of Zipf-like popularity, reports
//! spread over some weeks, most with a country, some with a city), imports
//! it into a throwaway PostgreSQL database (`dw_bench_<pid>_…`, dropped
//! afterwards) and a temporary SQLite file with the code of `downwatch
//! import`, checks the rollups add up, and compares with storing a sample of
//! the same reports one at a time through `Storage::insert_reports` (one
//! transaction per report: its INSERT and its rollup upserts).

use crate::import;
use anyhow::Context;
use downwatch_core::{City, CountryCode, NewService, ProblemKind, ProblemList, ReportRecord, Slug};
use downwatch_store::Storage;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The target for PostgreSQL.
pub const TARGET_ROWS_PER_SEC: f64 = 150_000.0;

/// The PostgreSQL server used when neither `--database-url` nor a
/// PostgreSQL `DATABASE_URL` is given.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// 2025-01-06T00:00:00Z, a Monday.
const START: i64 = 1_736_121_600;

#[derive(Debug, Clone)]
pub struct ImportBench {
    /// Rows of the generated file.
    pub rows: usize,
    /// Reports stored one at a time on PostgreSQL (a tenth of them on SQLite).
    pub sample: usize,
    pub services: usize,
    /// Days the reports span.
    pub days: i64,
    /// A URL of the PostgreSQL server (any database on it).
    pub server_url: String,
}

/// One generated report.
#[derive(Debug, Clone)]
struct GenRow {
    service: usize,
    problem: &'static str,
    country: Option<&'static str>,
    city: Option<&'static str>,
    at: i64,
}

const PROBLEMS: [&str; 8] = [
    "app",
    "website",
    "login",
    "connection",
    "messaging",
    "other",
    "streaming",
    "payments",
];

/// Countries with a few cities each (some need quoting in CSV).
const PLACES: [(&str, [&str; 2]); 8] = [
    ("US", ["New York", "Washington, D.C."]),
    ("GB", ["London", "Manchester"]),
    ("FR", ["Paris", "Saint-Étienne"]),
    ("DE", ["Berlin", "Frankfurt am Main"]),
    ("IN", ["Mumbai", "Bengaluru"]),
    ("BR", ["São Paulo", "Rio de Janeiro"]),
    ("JP", ["Tokyo", "Ōsaka"]),
    ("ES", ["Madrid", "A Coruña"]),
];

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The generated reports, in time order, `rows` of them over `days`.
struct Generator {
    rng: Rng,
    /// Cumulative popularity of the services (Zipf, exponent 1).
    cumulative: Vec<f64>,
    rows: usize,
    span: i64,
    i: usize,
}

impl Generator {
    fn new(b: &ImportBench) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (0..b.services)
            .map(|k| {
                total += 1.0 / (k as f64 + 1.0);
                total
            })
            .collect();
        for c in &mut cumulative {
            *c /= total;
        }
        Self {
            rng: Rng(42),
            cumulative,
            rows: b.rows,
            span: b.days * 86_400,
            i: 0,
        }
    }
}

impl Iterator for Generator {
    type Item = GenRow;
    fn next(&mut self) -> Option<GenRow> {
        if self.i >= self.rows {
            return None;
        }
        let at = START + (self.i as i128 * self.span as i128 / self.rows as i128) as i64;
        self.i += 1;
        let u = self.rng.unit();
        let service = self
            .cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1);
        let problem = PROBLEMS[self.rng.below(PROBLEMS.len())];
        let (country, city) = if self.rng.below(10) < 7 {
            let (c, cities) = PLACES[self.rng.below(PLACES.len())];
            let city = (self.rng.below(10) < 3).then(|| cities[self.rng.below(2)]);
            (Some(c), city)
        } else {
            (None, None)
        };
        Some(GenRow {
            service,
            problem,
            country,
            city,
            at,
        })
    }
}

fn slug(k: usize) -> String {
    format!("service-{k:03}")
}

/// Writes the import file; times alternate between the two accepted forms.
/// Service, hour, problem, country, city.
type FacetKey = (
    usize,
    i64,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Returns the rollup rows the file makes: minutes, hours, days (every
/// scope) and hourly facets.
fn write_csv(b: &ImportBench, path: &Path) -> anyhow::Result<[usize; 4]> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(1 << 20, file));
    w.write_record(import::COLUMNS)?;
    let mut levels: [HashSet<(usize, Option<&str>, i64)>; 3] = Default::default();
    let mut facets: HashSet<FacetKey> = HashSet::new();
    for (i, r) in Generator::new(b).enumerate() {
        for (set, width) in levels.iter_mut().zip([60, 3600, 86_400]) {
            let t = r.at.div_euclid(width) * width;
            set.insert((r.service, None, t));
            if r.country.is_some() {
                set.insert((r.service, r.country, t));
            }
        }
        facets.insert((
            r.service,
            r.at.div_euclid(3600),
            r.problem,
            r.country,
            r.city,
        ));
        let t = chrono::DateTime::from_timestamp(r.at, 0).context("time out of range")?;
        let at = if i % 2 == 0 {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        };
        w.write_record([
            slug(r.service).as_str(),
            r.problem,
            r.country.unwrap_or(""),
            r.city.unwrap_or(""),
            at.as_str(),
        ])?;
    }
    w.flush()?;
    Ok([
        levels[0].len(),
        levels[1].len(),
        levels[2].len(),
        facets.len(),
    ])
}

/// One line of the results table.
struct Measured {
    backend: &'static str,
    method: &'static str,
    rows: usize,
    seconds: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

/// Imports `csv` into `storage` (migrated, empty) and checks that the day
/// rollups of every service add up to the file.
async fn timed_import(storage: &dyn Storage, csv: &Path, b: &ImportBench) -> anyhow::Result<f64> {
    let started = Instant::now();
    let summary = import::run(storage, csv).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        summary.rows == b.rows as u64,
        "imported {} rows of {}",
        summary.rows,
        b.rows
    );
    let mut total = 0;
    for s in storage.list_services().await? {
        let from = START;
        let to = START + (b.days + 1) * 86_400;
        total += storage
            .counts(s.id, downwatch_core::GLOBAL_SCOPE, from, to, 86_400)
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum::<i64>();
    }
    anyhow::ensure!(
        total == b.rows as i64,
        "the day rollups count {total} reports, the file {}",
        b.rows
    );
    Ok(seconds)
}

/// Stores the first `n` generated reports one `insert_reports` call (one
/// transaction) each, after creating the services.
async fn timed_row_by_row(storage: &dyn Storage, b: &ImportBench, n: usize) -> anyhow::Result<f64> {
    let problems = ProblemList::parse(&PROBLEMS).map_err(anyhow::Error::msg)?;
    let mut ids = Vec::with_capacity(b.services);
    for k in 0..b.services {
        let s = storage
            .create_service(&NewService {
                slug: Slug::parse(&slug(k)).map_err(anyhow::Error::msg)?,
                name: slug(k),
                category: None,
                url: None,
                problems: problems.clone(),
            })
            .await?;
        ids.push(s.id);
    }
    let mut records = Vec::with_capacity(n);
    for r in Generator::new(b).take(n) {
        records.push(ReportRecord {
            service_id: ids[r.service],
            problem: ProblemKind::parse(r.problem).map_err(anyhow::Error::msg)?,
            country: r
                .country
                .map(CountryCode::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            city: r
                .city
                .map(City::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .flatten(),
            client_hash: [0; 16],
            address_hash: None,
            counted: true,
            received_at: chrono::DateTime::from_timestamp(r.at, 0).context("time out of range")?,
        });
    }
    let started = Instant::now();
    for r in &records {
        storage.insert_reports(std::slice::from_ref(r)).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `f` on a fresh, migrated PostgreSQL database that is dropped
/// afterwards, whatever `f` returns.
async fn with_pg_database<T>(
    server: &str,
    name: &str,
    f: impl AsyncFnOnce(&dyn Storage) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let url = downwatch_store::create_pg_database(server, name)
        .await
        .with_context(|| format!("cannot create database {name} on {}", redact(server)))?;
    let result = async {
        let storage: Arc<dyn Storage> = downwatch_store::connect(&url).await?;
        storage.migrate().await?;
        f(storage.as_ref()).await
    }
    .await;
    let dropped = downwatch_store::drop_pg_database(server, name).await;
    let value = result?;
    dropped.with_context(|| format!("cannot drop database {name}"))?;
    Ok(value)
}

/// Runs `f` on a fresh, migrated SQLite file in `dir`.
async fn with_sqlite<T>(
    dir: &Path,
    name: &str,
    f: impl AsyncFnOnce(&dyn Storage) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = dir.join(name);
    let storage = downwatch_store::connect(&format!("sqlite://{}", db.display())).await?;
    storage.migrate().await?;
    f(storage.as_ref()).await
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// Removes the bench's temporary directory however the bench ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn import(b: &ImportBench) -> anyhow::Result<String> {
    anyhow::ensure!(
        b.rows > 0 && b.services > 0 && b.days > 0,
        "nothing to measure"
    );
    let pid = std::process::id();
    let dir = TempDir(std::env::temp_dir().join(format!("downwatch-bench-import-{pid}")));
    std::fs::create_dir_all(&dir.0)?;
    let csv = dir.0.join("reports.csv");
    let started = Instant::now();
    let rollups = write_csv(b, &csv)?;
    let generated = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&csv)?.len();

    let started = Instant::now();
    let plan = import::validate(std::fs::File::open(&csv)?, &[])?;
    let validation = started.elapsed().as_secs_f64();
    anyhow::ensure!(plan.rows == b.rows as u64, "validated {} rows", plan.rows);

    let mut results = Vec::new();
    let seconds = with_pg_database(
        &b.server_url,
        &format!("dw_bench_{pid}_import"),
        async |s| timed_import(s, &csv, b).await,
    )
    .await
    .context("PostgreSQL import")?;
    results.push(Measured {
        backend: "PostgreSQL",
        method: "`downwatch import` (COPY, rollups upserted with UNNEST, one transaction)",
        rows: b.rows,
        seconds,
    });
    let sample = b.sample.min(b.rows);
    let seconds = with_pg_database(&b.server_url, &format!("dw_bench_{pid}_rows"), async |s| {
        timed_row_by_row(s, b, sample).await
    })
    .await
    .context("PostgreSQL row by row")?;
    results.push(Measured {
        backend: "PostgreSQL",
        method: "row by row (`insert_reports` of one report: a transaction each)",
        rows: sample,
        seconds,
    });
    let seconds = with_sqlite(&dir.0, "import.db", async |s| {
        timed_import(s, &csv, b).await
    })
    .await
    .context("SQLite import")?;
    results.push(Measured {
        backend: "SQLite",
        method: "`downwatch import` (multi-row INSERTs, one transaction)",
        rows: b.rows,
        seconds,
    });
    let small = (sample / 10).max(1);
    let seconds = with_sqlite(&dir.0, "rows.db", async |s| {
        timed_row_by_row(s, b, small).await
    })
    .await
    .context("SQLite row by row")?;
    results.push(Measured {
        backend: "SQLite",
        method: "row by row (`insert_reports` of one report: a transaction each)",
        rows: small,
        seconds,
    });

    let mut out = String::new();
    let _ = writeln!(out, "## Bulk import\n");
    let _ = writeln!(
        out,
        "{} reports of {} services over {} days ({:.1} MB of CSV, generated in {generated:.1} s); \
         the validation pass alone reads them in {validation:.2} s ({:.0} rows/s). \
         Besides the reports, an import of them writes {} rollup rows \
         ({} minutes, {} hours, {} days, {} hourly facets: {:.2} per report).\n",
        b.rows,
        b.services,
        b.days,
        size as f64 / 1e6,
        b.rows as f64 / validation.max(1e-9),
        rollups.iter().sum::<usize>(),
        rollups[0],
        rollups[1],
        rollups[2],
        rollups[3],
        rollups.iter().sum::<usize>() as f64 / b.rows as f64,
    );
    let _ = writeln!(out, "| backend | method | rows | seconds | rows/s |");
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: |");
    for m in &results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} |",
            m.backend,
            m.method,
            m.rows,
            m.seconds,
            m.rate()
        );
    }
    let ratio = |i: usize, j: usize| results[i].rate() / results[j].rate();
    let pg = results[0].rate();
    let _ = writeln!(
        out,
        "\nImport over row by row: PostgreSQL {:.1}x, SQLite {:.1}x. \
         PostgreSQL import {pg:.0} rows/s against the target of {TARGET_ROWS_PER_SEC:.0}: {}.",
        ratio(0, 1),
        ratio(2, 3),
        if pg >= TARGET_ROWS_PER_SEC {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_generated_file_is_a_valid_import_in_time_order() {
        let b = ImportBench {
            rows: 2_000,
            sample: 10,
            services: 20,
            days: 2,
            server_url: DEFAULT_SERVER.to_owned(),
        };
        let dir = std::env::temp_dir().join(format!("dw-gen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.csv");
        write_csv(&b, &path).unwrap();
        let plan = import::validate(std::fs::File::open(&path).unwrap(), &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(plan.rows, 2_000);
        assert!(plan.new_services().len() > 10);
        let times: Vec<i64> = Generator::new(&b).map(|r| r.at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times[0] == START && *times.last().unwrap() < START + 2 * 86_400);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
