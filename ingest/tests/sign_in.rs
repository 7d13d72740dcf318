//! `ingest check` against orgs whose setup refuses the sign-in although the credentials
//! are right: each refusal comes with its recorded Salesforce error, the likely cause and
//! the fix, and no data call is made. No broker is involved.

mod support;

use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::Shutdown;
use seatwatch_ingest::check::{check, render};
use seatwatch_ingest::IngestConfig;
use seatwatch_simulator::{Credentials, Faults, SimulatorConfig, SimulatorHandle};

/// Runs `ingest check` on one org whose simulator has `faults`; returns the report.
async fn check_under(faults: Faults) -> (String, bool, SimulatorHandle) {
    let sim = seatwatch_simulator::start(SimulatorConfig::for_tests(), Shutdown::new())
        .await
        .unwrap();
    sim.handle().with_faults(|f| *f = faults);
    let mut config = IngestConfig::with_defaults(KafkaConfig::default());
    config.retry_base_ms = 1;
    config.max_attempts = 2;
    let org = support::simulated_org("acme", &sim.base_url(), &Credentials::demo());
    config.orgs.push(org);

    let checks = check(&config).await.unwrap();
    let passed = checks.iter().all(|c| c.passed());
    (render(&checks), passed, sim.handle())
}

/// Asserts the report names the wire error, a cause and a fix, and that nothing was read.
fn assert_explained(report: &str, passed: bool, sim: &SimulatorHandle, wire: &str, fix: &str) {
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("org acme: sign-in FAILED: {wire}")),
        "{report}"
    );
    assert!(report.contains("  likely cause: "), "{report}");
    assert!(
        report.contains("  fix: ") && report.contains(fix),
        "{report}"
    );
    assert!(report.contains("1 of 1 org(s) need attention"), "{report}");
    assert_eq!(sim.api_calls(), 0, "no object is queried without a session");
    assert_eq!(sim.logins(), 0);
}

#[tokio::test]
async fn a_blocked_password_flow_is_named_among_the_causes() {
    let faults = Faults {
        password_flow_blocked: true,
        ..Faults::default()
    };
    let (report, passed, sim) = check_under(faults).await;
    let wire = "invalid_grant (authentication failure)";
    assert_explained(&report, passed, &sim, wire, "JWT bearer");
    assert!(
        report.contains("blocks the OAuth username-password flow"),
        "{report}"
    );
    assert!(report.contains("Login History"), "{report}");
}

#[tokio::test]
async fn an_ip_restriction_says_to_relax_it_or_trust_the_range() {
    let faults = Faults {
        ip_restricted: true,
        ..Faults::default()
    };
    let (report, passed, sim) = check_under(faults).await;
    let wire = "invalid_grant (ip restricted)";
    assert_explained(&report, passed, &sim, wire, "relax IP restrictions");
    assert!(report.contains("Login IP Ranges"), "{report}");
}

#[tokio::test]
async fn a_consumer_key_not_yet_propagated_says_to_wait() {
    let faults = Faults {
        unpropagated_consumer_key_sign_ins: 10,
        ..Faults::default()
    };
    let (report, passed, sim) = check_under(faults).await;
    let wire = "invalid_client_id (client identifier invalid)";
    assert_explained(&report, passed, &sim, wire, "wait ten minutes");
    assert!(report.contains("has not reached every"), "{report}");
}

#[tokio::test]
async fn a_user_not_approved_points_at_permitted_users() {
    let faults = Faults {
        user_not_approved: true,
        ..Faults::default()
    };
    let (report, passed, sim) = check_under(faults).await;
    let wire = "invalid_grant (user hasn't approved this consumer)";
    assert_explained(&report, passed, &sim, wire, "pre-authorize");
    assert!(report.contains("Permitted Users"), "{report}");
}

#[tokio::test]
async fn an_admin_approved_app_without_the_user_says_to_add_the_profile() {
    let faults = Faults {
        app_not_admin_approved: true,
        ..Faults::default()
    };
    let (report, passed, sim) = check_under(faults).await;
    let wire = "invalid_app_access (user is not admin approved to access this app)";
    assert_explained(&report, passed, &sim, wire, "admin-approved users");
}

#[tokio::test]
async fn an_exceeded_login_rate_is_explained() {
    let sim = seatwatch_simulator::start(SimulatorConfig::for_tests(), Shutdown::new())
        .await
        .unwrap();
    sim.handle().set_login_rate_limit_per_hour(0);
    let mut config = IngestConfig::with_defaults(KafkaConfig::default());
    config.retry_base_ms = 1;
    config.max_attempts = 3;
    let org = support::simulated_org("acme", &sim.base_url(), &Credentials::demo());
    config.orgs.push(org);

    let checks = check(&config).await.unwrap();
    let report = render(&checks);

    let wire = "invalid_grant (login rate exceeded)";
    assert_explained(
        &report,
        checks[0].passed(),
        &sim.handle(),
        wire,
        "backs off",
    );
    assert!(report.contains("3,600 logins"), "{report}");
}

#[tokio::test]
async fn a_propagated_consumer_key_then_passes() {
    // The key reaches the server after two sign-ins; the third check passes.
    let faults = Faults {
        unpropagated_consumer_key_sign_ins: 2,
        ..Faults::default()
    };
    let sim = seatwatch_simulator::start(SimulatorConfig::for_tests(), Shutdown::new())
        .await
        .unwrap();
    sim.handle().with_faults(|f| *f = faults);
    let mut config = IngestConfig::with_defaults(KafkaConfig::default());
    config.orgs.push(support::simulated_org(
        "acme",
        &sim.base_url(),
        &Credentials::demo(),
    ));

    for _ in 0..2 {
        assert!(!check(&config).await.unwrap()[0].passed());
    }
    let checks = check(&config).await.unwrap();
    assert!(checks[0].passed(), "{}", render(&checks));
}
