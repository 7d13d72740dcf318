//! The `seatwatch` binary: one executable for every service, the simulator and the demo.
//!
//! Each subcommand parses its flags, sets up logging and hands over to a library's
//! `run(config, shutdown)`; nothing else happens here. SIGTERM and Ctrl-C cancel the
//! shutdown token, and services drain before exiting 0.

mod demo;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use seatwatch_common::{shutdown, telemetry};

/// Salesforce seat monitoring as a Kafka pipeline.
#[derive(Debug, Parser)]
#[command(name = "seatwatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline in one process: Salesforce simulator, in-process Kafka
    /// broker, ingest, transform and alert. Prints alerts as they fire and resolve.
    Demo(demo::DemoArgs),
    /// Sign in to Salesforce orgs and emit their licence and user data to Kafka.
    Ingest {
        #[command(subcommand)]
        command: IngestCommand,
    },
    /// Turn raw events into Avro seat-state topics.
    Transform(seatwatch_transform::TransformArgs),
    /// Raise and resolve alerts from seat state.
    Alert(seatwatch_alert::AlertArgs),
    /// Serve a simulated Salesforce org over HTTP.
    Simulator(seatwatch_simulator::SimulatorArgs),
    /// Manage seatwatch's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IngestCommand {
    /// Poll every configured org on its schedule until stopped.
    Run(seatwatch_ingest::IngestArgs),
    /// Sync every configured org; with --once, a single time, printing a summary.
    Sync {
        /// Sync each org once, print a summary and exit (0 only if every org succeeded).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        args: seatwatch_ingest::IngestArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();

    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Ingest { command } => ingest(command).await,
        Command::Transform(args) => transform(args).await,
        Command::Alert(args) => alert(args).await,
        Command::Simulator(args) => {
            let stop = shutdown::on_signals();
            seatwatch_simulator::run_cli(args, stop)
                .await
                .map_err(anyhow::Error::from)
        }
        Command::Topics { command } => topics::run(command).await,
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "seatwatch stopped");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn ingest(command: IngestCommand) -> anyhow::Result<()> {
    match command {
        IngestCommand::Run(args) | IngestCommand::Sync { once: false, args } => {
            let config = args.load()?;
            seatwatch_ingest::run(config, shutdown::on_signals()).await?;
            Ok(())
        }
        IngestCommand::Sync { once: true, args } => {
            let config = args.load()?;
            let statuses = seatwatch_ingest::sync_once(config, shutdown::on_signals()).await?;
            print!("{}", seatwatch_ingest::summary::render(&statuses));
            let failed: Vec<&str> = statuses
                .iter()
                .filter(|s| s.outcome != seatwatch_schemas::SyncOutcome::Success)
                .map(|s| s.org_name.as_str())
                .collect();
            match failed.as_slice() {
                [] => Ok(()),
                orgs => anyhow::bail!("sync failed for {}", orgs.join(", ")),
            }
        }
    }
}

async fn transform(args: seatwatch_transform::TransformArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    seatwatch_transform::run(config, shutdown::on_signals()).await?;
    Ok(())
}

async fn alert(args: seatwatch_alert::AlertArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    seatwatch_alert::run(config, shutdown::on_signals()).await?;
    Ok(())
}
