//! Service plumbing shared by seatwatch's three services and the umbrella binary.
//!
//! This crate owns only what every service needs in the same shape: Kafka client
//! configuration and topic names, configuration loading, secrets, telemetry, the
//! health and metrics HTTP server, and shutdown. It knows nothing about Salesforce,
//! seat state or alerts; those live in the service crates.

pub mod config;
pub mod http;
pub mod kafka;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use secret::{SecretRef, SecretString};
pub use shutdown::Shutdown;
