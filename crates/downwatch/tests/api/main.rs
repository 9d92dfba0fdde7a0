//! The behavioural suite: every test runs against the embedded mode (SQLite,
//! in-process windows) and the production mode (PostgreSQL, Redis).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod detector;
mod faults;
mod feeds;
mod fuzz;
mod helpers;
mod history;
mod import;
mod openapi;
mod process;
mod read;
mod reports;
mod scenarios;
mod series;
mod services;
mod system;
mod webhooks;
