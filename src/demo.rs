//! `seatwatch demo`: the whole pipeline in one process, with nothing to set up.
//!
//! Three orgs show every alert rule at work: the Salesforce simulator serves a changing
//! mid-size org on a loopback port; a second simulator serves a small sandbox whose daily
//! API allowance is nearly used up (paused for quota, then stale); and a third org is
//! configured with a wrong password (sign-in fails).
//! librdkafka's in-process mock cluster stands in for the broker (it has no admin API, so
//! topics are created through the mock's own call, and it keeps about 5 MiB per
//! partition, plenty here); ingest, transform and alert run as tasks against them exactly
//! as they run as separate processes. Alerts are printed as they fire and resolve, as
//! sentences or, with `--json`, one JSON object per line on stdout.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use rdkafka::mocking::MockCluster;
use seatwatch_common::http::{self, Health};
use seatwatch_common::kafka::{KafkaConfig, Topics};
use seatwatch_common::{shutdown, SecretRef, Shutdown};
use seatwatch_schemas::{Alert, AlertStatus};
use seatwatch_simulator::{Credentials, OrgSource, SimulatorConfig};
use tokio::sync::mpsc;

/// `seatwatch demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (exit 0). Without it, run until Ctrl-C.
    #[arg(long)]
    pub run_for: Option<u64>,
    /// Print one JSON object per alert event on stdout instead of sentences.
    #[arg(long)]
    pub json: bool,
    /// Users in the simulated org.
    #[arg(long, default_value_t = 1200)]
    pub users: usize,
    /// Seconds between syncs of the simulated org.
    #[arg(long, default_value_t = 3)]
    pub poll_interval_secs: u64,
    /// Address of the demo's /metrics, /healthz and /readyz server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// Partitions of each demo topic: more than one, so the demo exercises partitioning.
const DEMO_PARTITIONS: i32 = 3;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signals();
    if let Some(secs) = args.run_for {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.cancel();
        });
    }

    // The broker: an in-process mock cluster with seatwatch's topics.
    let cluster = MockCluster::new(1).context("starting the in-process Kafka mock cluster")?;
    let topics = Topics::new("");
    for spec in topics.specs() {
        cluster
            .create_topic(&spec.name, DEMO_PARTITIONS, 1)
            .with_context(|| format!("creating topic {}", spec.name))?;
    }
    let kafka = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        partitions: DEMO_PARTITIONS,
        create_topics: false,
        ..KafkaConfig::default()
    };

    // Salesforce: the simulator, changing the org every few seconds.
    let simulator_stop = Shutdown::new();
    let simulator = seatwatch_simulator::start(
        SimulatorConfig {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            org: OrgSource::BuiltIn { users: args.users },
            demo: true,
            ..SimulatorConfig::for_tests()
        },
        simulator_stop.clone(),
    )
    .await
    .context("starting the Salesforce simulator")?;
    let quota_bound = start_quota_bound_simulator(simulator_stop.clone()).await?;

    // One ops server for the three services.
    let registry = Registry::new();
    let health = Health::new();
    let router = http::router(registry.clone(), health.clone());
    let (ops_addr, ops) = http::serve(args.listen, router, stop.clone()).await?;
    eprintln!(
        "seatwatch demo: simulator at {}, metrics at http://{ops_addr}/metrics",
        simulator.base_url()
    );

    let (alerts_tx, alerts_rx) = mpsc::channel(1024);
    let services = spawn_services(
        &args,
        &kafka,
        (&simulator.base_url(), &quota_bound.base_url()),
        &registry,
        alerts_tx,
        &stop,
    );
    health.set_ready();

    let printed = print_alerts(alerts_rx, args.json).await;

    // The printer ends when the alert service drops its sender, after shutdown.
    for (name, task) in services {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("{name} failed: {e:#}"),
            Err(e) => anyhow::bail!("{name} panicked: {e}"),
        }
    }
    simulator_stop.cancel();
    simulator.stop().await;
    quota_bound.stop().await;
    let _ = ops.await;
    drop(cluster);

    eprintln!("{}", printed.summary());
    eprintln!("{}", recommendation_total(&registry));
    Ok(())
}

/// A small org whose API usage is at 90% of its daily allowance: ingest pauses it for
/// quota (above its 80% share), so it never syncs and goes stale.
async fn start_quota_bound_simulator(
    stop: Shutdown,
) -> anyhow::Result<seatwatch_simulator::RunningSimulator> {
    let config = SimulatorConfig {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        org: OrgSource::BuiltIn { users: 100 },
        ..SimulatorConfig::for_tests()
    };
    let daily_limit = config.api_daily_limit;
    let simulator = seatwatch_simulator::start(config, stop)
        .await
        .context("starting the second Salesforce simulator")?;
    let handle = simulator.handle();
    handle.with_org(|org| {
        org.org_id = QUOTA_BOUND_ORG_ID.into();
        org.name = "Quota-Bound Sandbox".into();
    });
    handle.set_api_calls(daily_limit * 9 / 10);
    Ok(simulator)
}

/// The quota-bound org's id, distinct from the built-in org's.
const QUOTA_BOUND_ORG_ID: &str = "00D000000000002EAA";

/// What the recommendations add up to, from the alert service's metrics.
fn recommendation_total(registry: &Registry) -> String {
    let sum = |name: &str| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_gauge().get_value())
            .sum()
    };
    format!(
        "seatwatch demo: {} reclaim recommendations, about USD {:.0} a month",
        sum("seatwatch_recommendations"),
        sum("seatwatch_reclaimable_monthly_saving")
    )
}

type ServiceTask = tokio::task::JoinHandle<anyhow::Result<()>>;

