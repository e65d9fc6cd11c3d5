//! The `meshwatch` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use meshwatch::analyze::{self, AnalyzeError};
use meshwatch::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Analyze(args) => analyze::run(args),
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
