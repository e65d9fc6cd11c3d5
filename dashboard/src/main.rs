//! `meshwatch-dashboard`: thin — parse the flags, start logging, run, map the outcome to an
//! exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = meshwatch_dashboard::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshwatch-dashboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meshwatch_dashboard::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshwatch-dashboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
