//! The quota governor end to end: against the simulator with a small daily allowance and
//! librdkafka's mock cluster as the broker, a sync that would take too much stops early
//! and says "paused for quota", never success.

mod support;

use rdkafka::mocking::MockCluster;
use seatwatch_common::Shutdown;
use seatwatch_ingest::{sync_once, IngestConfig};
use seatwatch_schemas::{SyncOutcome, SyncStatus};
use seatwatch_simulator::{Credentials, SimulatorConfig, SimulatorHandle};

async fn sync_with_allowance(
    api_daily_limit: u64,
    page_size: usize,
    used_before: u64,
) -> (SyncStatus, SimulatorHandle) {
    let cluster = MockCluster::new(1).unwrap();
    let sim_config = SimulatorConfig {
        api_daily_limit,
        page_size,
        ..SimulatorConfig::for_tests()
    };
    let sim = seatwatch_simulator::start(sim_config, Shutdown::new())
        .await
        .unwrap();
    sim.handle().set_api_calls(used_before);

    let mut config = IngestConfig::with_defaults(support::mock_kafka(&cluster));
    config.orgs.push(support::simulated_org(
        "sim",
        &sim.base_url(),
        &Credentials::demo(),
    ));

    let mut statuses = sync_once(config, Shutdown::new()).await.unwrap();
    (statuses.remove(0), sim.handle())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_above_its_total_share_is_not_queried() {
    let (status, sim) = sync_with_allowance(1000, 2000, 850).await;

    assert_eq!(status.outcome, SyncOutcome::PausedForQuota);
    assert_eq!(status.error_class.as_deref(), Some("quota"));
    let message = status.error_message.unwrap();
    assert!(message.contains("max_total_share 80%"), "{message}");
    assert!(
        status.records.is_empty(),
        "no object was read: {:?}",
        status.records
    );
    assert_eq!(status.api_calls, 1, "only /limits");
    assert_eq!(sim.api_calls(), 851);
    assert_eq!(status.last_success_at, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_stops_once_it_used_its_share_of_the_allowance() {
    // 1,200 users in pages of 10 would take over 120 calls; 25% of 200 is 50.
    let (status, sim) = sync_with_allowance(200, 10, 0).await;

    assert_eq!(status.outcome, SyncOutcome::PausedForQuota);
    let message = status.error_message.unwrap();
    assert!(message.contains("max_run_share 25%"), "{message}");
    assert_eq!(status.api_calls, 51, "stopped at the first call over 50");
    assert_eq!(sim.api_calls(), 51);
    assert_eq!((status.api_used, status.api_limit), (Some(51), Some(200)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_within_its_share_succeeds() {
    let (status, _) = sync_with_allowance(115_000, 2000, 0).await;
    assert_eq!(
        status.outcome,
        SyncOutcome::Success,
        "{:?}",
        status.error_message
    );
    assert_eq!(status.api_calls, 7, "/limits plus one call per object");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_limit_exceeded_pauses_the_org() {
    let (status, _) = sync_with_allowance(1000, 2000, 1000).await;

    assert_eq!(status.outcome, SyncOutcome::PausedForQuota);
    let message = status.error_message.unwrap();
    assert!(
        message.contains("API request limit is exceeded"),
        "{message}"
    );
}
