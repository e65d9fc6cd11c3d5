//! `--agent https://…` and `--prometheus https://…` with `--ca` and `--token-file`, against the
//! agent's own HTTPS server (`meshwatch::server::serve`, its certificate loaded by
//! `CertStore::from_files` from a PEM pair signed by a test CA) and its authentication
//! (`meshwatch::auth`: kube-rs's real client sending TokenReviews and SubjectAccessReviews to a
//! local server that answers in the API's wire format). The agent's state holds connections
//! recorded as its capture thread records them. Also: the wrong CA, a CA file that is not one,
//! no token, a token the API server does not know, a user without the RBAC rule, a token file
//! that changes between refreshes, a token over plain HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Json, Router};
use meshwatch::auth::{self, Authorizer};
use meshwatch::classify::{Mesh, Security};
use meshwatch::flow::Connection;
use meshwatch::identity::file::WorkloadsFile;
use meshwatch::live::{IdentityFeed, LiveState, Recorder};
use meshwatch::server::{self, CertStore, Info, Stats};
use meshwatch::verdict::Policy;
use meshwatch_dashboard::model::{Readiness, Snapshot};
use meshwatch_dashboard::source::access::Access;
use meshwatch_dashboard::source::agents::Agents;
use meshwatch_dashboard::source::prometheus::Prometheus;
use meshwatch_dashboard::source::SourceError;
use serde_json::Value;

use crate::prometheus::{recorded_prometheus, WINDOW};

const KUBE_AUTH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../agent/tests/fixtures/kube-auth/"
);
const READER: &str = "system:serviceaccount:monitoring:prometheus-k8s";

// ---------------------------------------------------------------- a test CA and files

/// A directory of this test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mw-dash-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{e}"));
        Dir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    Ca {
        pem: cert.pem(),
        params,
        key,
    }
}

