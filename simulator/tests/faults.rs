//! Injected faults: server errors, Edge HTML, session expiry after N calls, slow answers,
//! and the sign-in refusals an org's setup causes even with the right credentials.

mod common;

use std::time::{Duration, Instant};

use common::{assert_matches_fixture, limit_info, password_form, Sim, FORM};
use seatwatch_simulator::{Credentials, Faults};

const SOQL: &str = "SELECT Id, Name FROM UserLicense";

#[tokio::test]
async fn the_next_calls_fail_with_server_unavailable() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    sim.running
        .handle()
        .with_faults(|f| f.fail_next_data_calls = 2);
    for _ in 0..2 {
        let response = sim.query(&token, SOQL).await;
        assert!(limit_info(&response).is_some());
        assert_matches_fixture(response, "error_server_unavailable.json").await;
    }
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert_eq!(
        sim.running.handle().api_calls(),
        1,
        "failed calls are not counted"
    );
}

#[tokio::test]
async fn edge_html_is_served_with_420() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    sim.running
        .handle()
        .with_faults(|f| f.edge_html_next_data_calls = 1);
    assert_matches_fixture(sim.query(&token, SOQL).await, "error_edge_420_html.json").await;
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
}

#[tokio::test]
async fn a_session_expires_after_n_data_calls_and_a_new_login_recovers() {
    let sim = Sim::default().await;
    sim.running
        .handle()
        .with_faults(|f| f.expire_session_after_data_calls = Some(3));
    let token = sim.login().await;
    for _ in 0..3 {
        assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    }
    assert_matches_fixture(
        sim.query(&token, SOQL).await,
        "error_invalid_session_id.json",
    )
    .await;

    let fresh = sim.login().await;
    assert_ne!(fresh, token);
    assert_eq!(sim.query(&fresh, SOQL).await.status(), 200);
    assert_eq!(sim.running.handle().logins(), 2);
}

#[tokio::test]
async fn expire_sessions_invalidates_every_token() {
    let sim = Sim::default().await;
    let tokens = [sim.login().await, sim.login().await];
    assert_eq!(sim.running.handle().open_sessions(), 2);
    sim.running.handle().expire_sessions();
    for token in &tokens {
        assert_matches_fixture(
            sim.query(token, SOQL).await,
            "error_invalid_session_id.json",
        )
        .await;
    }
    assert_eq!(sim.running.handle().open_sessions(), 0);
}

#[tokio::test]
async fn slow_answers_are_slow() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let delay = Duration::from_millis(300);
    sim.running
        .handle()
        .with_faults(|f| f.data_call_delay = Some(delay));
    let started = Instant::now();
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert!(started.elapsed() >= delay);
}

#[tokio::test]
async fn only_the_slow_calls_are_slow() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let delay = Duration::from_millis(400);
    sim.running.handle().with_faults(|f| {
        f.slow_next_data_calls = 1;
        f.slow_call_delay = delay;
    });

    let started = Instant::now();
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert!(started.elapsed() >= delay);

    let started = Instant::now();
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert!(started.elapsed() < delay, "the second call was held too");
}

/// Signs in with the demo credentials, which are right, under `faults`.
async fn sign_in_under(faults: Faults) -> (Sim, reqwest::Response) {
    let sim = Sim::default().await;
    sim.running.handle().with_faults(|f| *f = faults);
    let response = sim
        .post_token(FORM, password_form(&Credentials::demo(), None))
        .await;
    (sim, response)
}

/// The status of the integration user's newest LoginHistory row.
fn last_login_status(sim: &Sim) -> String {
    sim.running
        .handle()
        .with_org(|org| org.login_history.last().map(|row| row.status.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_blocked_password_flow_looks_like_a_wrong_password_on_the_wire() {
    let faults = Faults {
        password_flow_blocked: true,
        ..Faults::default()
    };
    let (sim, response) = sign_in_under(faults).await;

    let fixture = "token_error_invalid_grant_authentication_failure.json";
    assert_matches_fixture(response, fixture).await;
    assert_eq!(last_login_status(&sim), "Username-Password Flow Disabled");
    assert_eq!(sim.running.handle().logins(), 0);
}

#[tokio::test]
async fn each_org_setup_refusal_answers_with_its_recorded_body() {
    let cases = [
        (
            Faults {
                ip_restricted: true,
                ..Faults::default()
            },
            "token_error_ip_restricted.json",
        ),
        (
            Faults {
                user_not_approved: true,
                ..Faults::default()
            },
            "token_error_user_not_approved.json",
        ),
        (
            Faults {
                app_not_admin_approved: true,
                ..Faults::default()
            },
            "token_error_invalid_app_access.json",
        ),
        (
            Faults {
                unpropagated_consumer_key_sign_ins: 5,
                ..Faults::default()
            },
            "token_error_invalid_client_id.json",
        ),
    ];
    for (faults, fixture) in cases {
        let (sim, response) = sign_in_under(faults).await;
        assert_matches_fixture(response, fixture).await;
        assert_eq!(sim.running.handle().logins(), 0, "{fixture}");
    }
}

#[tokio::test]
async fn an_ip_restriction_shows_in_login_history() {
    let faults = Faults {
        ip_restricted: true,
        ..Faults::default()
    };
    let (sim, _) = sign_in_under(faults).await;
    assert_eq!(last_login_status(&sim), "Restricted IP");
}

#[tokio::test]
async fn a_consumer_key_is_found_once_it_has_propagated() {
    let faults = Faults {
        unpropagated_consumer_key_sign_ins: 2,
        ..Faults::default()
    };
    let (sim, first) = sign_in_under(faults).await;
    assert_eq!(first.status(), 400);
    let form = password_form(&Credentials::demo(), None);
    assert_eq!(sim.post_token(FORM, form.clone()).await.status(), 400);

    assert_eq!(sim.post_token(FORM, form).await.status(), 200);
    assert_eq!(sim.running.handle().logins(), 1);
}
