//! `seatwatch report`: the current seat state per org and licence pool, read from the
//! compacted topics, as a table, CSV or JSON.
//!
//! [`read_state`] reads `seats.license-state`, `seats.user-state` and
//! `seats.recommendations` from the beginning up to their high watermarks (no consumer
//! group, nothing committed); [`rows`] turns that into one [`PoolRow`] per licence, with
//! the idle seats and expiry the alert rules would see and the monthly saving of the
//! pool's reclaim recommendations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::kafka::{ServiceContext, TopicError, Topics};
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{
    Encoder, EncodingError, LicenseKind, LicenseState, Recommendation, UserState,
};
use serde::Serialize;

use crate::config::AlertConfig;
use crate::rules::{holds_a_seat, is_idle, DAY_MS};
use crate::state::SeatState;
use crate::AlertError;

/// How long reading the topics may take before the report gives up.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    Csv,
    /// One JSON array of rows.
    Json,
}

/// One licence pool of one org.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolRow {
    pub org_id: String,
    pub kind: &'static str,
    pub pool: String,
    pub total: Option<i64>,
    pub used: i64,
    pub available: Option<i64>,
    pub utilization: Option<f64>,
    /// Active seat holders idle for the pool's `idle_days` (user licences only).
    pub idle: Option<u64>,
    /// Whole days until the licence expires (negative once expired).
    pub expires_in_days: Option<i64>,
    /// Sum of the savings of the pool's reclaim recommendations, in `currency`: zero with
    /// none, and unknown (`None`, an empty cell) when they have no price (`[prices]` has
    /// no entry for the licence).
    pub potential_monthly_saving: Option<f64>,
    pub currency: String,
}

/// Everything the report needs from the topics.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: SeatState,
    pub recommendations: BTreeMap<String, Recommendation>,
}

/// Reads the three compacted topics to their ends.
pub async fn read_state(config: &AlertConfig) -> Result<Snapshot, AlertError> {
    let consumer: BaseConsumer<ServiceContext> = config
        .kafka
        .consumer_config("seatwatch-report", "seatwatch-report-unused")?
        .create_with_context(ServiceContext { service: "report" })?;
    let topics = Topics::new(&config.kafka.topic_prefix);
    let decoder = Decoder {
        encoder: Encoder::from_url(config.kafka.schema_registry_url.as_deref())?,
        runtime: tokio::runtime::Handle::current(),
    };
    let brokers = config.kafka.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || read_blocking(&consumer, &topics, &decoder, &brokers))
        .await
        .map_err(|error| AlertError::Task {
            task: "report",
            reason: error.to_string(),
        })?
}

/// Decodes seat state in either framing from the blocking reader, fetching a Confluent
/// writer schema from the registry (on the runtime) the first time its id is seen.
struct Decoder {
    encoder: Encoder,
    runtime: tokio::runtime::Handle,
}

impl Decoder {
    fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, EncodingError> {
        match self.encoder.decode_cached(bytes) {
            Err(EncodingError::SchemaNotCached { id }) => {
                self.runtime.block_on(self.encoder.load_schema(id))?;
                self.encoder.decode_cached(bytes)
            }
            decoded => decoded,
        }
    }
}

fn read_blocking(
    consumer: &BaseConsumer<ServiceContext>,
    topics: &Topics,
    decoder: &Decoder,
    brokers: &str,
) -> Result<Snapshot, AlertError> {
    let deadline = Instant::now() + READ_DEADLINE;
    let wanted = [
        &topics.license_state,
        &topics.user_state,
        &topics.recommendations,
    ];

    // Assign every partition from its start and note where it ends now.
    let mut assignment = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in wanted {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|error| TopicError::Unreachable {
                brokers: brokers.to_string(),
                error,
            })?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
            if high > low {
                assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
                ends.insert((topic.to_string(), partition.id()), high);
            }
        }
    }
    consumer.assign(&assignment)?;

    let mut snapshot = Snapshot::default();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(AlertError::Task {
                task: "report",
                reason: format!("the topics were not read within {READ_DEADLINE:?}"),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let at = (message.topic().to_owned(), message.partition());
        if ends
            .get(&at)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&at);
        }
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let payload = message.payload();
        let topic = message.topic();
        // Records that do not decode are skipped: the alert service counts them.
        if topic == topics.license_state {
            match payload.map(|bytes| decoder.decode::<LicenseState>(bytes)) {
                Some(Ok(license)) => snapshot.state.put_license(key, license),
                Some(Err(_)) => {}
                None => snapshot.state.remove_license(key),
            }
        } else if topic == topics.user_state {
            match payload.map(|bytes| decoder.decode::<UserState>(bytes)) {
                Some(Ok(user)) => snapshot.state.put_user(key, user),
                Some(Err(_)) => {}
                None => snapshot.state.remove_user(key),
            }
        } else if topic == topics.recommendations {
            match payload.map(|bytes| decoder.decode::<Recommendation>(bytes)) {
                Some(Ok(rec)) => {
                    snapshot.recommendations.insert(key.to_owned(), rec);
                }
                Some(Err(_)) => {}
                None => {
                    snapshot.recommendations.remove(key);
                }
            }
        }
    }
    Ok(snapshot)
}

