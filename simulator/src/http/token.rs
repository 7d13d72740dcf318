//! `POST /services/oauth2/token`: the OAuth 2.0 username-password, client-credentials and
//! JWT bearer flows.
//!
//! Client credentials run as the integration user (as a connected app's "Run As" user
//! does). A JWT bearer assertion must be RS256-signed with the key whose public half is
//! configured, name the consumer key as issuer and the integration user as subject, have
//! the login host (or login/test.salesforce.com) as audience, and not have expired.
//!
//! The body is decoded strictly as `application/x-www-form-urlencoded` (percent escapes,
//! `+` as space); a JSON body, another content type, or parameters in the URL query string are
//! not read, so such a request has no grant type, as happens to clients that lose the body on
//! a redirect. Checks run in Salesforce's order: grant type, client id, client secret, then
//! user and password-plus-security-token. Success issues a new session token shaped
//! `<15-char org id>!<opaque>` with no `expires_in` and no refresh token; the endpoint never
//! redirects. Sessions themselves live in the state module.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::Rng;
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;
use tokio::time::{Duration, Instant};

use super::{json, oauth_error, public_base_url};
use crate::org::builtin::CONNECTED_APP_NAME;
use crate::org::LoginSource;
use crate::sftime;
use crate::state::{Session, Shared, State as SimState};

/// Why a token request was refused; each maps to one Salesforce error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    UnsupportedGrantType,
    InvalidClientId,
    InvalidClient,
    AuthenticationFailure,
    LoginRateExceeded,
    InvalidAssertion,
    InvalidAudience,
    IpRestricted,
    UserNotApproved,
    InvalidAppAccess,
}

impl Refusal {
    fn response(self) -> Response {
        let (error, description) = match self {
            Self::UnsupportedGrantType => ("unsupported_grant_type", "grant type not supported"),
            Self::InvalidClientId => ("invalid_client_id", "client identifier invalid"),
            Self::InvalidClient => ("invalid_client", "invalid client credentials"),
            Self::AuthenticationFailure => ("invalid_grant", "authentication failure"),
            Self::LoginRateExceeded => ("invalid_grant", "login rate exceeded"),
            Self::InvalidAssertion => ("invalid_grant", "invalid assertion"),
            Self::InvalidAudience => ("invalid_grant", "audience is invalid"),
            Self::IpRestricted => ("invalid_grant", "ip restricted"),
            Self::UserNotApproved => ("invalid_grant", "user hasn't approved this consumer"),
            Self::InvalidAppAccess => (
                "invalid_app_access",
                "user is not admin approved to access this app",
            ),
        };
        oauth_error(error, description)
    }
}

/// The success body, in Salesforce's field order.
#[derive(Serialize)]
struct Issued {
    access_token: String,
    instance_url: String,
    id: String,
    token_type: &'static str,
    issued_at: String,
    signature: String,
}

/// Handles a token request.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = public_base_url(&headers, &shared);
    match login(&shared, &headers, &body, &base, peer) {
        Ok(issued) => {
            let mut response = json(StatusCode::OK, &issued, None);
            let no_store = HeaderValue::from_static("no-cache,no-store");
            response.headers_mut().insert(CACHE_CONTROL, no_store);
            response
        }
        Err(refusal) => {
            tracing::debug!(?refusal, "token request refused");
            refusal.response()
        }
    }
}

/// Runs the checks and, when they pass, opens a session.
fn login(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    base: &str,
    peer: SocketAddr,
) -> Result<Issued, Refusal> {
    let credentials = &shared.credentials;

    // Only a form body is read; without one there is no grant type.
    if !is_form_content_type(headers) {
        return Err(Refusal::UnsupportedGrantType);
    }
    let form = Form::decode(body);
    match form.get("grant_type") {
        Some("password") => {}
        Some("client_credentials") => return client_credentials(shared, &form, base, peer),
        Some(JWT_BEARER) => return jwt_bearer(shared, &form, base, peer),
        _ => return Err(Refusal::UnsupportedGrantType),
    }

    // The connected app: its key, then its secret.
    if !consumer_key_known(shared, &form) {
        return Err(Refusal::InvalidClientId);
    }
    if form.get("client_secret") != Some(credentials.consumer_secret.expose_secret()) {
        return Err(Refusal::InvalidClient);
    }

    // The user: known, active, under the login rate, with password and token right.
    let username = form.get("username").unwrap_or_default();
    if !username.eq_ignore_ascii_case(&credentials.username) {
        return Err(Refusal::AuthenticationFailure);
    }
    let now = Instant::now();
    let mut state = shared.lock();
    let user_id = admit_user(&mut state, username, now)?;
    let source = login_source(base, peer);
    if !password_matches(shared, form.get("password")) {
        let _ = state
            .org
            .record_login(&user_id, sftime::now(), "Invalid Password", source);
        return Err(Refusal::AuthenticationFailure);
    }

    // An org that blocks the flow says no more than it would to a wrong password; only
    // LoginHistory tells the two apart.
    if state.faults.password_flow_blocked {
        let status = "Username-Password Flow Disabled";
        let _ = state
            .org
            .record_login(&user_id, sftime::now(), status, source);
        return Err(Refusal::AuthenticationFailure);
    }
    check_app_policy(&mut state, &user_id, source.clone())?;

    // A new session each time; earlier sessions stay valid until they time out.
    let _ = state
        .org
        .record_login(&user_id, sftime::now(), "Success", source);
    Ok(open_session(shared, &mut state, &user_id, base, now))
}

