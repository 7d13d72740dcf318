//! Data calls: SOQL queries page by page, with retries, re-login and usage accounting.
//!
//! A query is a [`Query`] cursor advanced by [`SalesforceClient::next_page`]. The first
//! page comes from `/services/data/vXX.X/query?q=…`, the next ones from the
//! `nextRecordsUrl` path the previous page returned; only `done: true` ends it, whatever
//! the page sizes. A 401 `INVALID_SESSION_ID` means the session expired: the client signs
//! in once more and restarts the query from its first page (a query locator belongs to
//! the session that opened it). A second 401 right after is an error, not a loop.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::auth::{login, Grant, Session};
use super::error::{excerpt, ApiError, Redactor, SalesforceError};
use crate::config::{AuthFlow, IngestConfig, OrgConfig};

/// The org's API usage from the last `Sforce-Limit-Info` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitInfo {
    /// Requests used in the rolling 24 hours (may exceed `limit`).
    pub used: u64,
    /// The 24-hour allowance.
    pub limit: u64,
}

impl LimitInfo {
    /// Reads `api-usage=<used>/<limit>` out of a `Sforce-Limit-Info` value, tolerating
    /// other entries (`per-app-api-usage=…`, `api-bursts=…`) before or after it.
    pub fn parse(header: &str) -> Option<Self> {
        let entry = header
            .split([';', ','])
            .map(str::trim)
            .find_map(|entry| entry.strip_prefix("api-usage="))?;
        let (used, limit) = entry.split_once('/')?;
        let limit: String = limit.chars().take_while(char::is_ascii_digit).collect();
        Some(Self {
            used: used.trim().parse().ok()?,
            limit: limit.parse().ok()?,
        })
    }
}

/// A SOQL query being read page by page.
#[derive(Debug)]
pub struct Query {
    soql: String,
    next: Option<String>,
    done: bool,
    /// Whether the query already started over on a new session. A second expiry in the
    /// same query means sessions die faster than the query runs: an error, not a loop.
    renewed: bool,
}

impl Query {
    pub fn new(soql: impl Into<String>) -> Self {
        Self {
            soql: soql.into(),
            next: None,
            done: false,
            renewed: false,
        }
    }
}

/// One page of query results.
#[derive(Debug)]
pub struct Page {
    /// The records exactly as Salesforce sent them.
    pub records: Vec<Box<RawValue>>,
    /// `totalSize`: the number of records the whole query returns.
    pub total_size: u64,
    /// The session expired and the query started again from its first page; records of
    /// earlier pages will come again.
    pub restarted: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    total_size: u64,
    done: bool,
    #[serde(default)]
    next_records_url: Option<String>,
    records: Vec<Box<RawValue>>,
}

/// Why one call failed: a session that expired can be renewed, the rest cannot here.
enum CallError {
    SessionExpired,
    Failed(SalesforceError),
}