/// One row per licence, sorted by org, kind and name.
pub fn rows(snapshot: &Snapshot, config: &AlertConfig, now_ms: i64) -> Vec<PoolRow> {
    // A pool's recommendations share its licence and so its price: all have a saving, or
    // none has.
    let mut savings: BTreeMap<(&str, &str), Option<f64>> = BTreeMap::new();
    for rec in snapshot.recommendations.values() {
        let saving = savings
            .entry((&rec.org_id, &rec.license_name))
            .or_insert(Some(0.0));
        *saving = saving.zip(rec.estimated_monthly_saving).map(|(a, b)| a + b);
    }

    let mut out = Vec::new();
    for (org_id, org) in snapshot.state.orgs() {
        for license in org.licenses.values() {
            let idle = (license.kind == LicenseKind::User).then(|| {
                let idle_days = config
                    .rules
                    .for_pool(org_id, &license.name)
                    .idle_seats
                    .idle_days;
                org.users
                    .values()
                    .filter(|user| holds_a_seat(user))
                    .filter(|user| user.user_license.as_deref() == Some(license.name.as_str()))
                    .filter(|user| is_idle(user, now_ms, idle_days))
                    .count() as u64
            });
            out.push(PoolRow {
                org_id: org_id.to_owned(),
                kind: license.kind.key_segment(),
                pool: license.name.clone(),
                total: license.total,
                used: license.used,
                available: license.total.map(|total| total - license.used),
                utilization: license.utilization,
                idle,
                expires_in_days: license
                    .expires_at
                    .map(|at| (at - now_ms).div_euclid(DAY_MS)),
                potential_monthly_saving: savings
                    .get(&(org_id, license.name.as_str()))
                    .copied()
                    .unwrap_or(Some(0.0)),
                currency: config.prices.currency.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.org_id, a.kind, &a.pool).cmp(&(&b.org_id, b.kind, &b.pool)));
    out
}

/// The rows in `format`, ending with a newline.
pub fn render(rows: &[PoolRow], format: Format) -> String {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(rows).expect("rows serialise");
            text.push('\n');
            text
        }
        Format::Csv => render_csv(rows),
        Format::Table => render_table(rows),
    }
}

const HEADERS: [&str; 11] = [
    "org_id",
    "kind",
    "pool",
    "total",
    "used",
    "available",
    "utilization",
    "idle",
    "expires_in_days",
    "potential_monthly_saving",
    "currency",
];

fn cells(row: &PoolRow) -> [String; 11] {
    let opt = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
    [
        row.org_id.clone(),
        row.kind.to_owned(),
        row.pool.clone(),
        opt(row.total),
        row.used.to_string(),
        opt(row.available),
        row.utilization
            .map(|u| format!("{:.1}%", u * 100.0))
            .unwrap_or_default(),
        row.idle.map(|i| i.to_string()).unwrap_or_default(),
        opt(row.expires_in_days),
        row.potential_monthly_saving
            .map(|saving| format!("{saving:.2}"))
            .unwrap_or_default(),
        row.currency.clone(),
    ]
}

/// RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.
fn render_csv(rows: &[PoolRow]) -> String {
    let quote = |field: &str| {
        if field.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field.to_owned()
        }
    };
    let mut text = HEADERS.join(",");
    text.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = cells(row).iter().map(|c| quote(c)).collect();
        text.push_str(&line.join(","));
        text.push_str("\r\n");
    }
    text
}

