//! The `seatwatch` binary: one executable for every service, the simulator and the demo.
//!
//! Each subcommand parses its flags, sets up logging and hands over to a library's
//! `run(config, shutdown)`; nothing else happens here. SIGTERM and Ctrl-C cancel the
//! shutdown token, and services drain before exiting 0.

/// mimalloc rather than the system allocator: transform allocates and frees small strings
/// for every event, and glibc's malloc took about a third of its time in the throughput
/// benchmark's profile (`benches/transform_throughput.rs`). Built without transparent
/// huge pages, which nearly doubled ingest's resident set.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod healthcheck;
mod seat_report;
mod topics;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
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
    Transform(Checked<seatwatch_transform::TransformArgs>),
    /// Raise and resolve alerts from seat state.
    Alert(Checked<seatwatch_alert::AlertArgs>),
    /// Serve a simulated Salesforce org over HTTP.
    Simulator(Checked<seatwatch_simulator::SimulatorArgs>),
    /// Manage seatwatch's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Print seat state per org and licence pool (total, used, available, utilisation,
    /// idle, expiry, potential saving) from the compacted topics.
    Report(seat_report::ReportArgs),
    /// Ask a service's /readyz and exit 0 only if it answers 2xx (container healthchecks).
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[derive(Debug, Subcommand)]
enum IngestCommand {
    /// Poll every configured org on its schedule until stopped.
    Run(Checked<seatwatch_ingest::IngestArgs>),
    /// Sign in to every org and read one row of every object; print what to fix.
    Check(seatwatch_ingest::IngestArgs),
    /// Sync every configured org; with --once, a single time, printing a summary.
    Sync {
        /// Sync each org once, print a summary and exit (0 only if every org succeeded).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        args: Checked<seatwatch_ingest::IngestArgs>,
    },
}

/// A service's flags, plus `--check-config`.
#[derive(Debug, clap::Args)]
struct Checked<A: clap::Args> {
    #[command(flatten)]
    args: A,
    /// Load and validate the configuration (file, environment, flags, secrets' sources),
    /// print what was understood, and exit without connecting to anything.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    // Built with the fault suite's fail points only: they are armed from `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();

    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Ingest { command } => ingest(command).await,
        Command::Transform(args) => transform(args).await,
        Command::Alert(args) => alert(args).await,
        Command::Simulator(checked) => simulator(checked).await,
        Command::Topics { command } => topics::run(command).await,
        Command::Report(args) => seat_report::run(args).await,
        Command::Healthcheck(args) => healthcheck::run(args).await,
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // On a terminal, as written: a config error's snippet and caret span lines.
            if std::io::stderr().is_terminal() {
                eprintln!("error: {}", report(&e));
            } else {
                tracing::error!(error = report(&e), "seatwatch stopped");
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes in one line, each cause added only when the text so far does
/// not already say it (many errors print their source in their own message).
fn report(error: &anyhow::Error) -> String {
    error
        .chain()
        .skip(1)
        .fold(error.to_string(), |text, cause| {
            let cause = cause.to_string();
            if text.contains(&cause) {
                text
            } else {
                format!("{text}: {cause}")
            }
        })
}

async fn ingest(command: IngestCommand) -> anyhow::Result<()> {
    match command {
        IngestCommand::Run(args) | IngestCommand::Sync { args, .. } if args.check_config => {
            let config = args.args.load()?;
            seatwatch_ingest::check_config(&config)?;
            let orgs: Vec<&str> = config.orgs.iter().map(|o| o.name.as_str()).collect();
            println!(
                "ingest config OK: orgs {}; brokers {}; topic prefix {:?}",
                orgs.join(", "),
                config.kafka.bootstrap_servers,
                config.kafka.topic_prefix
            );
            Ok(())
        }
        IngestCommand::Run(Checked { args, .. })
        | IngestCommand::Sync {
            once: false,
            args: Checked { args, .. },
        } => {
            let config = args.load()?;
            seatwatch_ingest::run(config, shutdown::on_signals()).await?;
            Ok(())
        }
        IngestCommand::Check(args) => {
            let config = args.load()?;
            let checks = seatwatch_ingest::check::check(&config).await?;
            print!("{}", seatwatch_ingest::check::render(&checks));
            let failed: Vec<&str> = checks
                .iter()
                .filter(|c| !c.passed())
                .map(|c| c.org.as_str())
                .collect();
            match failed.as_slice() {
                [] => Ok(()),
                orgs => anyhow::bail!("check failed for {}", orgs.join(", ")),
            }
        }
        IngestCommand::Sync {
            once: true,
            args: Checked { args, .. },
        } => {
            let config = args.load()?;
            // A bar per object on a terminal, plain lines otherwise; both on stderr.
            let progress = seatwatch_ingest::progress::for_stderr();
            let signals = shutdown::on_signals();
            let statuses =
                seatwatch_ingest::sync_once_showing(config, signals, progress.as_ref()).await?;
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

async fn simulator(checked: Checked<seatwatch_simulator::SimulatorArgs>) -> anyhow::Result<()> {
    if checked.check_config {
        let config = checked.args.into_config()?;
        config.validate()?;
        println!("simulator config OK: listening on {}", config.listen_addr);
        return Ok(());
    }
    seatwatch_simulator::run_cli(checked.args, shutdown::on_signals()).await?;
    Ok(())
}

async fn transform(checked: Checked<seatwatch_transform::TransformArgs>) -> anyhow::Result<()> {
    let config = checked.args.load()?;
    if checked.check_config {
        config
            .kafka
            .client_config()
            .context("kafka.secret_properties")?;
        println!(
            "transform config OK: group {}; brokers {}; topic prefix {:?}",
            config.group_id, config.kafka.bootstrap_servers, config.kafka.topic_prefix
        );
        return Ok(());
    }
    seatwatch_transform::run(config, shutdown::on_signals()).await?;
    Ok(())
}

async fn alert(checked: Checked<seatwatch_alert::AlertArgs>) -> anyhow::Result<()> {
    let config = checked.args.load()?;
    if checked.check_config {
        config.validate()?;
        config
            .kafka
            .client_config()
            .context("kafka.secret_properties")?;
        if let Some(secret) = config.webhook.as_ref().and_then(|w| w.secret.as_ref()) {
            secret.resolve().context("webhook.secret")?;
        }
        println!(
            "alert config OK: group {}; brokers {}; topic prefix {:?}; webhook {}",
            config.group_id,
            config.kafka.bootstrap_servers,
            config.kafka.topic_prefix,
            if config.webhook.is_some() {
                "configured"
            } else {
                "none"
            }
        );
        return Ok(());
    }
    seatwatch_alert::run(config, shutdown::on_signals()).await?;
    Ok(())
}
