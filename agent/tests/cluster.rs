//! The cluster view against a local HTTP server that answers Prometheus' query API with
//! answers recorded from a real Prometheus scraping two agents (tests/live/cluster_e2e.py
//! --record): the report, its JSON, `verdicts` and `check` with their exit codes, and every
//! error — unreachable, a bad URL, a refused query, not Prometheus, no agents, no connections.
//! The same server behind TLS with a bearer token (a test CA) checks `--ca`, `--token-file`
//! and `--insecure-skip-verify`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use meshwatch::cluster::promql::{Queries, Resolution};
use meshwatch::cluster::{from_prometheus, ClusterError, ClusterReport};
use meshwatch::verdict::{Policy, Readiness};
use serde_json::Value;

/// The window the fixtures were recorded with.
const WINDOW: Duration = Duration::from_secs(600);
const NAMESPACES: [&str; 5] = ["alpha", "beta", "gamma", "legacy", "delta"];

type Handler = dyn Fn(&str, &BTreeMap<String, String>) -> (u16, String) + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on loopback; returns its base URL.
fn serve(handler: Arc<Handler>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || answer(stream, &*handler));
        }
    });
    url
}

/// The same behind TLS (a certificate for 127.0.0.1 signed by a fresh CA), answering 401
/// without `Authorization: Bearer {token}`; returns the base URL and the CA's PEM.
fn serve_tls(handler: Arc<Handler>, token: &'static str) -> (String, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
    let key = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let certs = vec![CertificateDer::from_pem_slice(leaf.pem().as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (handler, config) = (handler.clone(), config.clone());
            std::thread::spawn(move || {
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                answer_with(
                    rustls::StreamOwned::new(tls, stream),
                    &*handler,
                    Some(token),
                );
            });
        }
    });
    (url, ca_pem)
}

fn answer(stream: TcpStream, handler: &Handler) {
    answer_with(stream, handler, None);
}

/// Answer one request; with `token`, only one that carries it as a bearer token.
fn answer_with(mut stream: impl Read + Write, handler: &Handler, token: Option<&str>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let target = text.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let authorized = token.is_none_or(|t| {
        text.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("authorization") && value.trim() == format!("Bearer {t}")
            })
        })
    });
    let (status, body) = if authorized {
        handler(path, &params)
    } else {
        (401, "Unauthorized".to_owned())
    };
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "text/html"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Percent-decoding of a query string value (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/prometheus")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Which recorded answer a query asks for, and for which namespace.
fn route(query: &str) -> Option<(&'static str, Option<&'static str>)> {
    let r = Resolution::of(WINDOW.as_secs());
    let scopes = std::iter::once(None).chain(NAMESPACES.into_iter().map(Some));
    for ns in scopes {
        let q = Queries::new(&r, ns);
        let names = [
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
            (&q.peer_authentications, "peer_authentications"),
            (
                &q.peer_authentications_first_shown,
                "peer_authentications_first_shown",
            ),
            (
                &q.peer_authentications_last_shown,
                "peer_authentications_last_shown",
            ),
        ];
        if let Some((_, name)) = names.iter().find(|(text, _)| text.as_str() == query) {
            return Some((name, ns));
        }
    }
    None
}

/// An empty answer (agents that do not watch PeerAuthentications export no modes).
const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;

/// The recorded answer, limited to a namespace as Prometheus would with the query's matcher.
/// A prefix without its own recording of a query answers with the unprefixed one; the modes
/// have a recording under `modes_` only (the live test's agents did not watch them).
fn recorded(prefix: &str, name: &str, namespace: Option<&str>) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prometheus");
    let text = [format!("{prefix}{name}"), name.to_owned()]
        .into_iter()
        .find(|f| dir.join(format!("{f}.json")).is_file())
        .map_or_else(|| EMPTY.to_owned(), |f| fixture(&f));
    let mut v: Value = serde_json::from_str(&text).expect("json");
    if let (Some(ns), Some(result)) = (namespace, v["data"]["result"].as_array_mut()) {
        let label = if name == "workloads" || name.starts_with("peer_authentications") {
            "namespace"
        } else {
            "destination_namespace"
        };
        if name != "agents" && name != "drops" && name != "agents_down" {
            result.retain(|s| s["metric"][label] == ns);
        }
    }
    v.to_string()
}

