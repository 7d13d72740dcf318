//! Salesforce errors, sorted by who must act and whether a retry can help.
//!
//! - The operator's configuration or the org's setup (credentials, Connected App policy,
//!   object permissions, a login URL that redirects): retrying cannot help, so the org
//!   stops with a status that says what to fix.
//! - Salesforce's quota (`REQUEST_LIMIT_EXCEEDED`): wait until the allowance recovers.
//! - Transient trouble (5xx, 420 from Salesforce's edge, timeouts, resets, bodies that
//!   are not JSON): retried with backoff.
//!
//! Messages never contain a secret: they are built from Salesforce's error codes and
//! texts, which carry none, and from URLs, which never carry the token.

use std::fmt;

/// The class of a failure, a fixed vocabulary used in metrics and sync status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Sign-in refused: credentials, app policy, IP restriction, login rate.
    Auth,
    /// Configuration or permissions: unknown object or field, API disabled, bad URL.
    Config,
    /// The org's API allowance is used up.
    Quota,
    /// Salesforce or the network failed in a way a retry may fix.
    Transient,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::Config => "config",
            ErrorClass::Quota => "quota",
            ErrorClass::Transient => "transient",
        }
    }
}

/// A failed exchange with Salesforce.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// The token endpoint refused the sign-in (`{"error", "error_description"}`).
    #[error("sign-in refused: {error} ({description}); {}", auth_hint(.error, .description))]
    Auth { error: String, description: String },

    /// A data call was refused for a reason a retry cannot fix.
    #[error("Salesforce refused the request: {code} (HTTP {status}): {message}; {}",
            query_hint(.code))]
    Refused {
        status: u16,
        code: String,
        message: String,
    },

    /// The session cannot be used with the REST API; re-login will not help.
    #[error(
        "the session is not valid for the REST API (HTTP 401): the integration user's \
         session policy (High Assurance, API client restrictions) blocks REST access; \
         relax it for the Connected App"
    )]
    SessionNotValidForRest,

    /// The session expired again right after a re-login.
    #[error("the session expired again right after signing in; check the org's session settings")]
    SessionLoop,

    /// The org's API request allowance is exhausted.
    #[error(
        "the org's API request limit is exceeded: {message}; seatwatch waits until the \
             24-hour allowance recovers"
    )]
    RequestLimit { message: String },

    /// The login or instance URL is unusable.
    #[error("{0}")]
    BadUrl(String),

    /// A redirect on a call that must not be redirected.
    #[error(
        "{url} answered with a redirect (HTTP {status}) to {location:?}; use the https \
             URL of the login host itself (redirects drop the sign-in form)"
    )]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },

    /// Something a retry may fix.
    #[error("transient Salesforce failure: {0}")]
    Transient(String),
}

impl SalesforceError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SalesforceError::Auth { .. } => ErrorClass::Auth,
            SalesforceError::Refused { .. }
            | SalesforceError::SessionNotValidForRest
            | SalesforceError::SessionLoop
            | SalesforceError::BadUrl(_)
            | SalesforceError::Redirect { .. } => ErrorClass::Config,
            SalesforceError::RequestLimit { .. } => ErrorClass::Quota,
            SalesforceError::Transient(_) => ErrorClass::Transient,
        }
    }

    /// The cause and fix of a refused sign-in.
    pub fn advice(&self) -> Option<Advice> {
        match self {
            SalesforceError::Auth { error, description } => Some(auth_advice(error, description)),
            _ => None,
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SalesforceError::Transient(_) => true,
            // A login rate limit passes within the hour; everything else about sign-in
            // needs a person.
            SalesforceError::Auth { description, .. } => description == "login rate exceeded",
            _ => false,
        }
    }
}

/// The likely cause of a refused sign-in and what fixes it, in the spirit of Salesforce's
/// troubleshooting tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advice {
    pub cause: &'static str,
    pub fix: &'static str,
}

