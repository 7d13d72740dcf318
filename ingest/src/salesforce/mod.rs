//! The Salesforce REST client: sign-in, queries with pagination, error classification and
//! API-usage accounting.
//!
//! It speaks only what seatwatch needs, and follows Salesforce's documented behaviour
//! rather than the happy path: no expiry comes with a token (so a 401 triggers one
//! re-login), only `done` ends a query, error bodies are JSON arrays (or HTML from the
//! edge), and every data response reports API usage in `Sforce-Limit-Info`.

mod api;
mod auth;
mod error;

pub use api::{LimitInfo, Page, Query, SalesforceClient};
pub use auth::{check_login_url, Session};
pub use error::{auth_advice, Advice, ErrorClass, SalesforceError};
