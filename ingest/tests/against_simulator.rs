//! The Salesforce client against the simulator on loopback: sign-in with awkward
//! passwords, pagination that only `done` ends, re-login on an expired session, retries,
//! refusals that are not retried, and redirects that are never followed.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::{SecretRef, Shutdown};
use seatwatch_ingest::salesforce::{Query, SalesforceClient, SalesforceError};
use seatwatch_ingest::{IngestConfig, OrgConfig};
use seatwatch_simulator::{Credentials, RunningSimulator, SimulatorConfig};
use secrecy::SecretString;

fn config() -> IngestConfig {
    let mut config = IngestConfig::with_defaults(KafkaConfig::default());
    config.retry_base_ms = 1;
    config
}

fn org(login_url: &str, credentials: &Credentials) -> OrgConfig {
    support::simulated_org("sim", login_url, credentials)
}

async fn simulator(page_size: usize, credentials: Credentials) -> RunningSimulator {
    let config = SimulatorConfig {
        page_size,
        credentials,
        ..SimulatorConfig::for_tests()
    };
    seatwatch_simulator::start(config, Shutdown::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn passwords_with_form_metacharacters_sign_in() {
    let credentials = Credentials {
        password: SecretString::from("Correct&Horse+1 <b>=%20#;x"),
        security_token: SecretString::from("T0k+&=n"),
        ..Credentials::demo()
    };
    let sim = simulator(2000, credentials.clone()).await;
    let mut client = SalesforceClient::new(&config(), &org(&sim.base_url(), &credentials)).unwrap();

    let session = client.sign_in().await.unwrap();
    assert_eq!(session.org_id, sim.handle().org_id());
    assert_eq!(sim.handle().logins(), 1);
}

#[tokio::test]
async fn a_query_follows_next_records_url_until_done() {
    let sim = simulator(7, Credentials::demo()).await;
    let mut client =
        SalesforceClient::new(&config(), &org(&sim.base_url(), &Credentials::demo())).unwrap();
    client.sign_in().await.unwrap();
    let before = sim.handle().api_calls();

    let users = client
        .query_all("SELECT Id FROM User ORDER BY Id")
        .await
        .unwrap();

    let ids: std::collections::BTreeSet<String> = users
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r.get()).unwrap()["Id"].to_string())
        .collect();
    assert_eq!(ids.len(), users.len(), "no record twice");
    assert!(users.len() > 1000);
    // Pages of 7 although ingest asked for 2000: each short page still goes on.
    let pages = users.len().div_ceil(7) as u64;
    assert_eq!(sim.handle().api_calls() - before, pages);
    assert_eq!(client.api_calls, pages);
}

#[tokio::test]
async fn an_expired_session_mid_query_signs_in_once_and_restarts() {
    let sim = simulator(100, Credentials::demo()).await;
    let mut client =
        SalesforceClient::new(&config(), &org(&sim.base_url(), &Credentials::demo())).unwrap();
    let expected = client.query_all("SELECT Id FROM User").await.unwrap().len();

    // Read two pages, let the session expire, and read on.
    let mut query = Query::new("SELECT Id FROM User");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let page = client.next_page(&mut query).await.unwrap().unwrap();
        ids.extend(page.records);
    }
    sim.handle().expire_sessions();
    let mut restarts = 0;
    while let Some(page) = client.next_page(&mut query).await.unwrap() {
        if page.restarted {
            restarts += 1;
            ids.clear();
        }
        ids.extend(page.records);
    }

    assert_eq!(restarts, 1, "the query restarted from its first page once");
    assert_eq!(
        ids.len(),
        expected,
        "no gap and no duplicate after the restart"
    );
    assert_eq!(client.logins, 2, "one sign-in, one re-sign-in");
}

#[tokio::test]
async fn sessions_expiring_faster_than_a_query_runs_end_in_an_error_not_a_loop() {
    let sim = simulator(100, Credentials::demo()).await;
    sim.handle()
        .with_faults(|f| f.expire_session_after_data_calls = Some(3));
    let mut client =
        SalesforceClient::new(&config(), &org(&sim.base_url(), &Credentials::demo())).unwrap();

    let err = client.query_all("SELECT Id FROM User").await.unwrap_err();

    assert!(matches!(err, SalesforceError::SessionLoop), "{err:?}");
    assert_eq!(client.logins, 2);
}

