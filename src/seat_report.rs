//! `seatwatch report`: the current seat state per org and pool, read from the compacted
//! topics; see [`seatwatch_alert::report`].

use std::path::PathBuf;

use seatwatch_alert::report::{self, Format};
use seatwatch_alert::AlertArgs;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The alert service's TOML file: its Kafka settings, idle-seat rules and prices.
    #[arg(long, value_name = "FILE", env = "SEATWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, value_name = "HOSTS")]
    pub bootstrap_servers: Option<String>,
    /// Prefix of every topic name, e.g. `prod.`.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let config = AlertArgs {
        config: args.config,
        bootstrap_servers: args.bootstrap_servers,
        topic_prefix: args.topic_prefix,
        ..AlertArgs::default()
    }
    .load()?;
    let snapshot = report::read_state(&config).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let rows = report::rows(&snapshot, &config, now_ms);
    print!("{}", report::render(&rows, args.format));
    Ok(())
}
