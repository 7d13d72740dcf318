//! Sign-in to a Connected App with one of three OAuth 2.0 flows.
//!
//! - Username-password: the consumer key and secret, the username, and the password with
//!   the security token appended (no separator).
//! - Client credentials: the consumer key and secret; the app runs as the user set on
//!   it. Salesforce accepts it only on the org's My Domain host.
//! - JWT bearer: an RS256 assertion (issuer the consumer key, subject the username,
//!   audience the login host, valid three minutes) signed with the app's private key.
//!
//! reqwest form-encodes each field exactly once, so `&`, `+`, `%`, `=` and spaces in a
//! password arrive intact. The response has no `expires_in`: a session lives until the
//! org's inactivity timeout, so the client keeps it until a call answers 401. Redirects
//! are never followed: a redirected POST loses its form and Salesforce then answers
//! `unsupported_grant_type`.

use std::net::IpAddr;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::error::{excerpt, Redactor, SalesforceError, TokenError};
use crate::config::OrgConfig;

/// A signed-in session.
#[derive(Debug)]
pub struct Session {
    /// The bearer token; `Debug` prints a placeholder.
    pub access_token: SecretString,
    /// Base URL for every data call, from the token response.
    pub instance_url: Url,
    /// The org's 18-character id, from the identity URL.
    pub org_id: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    instance_url: String,
    id: String,
}

