//! Logs through `tracing`: human-readable by default, JSON for collectors.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// `filter` was checked when the settings were read.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