#[tokio::test]
async fn transient_failures_are_retried_and_counted() {
    let sim = simulator(2000, Credentials::demo()).await;
    let mut client =
        SalesforceClient::new(&config(), &org(&sim.base_url(), &Credentials::demo())).unwrap();
    client.sign_in().await.unwrap();
    sim.handle().with_faults(|f| {
        f.fail_next_data_calls = 2;
        f.edge_html_next_data_calls = 1;
    });

    let licences = client
        .query_all("SELECT Id FROM UserLicense")
        .await
        .unwrap();

    assert!(!licences.is_empty());
    assert_eq!(client.retries, 3);
    assert!(client.limit_info.is_some(), "Sforce-Limit-Info was read");
}

#[tokio::test]
async fn a_wrong_password_is_refused_once_with_what_to_check() {
    let sim = simulator(2000, Credentials::demo()).await;
    let wrong = Credentials {
        password: SecretString::from("wrong-password"),
        ..Credentials::demo()
    };
    let mut client = SalesforceClient::new(&config(), &org(&sim.base_url(), &wrong)).unwrap();

    let err = client.sign_in().await.unwrap_err();

    assert!(matches!(err, SalesforceError::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("authentication failure") && text.contains("security token"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-password"),
        "the password leaked into the error: {text}"
    );
    assert_eq!(client.logins, 1, "a refused sign-in is not retried");
}

#[tokio::test]
async fn an_object_the_user_cannot_see_names_the_permission() {
    let sim = simulator(2000, Credentials::demo()).await;
    sim.handle().with_faults(|f| {
        f.objects_without_access
            .insert("PermissionSetLicense".into());
    });
    let mut client =
        SalesforceClient::new(&config(), &org(&sim.base_url(), &Credentials::demo())).unwrap();

    let err = client
        .query_all("SELECT Id FROM PermissionSetLicense")
        .await
        .unwrap_err();

    assert!(matches!(&err, SalesforceError::Refused { code, .. } if code == "INVALID_TYPE"));
    assert!(
        err.to_string().contains("View Setup and Configuration"),
        "{err}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_redirect_on_the_token_request_is_never_followed() {
    // A login host that redirects, and counts visits to the redirect's target.
    let followed = Arc::new(AtomicUsize::new(0));
    let target_hits = followed.clone();
    let app = axum::Router::new()
        .route(
            "/services/oauth2/token",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "/elsewhere")],
                    "",
                )
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::any(move || {
                target_hits.fetch_add(1, Ordering::SeqCst);
                async { "followed" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut client = SalesforceClient::new(&config(), &org(&url, &Credentials::demo())).unwrap();
    let err = client.sign_in().await.unwrap_err();

    assert!(
        matches!(err, SalesforceError::Redirect { status: 302, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/elsewhere"));
    assert_eq!(followed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_plain_http_login_url_off_loopback_is_refused_before_any_request() {
    let org = org("http://login.salesforce.com", &Credentials::demo());
    let err = SalesforceClient::new(&config(), &org).unwrap_err();
    assert!(err.to_string().contains("use https"), "{err}");
}

#[tokio::test]
async fn check_names_each_unreadable_object_and_its_permission() {
    let sim = simulator(2000, Credentials::demo()).await;
    sim.handle().with_faults(|f| {
        f.objects_without_access
            .insert("PermissionSetLicense".into());
    });
    let mut config = config();
    config.orgs.push(org(&sim.base_url(), &Credentials::demo()));

    let checks = seatwatch_ingest::check::check(&config).await.unwrap();
    let report = seatwatch_ingest::check::render(&checks);

    assert!(!checks[0].passed());
    assert!(
        report.contains(&format!("signed in to {}", sim.handle().org_id())),
        "{report}"
    );
    assert!(
        report.contains("UserLicense                  readable"),
        "{report}"
    );
    assert!(
        report.contains("PermissionSetLicense         NOT readable (INVALID_TYPE)")
            && report.contains("View Setup and Configuration"),
        "{report}"
    );
    assert!(report.contains("1 of 1 org(s) need attention"), "{report}");
}

#[tokio::test]
async fn check_passes_when_everything_is_readable_and_explains_a_refused_sign_in() {
    let sim = simulator(2000, Credentials::demo()).await;
    let mut config = config();
    config.orgs.push(org(&sim.base_url(), &Credentials::demo()));
    let wrong = Credentials {
        password: SecretString::from("nope"),
        ..Credentials::demo()
    };
    config.orgs.push(OrgConfig {
        name: "wrong".into(),
        ..org(&sim.base_url(), &wrong)
    });

    let checks = seatwatch_ingest::check::check(&config).await.unwrap();
    let report = seatwatch_ingest::check::render(&checks);

    assert!(checks[0].passed(), "{report}");
    assert!(!checks[1].passed());
    assert!(report.contains("org wrong: sign-in FAILED"), "{report}");
    assert!(
        report.contains("the token is appended to the password"),
        "{report}"
    );
}

const TEST_PRIVATE_KEY: &str = include_str!("../../fixtures/jwt/test_only_private_key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../fixtures/jwt/test_only_public_key.pem");

fn jwt_org(login_url: &str, username: &str) -> OrgConfig {
    OrgConfig {
        name: "jwt".into(),
        login_url: login_url.into(),
        flow: seatwatch_ingest::AuthFlow::JwtBearer,
        consumer_key: Credentials::demo().consumer_key,
        username: username.into(),
        private_key: Some(SecretRef::Inline(SecretString::from(TEST_PRIVATE_KEY))),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_jwt_bearer_flow_signs_in_with_a_signed_assertion() {
    let credentials = Credentials {
        jwt_public_key_pem: Some(TEST_PUBLIC_KEY.into()),
        ..Credentials::demo()
    };
    let sim = simulator(2000, credentials.clone()).await;

    let mut client =
        SalesforceClient::new(&config(), &jwt_org(&sim.base_url(), &credentials.username)).unwrap();
    assert_eq!(
        client.sign_in().await.unwrap().org_id,
        sim.handle().org_id()
    );

    let mut stranger =
        SalesforceClient::new(&config(), &jwt_org(&sim.base_url(), "nobody@x.example")).unwrap();
    let err = stranger.sign_in().await.unwrap_err();
    assert!(err.to_string().contains("invalid assertion"), "{err}");
}

#[tokio::test]
async fn a_jwt_assertion_the_app_cannot_verify_is_refused() {
    // The connected app holds no certificate: no assertion verifies.
    let sim = simulator(2000, Credentials::demo()).await;
    let org = jwt_org(&sim.base_url(), &Credentials::demo().username);
    let err = SalesforceClient::new(&config(), &org)
        .unwrap()
        .sign_in()
        .await
        .unwrap_err();
    assert!(matches!(err, SalesforceError::Auth { .. }), "{err:?}");
}

fn client_credentials_org(login_url: &str) -> OrgConfig {
    OrgConfig {
        name: "cc".into(),
        login_url: login_url.into(),
        flow: seatwatch_ingest::AuthFlow::ClientCredentials,
        consumer_key: Credentials::demo().consumer_key,
        consumer_secret: Some(SecretRef::Inline(Credentials::demo().consumer_secret)),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_client_credentials_flow_signs_in_on_my_domain_only() {
    let sim = simulator(2000, Credentials::demo()).await;
    let mut client =
        SalesforceClient::new(&config(), &client_credentials_org(&sim.base_url())).unwrap();
    assert_eq!(
        client.sign_in().await.unwrap().org_id,
        sim.handle().org_id()
    );

    let err = SalesforceClient::new(
        &config(),
        &client_credentials_org("https://login.salesforce.com"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("My Domain"), "{err}");
    assert!(SalesforceClient::new(
        &config(),
        &client_credentials_org("https://acme--uat.sandbox.my.salesforce.com"),
    )
    .is_ok());
}

#[test]
fn each_flow_says_which_secret_it_lacks_or_does_not_use() {
    let password_without_password = OrgConfig {
        password: None,
        ..org("https://x.example", &Credentials::demo())
    };
    let err = password_without_password.validate().unwrap_err();
    assert!(err.contains("needs `password`"), "{err}");

    let jwt_with_password = OrgConfig {
        password: Some(SecretRef::Env("X".into())),
        ..jwt_org("https://login.salesforce.com", "u@x.example")
    };
    let err = jwt_with_password.validate().unwrap_err();
    assert!(err.contains("`password` is not used"), "{err}");

    let jwt_without_key = OrgConfig {
        private_key: None,
        ..jwt_org("https://x.example", "u")
    };
    assert!(jwt_without_key
        .validate()
        .unwrap_err()
        .contains("needs `private_key`"));
}
