//! Syncs through Salesforce's bad days, end to end: against the simulator with
//! librdkafka's mock cluster as the broker, each fault ends in the status it deserves
//! (auth failure, paused for quota, failed, or success after retries), no record is lost
//! to it, and one broken org never keeps another from its sync.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use seatwatch_common::http::Health;
use seatwatch_common::Shutdown;
use seatwatch_ingest::{run_with, sync_once, IngestConfig, OrgConfig};
use seatwatch_schemas::salesforce::RecordId;
use seatwatch_schemas::{SfObject, SyncOutcome, SyncStatus};
use seatwatch_simulator::{Credentials, Faults, RunningSimulator, SimulatorConfig};

struct Setup {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    sim: RunningSimulator,
    config: IngestConfig,
}

/// One simulated org (pages of 200 rows) and an ingest config that retries fast.
async fn setup() -> Setup {
    let cluster = MockCluster::new(1).unwrap();
    let sim = start_simulator(SimulatorConfig::for_tests()).await;
    let mut config = IngestConfig::with_defaults(support::mock_kafka(&cluster));
    config.retry_base_ms = 1;
    config.max_attempts = 3;
    config.orgs.push(org("sim", &sim));
    Setup {
        _cluster: cluster,
        sim,
        config,
    }
}

async fn start_simulator(config: SimulatorConfig) -> RunningSimulator {
    let config = SimulatorConfig {
        page_size: 200,
        ..config
    };
    seatwatch_simulator::start(config, Shutdown::new())
        .await
        .unwrap()
}

fn org(name: &str, sim: &RunningSimulator) -> OrgConfig {
    support::simulated_org(name, &sim.base_url(), &Credentials::demo())
}

async fn sync(config: &IngestConfig) -> Vec<SyncStatus> {
    sync_once(config.clone(), Shutdown::new()).await.unwrap()
}

fn assert_success(status: &SyncStatus) {
    assert_eq!(
        status.outcome,
        SyncOutcome::Success,
        "{}: {:?}",
        status.org_name,
        status.error_message
    );
    assert_eq!(status.error_class, None);
    assert!(status.last_success_at.is_some());
}

