//! One module per resource; each exposes `config` so the server setup
//! reads like a table of contents.

pub mod chart;
pub mod feeds;
pub mod health;
pub mod incidents;
pub mod reports;
pub mod series;
pub mod services;
pub mod status;
pub mod stream;
pub mod webhooks;