/// A client for one org: its credentials, its session and its usage counters.
pub struct SalesforceClient {
    http: reqwest::Client,
    org: OrgConfig,
    grant: Grant,
    api_version: String,
    batch_size: u32,
    max_attempts: usize,
    retry_base: Duration,
    session: Option<Session>,
    /// The org id of the latest session, kept when the session ends so a later failed
    /// sign-in is still reported under the org's id.
    known_org_id: Option<String>,
    /// Data calls made since the client was created (sign-ins excluded).
    pub api_calls: u64,
    /// Sign-ins made since the client was created.
    pub logins: u64,
    /// Retries made since the client was created.
    pub retries: u64,
    /// The latest usage Salesforce reported.
    pub limit_info: Option<LimitInfo>,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("org", &self.org.name)
            .field("api_calls", &self.api_calls)
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    /// Builds a client; reads the org's secrets from their sources.
    pub fn new(config: &IngestConfig, org: &OrgConfig) -> Result<Self, SalesforceError> {
        let resolve = |what: &str, source: &seatwatch_common::SecretRef| {
            source.resolve().map_err(|e| {
                SalesforceError::BadUrl(format!(
                    "org {}: {what} from {}: {e}",
                    org.name,
                    source.describe()
                ))
            })
        };
        org.validate().map_err(SalesforceError::BadUrl)?;
        let required = |what: &str, source: &Option<seatwatch_common::SecretRef>| {
            let source = source
                .as_ref()
                .expect("validate checked the flow's secrets");
            resolve(what, source)
        };
        let login_url = super::auth::check_login_url(&org.login_url)?;
        let grant = match org.flow {
            AuthFlow::Password => Grant::Password {
                consumer_secret: required("consumer_secret", &org.consumer_secret)?,
                password: required("password", &org.password)?,
                security_token: match &org.security_token {
                    Some(source) => Some(resolve("security_token", source)?),
                    None => None,
                },
            },
            AuthFlow::ClientCredentials => {
                super::auth::check_my_domain(&login_url)?;
                Grant::ClientCredentials {
                    consumer_secret: required("consumer_secret", &org.consumer_secret)?,
                }
            }
            AuthFlow::JwtBearer => {
                let pem = required("private_key", &org.private_key)?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
                    .map_err(|e| {
                    SalesforceError::BadUrl(format!(
                        "org {}: private_key is not a PEM RSA private key ({e})",
                        org.name
                    ))
                })?;
                Grant::JwtBearer { key }
            }
        };

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("seatwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SalesforceError::BadUrl(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            org: org.clone(),
            grant,
            api_version: config.api_version.clone(),
            batch_size: config.batch_size,
            max_attempts: config.max_attempts,
            retry_base: Duration::from_millis(config.retry_base_ms),
            session: None,
            known_org_id: None,
            api_calls: 0,
            logins: 0,
            retries: 0,
            limit_info: None,
        })
    }

    pub fn org_name(&self) -> &str {
        &self.org.name
    }

    /// The org id, once signed in (also after the session ended).
    pub fn org_id(&self) -> Option<&str> {
        self.known_org_id.as_deref()
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Signs in unless a session is already held; retries transient failures.
    pub async fn sign_in(&mut self) -> Result<&Session, SalesforceError> {
        if self.session.is_none() {
            let mut delays = self.backoff();
            let session = loop {
                self.logins += 1;
                let attempt = login(&self.http, &self.org, &self.grant).await;
                match attempt {
                    Ok(session) => break session,
                    Err(e) if e.is_retriable() => match delays.next() {
                        Some(delay) => self.wait_before_retry(&e, delay).await,
                        None => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            };
            tracing::info!(org = %self.org.name, org_id = %session.org_id,
                instance = %session.instance_url, "signed in to Salesforce");
            self.known_org_id = Some(session.org_id.clone());
            self.session = Some(session);
        }
        Ok(self.session.as_ref().expect("session was just set"))
    }

    /// Reads the next page of `query`; `None` once the query is done.
    pub async fn next_page(&mut self, query: &mut Query) -> Result<Option<Page>, SalesforceError> {
        if query.done {
            return Ok(None);
        }
        let mut restarted = false;
        loop {
            self.sign_in().await?;
            let url = self.page_url(query)?;
            match self.get_json(url).await {
                Ok(body) => {
                    let page: QueryPage = serde_json::from_slice(&body).map_err(|e| {
                        SalesforceError::Transient(format!("query page is not valid: {e}"))
                    })?;
                    query.done = page.done || page.next_records_url.is_none();
                    query.next = page.next_records_url.filter(|_| !page.done);
                    return Ok(Some(Page {
                        records: page.records,
                        total_size: page.total_size,
                        restarted,
                    }));
                }
                Err(CallError::SessionExpired) if !query.renewed => {
                    // The locator died with the session: start over on a new one.
                    tracing::info!(org = %self.org.name, "session expired, signing in again");
                    self.session = None;
                    query.renewed = true;
                    restarted |= query.next.take().is_some();
                }
                Err(CallError::SessionExpired) => return Err(SalesforceError::SessionLoop),
                Err(CallError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Reads the org's daily API usage from `/limits` (which also counts as a call).
    pub async fn fetch_limits(&mut self) -> Result<LimitInfo, SalesforceError> {
        let body = self
            .get_with_session(&format!("/services/data/v{}/limits", self.api_version))
            .await?;
        let limits: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| SalesforceError::Transient(format!("limits response is not JSON: {e}")))?;
        let daily = &limits["DailyApiRequests"];
        // Older API versions wrote these numbers as strings.
        let number = |v: &serde_json::Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let (Some(max), Some(remaining)) = (number(&daily["Max"]), number(&daily["Remaining"]))
        else {
            return Err(SalesforceError::Transient(
                "limits response has no DailyApiRequests Max/Remaining".into(),
            ));
        };
        let info = LimitInfo {
            used: max.saturating_sub(remaining),
            limit: max,
        };
        self.limit_info = Some(info);
        Ok(info)
    }

    /// A GET of an instance path with a session, signing in again once if it expired.
    async fn get_with_session(&mut self, path: &str) -> Result<Vec<u8>, SalesforceError> {
        let mut renewed = false;
        loop {
            self.sign_in().await?;
            let session = self.session.as_ref().expect("signed in");
            let url = session
                .instance_url
                .join(path)
                .map_err(|e| SalesforceError::BadUrl(e.to_string()))?;
            match self.get_json(url).await {
                Ok(body) => return Ok(body),
                Err(CallError::SessionExpired) if !renewed => {
                    self.session = None;
                    renewed = true;
                }
                Err(CallError::SessionExpired) => return Err(SalesforceError::SessionLoop),
                Err(CallError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Runs a query to its end and returns every record; for small objects and tools.
    pub async fn query_all(&mut self, soql: &str) -> Result<Vec<Box<RawValue>>, SalesforceError> {
        let mut query = Query::new(soql);
        let mut records = Vec::new();
        while let Some(page) = self.next_page(&mut query).await? {
            if page.restarted {
                records.clear();
            }
            records.extend(page.records);
        }
        Ok(records)
    }

    fn page_url(&self, query: &Query) -> Result<Url, SalesforceError> {
        let session = self
            .session
            .as_ref()
            .expect("signed in before building URLs");
        let bad = |e: url::ParseError| SalesforceError::BadUrl(e.to_string());
        match &query.next {
            Some(path) => session.instance_url.join(path).map_err(bad),
            None => {
                let mut url = session
                    .instance_url
                    .join(&format!("/services/data/v{}/query", self.api_version))
                    .map_err(bad)?;
                // A real encoder: `+` in a datetime literal must become %2B.
                url.query_pairs_mut().append_pair("q", &query.soql);
                Ok(url)
            }
        }
    }

    /// One GET with retries on transient failures; returns the JSON body.
    async fn get_json(&mut self, url: Url) -> Result<Vec<u8>, CallError> {
        let mut delays = self.backoff();
        loop {
            match self.get_once(url.clone()).await {
                Err(CallError::Failed(e)) if e.is_retriable() => match delays.next() {
                    Some(delay) => self.wait_before_retry(&e, delay).await,
                    None => return Err(CallError::Failed(e)),
                },
                other => return other,
            }
        }
    }

    async fn get_once(&mut self, url: Url) -> Result<Vec<u8>, CallError> {
        let session = self.session.as_ref().expect("signed in before data calls");
        let redactor = Redactor::new([session.access_token.expose_secret()]);
        let bearer = format!("Bearer {}", session.access_token.expose_secret());
        self.api_calls += 1;
        let sent = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, bearer)
            .header(
                "Sforce-Query-Options",
                format!("batchSize={}", self.batch_size),
            )
            .header("Accept", "application/json")
            .send()
            .await;
        let response = sent.map_err(|e| transient(format!("GET {}: {e}", path_of(&url))))?;

        let status = response.status();
        self.note_limits(response.headers());
        let location = response.headers().get(LOCATION).cloned();
        let body = response
            .bytes()
            .await
            .map_err(|e| transient(format!("reading {}: {e}", path_of(&url))))?;
        let classified = classify(
            status,
            &body,
            location.as_ref().and_then(|v| v.to_str().ok()),
            &url,
        );
        // A body that echoes the request must not carry the session token into a log.
        classified
            .map(|()| body.to_vec())
            .map_err(|error| match error {
                CallError::Failed(error) => CallError::Failed(redactor.error(error)),
                expired => expired,
            })
    }

    fn note_limits(&mut self, headers: &HeaderMap) {
        let info = headers
            .get("Sforce-Limit-Info")
            .and_then(|v| v.to_str().ok())
            .and_then(LimitInfo::parse);
        if info.is_some() {
            self.limit_info = info;
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1))
            .build()
    }

    async fn wait_before_retry(&mut self, error: &SalesforceError, delay: Duration) {
        self.retries += 1;
        tracing::warn!(org = %self.org.name, error = %error, retry_in_ms = delay.as_millis() as u64,
            "Salesforce call failed, retrying");
        tokio::time::sleep(delay).await;
    }
}

fn transient(message: String) -> CallError {
    CallError::Failed(SalesforceError::Transient(message))
}

fn path_of(url: &Url) -> &str {
    url.path()
}

/// Sorts a data-call response into success, an expired session or a classified error.
fn classify(
    status: StatusCode,
    body: &[u8],
    location: Option<&str>,
    url: &Url,
) -> Result<(), CallError> {
    if status.is_success() {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Ok(()),
            Err(_) => Err(transient(format!(
                "HTTP {status} with a body that is not JSON: {}",
                excerpt(body)
            ))),
        };
    }
    if status.is_redirection() {
        return Err(CallError::Failed(SalesforceError::Redirect {
            url: path_of(url).to_owned(),
            status: status.as_u16(),
            location: location.unwrap_or("").to_owned(),
        }));
    }

    // Error bodies are JSON arrays; anything else (the edge's HTML, a proxy page) is
    // judged by status alone.
    let first = serde_json::from_slice::<Vec<ApiError>>(body)
        .ok()
        .and_then(|v| v.into_iter().next());
    let Some(api) = first else {
        return Err(match status.as_u16() {
            401 => CallError::SessionExpired,
            400..=499 if ![406, 408, 420, 429].contains(&status.as_u16()) => {
                CallError::Failed(SalesforceError::Refused {
                    status: status.as_u16(),
                    code: "UNKNOWN".into(),
                    message: excerpt(body),
                })
            }
            _ => transient(format!("HTTP {status}: {}", excerpt(body))),
        });
    };

    match (status.as_u16(), api.code.as_str()) {
        (401, "INVALID_SESSION_ID")
            if api.message.contains("not valid for use with the REST API") =>
        {
            Err(CallError::Failed(SalesforceError::SessionNotValidForRest))
        }
        (401, _) => Err(CallError::SessionExpired),
        (_, "REQUEST_LIMIT_EXCEEDED") if api.message.contains("Concurrent") => {
            Err(transient(format!("{}: {}", api.code, api.message)))
        }
        (_, "REQUEST_LIMIT_EXCEEDED") => Err(CallError::Failed(SalesforceError::RequestLimit {
            message: api.message,
        })),
        (s, _) if s >= 500 || [406, 408, 420, 429].contains(&s) => Err(transient(format!(
            "HTTP {status} {}: {}",
            api.code, api.message
        ))),
        (s, _) => Err(CallError::Failed(SalesforceError::Refused {
            status: s,
            code: api.code,
            message: api.message,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_is_read_tolerantly() {
        let parse = LimitInfo::parse;
        assert_eq!(
            parse("api-usage=25/5000"),
            Some(LimitInfo {
                used: 25,
                limit: 5000
            })
        );
        assert_eq!(
            parse("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)"),
            Some(LimitInfo {
                used: 25,
                limit: 5000
            })
        );
        assert_eq!(
            parse("api-usage=110018/100000; api-bursts=1/750"),
            Some(LimitInfo {
                used: 110_018,
                limit: 100_000
            })
        );
        assert_eq!(
            parse("per-app-api-usage=17/250(appName=x); api-usage=30/5000"),
            Some(LimitInfo {
                used: 30,
                limit: 5000
            })
        );
        assert_eq!(parse("per-app-api-usage=17/250(appName=x)"), None);
        assert_eq!(parse("garbage"), None);
    }

    fn fixture(name: &str) -> (StatusCode, Vec<u8>) {
        let path = format!(
            "{}/../fixtures/salesforce/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let status = StatusCode::from_u16(f["status"].as_u64().unwrap() as u16).unwrap();
        let body = match &f["body"] {
            serde_json::Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap(),
        };
        (status, body)
    }

    fn class_of(name: &str) -> String {
        let url = Url::parse("https://x.example/services/data/v62.0/query").unwrap();
        let (status, body) = fixture(name);
        match classify(status, &body, None, &url) {
            Ok(()) => "ok".into(),
            Err(CallError::SessionExpired) => "expired".into(),
            Err(CallError::Failed(e)) if e.is_retriable() => format!("retry:{}", e.class()),
            Err(CallError::Failed(e)) => format!("stop:{}", e.class()),
        }
    }

    #[test]
    fn every_data_error_fixture_is_classified() {
        let expected = [
            ("error_api_disabled_for_org.json", "stop:config"),
            ("error_edge_420_html.json", "retry:transient"),
            ("error_invalid_field.json", "stop:config"),
            ("error_invalid_session_id.json", "expired"),
            (
                "error_invalid_session_id_not_valid_for_rest.json",
                "stop:config",
            ),
            ("error_invalid_type.json", "stop:config"),
            ("error_malformed_query.json", "stop:config"),
            ("error_query_timeout.json", "stop:config"),
            ("error_request_limit_exceeded.json", "stop:quota"),
            (
                "error_request_limit_exceeded_concurrent.json",
                "retry:transient",
            ),
            ("error_server_unavailable.json", "retry:transient"),
        ];
        for (name, class) in expected {
            assert_eq!(class_of(name), class, "{name}");
        }
    }

    #[test]
    fn every_success_fixture_is_a_valid_page_or_body() {
        for name in [
            "query_loginhistory.json",
            "query_packagelicense.json",
            "query_permissionsetlicense.json",
            "query_permissionsetlicenseassign.json",
            "query_user_with_profile_license.json",
            "query_userlicense_page1.json",
            "query_userlicense_page2.json",
            "query_userpackagelicense.json",
        ] {
            let (status, body) = fixture(name);
            assert_eq!(class_of(name), "ok");
            let page: QueryPage = serde_json::from_slice(&body).unwrap();
            assert!(status.is_success());
            assert_eq!(page.done, page.next_records_url.is_none(), "{name}");
            assert!(!page.records.is_empty(), "{name}");
        }
        for name in ["limits.json", "versions.json"] {
            assert_eq!(class_of(name), "ok", "{name}");
        }
    }

    #[test]
    fn refused_messages_carry_a_fix() {
        let url = Url::parse("https://x.example/q").unwrap();
        let (status, body) = fixture("error_invalid_type.json");
        let Err(CallError::Failed(e)) = classify(status, &body, None, &url) else {
            panic!("expected a refusal")
        };
        assert!(
            e.to_string().contains("View Setup and Configuration"),
            "{e}"
        );
    }
}