fn render_table(rows: &[PoolRow]) -> String {
    let all: Vec<[String; 11]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &all {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            // Text columns left, numbers right.
            .map(|(i, (cell, width))| {
                if i < 3 || i == 10 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        let _ = writeln!(text, "{}", padded.join("  ").trim_end());
    };
    line(&HEADERS.map(str::to_owned));
    for row in &all {
        line(row);
    }
    if rows.is_empty() {
        text.push_str("(no seat state in the topics yet: is transform running?)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{license, state_with, user, NOW, ORG};

    fn snapshot() -> Snapshot {
        let mut psl = license("Sales, \"Cloud\"", 4, Some(5));
        psl.kind = LicenseKind::PermissionSet;
        psl.expires_at = Some(NOW + 10 * DAY_MS + 5);
        let users = [
            user("005A", "Salesforce", None),
            user("005B", "Salesforce", Some(200)),
            user("005C", "Salesforce", Some(2)),
        ];
        let state = state_with(&[license("Salesforce", 3, Some(10)), psl], &users);
        let rec = Recommendation {
            org_id: ORG.into(),
            user_id: Some("005A".into()),
            username: None,
            license_kind: LicenseKind::User,
            license_id: "100Salesforce".into(),
            license_name: "Salesforce".into(),
            action: seatwatch_schemas::RecommendationAction::Reclaim,
            evidence: seatwatch_schemas::RecommendationEvidence {
                last_login_at: None,
                days_idle: None,
                active: true,
                assignments: vec![],
                reason: String::new(),
            },
            estimated_monthly_saving: Some(165.0),
            currency: "USD".into(),
            confidence: 0.9,
            observed_at: NOW,
        };
        Snapshot {
            state,
            recommendations: BTreeMap::from([(rec.key(), rec)]),
        }
    }

    #[test]
    fn rows_count_idle_holders_expiry_and_savings_per_pool() {
        let rows = rows(&snapshot(), &AlertConfig::default(), NOW);
        assert_eq!(rows.len(), 2);
        let salesforce = rows.iter().find(|r| r.pool == "Salesforce").unwrap();
        assert_eq!(
            (salesforce.total, salesforce.used, salesforce.available),
            (Some(10), 3, Some(7))
        );
        assert_eq!(salesforce.idle, Some(2));
        assert_eq!(salesforce.potential_monthly_saving, Some(165.0));
        let psl = rows.iter().find(|r| r.kind == "permission-set").unwrap();
        assert_eq!(psl.expires_in_days, Some(10));
        assert_eq!(psl.idle, None);
        assert_eq!(
            psl.potential_monthly_saving,
            Some(0.0),
            "no recommendations"
        );
    }

    #[test]
    fn a_saving_without_a_price_is_unknown_rather_than_zero() {
        let mut snapshot = snapshot();
        for rec in snapshot.recommendations.values_mut() {
            rec.estimated_monthly_saving = None;
        }
        let rows = rows(&snapshot, &AlertConfig::default(), NOW);
        let salesforce = rows.iter().find(|r| r.pool == "Salesforce").unwrap();
        assert_eq!(salesforce.potential_monthly_saving, None);

        let csv = render(&rows, Format::Csv);
        let line = csv
            .lines()
            .find(|line| line.contains(",Salesforce,"))
            .unwrap();
        assert!(line.ends_with(",,USD"), "an empty saving cell: {line}");
        let json: serde_json::Value = serde_json::from_str(&render(&rows, Format::Json)).unwrap();
        let row = json
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pool"] == "Salesforce")
            .unwrap();
        assert!(row["potential_monthly_saving"].is_null(), "{row}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_table_aligns() {
        let rows = rows(&snapshot(), &AlertConfig::default(), NOW);
        let csv = render(&rows, Format::Csv);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], HEADERS.join(","));
        assert!(csv.contains("\"Sales, \"\"Cloud\"\"\""), "{csv}");
        assert_eq!(lines.len(), 4, "header, two rows, final empty: {csv}");

        let table = render(&rows, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        // Right-aligned numbers end in the same column as their header.
        let header_end = lines[0].find("used").unwrap() + "used".len();
        assert_eq!(&lines[2][header_end - 1..header_end], "3", "{table}");
        assert!(table.contains("30.0%"), "{table}");

        let json: serde_json::Value = serde_json::from_str(&render(&rows, Format::Json)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2);
    }
}
