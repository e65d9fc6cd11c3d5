//! The agent's HTTP endpoints, all read-only: `/metrics`, `/healthz`, `/readyz`, and the JSON
//! API `/api/v1/{flows,edges,verdicts,status}` with the field names of `analyze --format json`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::live::{now, LiveState, RECENT_FLOWS};

/// The routes.
pub fn router(state: Arc<LiveState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/edges", get(edges))
        .route("/api/v1/verdicts", get(verdicts))
        .route("/api/v1/status", get(status))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<LiveState>>) -> Response {
    let body = s.metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<LiveState>>) -> Response {
    if s.status().running.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "capture is not running\n").into_response()
    }
}

async fn readyz(State(s): State<Arc<LiveState>>) -> Response {
    match (
        s.status().running.load(Ordering::Relaxed),
        s.identities_synced(),
    ) {
        (true, true) => (StatusCode::OK, "ready\n").into_response(),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "capture is not running\n").into_response(),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "identities are not synced\n",
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct FlowsQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct FlowsBody {
    flows: Vec<crate::flow::FlowRecord>,
}

async fn flows(State(s): State<Arc<LiveState>>, Query(q): Query<FlowsQuery>) -> Json<FlowsBody> {
    let limit = q.limit.unwrap_or(100).min(RECENT_FLOWS);
    Json(FlowsBody {
        flows: s.recent_flows(limit),
    })
}

#[derive(Serialize)]
struct EdgesBody {
    window_seconds: u64,
    edges: Vec<crate::aggregate::Edge>,
}

async fn edges(State(s): State<Arc<LiveState>>) -> Json<EdgesBody> {
    Json(EdgesBody {
        window_seconds: s.window() / 1_000_000_000,
        edges: s.edges(now()),
    })
}

#[derive(Serialize)]
struct VerdictsBody {
    window_seconds: u64,
    evidence_incomplete: bool,
    verdicts: Vec<crate::verdict::Verdict>,
    namespaces: Vec<crate::verdict::NamespaceVerdict>,
    mesh: crate::verdict::MeshVerdict,
}

async fn verdicts(State(s): State<Arc<LiveState>>) -> Json<VerdictsBody> {
    let t = now();
    let v = s.verdicts(t);
    Json(VerdictsBody {
        window_seconds: s.window() / 1_000_000_000,
        evidence_incomplete: s.evidence_incomplete(t),
        verdicts: v.workloads,
        namespaces: v.namespaces,
        mesh: v.mesh,
    })
}

#[derive(Serialize)]
struct StatusBody<'a> {
    version: &'static str,
    uptime_seconds: u64,
    interface: &'a str,
    capture: &'a crate::live::CaptureStatus,
    identities_synced: bool,
    identity_entries: usize,
    window_seconds: u64,
}

async fn status(State(s): State<Arc<LiveState>>) -> Response {
    Json(StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.uptime_seconds(),
        interface: s.interface(),
        capture: s.status(),
        identities_synced: s.identities_synced(),
        identity_entries: s.identity_entries(),
        window_seconds: s.window() / 1_000_000_000,
    })
    .into_response()
}