/// The advice for a token endpoint error. Several setups share one answer on the wire
/// (a blocked password flow says `authentication failure` like a wrong password), so the
/// cause names each of them.
pub fn auth_advice(error: &str, description: &str) -> Advice {
    let (cause, fix) = match (error, description) {
        ("invalid_client_id", _) => (
            "the consumer key is unknown: a typo, an app of another org, or a Connected App \
             that is new or was just edited and has not reached every Salesforce server yet \
             (that takes several minutes)",
            "check consumer_key against the app in Setup; if it is right, wait ten minutes \
             and check again",
        ),
        ("invalid_client", _) => (
            "the consumer secret does not match the consumer key",
            "copy the consumer secret again from the Connected App",
        ),
        ("invalid_grant", "authentication failure") => (
            "wrong username, password or security token; a sandbox signed in at the \
             production host (or the reverse); or an org that blocks the OAuth \
             username-password flow, which Salesforce reports the same way",
            "verify username, password, security token (the token is appended to the \
             password) and the login URL (test.salesforce.com for sandboxes); Setup > Login \
             History names the reason; if it says the flow is disabled, allow the OAuth \
             username-password flow in OAuth and OpenID Connect Settings or move to the JWT \
             bearer or client-credentials flow",
        ),
        ("invalid_grant", "ip restricted") => (
            "ingest's IP address is outside the integration user's Login IP Ranges",
            "relax IP restrictions for the Connected App, or trust ingest's address range \
             (the profile's Login IP Ranges or the org's Network Access)",
        ),
        ("invalid_grant", "user hasn't approved this consumer") => (
            "the Connected App requires approval and the user is not approved",
            "set Permitted Users to 'All users may self-authorize', or pre-authorize the \
             user's profile or a permission set on the app",
        ),
        ("invalid_app_access", _) => (
            "the Connected App is admin-approved only and the user's profile is not on it",
            "add the user's profile or a permission set to the app's admin-approved users",
        ),
        ("invalid_grant", "login rate exceeded") => (
            "more than 3,600 logins this hour for this user",
            "seatwatch reuses its session and backs off; find the other tools that sign in \
             as the same user",
        ),
        ("unsupported_grant_type", _) => (
            "the token request did not arrive as a form post",
            "check for a proxy or a redirect in front of the login host",
        ),
        _ => (
            "Salesforce refused the sign-in for a reason seatwatch does not know",
            "check the Connected App and the integration user in Setup",
        ),
    };
    Advice { cause, fix }
}

fn auth_hint(error: &str, description: &str) -> String {
    let advice = auth_advice(error, description);
    format!("likely cause: {}; fix: {}", advice.cause, advice.fix)
}

/// What to check for a refused data call.
fn query_hint(code: &str) -> &'static str {
    match code {
        "INVALID_TYPE" => {
            "the object is unknown or the user cannot see it: grant the integration user \
             'View Setup and Configuration' (licences) and read access to Users"
        }
        "INVALID_FIELD" => {
            "a field is unknown or hidden from the user: check field-level security or \
             lower api_version"
        }
        "API_DISABLED_FOR_ORG" => "the org's edition or the user's profile lacks 'API Enabled'",
        "MALFORMED_QUERY" => "seatwatch sent a query Salesforce rejects; please report it",
        "INVALID_AUTH_HEADER" => "the Authorization header was malformed; please report it",
        _ => "see Salesforce's message",
    }
}

/// One element of a Salesforce error array.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ApiError {
    #[serde(rename = "errorCode")]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The token endpoint's error body.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenError {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}

/// Removes secret values from error text built from a server's words: an endpoint (or a
/// proxy) that echoes the request must not put a password or a token in the logs.
///
/// Each secret is looked for as sent (raw, form-encoded with `+` or `%20` for spaces,
/// percent-encoded) and as [`excerpt`] prints it (whitespace collapsed), longest first.
pub(crate) struct Redactor {
    forms: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut forms: Vec<String> = Vec::new();
        for secret in secrets.into_iter().filter(|s| s.len() >= 4) {
            let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let collapsed = secret.split_whitespace().collect::<Vec<_>>().join(" ");
            forms.extend([secret.to_owned(), form.replace('+', "%20"), form, collapsed]);
        }
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        forms.dedup();
        Self { forms }
    }

    pub fn clean(&self, text: String) -> String {
        self.forms
            .iter()
            .fold(text, |text, form| text.replace(form.as_str(), "[redacted]"))
    }

    /// `error` with every message it carries cleaned.
    pub fn error(&self, error: SalesforceError) -> SalesforceError {
        match error {
            SalesforceError::Auth { error, description } => SalesforceError::Auth {
                error: self.clean(error),
                description: self.clean(description),
            },
            SalesforceError::Refused {
                status,
                code,
                message,
            } => SalesforceError::Refused {
                status,
                code: self.clean(code),
                message: self.clean(message),
            },
            SalesforceError::RequestLimit { message } => SalesforceError::RequestLimit {
                message: self.clean(message),
            },
            SalesforceError::BadUrl(text) => SalesforceError::BadUrl(self.clean(text)),
            SalesforceError::Redirect {
                url,
                status,
                location,
            } => SalesforceError::Redirect {
                url: self.clean(url),
                status,
                location: self.clean(location),
            },
            SalesforceError::Transient(text) => SalesforceError::Transient(self.clean(text)),
            other @ (SalesforceError::SessionNotValidForRest | SalesforceError::SessionLoop) => {
                other
            }
        }
    }
}

/// Reduces a Salesforce error body to a short printable excerpt for messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = flat.chars().take(160).collect();
    if flat.chars().count() > 160 {
        cut.push('…');
    }
    cut
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
