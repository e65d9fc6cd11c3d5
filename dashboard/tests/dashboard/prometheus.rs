//! `--prometheus`: a local server answers Prometheus' query API with answers recorded from a
//! real Prometheus (fixtures/prometheus); `meshwatch::cluster` reads them and the
//! dashboard shows its verdicts. And a Prometheus that is not there says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::routing::get as route_get;
use axum::Router;
use meshwatch::cluster::promql::{Queries, Resolution};
use meshwatch::verdict::Policy;
use meshwatch_dashboard::server::App;
use meshwatch_dashboard::source::prometheus::Prometheus;
use meshwatch_dashboard::source::Source;

use crate::support::{fixture, get, has, page, serve_app, serve_router};

pub const WINDOW: Duration = Duration::from_secs(86_400);

/// An answer a real Prometheus gave (copied from agent/tests/fixtures/prometheus, recorded by
/// tests/live/cluster_e2e.py from two agents; `final_`: after one agent stopped).
fn recorded(set: &str, query: &str) -> String {
    let path = fixture("prometheus").join(format!("{set}{query}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The PeerAuthentication modes' answer: the recorded agents did not watch them (no series).
const NO_MODES: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;

/// Answers each query the cluster reader sends with what a real Prometheus answered.
async fn fake_prometheus(set: &'static str) -> std::net::SocketAddr {
    serve_router(recorded_prometheus(set)).await
}

/// The routes of a Prometheus answering with the recorded set `set`.
pub fn recorded_prometheus(set: &'static str) -> Router {
    let q = Queries::new(&Resolution::of(WINDOW.as_secs()), None);
    let answers: HashMap<String, String> = [
        (&q.agents, "agents"),
        (&q.connections, "connections"),
        (&q.connections_first_seen, "connections_first_seen"),
        (&q.connections_last_seen, "connections_last_seen"),
        (&q.attempts, "attempts"),
        (&q.attempts_first_seen, "attempts_first_seen"),
        (&q.attempts_last_seen, "attempts_last_seen"),
        (&q.drops, "drops"),
        (&q.agents_down, "agents_down"),
        (&q.workloads, "workloads"),
    ]
    .into_iter()
    .map(|(text, file)| (text.clone(), recorded(set, file)))
    .chain(
        [
            &q.peer_authentications,
            &q.peer_authentications_first_shown,
            &q.peer_authentications_last_shown,
        ]
        .map(|text| (text.clone(), NO_MODES.to_owned())),
    )
    .collect();
    let answers = Arc::new(answers);
    Router::new().route(
        "/api/v1/query",
        route_get(move |Query(p): Query<HashMap<String, String>>| {
            let answers = Arc::clone(&answers);
            async move {
                let q = p.get("query").cloned().unwrap_or_default();
                match answers.get(&q) {
                    Some(body) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        body.clone(),
                    ),
                    None => (
                        StatusCode::BAD_REQUEST,
                        [(header::CONTENT_TYPE, "application/json")],
                        format!(r#"{{"status":"error","errorType":"bad_data","error":"unexpected query {q:?}"}}"#),
                    ),
                }
            }
        }),
    )
}

async fn prometheus_app(url: &str) -> Arc<App> {
    let source = Source::Prometheus(Prometheus::new(url, WINDOW, Policy::default(), None));
    let info = source.info();
    let app = Arc::new(App::new(source, info, 15));
    app.refresh_once().await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_verdicts_from_prometheus() {
    let prom = fake_prometheus("").await;
    let addr = serve_app(prometheus_app(&format!("http://{prom}")).await).await;
    let s = get(addr, "/api/snapshot").await;
    assert_eq!(s.status, 200, "{}", s.body);
    let s = s.json();
    assert_eq!(s["source"]["kind"], "prometheus");
    assert_eq!(s["evidence"]["window_seconds"], 86_400);
    assert_eq!(s["evidence"]["evidence_incomplete"], false);
    let o = page(addr, "/").await;
    has(&o, r#"<body data-refresh="15">"#);
    has(
        &o,
        r#"<h1>Mesh <span class="badge blocked">blocked</span></h1>"#,
    );
    has(
        &o,
        r#"<a href="/namespace?ns=alpha">alpha</a></td><td><span class="badge ready">ready</span>"#,
    );
    has(
        &o,
        r#"<a href="/namespace?ns=beta">beta</a></td><td><span class="badge blocked">blocked</span>"#,
    );
    has(
        &o,
        r#"<a href="/namespace?ns=legacy">legacy</a></td><td><span class="badge not_in_mesh">not in mesh</span>"#,
    );
    has(
        &o,
        r#"<td><a href="/workload?ns=beta&amp;name=db">beta/db</a></td><td><a href="/workload?ns=legacy&amp;name=cron">legacy/cron</a></td><td class="num">8000</td><td><span class="sec plaintext">plaintext</span></td><td class="kind">client without sidecar</td><td class="num">2</td>"#,
    );
    let api = page(addr, "/workload?ns=alpha&name=api").await;
    has(&api, "<span class=\"pct\">100 % Istio mTLS</span> (6 of 6)");
    has(&api, "  name: api-strict\n  namespace: alpha\n");
    has(&api, "<dt>Window</dt><dd>the last 1day</dd>");
    let alpha = page(addr, "/namespace?ns=alpha").await;
    has(
        &alpha,
        "  name: default\n  namespace: alpha\nspec:\n  mtls:\n    mode: STRICT\n</pre>",
    );
    let gamma = page(addr, "/workload?ns=gamma&name=svc").await;
    has(
        &gamma,
        "<dt>Verdict</dt><dd>insufficient: 2 mTLS connections, 5 needed</dd>",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_down_and_drops_in_the_window() {
    let prom = fake_prometheus("final_").await;
    let addr = serve_app(prometheus_app(&format!("http://{prom}")).await).await;
    let s = get(addr, "/api/snapshot").await.json();
    assert_eq!(s["evidence"]["agents_down"][0], "192.0.2.2:19577");
    assert_eq!(s["evidence"]["evidence_incomplete"], true);
    let o = page(addr, "/").await;
    has(&o, "Agents not answering: 192.0.2.2:19577");
    has(
        &o,
        "Evidence incomplete: an agent's capture dropped packets within the window",
    );
    let api = page(addr, "/workload?ns=alpha&name=api").await;
    has(
        &api,
        r#"<span class="badge insufficient">insufficient</span>"#,
    );
    has(&api, "<dt>Agents down</dt><dd>192.0.2.2:19577</dd>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_is_named() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(l);
    let addr = serve_app(prometheus_app(&format!("http://{dead}")).await).await;
    let a = get(addr, "/").await;
    assert_eq!(a.status, 503);
    has(
        &a.body,
        &format!("prometheus: cannot reach Prometheus at http://{dead}"),
    );
}