/// The grant type of the JWT bearer flow.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Client credentials: the app's key and secret; the session is the integration user's.
fn client_credentials(
    shared: &Shared,
    form: &Form,
    base: &str,
    peer: SocketAddr,
) -> Result<Issued, Refusal> {
    let credentials = &shared.credentials;
    if !consumer_key_known(shared, form) {
        return Err(Refusal::InvalidClientId);
    }
    if form.get("client_secret") != Some(credentials.consumer_secret.expose_secret()) {
        return Err(Refusal::InvalidClient);
    }
    run_as_integration_user(shared, base, peer)
}

/// The claims of a JWT bearer assertion that the simulator checks.
#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
}

/// JWT bearer: a signed assertion for the integration user.
fn jwt_bearer(
    shared: &Shared,
    form: &Form,
    base: &str,
    peer: SocketAddr,
) -> Result<Issued, Refusal> {
    let credentials = &shared.credentials;
    let Some(public_key) = credentials.jwt_public_key_pem.as_deref() else {
        return Err(Refusal::InvalidAssertion);
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key.as_bytes())
        .map_err(|_| Refusal::InvalidAssertion)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let assertion = form.get("assertion").unwrap_or_default();
    let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|_| Refusal::InvalidAssertion)?
        .claims;

    let propagated = !shared.lock().faults.take_unpropagated_sign_in();
    if claims.iss != credentials.consumer_key || !propagated {
        return Err(Refusal::InvalidClientId);
    }
    let audiences = [
        base,
        "https://login.salesforce.com",
        "https://test.salesforce.com",
    ];
    if !audiences.contains(&claims.aud.trim_end_matches('/')) {
        return Err(Refusal::InvalidAudience);
    }
    if !claims.sub.eq_ignore_ascii_case(&credentials.username) {
        return Err(Refusal::InvalidAssertion);
    }
    run_as_integration_user(shared, base, peer)
}

/// Opens a session for the integration user, if it is active and under the login rate.
fn run_as_integration_user(
    shared: &Shared,
    base: &str,
    peer: SocketAddr,
) -> Result<Issued, Refusal> {
    let now = Instant::now();
    let mut state = shared.lock();
    let user_id = admit_user(&mut state, &shared.credentials.username, now)?;
    let source = login_source(base, peer);
    check_app_policy(&mut state, &user_id, source.clone())?;
    let _ = state
        .org
        .record_login(&user_id, sftime::now(), "Success", source);
    Ok(open_session(shared, &mut state, &user_id, base, now))
}

/// The id of the user signing in, if it exists, is active and is under the login rate.
fn admit_user(state: &mut SimState, username: &str, now: Instant) -> Result<String, Refusal> {
    let user_id = state
        .org
        .user_by_username(username)
        .filter(|u| u.is_active)
        .map(|u| u.id.clone())
        .ok_or(Refusal::AuthenticationFailure)?;
    if over_login_rate(state, &user_id, now) {
        return Err(Refusal::LoginRateExceeded);
    }
    Ok(user_id)
}

/// Whether the form names the Connected App's key and that key has reached this server
/// (an unpropagated key is unknown whatever it is).
fn consumer_key_known(shared: &Shared, form: &Form) -> bool {
    let propagated = !shared.lock().faults.take_unpropagated_sign_in();
    propagated && form.get("client_id") == Some(shared.credentials.consumer_key.as_str())
}

/// The Connected App's policies and the user's Login IP Ranges, checked once the user is
/// known; a refusal leaves a LoginHistory row as Salesforce's does.
fn check_app_policy(
    state: &mut SimState,
    user_id: &str,
    source: LoginSource,
) -> Result<(), Refusal> {
    // The approval status text is the simulator's own: no LoginHistory row of it is recorded.
    let faults = &state.faults;
    let refusal = if faults.user_not_approved {
        Some((Refusal::UserNotApproved, "Failed: OAuth Approval Error"))
    } else if faults.app_not_admin_approved {
        Some((Refusal::InvalidAppAccess, "Failed: OAuth Approval Error"))
    } else if faults.ip_restricted {
        Some((Refusal::IpRestricted, "Restricted IP"))
    } else {
        None
    };
    match refusal {
        Some((refusal, status)) => {
            let _ = state
                .org
                .record_login(user_id, sftime::now(), status, source);
            Err(refusal)
        }
        None => Ok(()),
    }
}

