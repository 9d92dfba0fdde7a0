//! The `downwatch` binary's library half: configuration, wiring and the
//! commands, so integration tests can start real servers in process.

pub mod bench;
pub mod bench_import;
pub mod bench_ingest;
pub mod bench_read;
pub mod catalogue;
pub mod config;
pub mod demo;
pub mod detect;
pub mod detect_series;
pub mod import;
pub mod replay;
pub mod scenario;
pub mod startup;
pub mod telemetry;
