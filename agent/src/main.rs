//! The `meshwatch` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use meshwatch::analyze::{self, AnalyzeError};
use meshwatch::cli::{Cli, Command, LogFormat};

/// Structured logs on stderr; `RUST_LOG` filters (default `info`). Never packet payloads.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
            init_tracing(args.log_format);
            return match meshwatch::agent::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("meshwatch: {e:#}");
                    ExitCode::from(2)
                }
            };
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
