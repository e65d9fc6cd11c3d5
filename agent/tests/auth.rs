//! Who may read the agent, end to end on loopback: the agent's own server (TLS, bounds) and
//! routes (read-only rules, authentication) in front of kube-rs's real client, which sends
//! TokenReviews and SubjectAccessReviews to a local server answering in the API's wire format
//! (`fixtures/kube-auth/`). Allowed, denied, unknown token, no token, the API server down or
//! hanging (fail closed, health open), a flood of distinct tokens (bounded caches and reviews
//! in flight), a thousand slow clients (a scrape still answers within a second), request
//! bodies, certificate rotation, and the flags that refuse to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use meshwatch::auth::{self, Authorizer};
use meshwatch::identity::{IdentityMap, SharedIdentities};
use meshwatch::live::{IdentityFeed, LiveState, Recorder};
use meshwatch::server::{self, CertStore, Info, Stats};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const PROMETHEUS: &str = "system:serviceaccount:monitoring:prometheus-k8s";
const TR_PROMETHEUS: &str = include_str!("fixtures/kube-auth/tokenreview-prometheus.json");
const TR_CURIOUS: &str = include_str!("fixtures/kube-auth/tokenreview-curious.json");
const TR_UNKNOWN: &str = include_str!("fixtures/kube-auth/tokenreview-unknown.json");
const SAR_ALLOWED: &str = include_str!("fixtures/kube-auth/subjectaccessreview-allowed.json");
const SAR_DENIED: &str = include_str!("fixtures/kube-auth/subjectaccessreview-denied.json");

// ---------------------------------------------------------------- the recorded API server

/// What the API server received (the first [`KEPT`] reviews of each kind, and how many), and
/// how many reviews it had in flight at most.
#[derive(Default)]
struct Recorded {
    token_reviews: Mutex<Vec<Value>>,
    access_reviews: Mutex<Vec<Value>>,
    token_count: AtomicUsize,
    access_count: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Duration,
}

/// Reviews kept whole (a flood is counted, not kept: the test measures its own memory).
const KEPT: usize = 100;

impl Recorded {
    fn token_reviews(&self) -> usize {
        self.token_count.load(Ordering::SeqCst)
    }
    fn access_reviews(&self) -> usize {
        self.access_count.load(Ordering::SeqCst)
    }
}

fn keep(list: &Mutex<Vec<Value>>, count: &AtomicUsize, req: &Value) {
    if count.fetch_add(1, Ordering::SeqCst) < KEPT {
        if let Ok(mut v) = list.lock() {
            v.push(req.clone());
        }
    }
}

/// The fixture answer with the request's spec, as the API server echoes it; 201 Created.
fn answer(fixture: &str, request: &Value) -> Response {
    let mut body: Value = serde_json::from_str(fixture).expect("fixture");
    body["spec"] = request["spec"].clone();
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn in_flight<T>(rec: &Recorded, f: impl std::future::Future<Output = T>) -> T {
    let now = rec.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rec.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let out = f.await;
    rec.in_flight.fetch_sub(1, Ordering::SeqCst);
    out
}

async fn token_reviews(State(rec): State<Arc<Recorded>>, Json(req): Json<Value>) -> Response {
    in_flight(&rec, async {
        tokio::time::sleep(rec.delay).await;
        keep(&rec.token_reviews, &rec.token_count, &req);
        let fixture = match req["spec"]["token"].as_str() {
            Some("prometheus-token") => TR_PROMETHEUS,
            Some("curious-token") => TR_CURIOUS,
            _ => TR_UNKNOWN,
        };
        answer(fixture, &req)
    })
    .await
}

/// RBAC as the ClusterRole `meshwatch-metrics-reader` would grant it to Prometheus.
async fn access_reviews(State(rec): State<Arc<Recorded>>, Json(req): Json<Value>) -> Response {
    in_flight(&rec, async {
        tokio::time::sleep(rec.delay).await;
        keep(&rec.access_reviews, &rec.access_count, &req);
        let attrs = &req["spec"]["nonResourceAttributes"];
        let path = attrs["path"].as_str().unwrap_or_default();
        let allowed = req["spec"]["user"] == PROMETHEUS
            && attrs["verb"] == "get"
            && (path == "/metrics" || path.starts_with("/api/v1/"));
        answer(if allowed { SAR_ALLOWED } else { SAR_DENIED }, &req)
    })
    .await
}

async fn start_api(delay: Duration) -> (String, Arc<Recorded>) {
    let rec = Arc::new(Recorded {
        delay,
        ..Recorded::default()
    });
    let app = Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_reviews),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(access_reviews),
        )
        .with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rec)
}

