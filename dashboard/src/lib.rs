//! meshwatch-dashboard: the readiness verdicts of a report, of the node agents, or of the
//! whole cluster through Prometheus, as web pages (overview, namespace, workload, matrix) and
//! the same data as JSON. Read-only.
//!
//! One direction: [`source`] reads (and, for live sources, judges with the one verdict engine)
//! into a [`model::Snapshot`]; [`pages`] computes what each page shows; [`render`] turns it
//! into HTML; [`server`] serves both. See ARCHITECTURE.md.

pub mod cli;
pub mod model;
pub mod pages;
pub mod policy;
pub mod render;
pub mod server;
pub mod source;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::server::App;
use crate::source::Source;

/// Exit status for bad flags or an unreadable report.
pub const EXIT_USAGE: u8 = 2;

/// Run the dashboard until SIGINT or SIGTERM.
pub async fn run(args: cli::Args) -> anyhow::Result<ExitCode> {
    let source = match Source::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshwatch-dashboard: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let info = source.info();
    let app = if source.is_live() {
        let app = Arc::new(App::new(source, info.clone(), args.refresh));
        app.refresh_once().await;
        tokio::spawn(Arc::clone(&app).refresh_forever());
        app
    } else {
        match source.load().await {
            Ok(snapshot) => Arc::new(App::with_snapshot(source, snapshot)),
            Err(e) => {
                eprintln!("meshwatch-dashboard: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let addr = listener.local_addr().context("the listening address")?;
    // the one line scripts read to find the server (with --listen ...:0)
    println!(
        "meshwatch-dashboard: serving http://{addr}/ ({} {})",
        info.kind, info.detail
    );
    tracing::info!(%addr, source = info.kind, "serving");
    axum::serve(listener, server::router(app))
        .with_graceful_shutdown(shutdown())
        .await
        .context("the HTTP server")?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
