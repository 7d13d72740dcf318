//! `seatwatch topics`: create seatwatch's topics with their cleanup policies, for clusters
//! where the services may not create topics themselves.

use clap::{Args, Subcommand};
use seatwatch_common::kafka::{ensure_topics, KafkaConfig, TopicSpec, Topics};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create any missing topic, then list every topic with its partitions.
    Create(TopicsArgs),
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(
        long,
        env = "SEATWATCH_KAFKA__BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Prefix of every topic name, e.g. `prod.`.
    #[arg(long, env = "SEATWATCH_KAFKA__TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Partitions per topic: the most instances of a service that can share the work.
    #[arg(long, env = "SEATWATCH_KAFKA__PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor (3 on a production cluster).
    #[arg(long, env = "SEATWATCH_KAFKA__REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Print the topics that would be created, and connect to nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(command: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Create(args) = command;
    let kafka = KafkaConfig {
        bootstrap_servers: args.bootstrap_servers,
        topic_prefix: args.topic_prefix,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        create_topics: true,
        ..KafkaConfig::default()
    };
    let topics = Topics::new(&kafka.topic_prefix);
    let specs = topics.specs();
    if args.dry_run {
        for spec in &specs {
            print_topic(spec, kafka.partitions);
        }
        return Ok(());
    }
    let partitions = ensure_topics(&kafka, &specs).await?;
    for spec in &specs {
        print_topic(spec, partitions[&spec.name]);
    }
    Ok(())
}

/// One line per topic: name, partitions and cleanup policy.
fn print_topic(spec: &TopicSpec, partitions: i32) {
    let cleanup = match spec.retention_ms {
        None => "compact".to_owned(),
        Some(ms) => format!("delete, retention {} days", ms / 86_400_000),
    };
    println!("{:<32} {partitions:>3} partitions  {cleanup}", spec.name);
}
