//! The one error type of the simulator: what can stop it from starting or serving.
//!
//! Every variant says who must act. Bind and serve failures are about the host (a port in use,
//! a bad address); org file and setting failures are the operator's to fix, and the message
//! says how. Errors a client sees over HTTP are responses, not this type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the simulator could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port or another local address")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The org file could not be read.
    #[error("cannot read the org file {path}: {source}; check the path and its permissions")]
    OrgFileUnreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The org file was read but does not describe a valid org.
    #[error(
        "the org file {path} is not a valid org: {reason}; fix the file (the format is in \
         simulator/README.md) or start from the output of --dump-org"
    )]
    OrgFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location when known.
        reason: String,
    },
    /// A setting is out of range or inconsistent with the org.
    #[error("invalid simulator setting: {0}")]
    InvalidConfig(String),
    /// The HTTP server failed while serving.
    #[error("the simulator's HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The org could not be written as JSON.
    #[error("cannot write the org as JSON: {0}")]
    Dump(#[source] serde_json::Error),
}
