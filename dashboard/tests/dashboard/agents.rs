//! `--agent`: local servers replay the answers of two real agents (fixtures/agents, recorded by
//! record.sh from pcaps/istio-migration-before split over two nodes). Each connection is in
//! the edges of its destination's agent; added up, the verdicts equal what `analyze` says of
//! the capture itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::routing::get as route_get;
use axum::Router;
use meshwatch::verdict::Policy;
use meshwatch_dashboard::model::{Readiness, VerdictView};
use meshwatch_dashboard::server::App;
use meshwatch_dashboard::source::agents::Agents;
use meshwatch_dashboard::source::Source;

use crate::support::{fixture, get, has, page, report_with_workloads, serve_app, serve_router};

fn answer(name: &str) -> String {
    std::fs::read_to_string(fixture("agents").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A server answering an agent's /api/v1 as node `n` answered.
async fn fake_agent(n: u8) -> SocketAddr {
    let mut r = Router::new();
    for what in ["edges", "verdicts", "status"] {
        let body = answer(&format!("node-{n}.{what}.json"));
        r = r.route(
            &format!("/api/v1/{what}"),
            route_get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }),
        );
    }
    serve_router(r).await
}

/// Node `n`'s answers, its verdicts carrying the modes given (`(namespace, workload, mode)`):
/// an agent that watches the PeerAuthentications.
async fn fake_agent_with_modes(n: u8, modes: &[(&str, &str, serde_json::Value)]) -> SocketAddr {
    let mut verdicts: serde_json::Value =
        serde_json::from_str(&answer(&format!("node-{n}.verdicts.json"))).unwrap_or_default();
    for v in verdicts["verdicts"].as_array_mut().into_iter().flatten() {
        for (ns, w, mode) in modes {
            if v["namespace"] == *ns && v["workload"] == *w {
                v["peer_authentication"] = mode.clone();
            }
        }
    }
    let mut r = Router::new();
    for what in ["edges", "verdicts", "status"] {
        let body = if what == "verdicts" {
            verdicts.to_string()
        } else {
            answer(&format!("node-{n}.{what}.json"))
        };
        r = r.route(
            &format!("/api/v1/{what}"),
            route_get(move || async move { ([(header::CONTENT_TYPE, "application/json")], body) }),
        );
    }
    serve_router(r).await
}

/// An address where nothing listens.
async fn dead_address() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

async fn agents_app(urls: &[String]) -> Arc<App> {
    let agents = Agents::new(urls, Policy::default(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let source = Source::Agents(agents);
    let info = source.info();
    let app = Arc::new(App::new(source, info, 15));
    app.refresh_once().await;
    app
}

fn find<'a>(vs: &'a [VerdictView], ns: &str, w: &str) -> &'a VerdictView {
    vs.iter()
        .find(|v| v.destination.workload_name() == Some((ns, w)))
        .unwrap_or_else(|| panic!("no verdict for {ns}/{w}"))
}