/// How the login shows in LoginHistory.
fn login_source(base: &str, peer: SocketAddr) -> LoginSource {
    LoginSource::oauth_password(
        CONNECTED_APP_NAME,
        base.trim_start_matches("http://"),
        &peer.ip().to_string(),
    )
}

/// Tells whether the request says its body is a form.
fn is_form_content_type(headers: &HeaderMap) -> bool {
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// Compares the password field with the password immediately followed by the token.
fn password_matches(shared: &Shared, given: Option<&str>) -> bool {
    let credentials = &shared.credentials;
    let password = credentials.password.expose_secret();
    let token = credentials.security_token.expose_secret();
    given.is_some_and(|g| {
        g.len() == password.len() + token.len() && g == format!("{password}{token}")
    })
}

/// Counts this login against the per-user hourly rate; true when the rate is used up.
fn over_login_rate(state: &mut SimState, user_id: &str, now: Instant) -> bool {
    let limit = state.login_rate_limit_per_hour as usize;
    let recent = state.recent_logins.entry(user_id.to_owned()).or_default();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
    {
        recent.pop_front();
    }
    if recent.len() >= limit {
        return true;
    }
    recent.push_back(now);
    false
}

/// Creates the session and the success body.
fn open_session(
    shared: &Shared,
    state: &mut SimState,
    user_id: &str,
    base: &str,
    now: Instant,
) -> Issued {
    let org_id = state.org.org_id.clone();
    let access_token = format!("{}!{}", &org_id[..15], opaque_token());
    state.sweep_sessions(now);
    let session = Session {
        user_id: user_id.to_owned(),
        last_used: now,
        data_calls: 0,
    };
    state.sessions.insert(access_token.clone(), session);
    state.logins += 1;

    let id = format!("{base}/id/{org_id}/{user_id}");
    let issued_at = Utc::now().timestamp_millis().to_string();
    let signature = sign(
        shared.credentials.consumer_secret.expose_secret(),
        &id,
        &issued_at,
    );
    Issued {
        access_token,
        instance_url: base.to_owned(),
        id,
        token_type: "Bearer",
        issued_at,
        signature,
    }
}

/// The opaque part of an access token: 96 random characters of the token alphabet.
fn opaque_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    let mut rng = rand::rng();
    let body: String = (0..94)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("AQ{body}")
}

/// Base64 of HMAC-SHA256 over `id` followed by `issued_at`, keyed by the consumer secret.
pub(crate) fn sign(secret: &str, id: &str, issued_at: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length, so this branch is unreachable in practice.
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A decoded form body. A value whose escapes do not decode to UTF-8 is kept as undecodable,
/// so it matches nothing rather than being silently repaired.
struct Form {
    pairs: Vec<(String, Option<String>)>,
}

impl Form {
    fn decode(body: &[u8]) -> Self {
        let pairs = body
            .split(|&b| b == b'&')
            .filter(|part| !part.is_empty())
            .filter_map(|part| {
                let (key, value) = match part.iter().position(|&b| b == b'=') {
                    Some(i) => (&part[..i], &part[i + 1..]),
                    None => (part, &[][..]),
                };
                Some((percent_decode(key)?, percent_decode(value)))
            })
            .collect();
        Self { pairs }
    }

    /// The first value of a field; `None` when absent or undecodable.
    fn get(&self, key: &str) -> Option<&str> {
        let (_, value) = self.pairs.iter().find(|(k, _)| k == key)?;
        value.as_deref()
    }
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                let text = std::str::from_utf8(hex).ok()?;
                bytes.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_is_strict() {
        let form = Form::decode(b"a=x%26y%2Bz+w&b=%zz&c&a=second&d=%E2%82%AC");
        assert_eq!(form.get("a"), Some("x&y+z w"));
        assert_eq!(form.get("b"), None);
        assert_eq!(form.get("c"), Some(""));
        assert_eq!(form.get("d"), Some("€"));
        assert_eq!(form.get("missing"), None);
        assert_eq!(percent_decode(b"%"), None);
        assert_eq!(percent_decode(b"%C3"), None);
        assert_eq!(percent_decode(b"%+1"), None);
    }

    #[test]
    fn signature_is_base64_hmac() {
        let signature = sign("secret", "https://x/id/a/b", "1714566896123");
        assert_eq!(BASE64.decode(&signature).unwrap().len(), 32);
        assert_ne!(
            signature,
            sign("other", "https://x/id/a/b", "1714566896123")
        );
    }
}
