//! A client for the two calls of the Confluent Schema Registry API that seatwatch needs:
//! register a schema under a subject (`POST /subjects/{subject}/versions`) and fetch a
//! schema by id (`GET /schemas/ids/{id}`). Redpanda's built-in registry speaks the same
//! API.
//!
//! Why not the `schema_registry_converter` crate: we evaluated it (6.0.0, and 4.10/5.1 for
//! older toolchains) and it does not fit this workspace. It builds on reqwest 0.13, whose
//! `rustls` feature brings the aws-lc-rs crypto provider (C code built with cmake), next to
//! the workspace's reqwest 0.12 with ring: two HTTP stacks and two TLS providers for two
//! requests. Its default features select native-tls (OpenSSL), which the workspace avoids.
//! Its current release needs Rust 1.88 while the workspace promises 1.85, and its Avro
//! half targets apache-avro 0.22, not the 0.21 our codecs use, so only its HTTP calls would
//! be usable. Those two calls are this module.
//!
//! Every request sends and accepts `application/vnd.schemaregistry.v1+json`. Errors say
//! whether retrying can help ([`RegistryError::is_retriable`]); the basic-auth password
//! is held in a [`SecretString`] and is exposed only on the line that hands it to reqwest.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

/// The media type of the registry API, for requests and responses.
pub const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The largest response body read from the registry. Schemas are a few kilobytes; the
/// bound keeps a misbehaving endpoint from filling memory.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The registry's error code for an id it does not know.
const SCHEMA_NOT_FOUND: i64 = 40403;

/// The timeout of one registry request unless [`RegistryClient::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema's id in the registry, as the Confluent wire format carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The registry subject of a topic's values under the topic-name strategy:
/// `<topic>-value`.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// `url` fit for a message: a user name and password in it are replaced by `…`.
fn without_credentials(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) if parsed.username().is_empty() && parsed.password().is_none() => {
            url.to_string()
        }
        Ok(mut parsed) => {
            // Neither setter fails on a URL with credentials.
            let _ = parsed.set_username("…");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        // Unparseable: whatever comes before the last `@` may be credentials.
        Err(_) => match url.rsplit_once('@') {
            Some((_, rest)) => format!("…@{rest}"),
            None => url.to_string(),
        },
    }
}

/// A registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("schema registry URL {url:?} is invalid: {reason}; expected http(s)://host:port")]
    InvalidUrl { url: String, reason: String },
    #[error("HTTP client setup failed: {0}")]
    Client(String),
    #[error("schema registry at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "schema registry rejected the schema for subject {subject} as incompatible with its \
         earlier versions: {message}; publish a compatible version (schemas/README.md)"
    )]
    Incompatible { subject: String, message: String },
    #[error("schema id {id} is not known to the schema registry")]
    SchemaNotFound { id: SchemaId },
    #[error(
        "schema registry answered {request} with HTTP {status} (error code {code:?}): {message}"
    )]
    Status {
        request: String,
        status: u16,
        code: Option<i64>,
        message: String,
    },
    #[error("schema registry answered {request} with a body seatwatch cannot read: {reason}")]
    Malformed { request: String, reason: String },
    #[error("schema id {id} is a {schema_type} schema, not Avro")]
    NotAvro { id: SchemaId, schema_type: String },
}

impl RegistryError {
    /// Whether the same request may succeed later: the registry was unreachable, busy or
    /// failed internally. Everything else needs a person (config, schema, credentials).
    pub fn is_retriable(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..600).contains(status)
            }
            _ => false,
        }
    }
}

/// An HTTP client for one schema registry.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    basic_auth: Option<(String, SecretString)>,
}