const NOT_ASKED: &str =
    r#"{"status":"error","errorType":"bad_data","error":"this fake does not know the query"}"#;

/// A Prometheus that answers with the recordings named `{prefix}{query name}`.
fn prometheus(prefix: &'static str) -> String {
    serve(Arc::new(move |path, params| {
        assert_eq!(path, "/api/v1/query");
        assert!(params.get("time").is_some_and(|t| t.parse::<u64>().is_ok()));
        match params.get("query").and_then(|q| route(q)) {
            Some((name, ns)) => (200, recorded(prefix, name, ns)),
            None => (400, NOT_ASKED.to_owned()),
        }
    }))
}

fn report(url: &str, namespace: Option<&str>) -> Result<ClusterReport, ClusterError> {
    from_prometheus(url, WINDOW, &Policy::default(), namespace)
}

fn verdict<'a>(r: &'a ClusterReport, ns: &str, w: &str) -> &'a meshwatch::verdict::Verdict {
    r.verdicts
        .workloads
        .iter()
        .find(|v| {
            v.destination.namespace.as_deref() == Some(ns)
                && v.destination.workload.as_deref() == Some(w)
        })
        .unwrap_or_else(|| panic!("no verdict for {ns}/{w}"))
}

#[test]
fn report_from_recorded_answers() {
    let url = prometheus("");
    let r = report(&url, None).expect("report");
    assert_eq!((r.window_seconds, r.source.as_str()), (600, url.as_str()));
    assert!(r.agents_down.is_empty() && !r.evidence_incomplete);
    let connections: u64 = r.edges.iter().map(|e| e.stats.connections).sum();
    assert_eq!(connections, 31, "the connections the live test made");
    assert_eq!(r.edges.iter().map(|e| e.stats.attempts).sum::<u64>(), 1);
    assert!(r
        .edges
        .iter()
        .all(|e| e.stats.last_seen >= e.stats.first_seen && e.stats.first_seen > 0));
    assert_eq!(verdict(&r, "alpha", "api").verdict, Readiness::Ready);
    assert_eq!(verdict(&r, "alpha", "api").attempts, 1);
    assert_eq!(verdict(&r, "gamma", "svc").verdict, Readiness::Insufficient);
    assert_eq!(verdict(&r, "legacy", "store").verdict, Readiness::NotInMesh);
    let db = verdict(&r, "beta", "db");
    assert_eq!(db.verdict, Readiness::Blocked);
    let blockers: Vec<_> = db
        .blockers
        .iter()
        .map(|b| {
            (
                b.source.display(),
                b.security.as_str(),
                b.port,
                b.connections,
            )
        })
        .collect();
    assert_eq!(blockers, [("legacy/cron".to_owned(), "plaintext", 8000, 2)]);
    assert!(db.blockers[0].remedy.contains("no sidecar"));
    let ns: Vec<_> = r
        .verdicts
        .namespaces
        .iter()
        .map(|n| (n.namespace.as_str(), n.verdict))
        .collect();
    assert_eq!(
        ns,
        [
            ("alpha", Readiness::Ready),
            ("beta", Readiness::Blocked),
            ("gamma", Readiness::Insufficient),
            ("legacy", Readiness::NotInMesh)
        ]
    );
    assert_eq!(r.verdicts.mesh.verdict, Readiness::Blocked);
}

#[test]
fn a_namespace_limits_the_report() {
    let url = prometheus("");
    let r = report(&url, Some("beta")).expect("report");
    assert!(r
        .edges
        .iter()
        .all(|e| e.destination.namespace.as_deref() == Some("beta")));
    assert_eq!(r.verdicts.namespaces.len(), 1);
    match report(&url, Some("delta")) {
        Err(e @ ClusterError::NoConnections { .. }) => assert_eq!(
            e.to_string(),
            "meshwatch agents are scraped but saw no connections to namespace delta in the last 10m"
        ),
        other => panic!("{other:?}"),
    }
}