/// An address where nothing listens: the API server is down.
async fn dead_api() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// An API server that accepts connections and never answers.
async fn hanging_api() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- the agent's side

struct Agent {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    info: Arc<Info>,
    auth: Arc<Authorizer>,
    app: Router,
}

fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("uri"));
    kube::Client::try_from(config).expect("client")
}

fn live_state() -> Arc<LiveState> {
    let identities: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let state = Arc::new(LiveState::new(
        identities,
        IdentityFeed::None,
        meshwatch::verdict::Policy::default(),
        60_000_000_000,
        "lo".into(),
    ));
    Recorder::new(state.clone()).set_running(true);
    state
}

/// The agent's HTTPS server with authentication against `api_url`, on 127.0.0.1:0, with a
/// self-signed certificate the test client trusts.
async fn start_agent(api_url: &str, auth_limits: auth::Limits, limits: server::Limits) -> Agent {
    let certs = Arc::new(
        CertStore::self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert"),
    );
    let leaf = certs.leaf().expect("leaf");
    start_agent_with(api_url, auth_limits, limits, certs, trusting(leaf)).await
}

async fn start_agent_with(
    api_url: &str,
    auth_limits: auth::Limits,
    limits: server::Limits,
    certs: Arc<CertStore>,
    tls: Arc<rustls::ClientConfig>,
) -> Agent {
    let auth = Arc::new(Authorizer::new(client(api_url), auth_limits));
    let stats = Arc::new(Stats::default());
    let info = Arc::new(Info {
        tls: true,
        limits,
        stats: stats.clone(),
        auth: Some(auth.clone()),
    });
    let app = meshwatch::api::app(live_state(), Some(auth.clone()), Some(info.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = certs.server_config().expect("server config");
    tokio::spawn(server::serve(
        listener,
        app.clone(),
        Some(config),
        limits,
        stats,
        std::future::pending(),
    ));
    Agent {
        addr,
        tls,
        info,
        auth,
        app,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts exactly `leaf`.
fn trusting(leaf: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf).expect("root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTP response, read to the end.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn tls_connect(agent: &Agent) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(agent.addr).await?;
    let connector = tokio_rustls::TlsConnector::from(agent.tls.clone());
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// Send `request` (the head and body as written) over TLS and read the whole answer.
async fn exchange(agent: &Agent, request: &str) -> Answer {
    let run = async {
        let mut s = tls_connect(agent).await?;
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(raw)) => parse(&raw),
        Ok(Err(e)) => panic!("request failed: {e}"),
        Err(_) => panic!("no answer within 10 s"),
    }
}

async fn get(agent: &Agent, path: &str, token: Option<&str>) -> Answer {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    exchange(
        agent,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reviewed_and_paths_authorized() {
    let (url, api) = start_api(Duration::ZERO).await;
    let agent = start_agent(&url, auth::Limits::default(), server::Limits::default()).await;

    let r = get(&agent, "/metrics", None).await;
    assert_eq!(r.status, 401, "no token: {r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"meshwatch\"")
    );
    assert_eq!(api.token_reviews(), 0, "nothing to review without a token");
    let r = get(&agent, "/no-such-path", None).await;
    assert_eq!(r.status, 401, "unknown paths are not revealed: {r:?}");

    let r = get(&agent, "/metrics", Some("stolen-or-made-up")).await;
    assert_eq!(r.status, 401, "unknown token: {r:?}");
    assert_eq!(
        api.access_reviews(),
        0,
        "an unknown token is not authorized"
    );

    let r = get(&agent, "/metrics", Some("curious-token")).await;
    assert_eq!(r.status, 403, "a known user without RBAC: {r:?}");
    let r = get(&agent, "/api/v1/flows", Some("curious-token")).await;
    assert_eq!(r.status, 403, "{r:?}");

    let r = get(&agent, "/metrics", Some("prometheus-token")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("meshwatch_build_info"), "{}", r.body);
    let r = get(&agent, "/api/v1/verdicts", Some("prometheus-token")).await;
    assert_eq!(r.status, 200, "{r:?}");

    for path in ["/healthz", "/readyz"] {
        let r = get(&agent, path, None).await;
        assert_eq!(r.status, 200, "{path} open: {r:?}");
    }

    // the wire: what kube-rs sent, as the API server reads it
    let trs = api.token_reviews.lock().expect("recorded").clone();
    let tr = trs
        .iter()
        .find(|r| r["spec"]["token"] == "prometheus-token")
        .expect("prometheus' token reviewed");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["kind"], "TokenReview");
    let sars = api.access_reviews.lock().expect("recorded").clone();
    let sar = sars
        .iter()
        .find(|r| r["spec"]["user"] == PROMETHEUS)
        .expect("prometheus authorized");
    assert_eq!(sar["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(sar["kind"], "SubjectAccessReview");
    assert_eq!(
        sar["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/metrics", "verb": "get"})
    );
    assert_eq!(sar["spec"]["uid"], "8a6ee7f4-2c8d-4a4b-9c8e-4f3b1e0f5a21");
    assert_eq!(
        sar["spec"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:monitoring",
            "system:authenticated"
        ])
    );
    assert_eq!(
        sar["spec"]["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["prometheus-k8s-0"])
    );
    assert!(sar["spec"]["resourceAttributes"].is_null());

    // decisions are cached: again, no new review
    let (t, a) = (api.token_reviews(), api.access_reviews());
    for _ in 0..5 {
        assert_eq!(
            get(&agent, "/metrics", Some("prometheus-token"))
                .await
                .status,
            200
        );
        assert_eq!(
            get(&agent, "/metrics", Some("curious-token")).await.status,
            403
        );
        assert_eq!(
            get(&agent, "/metrics", Some("stolen-or-made-up"))
                .await
                .status,
            401
        );
    }
    assert_eq!((api.token_reviews(), api.access_reviews()), (t, a));

    // status shows the server's and the authorizer's counters
    let r = get(&agent, "/api/v1/status", Some("prometheus-token")).await;
    let status: Value = serde_json::from_str(&r.body).expect("status json");
    assert_eq!(status["server"]["tls"], true);
    assert_eq!(status["auth"]["mode"], "kubernetes");
    assert_eq!(status["auth"]["cached_authenticated"], 2);
    assert_eq!(status["auth"]["cached_unauthenticated"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_down_or_hanging_fails_closed_and_health_stays_open() {
    let limits = auth::Limits {
        review_timeout: Duration::from_millis(500),
        ..auth::Limits::default()
    };
    for (what, url) in [("down", dead_api().await), ("hanging", hanging_api().await)] {
        let agent = start_agent(&url, limits.clone(), server::Limits::default()).await;
        let started = Instant::now();
        let r = get(&agent, "/metrics", Some("prometheus-token")).await;
        assert_eq!(r.status, 503, "API server {what}: {r:?}");
        assert_eq!(r.header("retry-after"), Some("5"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: bounded wait"
        );
        assert_eq!(get(&agent, "/metrics", None).await.status, 401, "{what}");
        assert_eq!(get(&agent, "/healthz", None).await.status, 200, "{what}");
        assert_eq!(get(&agent, "/readyz", None).await.status, 200, "{what}");
        let s = agent.auth.snapshot();
        assert_eq!(
            s.cached_authenticated + s.cached_unauthenticated,
            0,
            "{what}: nothing cached"
        );
        assert!(s.unavailable >= 1);
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Distinct made-up tokens through the routes, 64 at a time; the status codes seen.
async fn flood(app: &Router, from: usize, n: usize) -> Vec<u16> {
    futures::stream::iter(from..from + n)
        .map(|i| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .uri("/metrics")
                    .header(
                        "authorization",
                        format!("Bearer flood-{i:08}-{}", "x".repeat(900)),
                    )
                    .body(Body::empty())
                    .expect("request");
                match app.oneshot(req).await {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => match e {},
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_tokens_keeps_caches_and_reviews_bounded() {
    let (url, api) = start_api(Duration::from_millis(1)).await;
    let limits = auth::Limits {
        cache_entries: 256,
        max_in_flight: 4,
        ..auth::Limits::default()
    };
    let agent = start_agent(&url, limits, server::Limits::default()).await;
    // Prometheus is authorized before the flood
    assert_eq!(
        get(&agent, "/metrics", Some("prometheus-token"))
            .await
            .status,
        200
    );
    let reviews_before = api.token_reviews();

    let first = flood(&agent.app, 0, 3000).await;
    let rss_after_first = rss_kib();
    let second = flood(&agent.app, 3000, 3000).await;
    let rss_after_second = rss_kib();
    let s = agent.auth.snapshot();
    eprintln!(
        "flood: {} + {} tokens; caches {s:?}; API max in flight {}; RSS after 3000 {rss_after_first} KiB, after 6000 {rss_after_second} KiB",
        first.len(),
        second.len(),
        api.max_in_flight.load(Ordering::SeqCst)
    );
    assert!(
        first.iter().chain(&second).all(|c| *c == 401 || *c == 503),
        "a made-up token is never let in"
    );
    assert!(s.cached_unauthenticated <= 256, "{s:?}");
    assert!(
        s.cached_authenticated <= 256 && s.cached_allowed <= 256,
        "{s:?}"
    );
    assert!(
        api.max_in_flight.load(Ordering::SeqCst) <= 4,
        "at most 4 reviews in flight at the API server"
    );
    assert!(
        api.token_reviews() - reviews_before <= 6000,
        "at most one review per token"
    );
    assert!(
        rss_after_second.saturating_sub(rss_after_first) < 8 * 1024,
        "memory flat: {rss_after_first} -> {rss_after_second} KiB"
    );
    // the flood did not push Prometheus' token out: no new review for it
    let before = api.token_reviews();
    assert_eq!(
        get(&agent, "/metrics", Some("prometheus-token"))
            .await
            .status,
        200
    );
    assert_eq!(
        api.token_reviews(),
        before,
        "prometheus' token still cached"
    );
}

/// The clients' and the server's sockets share this process (~2,000 descriptors for 1,000
/// slow clients): raise the soft limit; under a lower hard limit, fewer clients (said so).
fn slow_clients_possible(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let want = hard.min(8192);
    if soft < want {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    let possible = usize::try_from(limit.saturating_sub(300) / 2).unwrap_or(wanted);
    if possible < wanted {
        eprintln!("RLIMIT_NOFILE {limit}: {possible} slow clients instead of {wanted}");
    }
    possible.min(wanted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_do_not_keep_metrics_from_answering() {
    let n = slow_clients_possible(1000);
    let (url, _api) = start_api(Duration::ZERO).await;
    // the agent's default bound (512) for 1,000 clients: fewer than the clients, so it is held
    let limits = server::Limits {
        header_timeout: Duration::from_secs(2),
        max_connections: (n * 512 / 1000).max(16),
    };
    let agent = start_agent(&url, auth::Limits::default(), limits).await;
    assert_eq!(
        get(&agent, "/metrics", Some("prometheus-token"))
            .await
            .status,
        200
    );

    // 900 clients that start a TLS record and stop; 100 that finish the handshake and send
    // half a request header
    let mut slow = Vec::new();
    for _ in 0..n * 9 / 10 {
        let mut s = TcpStream::connect(agent.addr).await.expect("connect");
        s.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        slow.push(s);
    }
    let mut half = Vec::new();
    for _ in 0..n / 10 {
        if let Ok(mut s) = tls_connect(&agent).await {
            let _ = s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
                .await;
            half.push(s);
        }
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = get(&agent, "/metrics", Some("prometheus-token")).await;
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200, "{r:?}");
    }
    let snap = agent.info.snapshot();
    eprintln!("{n} slow clients: worst /metrics {worst:?}; server {snap:?}");
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
    assert!(snap.connections_open <= limits.max_connections, "{snap:?}");
    assert!(snap.connections_evicted > 0, "{snap:?}");

    // after the header deadline every slow connection is closed by the server
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = agent.info.snapshot();
    assert_eq!(snap.connections_open, 0, "{snap:?}");
    for s in slow.iter_mut().take(50) {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "closed by the server: {n:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_byte_by_byte_is_cut_at_the_deadline() {
    let (url, _api) = start_api(Duration::ZERO).await;
    let limits = server::Limits {
        header_timeout: Duration::from_secs(1),
        ..server::Limits::default()
    };
    let agent = start_agent(&url, auth::Limits::default(), limits).await;
    let mut s = tls_connect(&agent).await.expect("tls");
    let started = Instant::now();
    let mut cut = None;
    for b in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        .iter()
        .cycle()
    {
        if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        // any read that completes means the server acted: it closed (or answered, then closed)
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        if read.is_ok() {
            cut = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let cut = cut.expect("the server closed the connection");
    assert!(cut < Duration::from_millis(2500), "cut after {cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gets_without_a_body_are_served() {
    let (url, api) = start_api(Duration::ZERO).await;
    let agent = start_agent(&url, auth::Limits::default(), server::Limits::default()).await;
    let r = exchange(
        &agent,
        "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = exchange(
        &agent,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer prometheus-token\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = exchange(
        &agent,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = exchange(
        &agent,
        "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(api.token_reviews(), 0, "refused before any review");
}

// ---------------------------------------------------------------- certificates

/// A client that accepts any certificate and tells which one it saw.
#[derive(Debug)]
struct SeeAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SeeAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn served_leaf(agent: &Agent) -> Vec<u8> {
    let s = tls_connect(agent).await.expect("tls");
    let (_, conn) = s.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("a certificate")
}

fn pem_pair(name: &str) -> (String, String, Vec<u8>) {
    let g = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("generate");
    (
        g.cert.pem(),
        g.signing_key.serialize_pem(),
        g.cert.der().as_ref().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_and_a_bad_one_is_not() {
    let dir = std::env::temp_dir().join(format!("meshwatch-auth-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let (c1, k1, der1) = pem_pair("one.example");
    std::fs::write(&cert, c1).expect("write");
    std::fs::write(&key, k1).expect("write");
    let certs = Arc::new(CertStore::from_files(&cert, &key).expect("load"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(certs.clone().watch(Duration::from_millis(100), stop_rx));
    let see_any = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SeeAny(provider())))
            .with_no_client_auth(),
    );
    let url = dead_api().await;
    let agent = start_agent_with(
        &url,
        auth::Limits::default(),
        server::Limits::default(),
        certs,
        see_any,
    )
    .await;
    assert_eq!(served_leaf(&agent).await, der1);
    // a connection open across the rotation keeps working
    let mut open = tls_connect(&agent).await.expect("tls");

    let (c2, k2, der2) = pem_pair("two.example");
    std::fs::write(&cert, c2).expect("write");
    std::fs::write(&key, k2).expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_leaf(&agent).await != der2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_leaf(&agent).await, der2, "the new pair is served");

    // a mismatched pair (a new certificate, the old key) is not taken
    let (c3, _, _) = pem_pair("three.example");
    std::fs::write(&cert, c3).expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_leaf(&agent).await, der2, "the previous pair stays");

    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    open.read_to_end(&mut raw).await.expect("read");
    assert_eq!(parse(&raw).status, 200);
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- flags

/// Run `meshwatch agent ARGS`; one that is still running after 20 s (it started) is killed.
fn agent_bin(args: &[&str]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshwatch"))
        .arg("agent")
        .args(args)
        .env_remove("MESHWATCH_AUTH")
        .env_remove("MESHWATCH_LISTEN")
        .env_remove("MESHWATCH_KUBERNETES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshwatch");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("output")
}

#[test]
fn flags_that_cannot_be_served_stop_the_agent_with_status_2() {
    let out = agent_bin(&["--interface", "lo", "--listen", "0.0.0.0:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--auth none"), "names the flag: {err}");

    let missing = PathBuf::from("/nonexistent/meshwatch/tls.crt");
    let out = agent_bin(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing.to_str().unwrap_or_default(),
        "--tls-key",
        "/nonexistent/meshwatch/tls.key",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-cert /nonexistent/meshwatch/tls.crt"),
        "{err}"
    );

    let out = agent_bin(&["--tls-cert", "/x.crt"]);
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
}