fn spawn_services(
    args: &DemoArgs,
    kafka: &KafkaConfig,
    (simulator_url, quota_bound_url): (&str, &str),
    registry: &Registry,
    alerts: mpsc::Sender<Alert>,
    stop: &Shutdown,
) -> Vec<(&'static str, ServiceTask)> {
    let credentials = Credentials::demo();
    let mut ingest = seatwatch_ingest::IngestConfig::with_defaults(kafka.clone());
    ingest.poll_interval_secs = args.poll_interval_secs;
    // Logins do not move SystemModstamp, so the demo reads users in full every sync to
    // show them within seconds; deployments read them incrementally.
    ingest.full_sync_interval_secs = 0;
    let org = |name: &str, login_url: &str| seatwatch_ingest::OrgConfig {
        name: name.into(),
        login_url: login_url.to_owned(),
        consumer_key: credentials.consumer_key.clone(),
        username: credentials.username.clone(),
        consumer_secret: Some(SecretRef::Inline(credentials.consumer_secret.clone())),
        password: Some(SecretRef::Inline(credentials.password.clone())),
        security_token: Some(SecretRef::Inline(credentials.security_token.clone())),
        ..Default::default()
    };
    ingest.orgs.push(org("simulated-org", simulator_url));
    ingest
        .orgs
        .push(org("quota-bound-sandbox", quota_bound_url));
    ingest.orgs.push(seatwatch_ingest::OrgConfig {
        password: Some(SecretRef::Inline("not-the-password".to_owned().into())),
        ..org("misconfigured-org", simulator_url)
    });

    let transform = seatwatch_transform::TransformConfig {
        kafka: kafka.clone(),
        ..Default::default()
    };
    let alert = demo_alert_config(kafka);

    let ingest_task = {
        let (stop, registry) = (stop.clone(), registry.clone());
        tokio::spawn(async move {
            seatwatch_ingest::run_with(ingest, stop, &registry, Health::new()).await?;
            Ok(())
        })
    };
    let transform_task = {
        let (stop, registry) = (stop.clone(), registry.clone());
        tokio::spawn(async move {
            seatwatch_transform::run_with(transform, stop, &registry, Health::new()).await?;
            Ok(())
        })
    };
    let alert_task = {
        let (stop, registry) = (stop.clone(), registry.clone());
        tokio::spawn(async move {
            let options = seatwatch_alert::RunOptions {
                registry,
                health: Health::new(),
                sink: Some(alerts),
                ..seatwatch_alert::RunOptions::default()
            };
            seatwatch_alert::run_with(alert, stop, options).await?;
            Ok(())
        })
    };
    vec![
        ("ingest", ingest_task),
        ("transform", transform_task),
        ("alert", alert_task),
    ]
}

/// The alert service's defaults, squeezed into a minute: an org is stale after 20 s
/// without a successful sync, and a trend needs 10 s of history instead of an hour. The
/// prices are list prices of the simulated org's licences, for the savings.
fn demo_alert_config(kafka: &KafkaConfig) -> seatwatch_alert::AlertConfig {
    let mut alert = seatwatch_alert::AlertConfig {
        kafka: kafka.clone(),
        evaluate_interval_secs: 1,
        ..Default::default()
    };
    alert.rules.stale_sync.stale_after_secs = 20;
    alert.rules.forecast.min_span_secs = 10;
    alert.prices.monthly = BTreeMap::from([
        ("Salesforce".to_owned(), 165.0),
        ("Salesforce Platform".to_owned(), 25.0),
        ("SalesforceCPQ_CPQStandardPerm".to_owned(), 75.0),
        ("IdentityConnect".to_owned(), 10.0),
        ("inksign".to_owned(), 12.0),
    ]);
    alert
}

/// What the demo printed, for the closing summary.
#[derive(Default)]
struct Printed {
    by_rule: BTreeMap<(String, &'static str), u64>,
}

impl Printed {
    fn summary(&self) -> String {
        if self.by_rule.is_empty() {
            return "seatwatch demo: no alert events".into();
        }
        let parts: Vec<String> = self
            .by_rule
            .iter()
            .map(|((rule, status), n)| format!("{n} {rule} {status}"))
            .collect();
        format!("seatwatch demo: alert events: {}", parts.join(", "))
    }
}

async fn print_alerts(mut alerts: mpsc::Receiver<Alert>, json: bool) -> Printed {
    let mut printed = Printed::default();
    while let Some(alert) = alerts.recv().await {
        if json {
            println!(
                "{}",
                serde_json::to_string(&alert_json(&alert)).expect("alerts serialise")
            );
        } else {
            println!("{}", sentence(&alert));
        }
        *printed
            .by_rule
            .entry((alert.rule.clone(), alert.status.as_str()))
            .or_default() += 1;
    }
    printed
}

/// The JSON shape printed per alert event: the Avro record's fields, timestamps as
/// RFC 3339.
fn alert_json(alert: &Alert) -> serde_json::Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    };
    serde_json::json!({
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "status": alert.status.as_str(),
        "severity": alert.severity.as_str(),
        "org_id": alert.org_id,
        "pool": alert.pool,
        "summary": alert.summary,
        "value": alert.value,
        "threshold": alert.threshold,
        "labels": alert.labels,
        "starts_at": time(alert.starts_at),
        "ends_at": alert.ends_at.map(time),
    })
}

fn sentence(alert: &Alert) -> String {
    let mark = match alert.status {
        AlertStatus::Firing => "FIRING  ",
        AlertStatus::Resolved => "RESOLVED",
    };
    format!(
        "{mark} [{}] {:<12} {}",
        alert.severity.as_str(),
        alert.rule,
        alert.summary
    )
}
