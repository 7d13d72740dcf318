//! The OAuth token endpoint: error bodies equal the recorded ones, the success body has the
//! recorded shape, form decoding is strict, and no redirect is ever issued.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::{assert_matches_fixture, fixture, password_form, Sim, FORM};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use seatwatch_simulator::{ids, Credentials, SimulatorConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

/// The demo form with one field replaced.
fn form_with(field: &str, value: &str) -> String {
    let creds = Credentials::demo();
    let password = format!(
        "{}{}",
        creds.password.expose_secret(),
        creds.security_token.expose_secret()
    );
    let mut fields = vec![
        ("grant_type", "password".to_owned()),
        ("client_id", creds.consumer_key.clone()),
        (
            "client_secret",
            creds.consumer_secret.expose_secret().to_owned(),
        ),
        ("username", creds.username.clone()),
        ("password", password),
    ];
    for (name, v) in &mut fields {
        if *name == field {
            *v = value.to_owned();
        }
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, v) in fields.iter().filter(|(_, v)| v != "<omit>") {
        form.append_pair(name, v);
    }
    form.finish()
}

#[tokio::test]
async fn token_errors_equal_the_recorded_responses() {
    let sim = Sim::default().await;
    let demo = Credentials::demo();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "token_error_unsupported_grant_type.json",
            FORM,
            form_with("grant_type", "authorization_code"),
        ),
        (
            "token_error_unsupported_grant_type.json",
            FORM,
            form_with("grant_type", "<omit>"),
        ),
        (
            "token_error_invalid_client_id.json",
            FORM,
            form_with("client_id", "3MVG9nope"),
        ),
        (
            "token_error_invalid_client_id.json",
            FORM,
            form_with("client_id", "<omit>"),
        ),
        (
            "token_error_invalid_client.json",
            FORM,
            form_with("client_secret", "wrong"),
        ),
        (
            "token_error_invalid_client.json",
            FORM,
            form_with("client_secret", "<omit>"),
        ),
        (
            "token_error_invalid_grant_authentication_failure.json",
            FORM,
            form_with("username", "someone.else@lakeside-freight.example"),
        ),
        (
            "token_error_invalid_grant_authentication_failure.json",
            FORM,
            form_with("password", demo.password.expose_secret()),
        ),
        (
            "token_error_invalid_grant_authentication_failure.json",
            FORM,
            form_with("password", "demo-passwordWRONGTOKEN"),
        ),
    ];
    for (name, content_type, body) in cases {
        let response = sim.post_token(content_type, body.clone()).await;
        assert_matches_fixture(response, name).await;
    }
    assert_eq!(sim.running.handle().logins(), 0);
}

