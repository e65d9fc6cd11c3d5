//! The `meshwatch` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use meshwatch::analyze::{self, AnalyzeError};
use meshwatch::cli::{Cli, Command, LogFormat};
use meshwatch::cluster::command::{self as cluster, CommandError};

/// Structured logs on stderr; `RUST_LOG` filters (default `default`). Never packet payloads.
fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Agent(args) => {
            init_tracing(args.log_format, "info");
            return match meshwatch::agent::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("meshwatch: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Verdicts(args) => {
            init_tracing(LogFormat::Text, "warn"); // RUST_LOG=debug prints the PromQL
            return match cluster::run_verdicts(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(CommandError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::SUCCESS
                }
                Err(e @ CommandError::Output(_)) => {
                    eprintln!("meshwatch: {e}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("meshwatch: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Check(args) => {
            init_tracing(LogFormat::Text, "warn");
            let outcome = cluster::run_check(args);
            if let Err(e) = &outcome {
                eprintln!("meshwatch check: {e}");
            }
            return ExitCode::from(cluster::check_exit_code(&outcome));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(AnalyzeError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e @ AnalyzeError::Output(_)) => {
            eprintln!("meshwatch: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("meshwatch: {e}");
            ExitCode::from(2)
        }
    }
}