/// Checks that a login or instance URL is HTTPS, or plain HTTP on a loopback address
/// (the simulator); anything else would send credentials in clear text.
pub fn check_login_url(raw: &str) -> Result<Url, SalesforceError> {
    let url = Url::parse(raw)
        .map_err(|e| SalesforceError::BadUrl(format!("login URL {raw:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(SalesforceError::BadUrl(format!(
            "login URL {raw:?} uses plain http to a non-loopback host; use https \
             (http is allowed only for 127.0.0.1, ::1 or localhost, e.g. the simulator)"
        ))),
        other => Err(SalesforceError::BadUrl(format!(
            "login URL {raw:?} has scheme {other:?}; use https"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// What an org signs in with, its secrets read from their sources.
pub(crate) enum Grant {
    Password {
        consumer_secret: SecretString,
        password: SecretString,
        security_token: Option<SecretString>,
    },
    ClientCredentials {
        consumer_secret: SecretString,
    },
    JwtBearer {
        key: jsonwebtoken::EncodingKey,
    },
}

/// The JWT bearer flow's assertion claims.
#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

/// The grant type of the JWT bearer flow.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Client credentials work only on an org's My Domain (or the simulator on loopback).
pub(crate) fn check_my_domain(login_url: &Url) -> Result<(), SalesforceError> {
    let host = login_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.ends_with(".my.salesforce.com") || is_loopback(login_url) {
        return Ok(());
    }
    Err(SalesforceError::BadUrl(format!(
        "the client-credentials flow needs the org's My Domain login URL \
         (https://<domain>.my.salesforce.com), not {host}"
    )))
}

/// Builds the token request's form for a grant. Secrets are copied into the form here
/// and nowhere else.
fn form(
    org: &OrgConfig,
    login_url: &Url,
    grant: &Grant,
) -> Result<Vec<(&'static str, String)>, SalesforceError> {
    let client_id = ("client_id", org.consumer_key.clone());
    Ok(match grant {
        Grant::Password {
            consumer_secret,
            password,
            security_token,
        } => {
            // The one place the password and token meet: concatenated, form-encoded once.
            let mut password_and_token = password.expose_secret().to_owned();
            if let Some(token) = security_token {
                password_and_token.push_str(token.expose_secret());
            }
            vec![
                ("grant_type", "password".into()),
                client_id,
                ("client_secret", consumer_secret.expose_secret().to_owned()),
                ("username", org.username.clone()),
                ("password", password_and_token),
            ]
        }
        Grant::ClientCredentials { consumer_secret } => {
            check_my_domain(login_url)?;
            vec![
                ("grant_type", "client_credentials".into()),
                client_id,
                ("client_secret", consumer_secret.expose_secret().to_owned()),
            ]
        }
        Grant::JwtBearer { key } => {
            let audience = login_url.origin().ascii_serialization();
            let claims = Claims {
                iss: &org.consumer_key,
                sub: &org.username,
                aud: &audience,
                exp: chrono::Utc::now().timestamp() + 180,
            };
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            let assertion = jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
                SalesforceError::BadUrl(format!("signing the JWT assertion failed: {e}"))
            })?;
            vec![("grant_type", JWT_BEARER.into()), ("assertion", assertion)]
        }
    })
}

/// Signs in to one org.
pub(crate) async fn login(
    http: &reqwest::Client,
    org: &OrgConfig,
    grant: &Grant,
) -> Result<Session, SalesforceError> {
    let login_url = check_login_url(&org.login_url)?;
    let token_url = login_url
        .join("/services/oauth2/token")
        .map_err(|e| SalesforceError::BadUrl(e.to_string()))?;

    let form = form(org, &login_url, grant)?;
    let response = http
        .post(token_url.clone())
        .form(&form)
        .send()
        .await
        .map_err(|e| SalesforceError::Transient(format!("sign-in to {login_url}: {e}")))?;
    drop(form);

    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return Err(SalesforceError::Redirect {
            url: token_url.to_string(),
            status: status.as_u16(),
            location,
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| SalesforceError::Transient(format!("reading sign-in response: {e}")))?;
    parse_token_response(status, &body).map_err(|e| scrub(e, grant))
}

/// Removes the grant's secret values from an error built from the server's words (see
/// [`Redactor`]): a misbehaving endpoint that echoes the form must not put a password in
/// the logs.
fn scrub(error: SalesforceError, grant: &Grant) -> SalesforceError {
    let mut secrets: Vec<String> = Vec::new();
    match grant {
        Grant::Password {
            consumer_secret,
            password,
            security_token,
        } => {
            secrets.push(consumer_secret.expose_secret().to_owned());
            secrets.push(password.expose_secret().to_owned());
            if let Some(token) = security_token {
                let joined = format!("{}{}", password.expose_secret(), token.expose_secret());
                secrets.push(joined);
                secrets.push(token.expose_secret().to_owned());
            }
        }
        Grant::ClientCredentials { consumer_secret } => {
            secrets.push(consumer_secret.expose_secret().to_owned());
        }
        Grant::JwtBearer { .. } => {}
    }
    Redactor::new(secrets.iter().map(String::as_str)).error(error)
}

/// Turns a token endpoint response into a session or a classified error.
pub(crate) fn parse_token_response(
    status: StatusCode,
    body: &[u8],
) -> Result<Session, SalesforceError> {
    if status.is_success() {
        let token: TokenResponse = serde_json::from_slice(body).map_err(|e| {
            SalesforceError::Transient(format!("sign-in response is not a token: {e}"))
        })?;
        let instance_url = check_login_url(&token.instance_url)?;
        let org_id = org_id_from_identity_url(&token.id).ok_or_else(|| {
            SalesforceError::Transient(format!("identity URL {:?} has no org id", token.id))
        })?;
        return Ok(Session {
            access_token: token.access_token,
            instance_url,
            org_id,
        });
    }
    match serde_json::from_slice::<TokenError>(body) {
        Ok(e) if status.is_client_error() => Err(SalesforceError::Auth {
            error: e.error,
            description: e.error_description,
        }),
        _ => Err(SalesforceError::Transient(format!(
            "sign-in answered HTTP {status}: {}",
            excerpt(body)
        ))),
    }
}

/// `https://login.salesforce.com/id/<org id>/<user id>` → the org id.
fn org_id_from_identity_url(identity: &str) -> Option<String> {
    let url = Url::parse(identity).ok()?;
    let mut segments = url.path_segments()?;
    while let Some(segment) = segments.next() {
        if segment == "id" {
            return segments.next().filter(|s| !s.is_empty()).map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../fixtures/salesforce/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn exchange(name: &str) -> (StatusCode, Vec<u8>) {
        let f = fixture(name);
        let status = StatusCode::from_u16(f["status"].as_u64().unwrap() as u16).unwrap();
        (status, serde_json::to_vec(&f["body"]).unwrap())
    }

    #[test]
    fn token_success_fixture_parses_into_a_session() {
        let (status, body) = exchange("token_success.json");
        let session = parse_token_response(status, &body).unwrap();
        assert_eq!(session.org_id, "00D5g000004XyZwEAK");
        assert_eq!(
            session.instance_url.as_str(),
            "https://northwind-demo.my.salesforce.com/"
        );
        assert!(
            !format!("{session:?}").contains("AQ8AQ"),
            "token leaked through Debug"
        );
    }

    #[test]
    fn every_token_error_fixture_becomes_an_auth_error_with_a_hint() {
        let names = [
            (
                "token_error_invalid_app_access.json",
                "admin-approved",
                false,
            ),
            ("token_error_invalid_client.json", "consumer secret", false),
            (
                "token_error_invalid_client_id.json",
                "several minutes",
                false,
            ),
            (
                "token_error_invalid_grant_authentication_failure.json",
                "security token",
                false,
            ),
            ("token_error_ip_restricted.json", "Login IP Ranges", false),
            ("token_error_login_rate_exceeded.json", "3,600", true),
            (
                "token_error_unsupported_grant_type.json",
                "form post",
                false,
            ),
            ("token_error_user_not_approved.json", "pre-authorize", false),
        ];
        for (name, hint, retriable) in names {
            let (status, body) = exchange(name);
            let err = parse_token_response(status, &body).unwrap_err();
            assert!(
                matches!(err, SalesforceError::Auth { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(hint), "{name}: {err}");
            assert_eq!(err.is_retriable(), retriable, "{name}");
        }
    }

    #[test]
    fn plain_http_is_refused_except_on_loopback() {
        assert!(check_login_url("https://login.salesforce.com").is_ok());
        assert!(check_login_url("https://acme--uat.sandbox.my.salesforce.com").is_ok());
        assert!(check_login_url("http://127.0.0.1:8085").is_ok());
        assert!(check_login_url("http://localhost:8085").is_ok());
        assert!(check_login_url("http://[::1]:8085").is_ok());
        let err = check_login_url("http://login.salesforce.com").unwrap_err();
        assert!(err.to_string().contains("use https"), "{err}");
        assert!(check_login_url("ftp://x").is_err());
        assert!(check_login_url("not a url").is_err());
    }

    #[test]
    fn an_http_instance_url_off_loopback_is_refused() {
        let body = br#"{"access_token":"00D!x","instance_url":"http://evil.example",
                        "id":"https://login.salesforce.com/id/00Dx/005x"}"#;
        assert!(matches!(
            parse_token_response(StatusCode::OK, body),
            Err(SalesforceError::BadUrl(_))
        ));
    }

    #[test]
    fn the_password_form_is_encoded_exactly_like_the_recorded_request() {
        let recorded = fixture("token_request_password_grant.json");
        let body = recorded["request"]["body"].as_str().unwrap();
        let field = |name: &str| {
            url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        let org = OrgConfig {
            name: "fixture".into(),
            login_url: "https://login.salesforce.com".into(),
            consumer_key: field("client_id"),
            username: field("username"),
            ..OrgConfig::default()
        };
        // The recorded password field is a password with a security token appended.
        let password_and_token = field("password");
        let (password, token) = password_and_token.split_at(15);
        let grant = Grant::Password {
            consumer_secret: SecretString::from(field("client_secret")),
            password: SecretString::from(password.to_owned()),
            security_token: Some(SecretString::from(token.to_owned())),
        };

        let login_url = Url::parse(&org.login_url).unwrap();
        let pairs = form(&org, &login_url, &grant).unwrap();
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        assert_eq!(encoded, body);
        assert!(
            encoded.contains("password=Correct%26Horse%2B1"),
            "{encoded}"
        );
    }

    #[test]
    fn secrets_echoed_by_a_login_server_are_scrubbed() {
        let grant = Grant::Password {
            consumer_secret: SecretString::from("CS-secret-1"),
            password: SecretString::from("pw-Secret"),
            security_token: Some(SecretString::from("TOKEN123")),
        };
        let body = br#"{"error":"invalid_grant",
            "error_description":"client_secret=CS-secret-1&password=pw-SecretTOKEN123"}"#;
        let err = scrub(
            parse_token_response(StatusCode::BAD_REQUEST, body).unwrap_err(),
            &grant,
        );
        let text = err.to_string();
        assert!(
            !text.contains("CS-secret-1") && !text.contains("pw-Secret"),
            "{text}"
        );
        assert!(!text.contains("TOKEN123"), "{text}");
        assert!(
            text.contains("client_secret=[redacted]&password=[redacted]"),
            "{text}"
        );
    }

    #[test]
    fn a_non_json_error_is_transient() {
        let err = parse_token_response(StatusCode::BAD_GATEWAY, b"<html>down</html>");
        assert!(err.unwrap_err().is_retriable());
    }
}