/// Recorded at the end of the live test: an agent dropped packets, the other was stopped.
#[test]
fn drops_and_a_stopped_agent() {
    let r = report(&prometheus("final_"), None).expect("report");
    assert!(r.evidence_incomplete);
    assert_eq!(r.agents_down, ["192.0.2.2:19577"]);
    assert!(r
        .verdicts
        .workloads
        .iter()
        .all(|v| v.verdict != Readiness::Ready));
    assert!(verdict(&r, "alpha", "api")
        .reason
        .contains("evidence incomplete"));
}

#[test]
fn json_has_the_analyze_names() {
    let r = report(&prometheus(""), None).expect("report");
    let v = serde_json::to_value(&r).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for k in [
        "source",
        "window_seconds",
        "evidence_incomplete",
        "agents_down",
        "edges",
        "verdicts",
        "namespaces",
        "mesh",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let edge = &v["edges"][0];
    for k in [
        "source",
        "destination",
        "port",
        "security",
        "mesh",
        "connections",
        "last_seen",
    ] {
        assert!(edge.get(k).is_some(), "edge field {k}: {edge}");
    }
}

fn error_of(url: &str) -> ClusterError {
    match report(url, None) {
        Err(e) => e,
        Ok(r) => panic!("a report from {url}: {r:?}"),
    }
}

#[test]
fn unreachable_and_bad_urls() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let e = error_of(&url);
    assert!(matches!(e, ClusterError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach Prometheus at {url}: ")),
        "{e}"
    );
    for bad in [
        "prometheus:9090",
        "ftp://prometheus:9090",
        "http://",
        "http://p:9090/?x=1",
        "not a url",
    ] {
        let e = error_of(bad);
        assert!(matches!(e, ClusterError::BadUrl { .. }), "{bad}: {e:?}");
        assert!(e.to_string().starts_with("invalid Prometheus URL"), "{e}");
    }
    // credentials stay out of messages
    let e = error_of(&url.replace("http://", "http://user:secret@"));
    assert!(!e.to_string().contains("secret"), "{e}");
    let e = error_of("ftp://user:secret@prometheus/x");
    assert_eq!(
        e.to_string(),
        "invalid Prometheus URL `ftp://prometheus/x`: scheme `ftp`: use http:// or https://"
    );
}

#[test]
fn prometheus_errors_are_named() {
    // a query Prometheus refuses: its own words (recorded: HTTP 400, bad_data)
    let refused = serve(Arc::new(|_, _| (400, fixture("error_bad_data"))));
    let e = error_of(&refused);
    let text = e.to_string();
    assert!(matches!(e, ClusterError::Query { .. }), "{e:?}");
    assert!(
        text.contains(
            "(bad_data): invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"
        ),
        "{text}"
    );
    assert!(
        text.contains("query: count(last_over_time(meshwatch_build_info[600s]))"),
        "{text}"
    );
    // a wrong path prefix: somebody's 404 page
    let not_found = serve(Arc::new(|_, _| {
        (404, "<html>404 page not found</html>".to_owned())
    }));
    let e = error_of(&not_found);
    assert!(matches!(e, ClusterError::Http { status: 404, .. }), "{e:?}");
    assert!(e.to_string().contains("not Prometheus' query API"), "{e}");
    // HTTP 200, but not the API's JSON
    let garbage = serve(Arc::new(|_, _| (200, "hello".to_owned())));
    let e = error_of(&garbage);
    assert!(matches!(e, ClusterError::BadResponse { .. }), "{e:?}");
}

#[test]
fn empty_results_say_which() {
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let nobody = serve(Arc::new(move |_, _| (200, empty.to_owned())));
    let e = error_of(&nobody);
    assert!(matches!(e, ClusterError::NoAgents { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "no meshwatch agent has been scraped by {nobody} in the last 10m"
        )),
        "{e}"
    );
    let quiet = serve(Arc::new(move |_, p| {
        match p.get("query").and_then(|q| route(q)) {
            Some(("agents", _)) => (200, fixture("agents")),
            _ => (200, empty.to_owned()),
        }
    }));
    let e = error_of(&quiet);
    assert_eq!(
        e.to_string(),
        "meshwatch agents are scraped but saw no connections in the last 10m"
    );
}

fn meshwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwatch"))
        .args(args)
        .env_remove("MESHWATCH_PROMETHEUS")
        .env_remove("MESHWATCH_NAMESPACE")
        .env_remove("MESHWATCH_WINDOW")
        .output()
        .expect("run meshwatch")
}