/// What must agree between two judgements of the same connections (not the times).
fn essence(vs: &[VerdictView]) -> Vec<String> {
    vs.iter()
        .map(|v| {
            let blockers: Vec<String> = v
                .blockers
                .iter()
                .map(|b| {
                    format!(
                        "{} {} {:?} {} {:?}",
                        b.source.display(),
                        b.port,
                        b.security,
                        b.connections,
                        b.kind
                    )
                })
                .collect();
            format!(
                "{} {} {:?} exempted={} {:?} {:?}",
                v.destination.display(),
                v.verdict.as_str(),
                v.connections,
                v.exempted,
                blockers,
                // the policy itself; its `# ASSUMED:` caveat (kept, below) words what each
                // source lacks: the agents report labels for their own pods only, a capture none
                v.suggested_policy.as_deref().map(|p| {
                    let assumed = p.starts_with("# ASSUMED: ");
                    let unchecked = p.lines().any(|l| l.starts_with("# UNCHECKED: "));
                    let policy: String = p
                        .lines()
                        .filter(|l| {
                            !l.starts_with("# ASSUMED: ") && !l.starts_with("# UNCHECKED: ")
                        })
                        .map(|l| format!("{l}\n"))
                        .collect();
                    (assumed, unchecked, policy)
                })
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_merge_to_the_captures_verdicts() {
    let (a1, a2) = (fake_agent(1).await, fake_agent(2).await);
    let urls = [format!("http://{a1}"), format!("http://{a2}/")];
    let app = agents_app(&urls).await;
    let addr = serve_app(app).await;
    let snap = get(addr, "/api/snapshot").await;
    assert_eq!(snap.status, 200, "{}", snap.body);
    let s = snap.json();
    assert_eq!(s["source"]["kind"], "agents");
    assert_eq!(s["evidence"]["edges_seen_by_several_agents"], 0);
    assert_eq!(s["evidence"]["window_seconds"], 86400);
    assert_eq!(s["evidence"]["evidence_incomplete"], false);
    let verdicts: Vec<VerdictView> =
        serde_json::from_value(s["verdicts"].clone()).unwrap_or_else(|e| panic!("{e}"));

    // foo/sleep -> bar/httpbin went between the nodes: both agents report its 3 connections
    let bar = find(&verdicts, "bar", "httpbin");
    assert_eq!(
        bar.connections.istio_mtls, 6,
        "counted once, not summed to 9"
    );
    assert_eq!(bar.verdict, Readiness::Ready);
    let foo = find(&verdicts, "foo", "httpbin");
    assert_eq!(foo.verdict, Readiness::Blocked);
    assert_eq!(foo.blockers[0].source.display(), "legacy/sleep");
    // what the agents know of workloads: outside the mesh, idle
    assert_eq!(
        find(&verdicts, "legacy", "sleep").verdict,
        Readiness::NotInMesh
    );
    assert_eq!(
        find(&verdicts, "bar", "sleep").verdict,
        Readiness::Insufficient
    );

    // the same verdicts as `analyze` of the capture the agents saw
    let report = report_with_workloads(
        "istio-migration-before",
        &std::fs::read_to_string(fixture("agents/workloads.yaml")).unwrap_or_default(),
    );
    let analyzed: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
    let analyzed: Vec<VerdictView> =
        serde_json::from_value(analyzed["verdicts"].clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(essence(&verdicts), essence(&analyzed));

    // a live page reloads itself and names its agents
    let o = page(addr, "/").await;
    has(&o, r#"<body data-refresh="15">"#);
    has(&o, r#"<input type="checkbox" id="auto-refresh" checked>"#);
    has(
        &o,
        &format!("Source: agents <code>http://{a1}, http://{a2}</code>"),
    );
    has(
        &o,
        r#"<h1>Mesh <span class="badge blocked">blocked</span></h1>"#,
    );
    let w = page(addr, "/workload?ns=bar&name=httpbin").await;
    has(&w, "<dt>Window</dt><dd>the last 1day</dd>");
    has(&w, "<dt>Packet drops</dt><dd>none within the window</dd>");
    has(
        &w,
        "<dt>Ready needs</dt><dd>at least 5 Istio mTLS connections, at most 10 % unknown</dd>",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_down_is_named_and_nothing_is_ready_without_it() {
    let (a1, dead) = (fake_agent(1).await, dead_address().await);
    let garbage = serve_router(Router::new().route(
        "/api/v1/edges",
        route_get(|| async { "<html>not an agent</html>" }),
    ))
    .await;
    let urls = [
        format!("http://{a1}"),
        format!("http://{dead}"),
        format!("http://{garbage}"),
    ];
    let addr = serve_app(agents_app(&urls).await).await;
    let s = get(addr, "/api/snapshot").await.json();
    let down: Vec<String> =
        serde_json::from_value(s["evidence"]["agents_down"].clone()).unwrap_or_default();
    assert_eq!(
        down,
        vec![format!("http://{dead}"), format!("http://{garbage}")]
    );
    assert_eq!(s["evidence"]["evidence_incomplete"], true);
    let agents = s["evidence"]["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let err = |i: usize| agents[i]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err(1).contains("/api/v1/edges: cannot connect"),
        "{}",
        err(1)
    );
    assert!(
        err(2).contains("/api/v1/edges: not the agent's JSON"),
        "{}",
        err(2)
    );
    let verdicts: Vec<VerdictView> =
        serde_json::from_value(s["verdicts"].clone()).unwrap_or_else(|e| panic!("{e}"));
    assert!(verdicts.iter().all(|v| v.verdict != Readiness::Ready));
    let o = page(addr, "/").await;
    has(
        &o,
        &format!("Agents not answering: http://{dead}, http://{garbage}"),
    );
    has(&o, "could not be read (/api/v1/edges: cannot connect");

    // no agent at all: the page says so, and keeps trying
    let none = serve_app(agents_app(&[format!("http://{dead}")]).await).await;
    let a = get(none, "/").await;
    assert_eq!(a.status, 503);
    has(&a.body, "<h1>No data yet</h1>");
    has(
        &a.body,
        &format!("no agent answered: http://{dead} (/api/v1/edges: cannot connect"),
    );
    assert_eq!(get(none, "/api/overview").await.status, 503);
}

/// Agents that watch the PeerAuthentications: the verdicts show each workload's mode today,
/// unknown where the agents disagree (one has seen a policy change the other has not yet) and
/// an unknown mode as unknown; a STRICT workload that receives plaintext after it became
/// STRICT (both agents: since the epoch) has broken clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_modes_are_shown_unknown_where_they_disagree() {
    let ns_mode = |mode: &str| {
        serde_json::json!({"mode": mode, "source": "namespace", "policy": "foo/default",
        "since": {"at": 0, "basis": "agent"}})
    };
    let unknown = serde_json::json!({"mode": "UNKNOWN", "source": "workload",
        "policy": "bar/v1-strict",
        "undecided": "whether bar/v1-strict selects it cannot be told: its pods disagree on label `version`"});
    let a1 = fake_agent_with_modes(
        1,
        &[
            ("foo", "httpbin", ns_mode("STRICT")),
            ("foo", "sleep", ns_mode("PERMISSIVE")),
            ("bar", "httpbin", unknown.clone()),
        ],
    )
    .await;
    let a2 = fake_agent_with_modes(
        2,
        &[
            ("foo", "httpbin", ns_mode("STRICT")),
            ("foo", "sleep", ns_mode("STRICT")),
            ("bar", "httpbin", unknown),
        ],
    )
    .await;
    let urls = [format!("http://{a1}"), format!("http://{a2}")];
    let addr = serve_app(agents_app(&urls).await).await;
    let s = get(addr, "/api/snapshot").await.json();
    let verdicts: Vec<VerdictView> =
        serde_json::from_value(s["verdicts"].clone()).unwrap_or_else(|e| panic!("{e}"));
    let foo = find(&verdicts, "foo", "httpbin");
    assert_eq!(
        foo.mode.as_ref().map(|m| m.describe()).as_deref(),
        Some("STRICT (namespace foo/default)")
    );
    assert_eq!(foo.verdict, Readiness::BrokenClients, "{}", foo.reason);
    assert!(foo.blockers.iter().all(|b| b.broken));
    let bar = find(&verdicts, "bar", "httpbin");
    assert_eq!(bar.verdict, Readiness::Ready);
    assert_eq!(
        bar.mode.as_ref().map(|m| m.mode),
        Some(meshwatch::peer_auth::Mode::Unknown)
    );
    assert!(
        bar.reason.contains("its pods disagree on label `version`"),
        "{}",
        bar.reason
    );
    let sleep = find(&verdicts, "foo", "sleep");
    assert_eq!(
        sleep.mode.as_ref().map(|m| m.mode),
        Some(meshwatch::peer_auth::Mode::Unknown),
        "the agents disagree: {}",
        sleep.reason
    );
    assert!(
        sleep.reason.contains(meshwatch::cluster::modes::DISAGREE),
        "{}",
        sleep.reason
    );
    let w = page(addr, "/workload?ns=foo&name=httpbin").await;
    has(
        &w,
        "PeerAuthentication today: <strong>STRICT (namespace foo/default)</strong>",
    );
    let w = page(addr, "/workload?ns=bar&name=httpbin").await;
    has(
        &w,
        "PeerAuthentication today: <strong>UNKNOWN (workload bar/v1-strict)</strong>",
    );
    has(&w, "the mode today is UNKNOWN (workload bar/v1-strict): whether bar/v1-strict selects it cannot be told: its pods disagree on label `version`");
}
