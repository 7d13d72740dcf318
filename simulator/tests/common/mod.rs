//! Helpers shared by the simulator's HTTP tests: starting a simulator on loopback port 0,
//! logging in, querying, and comparing answers with the recorded fixtures.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response};
use seatwatch_simulator::{start, Credentials, RunningSimulator, SimulatorConfig};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The API version the tests speak.
pub const VERSION: &str = "v62.0";

/// Directory of the recorded Salesforce exchanges.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/salesforce/");

/// A running simulator and a client that never follows redirects.
pub struct Sim {
    pub running: RunningSimulator,
    pub client: Client,
    pub base: String,
}

impl Sim {
    /// Starts a simulator with the given settings.
    pub async fn start(config: SimulatorConfig) -> Self {
        let running = start(config, CancellationToken::new())
            .await
            .expect("simulator starts");
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds");
        let base = running.base_url();
        Self {
            running,
            client,
            base,
        }
    }

    /// Starts a simulator with the test defaults.
    pub async fn default() -> Self {
        Self::start(SimulatorConfig::for_tests()).await
    }

    /// Posts a raw body to the token endpoint.
    pub async fn post_token(&self, content_type: &str, body: impl Into<String>) -> Response {
        self.client
            .post(format!("{}/services/oauth2/token", self.base))
            .header(CONTENT_TYPE, content_type)
            .body(body.into())
            .send()
            .await
            .expect("token request is answered")
    }

    /// Logs in with the demo credentials and returns the access token.
    pub async fn login(&self) -> String {
        self.login_as(&Credentials::demo()).await
    }

    /// Logs in with the given credentials and returns the access token.
    pub async fn login_as(&self, creds: &Credentials) -> String {
        let response = self.post_token(FORM, password_form(creds, None)).await;
        assert_eq!(response.status(), 200, "login succeeds");
        let body: Value = response.json().await.expect("token body is JSON");
        body["access_token"]
            .as_str()
            .expect("access_token is a string")
            .to_owned()
    }

    /// Runs a SOQL query (encoded properly) with optional extra headers.
    pub async fn query(&self, token: &str, soql: &str) -> Response {
        self.query_with(token, soql, &[]).await
    }

    pub async fn query_with(&self, token: &str, soql: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .get(format!("{}/services/data/{VERSION}/query", self.base))
            .query(&[("q", soql)])
            .bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("query is answered")
    }

    /// GETs a path (such as a nextRecordsUrl) with a bearer token.
    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request is answered")
    }

    /// Runs a query that must succeed and returns its first page.
    pub async fn query_ok(&self, token: &str, soql: &str) -> Value {
        let response = self.query(token, soql).await;
        let status = response.status();
        let body: Value = response.json().await.expect("query body is JSON");
        assert_eq!(status, 200, "query {soql} failed: {body}");
        body
    }

    /// Runs a query and follows nextRecordsUrl to the end; returns every page.
    pub async fn query_all_pages(&self, token: &str, soql: &str) -> Vec<Value> {
        let mut pages = vec![self.query_ok(token, soql).await];
        while let Some(next) = pages.last().and_then(|p| p["nextRecordsUrl"].as_str()) {
            let next = next.to_owned();
            let response = self.get(token, &next).await;
            assert_eq!(response.status(), 200);
            pages.push(response.json().await.expect("page body is JSON"));
        }
        pages
    }
}

/// The form content type.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// A correctly encoded password-grant form; `password` overrides password+token.
pub fn password_form(creds: &Credentials, password: Option<&str>) -> String {
    let joined = format!(
        "{}{}",
        creds.password.expose_secret(),
        creds.security_token.expose_secret()
    );
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "password")
        .append_pair("client_id", &creds.consumer_key)
        .append_pair("client_secret", creds.consumer_secret.expose_secret())
        .append_pair("username", &creds.username)
        .append_pair("password", password.unwrap_or(&joined))
        .finish()
}

/// Reads a fixture file.
pub fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts that a response has the fixture's status, Content-Type and (JSON-equal) body.
pub async fn assert_matches_fixture(response: Response, name: &str) {
    let want = fixture(name);
    assert_eq!(
        u64::from(response.status().as_u16()),
        want["status"],
        "{name}: status"
    );
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        want["headers"]["Content-Type"].as_str(),
        "{name}: content type"
    );
    let text = response.text().await.expect("body is readable");
    match &want["body"] {
        Value::String(html) => assert_eq!(&text, html, "{name}: body"),
        body => {
            let got: Value = serde_json::from_str(&text).expect("body is JSON");
            assert_eq!(&got, body, "{name}: body");
        }
    }
}

/// The `Sforce-Limit-Info` usage of a response, as (used, limit).
pub fn limit_info(response: &Response) -> Option<(u64, u64)> {
    let value = response.headers().get("sforce-limit-info")?.to_str().ok()?;
    let usage = value.strip_prefix("api-usage=")?;
    let (used, limit) = usage.split_once('/')?;
    Some((used.parse().ok()?, limit.parse().ok()?))
}

/// Tells whether a string is a Salesforce REST dateTime: `YYYY-MM-DDThh:mm:ss.SSS+0000`.
pub fn is_sf_datetime(s: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.ddd+0000";
    s.len() == shape.len()
        && s.chars()
            .zip(shape.chars())
            .all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p })
}

/// Tells whether a string is a date: `YYYY-MM-DD`.
pub fn is_sf_date(s: &str) -> bool {
    let shape = "dddd-dd-dd";
    s.len() == shape.len()
        && s.chars()
            .zip(shape.chars())
            .all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p })
}

/// The ids of every record of every page.
pub fn ids_of(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["records"].as_array().cloned().unwrap_or_default())
        .map(|r| r["Id"].as_str().expect("record has an Id").to_owned())
        .collect()
}