fn check(url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["check", "--prometheus", url, "--window", "10m"];
    args.extend_from_slice(extra);
    let out = meshwatch(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_exit_codes() {
    let url = prometheus("");
    let (code, out, err) = check(&url, &["--namespace", "alpha"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("kind: PeerAuthentication") && out.contains("namespace: alpha"),
        "{out}"
    );
    let (code, out, err) = check(&url, &["--namespace", "beta"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("namespace beta is blocked"), "{err}");
    assert!(
        err.contains("legacy/cron -> port 8000: 2 connection(s) plaintext"),
        "{err}"
    );
    assert!(err.contains("remedy: the client has no sidecar"), "{err}");
    let (code, _, err) = check(&url, &["--namespace", "gamma"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = check(&url, &["--namespace", "legacy"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("outside the mesh"), "{err}");
    let (code, out, err) = check(&url, &["--namespace", "alpha", "--workload", "web"]);
    assert_eq!(code, 0, "{err}");
    // ready; the pods' labels are not known from Prometheus: the policy's selector is the
    // `app: web` convention, and check says that it assumes it
    assert!(
        out.contains("name: web-strict") && out.contains("app: web"),
        "{out}"
    );
    assert!(
        err.contains("the selector assumes web's pods are labelled app: web"),
        "{err}"
    );
    let (code, _, err) = check(&url, &["--namespace", "alpha", "--workload", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no workload alpha/nope") && err.contains("api"),
        "{err}"
    );
    let (code, _, err) = check(&url, &[]);
    assert_eq!(code, 1, "the mesh: beta blocks it: {err}");
    let (code, _, err) = check(&url, &["--namespace", "delta"]);
    assert_eq!(code, 3, "no connections is insufficient evidence: {err}");
    let (code, _, err) = check(&prometheus("final_"), &["--namespace", "alpha"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("dropped packets") && err.contains("192.0.2.2:19577"),
        "{err}"
    );
    let (code, _, err) = check("prometheus:9090", &[]);
    assert_eq!(code, 2, "{err}");
    let out = meshwatch(&["check", "--workload", "web", "--prometheus", &url]);
    assert_eq!(out.status.code(), Some(2), "--workload needs --namespace");
}

#[test]
fn verdicts_command() {
    let url = prometheus("");
    let out = meshwatch(&[
        "verdicts",
        "--prometheus",
        &url,
        "--window",
        "10m",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["window_seconds"], 600);
    assert_eq!(v["mesh"]["verdict"], "blocked");
    let out = Command::new(env!("CARGO_BIN_EXE_meshwatch"))
        .args(["verdicts", "--color", "never"])
        .env("MESHWATCH_PROMETHEUS", &url)
        .env("MESHWATCH_WINDOW", "10m")
        .env("MESHWATCH_NAMESPACE", "beta")
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with(&format!(
            "CLUSTER {url} over the last 10m: 15 connections, 0 attempts"
        )),
        "{table}"
    );
    assert!(
        !table.contains("SUMMARY") && table.contains("beta/db is blocked by:"),
        "{table}"
    );
    let out = meshwatch(&["verdicts", "--prometheus", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("meshwatch: cannot reach Prometheus at http://127.0.0.1:1"));
}

/// With agents that export the PeerAuthentication modes (`modes_`: the recorded answers plus
/// written modes: beta STRICT namespace-wide, alpha/api STRICT by its own policy, each shown
/// from the window's first step): beta/db's plaintext client, last seen at the window's end,
/// is a broken client, alpha/api has nothing to apply, and `check` fails the namespace with
/// the broken client on stderr.
#[test]
fn modes_from_the_agents_info_metric() {
    let url = prometheus("modes_");
    let r = report(&url, None).expect("report");
    let db = verdict(&r, "beta", "db");
    assert_eq!(db.verdict, Readiness::BrokenClients, "{}", db.reason);
    assert!(db.blockers.iter().all(|b| b.broken));
    assert_eq!(
        db.mode.as_ref().map(|m| m.describe()).as_deref(),
        Some("STRICT (namespace beta/default)")
    );
    let api = verdict(&r, "alpha", "api");
    assert_eq!(api.verdict, Readiness::Ready);
    let api_mode = api.mode.as_ref().expect("mode");
    assert_eq!(api_mode.describe(), "STRICT (workload alpha/api)");
    assert_eq!(api_mode.ports.len(), 1, "the port-level override");
    // port 9090 is PERMISSIVE, so not fully STRICT yet; the policy to edit (alpha/api) is not
    // known from Prometheus: no suggestion, and the reason says why (never a guessed edit)
    assert_eq!(api.suggested_policy, None);
    assert!(
        api.reason.contains(
            "no policy suggested: its mode comes from the workload-level policy alpha/api, which is not known here to be edited"
        ),
        "{}",
        api.reason
    );
    let svc = verdict(&r, "gamma", "svc");
    assert_eq!(
        svc.mode.as_ref().map(|m| m.mode.as_str()),
        Some("UNKNOWN"),
        "agents that disagree (PERMISSIVE and STRICT): unknown, never the strictest"
    );
    assert!(
        svc.reason.contains(meshwatch::cluster::modes::DISAGREE),
        "{}",
        svc.reason
    );
    assert_eq!(
        verdict(&r, "legacy", "store")
            .mode
            .as_ref()
            .map(|m| m.describe())
            .as_deref(),
        Some("PERMISSIVE (default)"),
        "the default: no policy label (Prometheus drops empty labels)"
    );
    let beta = r
        .verdicts
        .namespaces
        .iter()
        .find(|n| n.namespace == "beta")
        .expect("beta");
    // legacy/cron sends plaintext to both of beta's workloads
    assert_eq!(
        (beta.verdict, beta.broken_clients),
        (Readiness::BrokenClients, 2)
    );
    assert_eq!(r.verdicts.mesh.verdict, Readiness::BrokenClients);
    // agents without the modes: none shown, the verdicts as before
    let plain = report(&prometheus(""), None).expect("report");
    assert!(plain.verdicts.workloads.iter().all(|v| v.mode.is_none()));
    assert_eq!(verdict(&plain, "beta", "db").verdict, Readiness::Blocked);

    let (code, out, err) = check(&url, &["--namespace", "beta"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("namespace beta is broken_clients"), "{err}");
    assert!(
        err.contains("mode today: STRICT (namespace beta/default)"),
        "{err}"
    );
    assert!(
        err.contains("broken client: legacy/cron -> port 8000"),
        "{err}"
    );
    // `verdicts` shows the modes in its table
    let out = meshwatch(&[
        "verdicts",
        "--prometheus",
        &url,
        "--window",
        "10m",
        "--color",
        "never",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("STRICT (namespace beta/default)"), "{table}");
    assert!(table.contains("beta/db has broken clients"), "{table}");
}

/// beta's STRICT series first showed 100 s before the window's end (`late_`), after the
/// plaintext of legacy/cron was last seen (within a step and the lookback): that plaintext
/// arrived before the change, so no broken clients, and `check` does not fail on it.
#[test]
fn plaintext_from_before_strict_showed_is_not_broken() {
    let url = prometheus("late_");
    let r = report(&url, None).expect("report");
    let db = verdict(&r, "beta", "db");
    assert_ne!(db.verdict, Readiness::BrokenClients, "{}", db.reason);
    assert!(db.blockers.iter().all(|b| !b.broken));
    assert!(
        db.reason.contains(
            "2 plaintext connection(s) from 1 source was last connected before 2026-11-27T"
        ),
        "{}",
        db.reason
    );
    let since = db.mode.as_ref().and_then(|m| m.since).expect("since");
    assert_eq!(since.at, (1_795_791_401 + 3 + 300) * 1_000_000_000);
    let (code, _, err) = check(&url, &["--namespace", "beta"]);
    assert_ne!(code, 1, "{err}");
    assert!(!err.contains("broken"), "{err}");
}

/// A Prometheus behind TLS and a bearer token (kube-rbac-proxy's shape): `verdicts` and
/// `check` with `--ca` and `--token-file`, and every way the flags can be wrong, each error
/// naming the flag, the file or the URL and what to fix.
#[test]
fn prometheus_over_https_with_a_ca_and_a_token() {
    let handler: Arc<Handler> = Arc::new(|path, params| {
        assert_eq!(path, "/api/v1/query");
        match params.get("query").and_then(|q| route(q)) {
            Some((name, ns)) => (200, recorded("", name, ns)),
            None => (400, NOT_ASKED.to_owned()),
        }
    });
    let (url, ca_pem) = serve_tls(handler, "reader-token");
    let dir = std::env::temp_dir().join(format!("meshwatch-cluster-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let (ca, token) = (file("ca.pem", &ca_pem), file("token", "reader-token\n"));
    let (wrong, empty) = (file("wrong", "someone-else"), file("empty", " \n"));
    let not_ca = file("not-ca.pem", "hello");

    let (code, out, err) = check(
        &url,
        &["--namespace", "alpha", "--ca", &ca, "--token-file", &token],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("namespace: alpha"), "{out}");
    let out = meshwatch(&[
        "verdicts",
        "--prometheus",
        &url,
        "--window",
        "10m",
        "--format",
        "json",
        "--ca",
        &ca,
        "--token-file",
        &token,
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        report["source"],
        url.as_str(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // labs: any certificate
    let (code, _, err) = check(
        &url,
        &[
            "--namespace",
            "alpha",
            "--insecure-skip-verify",
            "--token-file",
            &token,
        ],
    );
    assert_eq!(code, 0, "{err}");

    for (extra, expected) in [
        (
            vec!["--ca", &ca],
            "answered HTTP 401, not Prometheus' query API (is the URL right?): Unauthorized — it wants credentials: pass --token-file (a bearer token)",
        ),
        (
            vec!["--ca", &ca, "--token-file", &wrong],
            "Unauthorized — the --token-file token was not accepted",
        ),
        (
            vec!["--token-file", &token],
            &format!("cannot reach Prometheus at {url}: TLS handshake failed: invalid peer certificate: UnknownIssuer"),
        ),
        (
            vec!["--ca", &not_ca, "--token-file", &token],
            &format!("--ca {not_ca}: no certificate in it"),
        ),
        (
            vec!["--ca", &ca, "--token-file", &empty],
            &format!("--token-file {empty}: empty"),
        ),
    ] {
        let mut args = vec!["--namespace", "alpha"];
        args.extend(extra.iter().copied());
        let (code, _, err) = check(&url, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (code, _, err) = check(&url, &["--ca", &ca, "--insecure-skip-verify"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");

    // a token over plain HTTP is refused before anything is sent
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let plain = serve(Arc::new(move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (400, NOT_ASKED.to_owned())
    }));
    let (code, _, err) = check(&plain, &["--token-file", &token]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "--prometheus {plain}: plain HTTP would send the --token-file token in clear: use https://"
        )),
        "{err}"
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
