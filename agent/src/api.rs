//! The agent's HTTP endpoints, all read-only: `/metrics`, `/healthz`, `/readyz`, and the JSON
//! API `/api/v1/{flows,edges,verdicts,status}` with the field names of `analyze --format json`.
//! [`app`] puts them behind the request rules: GET and HEAD only, no bodies, and with
//! authentication a token the API server knows ([`crate::auth`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
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

/// The routes as the agent serves them: read-only requests only, then (with `auth`) a token
/// the API server authenticates and authorizes for the path; `info` adds the server's and
/// the authorizer's counters to `/api/v1/status`.
pub fn app(
    state: Arc<LiveState>,
    auth: Option<Arc<crate::auth::Authorizer>>,
    info: Option<Arc<crate::server::Info>>,
) -> Router {
    let mut app = router(state);
    if let Some(info) = info {
        app = app.layer(Extension(info));
    }
    if let Some(auth) = auth {
        app = app.layer(middleware::from_fn_with_state(auth, crate::auth::require));
    }
    app.layer(middleware::from_fn(read_only))
}

/// GET and HEAD without a body: anything else is refused before authentication and routing
/// (405 for other methods, 413 for a request that announces a body).
pub async fn read_only(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
            "read-only: GET and HEAD only\n",
        )
            .into_response();
    }
    if announces_body(req.headers()) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// A `Transfer-Encoding`, or a `Content-Length` other than 0.
fn announces_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
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
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<crate::server::StatsSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<crate::auth::Snapshot>,
}

async fn status(
    State(s): State<Arc<LiveState>>,
    info: Option<Extension<Arc<crate::server::Info>>>,
) -> Response {
    let info = info.map(|Extension(i)| i);
    Json(StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: s.uptime_seconds(),
        interface: s.interface(),
        capture: s.status(),
        identities_synced: s.identities_synced(),
        identity_entries: s.identity_entries(),
        window_seconds: s.window() / 1_000_000_000,
        server: info.as_ref().map(|i| i.snapshot()),
        auth: info
            .as_ref()
            .and_then(|i| i.auth.as_ref())
            .map(|a| a.snapshot()),
    })
    .into_response()
}