/// A server certificate for localhost signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    let cert = params
        .signed_by(&key, &issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    (cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------- the API server's reviews

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{KUBE_AUTH}{name}.json"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn answer(mut body: Value, request: &Value) -> Response {
    body["spec"] = request["spec"].clone();
    (StatusCode::CREATED, Json(body)).into_response()
}

/// TokenReview: `prometheus-token` is the reader, `curious-token` a user without the rule;
/// SubjectAccessReview: the reader may `get` /metrics and /api/v1/*.
async fn start_api() -> String {
    let app = Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(|Json(req): Json<Value>| async move {
                let name = match req["spec"]["token"].as_str() {
                    Some("prometheus-token") => "tokenreview-prometheus",
                    Some("curious-token") => "tokenreview-curious",
                    _ => "tokenreview-unknown",
                };
                answer(fixture(name), &req)
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(|Json(req): Json<Value>| async move {
                let attrs = &req["spec"]["nonResourceAttributes"];
                let path = attrs["path"].as_str().unwrap_or_default();
                let allowed = req["spec"]["user"] == READER
                    && attrs["verb"] == "get"
                    && (path == "/metrics" || path.starts_with("/api/v1/"));
                let name = if allowed {
                    "subjectaccessreview-allowed"
                } else {
                    "subjectaccessreview-denied"
                };
                answer(fixture(name), &req)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn authorizer(api: &str) -> Arc<Authorizer> {
    let config = kube::Config::new(api.parse().unwrap_or_else(|e| panic!("{e}")));
    let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Authorizer::new(client, auth::Limits::default()))
}

// ---------------------------------------------------------------- the agent

const WORKLOADS: &str = "workloads:
  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1, mesh: sidecar}
  - {namespace: foo, workload: sleep, ips: [10.244.1.12], node: node-1, mesh: sidecar}
  - {namespace: legacy, workload: sleep, ips: [10.244.2.21], node: node-2, mesh: none}
nodes:
  - {name: node-1, ips: [10.0.0.5]}
";

fn conn(src: &str, security: Security, kube_probe: bool) -> Connection {
    Connection {
        src: src.parse().unwrap_or_else(|e| panic!("{e}")),
        dst: "10.244.1.11".parse().unwrap_or_else(|e| panic!("{e}")),
        dport: 8000,
        security,
        mesh: if security == Security::IstioMtls {
            Mesh::Sidecar
        } else {
            Mesh::None
        },
        ts: meshwatch::live::now(),
        local: false,
        attempt: false,
        view: false,
        kube_probe,
        alt_dst: None,
    }
}

/// node-1's agent state: foo/sleep -> foo/httpbin in mTLS (6), legacy/sleep in plaintext (2),
/// and a kubelet probe from the node (1), recorded as the capture thread records them.
fn agent_state() -> Arc<LiveState> {
    let map = WorkloadsFile::parse(WORKLOADS, Some("node-1")).unwrap_or_else(|e| panic!("{e}"));
    let state = Arc::new(LiveState::new(
        Arc::new(RwLock::new(map)),
        IdentityFeed::File("w.yaml".into()),
        Policy::default(),
        3_600_000_000_000,
        "any".into(),
    ));
    let mut rec = Recorder::new(state.clone());
    rec.set_running(true);
    for _ in 0..6 {
        rec.on_connection(&conn("10.244.1.12", Security::IstioMtls, false));
    }
    for _ in 0..2 {
        rec.on_connection(&conn("10.244.2.21", Security::Plaintext, false));
    }
    rec.on_connection(&conn("10.0.0.5", Security::Plaintext, true));
    state
}

/// `app` served over HTTPS with the certificate in `dir` (`server.crt`, `server.key`), as the
/// agent serves it.
async fn serve_tls(app: Router, dir: &Dir) -> SocketAddr {
    let certs = Arc::new(
        CertStore::from_files(&dir.0.join("server.crt"), &dir.0.join("server.key"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let config = certs.server_config().unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(server::serve(
        listener,
        app,
        Some(config),
        server::Limits::default(),
        Arc::new(Stats::default()),
        std::future::pending(),
    ));
    addr
}

/// The agent (HTTPS, authentication against `api`) on a free port.
async fn start_agent(api: &str, dir: &Dir) -> SocketAddr {
    let auth = authorizer(api);
    let info = Arc::new(Info {
        tls: true,
        limits: server::Limits::default(),
        stats: Arc::new(Stats::default()),
        auth: Some(auth.clone()),
    });
    let app = meshwatch::api::app(agent_state(), Some(auth), Some(info));
    serve_tls(app, dir).await
}

// ---------------------------------------------------------------- the dashboard's side

fn agents(url: &str, ca: Option<&Path>, token: Option<&Path>) -> Result<Agents, SourceError> {
    let access = Access::from_flags(ca, token, false)?;
    Agents::with_access(
        &[url.to_owned()],
        Policy::default(),
        Duration::from_secs(5),
        access,
    )
}

async fn load(a: &Agents) -> Result<Snapshot, String> {
    a.load().await.map_err(|e| e.to_string())
}

fn verdict_of<'a>(
    s: &'a Snapshot,
    ns: &str,
    w: &str,
) -> &'a meshwatch_dashboard::model::VerdictView {
    s.verdicts
        .iter()
        .find(|v| v.destination.workload_name() == Some((ns, w)))
        .unwrap_or_else(|| panic!("no verdict for {ns}/{w}: {s:?}"))
}

/// (source, kind, connections) of a verdict's blockers, sorted.
fn blockers(v: &meshwatch_dashboard::model::VerdictView) -> Vec<(String, String, u64)> {
    let mut out: Vec<_> = v
        .blockers
        .iter()
        .map(|b| {
            (
                serde_json::to_string(&b.source).unwrap_or_default(),
                b.kind.clone().unwrap_or_default(),
                b.connections,
            )
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_over_https_with_a_ca_and_a_token() {
    let dir = Dir::new("agents");
    let good = ca("meshwatch-test-ca");
    let (cert, key) = leaf(&good);
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    let ca_file = dir.write("ca.crt", &good.pem);
    let other_ca = dir.write("other-ca.crt", &ca("someone-else").pem);
    let token = dir.write("token", "prometheus-token\n");
    let api = start_api().await;
    let addr = start_agent(&api, &dir).await;
    let url = format!("https://localhost:{}", addr.port());

    // the CA and the token: the agent's edges, judged here
    let a = agents(&url, Some(&ca_file), Some(&token)).unwrap_or_else(|e| panic!("{e}"));
    let s = load(&a).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(s.evidence.agents_down.is_empty(), "{:?}", s.evidence);
    let httpbin = verdict_of(&s, "foo", "httpbin");
    assert_eq!(httpbin.verdict, Readiness::Blocked);
    assert_eq!(
        (
            httpbin.connections.istio_mtls,
            httpbin.connections.plaintext
        ),
        (6, 3)
    );
    let mut kinds: Vec<(String, u64)> = blockers(httpbin)
        .into_iter()
        .map(|(_, k, n)| (k, n))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("kubelet_probe".to_owned(), 1),
            ("no_sidecar".to_owned(), 2)
        ],
        "{:?}",
        httpbin.blockers
    );

    // a CA that did not sign the agent's certificate: the handshake fails, saying why and where
    let a = agents(&url, Some(&other_ca), Some(&token)).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(
        e.contains(&url)
            && e.contains("TLS handshake failed")
            && e.contains("not signed by a CA in --ca"),
        "{e}"
    );
    // the webpki roots do not know a test CA either
    let a = agents(&url, None, Some(&token)).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(
        e.contains("TLS handshake failed") && e.contains("UnknownIssuer"),
        "{e}"
    );
    // labs: any certificate
    let access = Access::from_flags(None, Some(&token), true).unwrap_or_else(|e| panic!("{e}"));
    let a = Agents::with_access(
        std::slice::from_ref(&url),
        Policy::default(),
        Duration::from_secs(5),
        access,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(load(&a).await.is_ok());

    // no token: 401, and the flag to pass
    let a = agents(&url, Some(&ca_file), None).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(
        e.contains(&url) && e.contains("HTTP 401") && e.contains("pass --token-file"),
        "{e}"
    );

    // a user without the RBAC rule: 403, and the role to bind
    let curious = dir.write("curious", "curious-token");
    let a = agents(&url, Some(&ca_file), Some(&curious)).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(
        e.contains("HTTP 403") && e.contains("meshwatch-metrics-reader"),
        "{e}"
    );

    // the token file is read at each load (a projected token rotates)
    let rotating = dir.write("rotating", "expired-token");
    let a = agents(&url, Some(&ca_file), Some(&rotating)).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(
        e.contains("HTTP 401") && e.contains("did not accept the --token-file token"),
        "{e}"
    );
    dir.write("rotating", "prometheus-token");
    assert!(
        load(&a).await.is_ok(),
        "the new token is used at the next load"
    );
    dir.write("rotating", "");
    let e = load(&a).await.err().unwrap_or_default();
    assert!(e.contains("--token-file") && e.contains("empty"), "{e}");

    // plain HTTP to the HTTPS port: the hint says so
    let plain = format!("http://localhost:{}", addr.port());
    let a = agents(&plain, None, None).unwrap_or_else(|e| panic!("{e}"));
    let e = load(&a).await.err().unwrap_or_default();
    assert!(e.contains("use https://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_that_cannot_work_are_refused_at_start() {
    let dir = Dir::new("flags");
    let token = dir.write("token", "prometheus-token");
    let not_pem = dir.write("not.pem", "hello");
    // a CA file that is no CA bundle, or missing
    let e = Access::from_flags(Some(&not_pem), None, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains(&format!("--ca {}", not_pem.display())) && e.contains("no certificate"),
        "{e}"
    );
    let missing = dir.0.join("missing.pem");
    let e = Access::from_flags(Some(&missing), None, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("--ca") && e.contains("missing.pem"), "{e}");
    let e = Access::from_flags(None, Some(&missing), false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("--token-file") && e.contains("missing.pem"),
        "{e}"
    );
    // a token never goes over plain HTTP
    let e = agents("http://node-1:9477", None, Some(&token))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("http://node-1:9477") && e.contains("in clear"),
        "{e}"
    );
    let access = Access::from_flags(None, Some(&token), false).unwrap_or_else(|e| panic!("{e}"));
    let e = Prometheus::new("http://prom:9090", WINDOW, Policy::default(), None)
        .with_access(access)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("in clear"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_over_https_with_a_token() {
    let dir = Dir::new("prometheus");
    let good = ca("meshwatch-test-ca");
    let (cert, key) = leaf(&good);
    dir.write("server.crt", &cert);
    dir.write("server.key", &key);
    let ca_file = dir.write("ca.crt", &good.pem);
    let other_ca = dir.write("other-ca.crt", &ca("someone-else").pem);
    let token = dir.write("token", "prometheus-token");
    let api = start_api().await;
    // Prometheus behind a proxy that checks tokens as the agent does (kube-rbac-proxy's job)
    let app = recorded_prometheus("").layer(middleware::from_fn_with_state(
        authorizer(&api),
        auth::require,
    ));
    let addr = serve_tls(app, &dir).await;
    let url = format!("https://localhost:{}", addr.port());
    let source = |ca: &Path, token: Option<&Path>| {
        let access = Access::from_flags(Some(ca), token, false).unwrap_or_else(|e| panic!("{e}"));
        Prometheus::new(&url, WINDOW, Policy::default(), None)
            .with_access(access)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    let s = source(&ca_file, Some(&token))
        .load()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.source.kind, "prometheus");
    assert!(!s.verdicts.is_empty(), "{s:?}");

    let e = source(&other_ca, Some(&token))
        .load()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains(&url) && e.contains("TLS handshake failed"),
        "{e}"
    );
    let e = source(&ca_file, None)
        .load()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("HTTP 401") && e.contains("pass --token-file"),
        "{e}"
    );
    let curious = dir.write("curious", "curious-token");
    let e = source(&ca_file, Some(&curious))
        .load()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("HTTP 403") && e.contains("may not query Prometheus"),
        "{e}"
    );
}