#[tokio::test]
async fn checks_run_in_salesforce_order() {
    // A request wrong in every way reports only the first failing check.
    let sim = Sim::default().await;
    let all_wrong = "grant_type=password&client_id=x&client_secret=y&username=z&password=w";
    let body: Value = sim.post_token(FORM, all_wrong).await.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_id");
    let creds = Credentials::demo();
    let key_right = format!(
        "grant_type=password&client_id={}&client_secret=y&username=z&password=w",
        creds.consumer_key
    );
    let body: Value = sim.post_token(FORM, key_right).await.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn only_a_form_body_is_read() {
    let sim = Sim::default().await;
    let creds = Credentials::demo();

    // The same fields as JSON, or as a form under another content type, carry no grant type.
    let json_body = serde_json::json!({
        "grant_type": "password",
        "client_id": creds.consumer_key,
        "client_secret": creds.consumer_secret.expose_secret(),
        "username": creds.username,
        "password": "demo-passwordDEMOSECURITYTOKEN",
    });
    let response = sim
        .post_token("application/json", json_body.to_string())
        .await;
    assert_matches_fixture(response, "token_error_unsupported_grant_type.json").await;
    let response = sim
        .post_token("text/plain", password_form(&creds, None))
        .await;
    assert_matches_fixture(response, "token_error_unsupported_grant_type.json").await;

    // Parameters in the URL query string are not read either.
    let response = sim
        .client
        .post(format!(
            "{}/services/oauth2/token?{}",
            sim.base,
            password_form(&creds, None)
        ))
        .header(CONTENT_TYPE, FORM)
        .send()
        .await
        .unwrap();
    assert_matches_fixture(response, "token_error_unsupported_grant_type.json").await;

    // The form with a charset parameter is fine.
    let response = sim
        .post_token(
            "application/x-www-form-urlencoded; charset=UTF-8",
            password_form(&creds, None),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn success_has_the_recorded_shape() {
    let sim = Sim::default().await;
    let creds = Credentials::demo();
    let response = sim.post_token(FORM, password_form(&creds, None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/json;charset=UTF-8"
    );
    let body: Value = response.json().await.unwrap();

    // Same keys as the recording: no expires_in, no refresh_token.
    let recorded = fixture("token_success.json");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&body), keys(&recorded["body"]));
    assert!(body.get("expires_in").is_none() && body.get("refresh_token").is_none());

    // Field shapes.
    let org_id = sim.running.handle().org_id();
    let token = body["access_token"].as_str().unwrap();
    let (prefix, opaque) = token.split_once('!').unwrap();
    assert_eq!(prefix, &org_id[..15]);
    assert!(opaque.len() > 20);
    assert_eq!(body["instance_url"], sim.base);
    assert_eq!(body["token_type"], "Bearer");
    let issued_at = body["issued_at"].as_str().unwrap();
    assert!(issued_at.len() == 13 && issued_at.chars().all(|c| c.is_ascii_digit()));
    let id = body["id"].as_str().unwrap();
    let tail = id.strip_prefix(&format!("{}/id/", sim.base)).unwrap();
    let (org, user) = tail.split_once('/').unwrap();
    assert_eq!(org, org_id);
    assert!(ids::is_valid(org, ids::ORG_PREFIX) && ids::is_valid(user, ids::USER_PREFIX));

    // The signature is HMAC-SHA256 of id + issued_at keyed by the consumer secret.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(creds.consumer_secret.expose_secret().as_bytes()).unwrap();
    mac.update(format!("{id}{issued_at}").as_bytes());
    let expected = BASE64.encode(mac.finalize().into_bytes());
    assert_eq!(body["signature"], expected);
    assert_eq!(sim.running.handle().logins(), 1);
}

#[tokio::test]
async fn awkward_passwords_work_only_when_form_encoded_once() {
    let mut config = SimulatorConfig::for_tests();
    config.credentials.password = SecretString::from("p&<>+%=#; x y");
    config.credentials.security_token = SecretString::from("Tok+en%2B");
    let creds = config.credentials.clone();
    let sim = Sim::start(config).await;

    // Encoded once: accepted.
    let response = sim.post_token(FORM, password_form(&creds, None)).await;
    assert_eq!(response.status(), 200);

    // HTML-escaped, then encoded: refused.
    let escaped = "p&amp;&lt;&gt;+%=#; x yTok+en%2B";
    let response = sim
        .post_token(FORM, password_form(&creds, Some(escaped)))
        .await;
    assert_matches_fixture(
        response,
        "token_error_invalid_grant_authentication_failure.json",
    )
    .await;

    // Concatenated raw into the body: refused.
    let raw = format!(
        "grant_type=password&client_id={}&client_secret={}&username={}&password={}",
        creds.consumer_key,
        creds.consumer_secret.expose_secret(),
        creds.username,
        "p&<>+%=#; x yTok+en%2B"
    );
    let response = sim.post_token(FORM, raw).await;
    assert_matches_fixture(
        response,
        "token_error_invalid_grant_authentication_failure.json",
    )
    .await;

    // Encoded twice: refused.
    let once: String = url::form_urlencoded::byte_serialize(b"p&<>+%=#; x yTok+en%2B").collect();
    let response = sim
        .post_token(FORM, password_form(&creds, Some(&once)))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(sim.running.handle().logins(), 1);
}

#[tokio::test]
async fn the_token_endpoint_never_redirects() {
    let sim = Sim::default().await;
    for body in [
        password_form(&Credentials::demo(), None),
        "grant_type=nope".to_owned(),
    ] {
        let response = sim.post_token(FORM, body).await;
        assert!(!response.status().is_redirection());
        assert!(response.headers().get(LOCATION).is_none());
    }
    let response = sim
        .client
        .get(format!("{}/services/oauth2/token", sim.base))
        .send()
        .await
        .unwrap();
    assert!(!response.status().is_redirection());
}

#[tokio::test]
async fn login_rate_is_limited_per_user() {
    let sim = Sim::default().await;
    sim.running.handle().set_login_rate_limit_per_hour(2);
    sim.login().await;
    sim.login().await;
    let response = sim
        .post_token(FORM, password_form(&Credentials::demo(), None))
        .await;
    assert_matches_fixture(response, "token_error_login_rate_exceeded.json").await;
    assert_eq!(sim.running.handle().logins(), 2);
}

#[tokio::test]
async fn logins_are_recorded_and_deactivation_ends_sessions() {
    let sim = Sim::default().await;
    let handle = sim.running.handle();
    let creds = Credentials::demo();
    let history_before = handle.with_org(|org| org.login_history.len());

    // A failed and a successful login each leave a LoginHistory row.
    let wrong = password_form(&creds, Some("nope"));
    assert_eq!(sim.post_token(FORM, wrong).await.status(), 400);
    let token = sim.login().await;
    let (rows, statuses) = handle.with_org(|org| {
        let new = &org.login_history[history_before..];
        (
            new.len(),
            new.iter().map(|h| h.status.clone()).collect::<Vec<_>>(),
        )
    });
    assert_eq!(rows, 2);
    assert_eq!(statuses, vec!["Invalid Password", "Success"]);

    // Deactivating the integration user ends its session and refuses new logins.
    let response = sim.query(&token, "SELECT Id FROM UserLicense").await;
    assert_eq!(response.status(), 200);
    handle.with_org(|org| {
        let id = org.user_by_username(&creds.username).unwrap().id.clone();
        org.set_user_active(&id, false, seatwatch_simulator::sftime::now())
            .unwrap();
    });
    let response = sim.query(&token, "SELECT Id FROM UserLicense").await;
    assert_matches_fixture(response, "error_invalid_session_id.json").await;
    let response = sim.post_token(FORM, password_form(&creds, None)).await;
    assert_matches_fixture(
        response,
        "token_error_invalid_grant_authentication_failure.json",
    )
    .await;
}