fn user_count(setup: &Setup) -> i64 {
    setup.sim.handle().with_org(|org| org.users.len()) as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_sign_in_is_an_auth_failure_not_an_error_or_a_success() {
    let setup = setup().await;
    setup.sim.handle().with_faults(|f| {
        *f = Faults {
            password_flow_blocked: true,
            ..Faults::default()
        }
    });

    let status = sync(&setup.config).await.remove(0);

    assert_eq!(status.outcome, SyncOutcome::AuthFailed);
    assert_eq!(status.error_class.as_deref(), Some("auth"));
    let message = status.error_message.unwrap();
    assert!(message.contains("authentication failure"), "{message}");
    assert!(
        message.contains("blocks the OAuth username-password flow"),
        "{message}"
    );
    assert!(status.records.is_empty());
    assert_eq!((status.api_calls, status.last_success_at), (0, None));
    assert_eq!(setup.sim.handle().api_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_of_5xx_and_edge_html_within_the_retries_still_succeed_in_full() {
    let mut setup = setup().await;
    // One call meets all four failures: the fifth attempt gets through.
    setup.config.max_attempts = 5;
    setup.sim.handle().with_faults(|f| {
        f.edge_html_next_data_calls = 2;
        f.fail_next_data_calls = 2;
    });

    let status = sync(&setup.config).await.remove(0);

    assert_success(&status);
    assert_eq!(status.records["User"], user_count(&setup));
    let left = setup
        .sim
        .handle()
        .with_faults(|f| f.edge_html_next_data_calls + f.fail_next_data_calls);
    assert_eq!(left, 0, "every injected failure was met and retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_the_retries_fails_and_the_next_sync_loses_nothing() {
    let setup = setup().await;
    assert_success(&sync(&setup.config).await.remove(0));

    // Users change, then Salesforce answers 503 to more calls than ingest retries.
    let changed = deactivate_users(&setup, 4);
    setup
        .sim
        .handle()
        .with_faults(|f| f.fail_next_data_calls = 3);
    let failed = sync(&setup.config).await.remove(0);

    assert_eq!(failed.outcome, SyncOutcome::Failed);
    assert_eq!(failed.error_class.as_deref(), Some("salesforce"));
    let message = failed.error_message.unwrap();
    assert!(message.contains("SERVER_UNAVAILABLE"), "{message}");

    // The cursor did not move: the changes come with the next sync.
    let next = sync(&setup.config).await.remove(0);
    assert_success(&next);
    assert_eq!(next.records["User"], changed as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_slower_than_the_request_timeout_is_retried() {
    let mut setup = setup().await;
    setup.config.request_timeout_secs = 1;
    setup.sim.handle().with_faults(|f| {
        f.slow_next_data_calls = 1;
        f.slow_call_delay = Duration::from_secs(5);
    });

    let started = std::time::Instant::now();
    let status = sync(&setup.config).await.remove(0);

    assert_success(&status);
    assert_eq!(status.records["User"], user_count(&setup));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ingest gave up on the slow call instead of waiting it out"
    );
}

/// How many data calls a clean first sync of the built-in org makes, measured on a
/// simulator of its own: the last `User` pages are the last calls.
async fn clean_sync_calls() -> u32 {
    let setup = setup().await;
    assert_success(&sync(&setup.config).await.remove(0));
    u32::try_from(setup.sim.handle().api_calls()).unwrap()
}

/// The ids of every `User` record on the raw topic, with how often each came.
fn emitted_users(setup: &Setup) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for envelope in support::raw_envelopes(&setup.config.kafka) {
        if envelope.object != SfObject::User {
            continue;
        }
        let Some(record) = envelope.record else {
            continue;
        };
        let id: RecordId<'_> = serde_json::from_str(record.get()).unwrap();
        *seen.entry(id.id.into_owned()).or_default() += 1;
    }
    seen
}

fn simulated_users(setup: &Setup) -> BTreeSet<String> {
    setup
        .sim
        .handle()
        .with_org(|org| org.users.iter().map(|u| u.id.clone()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_on_page_k_of_n_are_retried_and_every_user_is_emitted_once() {
    // The built-in org's 1,200 users come in 6 pages of 200, the last calls of a sync:
    // letting all but 3 calls through puts each fault on page 4 of 6.
    let page_four = clean_sync_calls().await - 3;
    type Inject = fn(&mut Faults);
    let cases: [(&str, Inject); 3] = [
        ("503 twice", |f| f.fail_next_data_calls = 2),
        ("420 edge HTML twice", |f| f.edge_html_next_data_calls = 2),
        ("a response slower than the timeout", |f| {
            f.slow_next_data_calls = 1;
            f.slow_call_delay = Duration::from_secs(5);
        }),
    ];
    for (name, inject) in cases {
        let mut setup = setup().await;
        setup.config.request_timeout_secs = 1;
        setup.sim.handle().with_faults(|f| {
            f.faults_after_data_calls = page_four;
            inject(f);
        });

        let status = sync(&setup.config).await.remove(0);

        assert_success(&status);
        let left = setup.sim.handle().with_faults(|f| {
            f.faults_after_data_calls
                + f.fail_next_data_calls
                + f.edge_html_next_data_calls
                + f.slow_next_data_calls
        });
        assert_eq!(left, 0, "{name}: the fault was met on page 4");
        let emitted = emitted_users(&setup);
        let ids: BTreeSet<String> = emitted.keys().cloned().collect();
        assert_eq!(
            ids,
            simulated_users(&setup),
            "{name}: the union is the full result"
        );
        let repeated: Vec<_> = emitted.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name}: a retried page re-emitted {repeated:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_on_page_k_fails_the_sync_and_the_next_one_completes_it() {
    let page_four = clean_sync_calls().await - 3;
    let setup = setup().await;
    setup.sim.handle().with_faults(|f| {
        f.faults_after_data_calls = page_four;
        f.fail_next_data_calls = u32::try_from(setup.config.max_attempts).unwrap();
    });

    let failed = sync(&setup.config).await.remove(0);
    assert_eq!(failed.outcome, SyncOutcome::Failed);
    let partial = emitted_users(&setup).len();
    assert_eq!(partial, 600, "pages 1 to 3 were emitted before the outage");

    // The cursor did not pass the failed page: the next sync reads the users again, in
    // full, and the union is the whole org.
    let next = sync(&setup.config).await.remove(0);
    assert_success(&next);
    assert_eq!(next.records["User"], user_count(&setup));
    let ids: BTreeSet<String> = emitted_users(&setup).into_keys().collect();
    assert_eq!(ids, simulated_users(&setup));
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_errors_from_the_broker_are_retried_without_loss_or_duplicates() {
    let setup = setup().await;
    // The next Produce requests fail the way a broker under a leader change or overload
    // answers; librdkafka's idempotent producer retries them.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    setup
        ._cluster
        .request_errors(RDKafkaApiKey::Produce, &errors.repeat(2));

    let status = sync(&setup.config).await.remove(0);

    assert_success(&status);
    let emitted = emitted_users(&setup);
    let ids: BTreeSet<String> = emitted.keys().cloned().collect();
    assert_eq!(ids, simulated_users(&setup));
    let repeated = emitted.values().filter(|n| **n > 1).count();
    assert_eq!(repeated, 0, "the idempotent producer wrote no record twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_produce_error_that_cannot_be_retried_fails_the_sync_and_the_next_one_resends() {
    let setup = setup().await;
    setup._cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );

    let failed = sync(&setup.config).await.remove(0);
    assert_eq!(failed.outcome, SyncOutcome::Failed, "{failed:?}");
    assert_eq!(failed.error_class.as_deref(), Some("broker"), "{failed:?}");
    let message = failed.error_message.unwrap();
    assert!(message.contains("InvalidRecord"), "{message}");
    assert!(
        message.contains("the next sync sends them again"),
        "{message}"
    );

    // Nothing was acknowledged as a whole sync: no cursor, so the next sync sends every
    // user again and the union is the whole org.
    let next = sync(&setup.config).await.remove(0);
    assert_success(&next);
    assert_eq!(next.records["User"], user_count(&setup));
    let ids: BTreeSet<String> = emitted_users(&setup).into_keys().collect();
    assert_eq!(ids, simulated_users(&setup));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_limit_exceeded_mid_sync_pauses_and_the_next_sync_loses_nothing() {
    let mut setup = setup().await;
    // Let the org run into Salesforce's own limit rather than seatwatch's shares.
    setup.config.max_run_share = 1.0;
    setup.config.max_total_share = 1.0;
    assert_success(&sync(&setup.config).await.remove(0));
    let changed = deactivate_users(&setup, 3);

    // Three calls left: /limits and two licences, then REQUEST_LIMIT_EXCEEDED.
    let handle = setup.sim.handle();
    handle.set_api_calls(seatwatch_simulator::DEFAULT_API_DAILY_LIMIT - 3);
    let paused = sync(&setup.config).await.remove(0);

    assert_eq!(paused.outcome, SyncOutcome::PausedForQuota);
    assert_eq!(paused.error_class.as_deref(), Some("quota"));
    let message = paused.error_message.unwrap();
    assert!(
        message.contains("API request limit is exceeded"),
        "{message}"
    );
    assert!(!paused.records.contains_key("User"), "{:?}", paused.records);

    // The allowance recovers; the deactivations arrive.
    handle.set_api_calls(0);
    let next = sync(&setup.config).await.remove(0);
    assert_success(&next);
    assert_eq!(next.records["User"], changed as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_org_does_not_stop_the_others_and_each_has_its_own_quota() {
    let setup = setup().await;
    let broken = start_simulator(SimulatorConfig::for_tests()).await;
    broken.handle().with_faults(|f| f.ip_restricted = true);

    // The broken org first; then the healthy one; then the healthy one again under a
    // share so small that its own earlier calls exceed it.
    let mut config = setup.config.clone();
    config.orgs = vec![
        org("broken", &broken),
        org("healthy", &setup.sim),
        OrgConfig {
            max_total_share: Some(0.000_01),
            ..org("frugal", &setup.sim)
        },
    ];

    let statuses = sync(&config).await;

    let by_name = |name: &str| statuses.iter().find(|s| s.org_name == name).unwrap();
    assert_eq!(statuses.len(), 3);
    let broken_status = by_name("broken");
    assert_eq!(broken_status.outcome, SyncOutcome::AuthFailed);
    let message = broken_status.error_message.as_deref().unwrap();
    assert!(message.contains("ip restricted"), "{message}");

    let healthy = by_name("healthy");
    assert_success(healthy);
    assert_eq!(healthy.records["User"], user_count(&setup));

    let frugal = by_name("frugal");
    assert_eq!(frugal.outcome, SyncOutcome::PausedForQuota);
    let message = frugal.error_message.as_deref().unwrap();
    assert!(message.contains("max_total_share 0%"), "{message}");
    assert!(frugal.records.is_empty());
}

/// `seatwatch_ingest_syncs_total` of one org and outcome.
fn syncs(registry: &prometheus::Registry, org: &str, outcome: &str) -> u64 {
    let labels = |m: &prometheus::proto::Metric| {
        let value = |name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
        };
        (value("org"), value("outcome"))
    };
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "seatwatch_ingest_syncs_total")
        .flat_map(|family| family.get_metric())
        .filter(|m| labels(m) == (Some(org.into()), Some(outcome.into())))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_keeps_polling_each_org_on_its_own_schedule() {
    let setup = setup().await;
    let broken = start_simulator(SimulatorConfig::for_tests()).await;
    broken.handle().with_faults(|f| f.ip_restricted = true);
    let mut config = setup.config.clone();
    config.poll_interval_secs = 1;
    config.orgs = vec![
        org("broken", &broken),
        org("healthy", &setup.sim),
        OrgConfig {
            poll_interval_secs: Some(3600),
            ..org("hourly", &setup.sim)
        },
    ];

    let registry = prometheus::Registry::new();
    let shutdown = Shutdown::new();
    let service = tokio::spawn({
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        async move { run_with(config, shutdown, &registry, Health::new()).await }
    });

    // Wait until the healthy org synced three times and the broken one failed twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while syncs(&registry, "healthy", "success") < 3
        || syncs(&registry, "broken", "auth_failed") < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "healthy {} broken {}",
            syncs(&registry, "healthy", "success"),
            syncs(&registry, "broken", "auth_failed")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    service.await.unwrap().unwrap();

    assert_eq!(syncs(&registry, "healthy", "failed"), 0);
    assert_eq!(syncs(&registry, "broken", "success"), 0);
    assert_eq!(
        syncs(&registry, "hourly", "success"),
        1,
        "its own interval of an hour: one sync in the window"
    );
}

/// Deactivates `n` users other than the integration user; returns how many.
fn deactivate_users(setup: &Setup, n: usize) -> usize {
    let integration = Credentials::demo().username.to_lowercase();
    let now = Utc::now();
    setup.sim.handle().with_org(|org| {
        let ids: Vec<String> = org
            .users
            .iter()
            .filter(|u| u.is_active && u.username.to_lowercase() != integration)
            .take(n)
            .map(|u| u.id.clone())
            .collect();
        for id in &ids {
            org.set_user_active(id, false, now).unwrap();
        }
        ids.len()
    })
}