impl RegistryClient {
    /// A client for the registry at `url` (`http(s)://host:port`, optionally with a path
    /// prefix), with [`DEFAULT_TIMEOUT`] per request.
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: without_credentials(url),
            reason,
        };
        let base = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("only http and https URLs are supported".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid(
                "credentials in the URL would be logged; use with_basic_auth".into(),
            ));
        }
        Ok(Self {
            http: build_http(DEFAULT_TIMEOUT)?,
            base,
            basic_auth: None,
        })
    }

    /// Sets the timeout of each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, RegistryError> {
        self.http = build_http(timeout)?;
        Ok(self)
    }

    /// Authenticates every request with HTTP basic auth (Confluent Cloud: API key and
    /// secret).
    pub fn with_basic_auth(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.basic_auth = Some((username.into(), password));
        self
    }

    /// The registry's base URL.
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// Registers `schema` (the `.avsc` text) under `subject`, or finds it registered
    /// already, and returns its id. Registering the same schema again returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        #[derive(Serialize)]
        struct Request<'a> {
            schema: &'a str,
        }
        #[derive(Deserialize)]
        struct Response {
            id: SchemaId,
        }

        let request = format!("registration under subject {subject}");
        let url = self.endpoint(&["subjects", subject, "versions"])?;
        let body = serde_json::to_vec(&Request { schema })
            .map_err(|e| RegistryError::Client(e.to_string()))?;
        let (status, bytes) = self.send(&request, Method::POST, url, Some(body)).await?;
        if status == StatusCode::CONFLICT {
            return Err(RegistryError::Incompatible {
                subject: subject.to_string(),
                message: error_body(&bytes).1,
            });
        }
        let response: Response = parse(&request, status, &bytes)?;
        Ok(response.id)
    }

    /// The text of the schema with id `id`.
    pub async fn schema(&self, id: SchemaId) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct Response {
            schema: String,
            #[serde(default, rename = "schemaType")]
            schema_type: Option<String>,
        }

        let request = format!("lookup of schema id {id}");
        let url = self.endpoint(&["schemas", "ids", &id.to_string()])?;
        let (status, bytes) = self.send(&request, Method::GET, url, None).await?;
        // Only the registry's own "schema not found" counts: a bare 404 more likely means
        // a wrong URL, and treating it as an unknown id would be remembered for good.
        if status == StatusCode::NOT_FOUND && error_body(&bytes).0 == Some(SCHEMA_NOT_FOUND) {
            return Err(RegistryError::SchemaNotFound { id });
        }
        let response: Response = parse(&request, status, &bytes)?;
        match response.schema_type {
            Some(kind) if !kind.eq_ignore_ascii_case("AVRO") => Err(RegistryError::NotAvro {
                id,
                schema_type: kind,
            }),
            _ => Ok(response.schema),
        }
    }

    /// The base URL with `segments` appended, each percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Result<Url, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::InvalidUrl {
                url: self.base.to_string(),
                reason: "cannot carry a path".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request and reads the (bounded) body.
    async fn send(
        &self,
        request_name: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), RegistryError> {
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            url: self.base.to_string(),
            reason: e.without_url().to_string(),
        };
        let media_type = HeaderValue::from_static(REGISTRY_CONTENT_TYPE);
        let mut request = self
            .http
            .request(method, url)
            .header(ACCEPT, media_type.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, media_type).body(body);
        }
        if let Some((username, password)) = &self.basic_auth {
            request = request.basic_auth(username, Some(password.expose_secret()));
        }

        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(RegistryError::Malformed {
                    request: request_name.to_string(),
                    reason: format!("response is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes))
    }
}

fn build_http(timeout: Duration) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| RegistryError::Client(e.to_string()))
}

/// Reads a successful response's JSON, or turns an error status into [`RegistryError`].
fn parse<T: for<'de> Deserialize<'de>>(
    request: &str,
    status: StatusCode,
    bytes: &[u8],
) -> Result<T, RegistryError> {
    if !status.is_success() {
        let (code, message) = error_body(bytes);
        return Err(RegistryError::Status {
            request: request.to_string(),
            status: status.as_u16(),
            code,
            message,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Malformed {
        request: request.to_string(),
        reason: e.to_string(),
    })
}

/// The registry's error body, `{"error_code": 40403, "message": "..."}`, or what can be
/// shown of a body that is not one.
fn error_body(bytes: &[u8]) -> (Option<i64>, String) {
    #[derive(Deserialize)]
    struct ErrorBody {
        error_code: Option<i64>,
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (body.error_code, body.message.unwrap_or_default()),
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            (None, text.chars().take(200).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_segments_encoded() {
        assert!(RegistryClient::new("not a url").is_err());
        assert!(RegistryClient::new("ftp://registry:21").is_err());
        assert!(RegistryClient::new("http://user:pw@registry:8081").is_err());
        for with_secret in [
            "http://user:s3cret@registry:8081",
            "http://u:s3cret@bad host",
        ] {
            let error = RegistryClient::new(with_secret).unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
            assert!(
                error.contains("registry") || error.contains("bad host"),
                "{error}"
            );
        }

        let client = RegistryClient::new("http://registry:8081/prefix/").unwrap();
        let url = client
            .endpoint(&["subjects", "prod.seats/odd-value", "versions"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://registry:8081/prefix/subjects/prod.seats%2Fodd-value/versions"
        );
        assert_eq!(
            value_subject("prod.seats.user-state"),
            "prod.seats.user-state-value"
        );
    }

    #[test]
    fn retriable_errors_are_the_transient_ones() {
        let status = |status| RegistryError::Status {
            request: "r".into(),
            status,
            code: None,
            message: String::new(),
        };
        assert!(status(503).is_retriable());
        assert!(status(429).is_retriable());
        assert!(!status(401).is_retriable());
        assert!(!RegistryError::SchemaNotFound { id: SchemaId(1) }.is_retriable());
    }
}
