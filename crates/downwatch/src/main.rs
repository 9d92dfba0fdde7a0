//! `downwatch`: crowdsourced outage reports, spike detection, incident history.

use clap::{Parser, Subcommand};
use downwatch::config::Settings;
use downwatch::startup::{Application, connect_storage};
use std::process::ExitCode;

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
enum Command {
    /// Run the server: API, dashboard and detector (configured by environment).
    Serve,
    /// Apply migrations to the configured database and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("downwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
