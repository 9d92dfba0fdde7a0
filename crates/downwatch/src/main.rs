//! `downwatch`: crowdsourced outage reports, spike detection, incident history.

use clap::{Parser, Subcommand};
use downwatch::config::Settings;
use downwatch::startup::{Application, connect_storage};
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc: the ingest path allocates per request (HTTP, JSON, batches); glibc
// malloc was a tenth of its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "downwatch",
    version,
    about = "Crowdsourced outage reports: is it down, or just me?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Detection quality on synthetic series and the cost of a live tick
    /// (the tables of docs/detection.md).
    Detect {
        /// A small evaluation (seconds) instead of the published one.
        #[arg(long)]
        quick: bool,
        /// Services in the engine tick measurement.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        services: u32,
        /// Services in the full live tick measurement (embedded mode).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        live_services: u32,
    },
    /// `downwatch import` into PostgreSQL (a throwaway database) and SQLite,
    /// against storing the same reports one at a time.
    Import {
        /// Rows of the generated import file.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        rows: u64,
        /// Reports stored one at a time on PostgreSQL (a tenth on SQLite).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        sample: u64,
        /// Services the reports are spread over.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        services: u64,
        /// Days the reports span.
        #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(i64).range(1..=3650))]
        days: i64,
        /// The PostgreSQL server (a URL to any database on it); default
        /// `DATABASE_URL` when it names PostgreSQL, else the local server.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Series from the rollups against the same buckets from the raw
    /// reports, over a year for 100 services in PostgreSQL (a throwaway
    /// database), while ingestion runs.
    Read {
        /// Reports per service over the year.
        #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        per_service: u32,
        /// Services.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        services: u32,
        /// Reports a second ingested during the reads.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        ingest: u32,
        /// The PostgreSQL server (a URL to any database on it).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Report submission over HTTP (wrk): Downwatch in PostgreSQL + Redis
    /// and embedded modes against a minimal actix-web endpoint that parses
    /// the same body and stores nothing; then every 201 is looked up.
    Ingest {
        /// Seconds of the measured phase (and of the overload phase).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// wrk connections in the measured phase (people pressing at once).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        connections: u32,
        /// wrk threads.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        threads: u32,
        /// Connections of the overload phase as a multiple of --connections (1: none).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        overload: u32,
        /// HTTP workers of each server (the same for all). One by default:
        /// on a small machine that also runs PostgreSQL, Redis and wrk, more
        /// threads than cores cost more in switching than they give.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        workers: u64,
        /// Only this mode (default both).
        #[arg(long, value_parser = ["production", "embedded"])]
        only: Option<String>,
        /// The PostgreSQL server (a URL to any database on it).
        #[arg(long)]
        database_url: Option<String>,
        /// The Redis server.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
    },
    /// The baseline endpoint of `bench ingest` (run by it as a child process).
    #[command(hide = true)]
    MinimalServer,
}

#[derive(Subcommand)]
enum Command {
    /// Performance and quality benchmarks, printed as Markdown.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run the server: API, dashboard and detector (configured by environment).
    Serve,
    /// Apply migrations to the configured database and exit.
    Migrate,
    /// Bulk-load historical reports from a CSV file with the header
    /// service,problem,country,city,reported_at (columns in any order; empty
    /// country and city allowed; times RFC 3339 or `YYYY-MM-DD HH:MM:SS` UTC).
    /// Unknown services are created and new problem kinds added to services;
    /// a bad row is named by line and field and nothing of the file is
    /// stored. Prints a JSON summary: rows, services_created, problems_added
    /// (kinds added to services that existed). The file is loaded in one
    /// transaction: on SQLite that holds the write lock throughout, so run
    /// it while the server is stopped or quiet.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Run the detector over stored history and write the incidents it finds
    /// (replacing those it recomputes; running it again changes nothing).
    Detect {
        /// Start: RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` (UTC).
        #[arg(long)]
        from: String,
        /// End (exclusive), in the same forms.
        #[arg(long)]
        to: String,
        /// Only this service (its slug); default every service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Generate a scenario's reports (a bundled one: worldwide-messaging,
    /// regional-europe, small-service-partial, quiet-week, demo; or a file,
    /// see docs/scenarios.md) and send them to a running server as its
    /// clock reaches them (`--target`), or write them as an import file
    /// (`--csv`). Prints a JSON summary.
    Replay {
        /// A bundled scenario's name, or a scenario file.
        scenario: String,
        /// The server to send the reports to (its base URL). It must trust
        /// this machine's X-Forwarded-For (DOWNWATCH_TRUSTED_PROXIES).
        #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
        target: Option<String>,
        /// Write the reports to this import file instead (`-`: standard output).
        #[arg(long)]
        csv: Option<PathBuf>,
        /// How fast the server's clock runs: 1 for the system clock, N for a
        /// server started with DOWNWATCH_CLOCK=…@N (0.01 to 10000).
        #[arg(long, default_value_t = 1.0, value_parser = downwatch::replay::parse_speed)]
        speed: f64,
        /// The scenario's day 0: a time, `now`, or `now-14d` (day 14 is now);
        /// default the scenario's own start. With --target, `now` is the
        /// server's clock.
        #[arg(long)]
        start: Option<String>,
        /// Only from this offset from day 0 (e.g. `14d 8h`).
        #[arg(long)]
        from: Option<String>,
        /// Only until this offset from day 0.
        #[arg(long)]
        until: Option<String>,
        /// Reports in flight at once.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
        concurrency: u32,
        /// Lets the replay create the scenario's services the server lacks
        /// (and add problem kinds).
        #[arg(long, env = "DOWNWATCH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// The embedded server with weeks of generated history, then a live
    /// outage on an accelerated clock to watch on the dashboard.
    Demo {
        /// Where the dashboard listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Keep the data in this new SQLite file (default: a temporary file,
        /// deleted at the end).
        #[arg(long)]
        database: Option<PathBuf>,
        /// How much faster than real time the demo's clock runs.
        #[arg(long, default_value_t = 20.0)]
        speed: f64,
        /// Days of generated history before the live outage (15 to 60: the
        /// detector learns from 14).
        #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(i64).range(15..=60))]
        history_days: i64,
        /// Stop once the live incident has resolved.
        #[arg(long)]
        exit: bool,
    },
    /// Run the detector on a bare series (CSV with the header timestamp,count
    /// or timestamp,value) and print its incidents, one JSON object a line.
    DetectSeries {
        /// The series file; `-` reads standard input.
        file: PathBuf,
        /// Seconds between rows; coarser buckets are spread over their minutes.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=86_400))]
        step: i64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DetectSeries { file, step } = &cli.command {
        return match detect_series(file, *step) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("downwatch: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Replay {
        scenario,
        target,
        csv,
        speed,
        start,
        from,
        until,
        concurrency,
        admin_token,
    } = &cli.command
    {
        let args = downwatch::replay::Args {
            scenario: scenario.clone(),
            target: target.clone(),
            csv: csv.clone(),
            speed: *speed,
            start: start.clone(),
            from: from.clone(),
            until: until.clone(),
            concurrency: *concurrency as usize,
            admin_token: admin_token.clone(),
        };
        return match downwatch::replay::run(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("downwatch: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Demo {
        bind,
        database,
        speed,
        history_days,
        exit,
    } = &cli.command
    {
        // The demo says itself that its clock is simulated.
        let filter = std::env::var("RUST_LOG")
            .unwrap_or_else(|_| "warn,downwatch::startup=error".to_owned());
        downwatch::telemetry::init(downwatch::config::LogFormat::Text, &filter);
        let opts = downwatch::demo::DemoOptions {
            bind: *bind,
            database: database.clone(),
            speed: *speed,
            history_days: *history_days,
            exit_when_done: *exit,
        };
        return match downwatch::demo::run(&opts).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("downwatch: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Bench { what } = &cli.command {
        return match bench(what).await {
            Ok(table) => {
                #[allow(clippy::print_stdout)]
                {
                    println!("{table}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("downwatch: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("downwatch: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    downwatch::telemetry::init(settings.log_format, &settings.log_filter);
    let result = match cli.command {
        Command::Serve => serve(&settings).await,
        Command::Migrate => connect_storage(&settings).await.map(|s| {
            tracing::info!(database = s.backend(), "migrations applied");
        }),
        Command::Detect { from, to, service } => detect(&settings, &from, &to, service).await,
        Command::Import { file } => import(&settings, &file).await,
        Command::DetectSeries { .. }
        | Command::Bench { .. }
        | Command::Replay { .. }
        | Command::Demo { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("downwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a benchmark; its Markdown tables are printed by the caller.
async fn bench(what: &BenchCommand) -> anyhow::Result<String> {
    use downwatch::bench_import::DEFAULT_SERVER;
    // The PostgreSQL server of a bench: the flag, else a PostgreSQL
    // DATABASE_URL, else the local server.
    let server = |flag: &Option<String>| {
        flag.clone()
            .or_else(|| {
                std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
            })
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    };
    match what {
        BenchCommand::Detect {
            quick,
            services,
            live_services,
        } => {
            downwatch::bench::detect(&downwatch::bench::DetectBench {
                quick: *quick,
                services: *services as usize,
                live_services: *live_services as usize,
            })
            .await
        }
        BenchCommand::Import {
            rows,
            sample,
            services,
            days,
            database_url,
        } => {
            downwatch::bench_import::import(&downwatch::bench_import::ImportBench {
                rows: *rows as usize,
                sample: *sample as usize,
                services: *services as usize,
                days: *days,
                server_url: server(database_url),
            })
            .await
        }
        BenchCommand::Read {
            per_service,
            services,
            ingest,
            database_url,
        } => {
            downwatch::bench_read::read(&downwatch::bench_read::ReadBench {
                database_url: server(database_url),
                services: *services,
                per_service: *per_service,
                ingest_per_sec: *ingest,
            })
            .await
        }
        BenchCommand::Ingest {
            seconds,
            connections,
            threads,
            overload,
            workers,
            only,
            database_url,
            redis_url,
        } => {
            downwatch::bench_ingest::ingest(&downwatch::bench_ingest::IngestBench {
                duration: std::time::Duration::from_secs(*seconds),
                connections: *connections,
                threads: *threads,
                overload: *overload,
                workers: *workers as usize,
                database_url: server(database_url),
                redis_url: redis_url.clone(),
                production: only.as_deref() != Some("embedded"),
                embedded: only.as_deref() != Some("production"),
            })
            .await
        }
        BenchCommand::MinimalServer => downwatch::bench_ingest::minimal::serve()
            .await
            .map(|()| String::new()),
    }
}

fn detect_series(file: &std::path::Path, step: i64) -> anyhow::Result<()> {
    use anyhow::Context;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if file.as_os_str() == "-" {
        downwatch::detect_series::run(std::io::stdin().lock(), "stdin", step, &mut out)?;
    } else {
        let name = file
            .file_stem()
            .map_or_else(|| "series".to_owned(), |s| s.to_string_lossy().into_owned());
        let input =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        downwatch::detect_series::run(std::io::BufReader::new(input), &name, step, &mut out)
            .with_context(|| format!("{}", file.display()))?;
    }
    Ok(())
}

async fn detect(
    settings: &Settings,
    from: &str,
    to: &str,
    service: Option<String>,
) -> anyhow::Result<()> {
    let storage = connect_storage(settings).await?;
    let summary = downwatch::detect::run(storage.as_ref(), from, to, service.as_deref()).await?;
    tracing::info!(
        services = summary.services,
        incidents = summary.incidents,
        replaced = summary.replaced,
        "detection over history done"
    );
    // The result on stdout too, for scripts.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{{\"services\":{},\"incidents\":{},\"replaced\":{}}}",
            summary.services, summary.incidents, summary.replaced
        );
    }
    Ok(())
}

async fn import(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let storage = connect_storage(settings).await?;
    let summary = downwatch::import::run(storage.as_ref(), file).await?;
    tracing::info!(
        rows = summary.rows,
        services_created = summary.services_created,
        problems_added = summary.problems_added,
        "import done"
    );
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
