//! The ingest pipeline: who a client is (a salted hash), whether their
//! report counts (de-duplication through the window store), and the batcher
//! that commits reports in groups before anyone is told they are stored.

mod batcher;
mod client;
pub mod queue;

pub use batcher::{
    Accepted, CommitError, Ingest, IngestConfig, IngestMetrics, IngestWorkers, Submission,
    SubmitError,
};
pub use client::{ClientHasher, ClientIdentity, client_key};
