//! The Kubernetes identity source through kube-rs's real client and watcher, against a local
//! HTTP server that replays API responses: list, a watch stream (ADDED, MODIFIED, BOOKMARK,
//! DELETED), then 410 Gone, which must make the watcher relist; namespaces listed and watched,
//! a label change moving a namespace into ambient; Services and EndpointSlices listed and
//! watched into ClusterIP:port -> workload and target port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use meshwatch::classify::Mesh;
use meshwatch::flow::TableStats;
use meshwatch::identity::kubernetes::{watch, SyncState};
use meshwatch::identity::{Identity, IdentityMap, IdentitySource, SharedIdentities};
use meshwatch::live::{IdentityFeed, LiveState, Recorder};
use meshwatch::pipeline::PacketStats;
use meshwatch::verdict::Policy;

const PODS_1: &str = include_str!("fixtures/kube/pods-list-1.json");
const PODS_2: &str = include_str!("fixtures/kube/pods-list-2.json");
const NODES_1: &str = include_str!("fixtures/kube/nodes-list-1.json");
const WATCH_1: &str = include_str!("fixtures/kube/pods-watch-1.jsonl");
const NAMESPACES_1: &str = include_str!("fixtures/kube/namespaces-list-1.json");
const NAMESPACES_WATCH_1: &str = include_str!("fixtures/kube/namespaces-watch-1.jsonl");
const SERVICES_1: &str = include_str!("fixtures/kube/services-list-1.json");
const SERVICES_WATCH_1: &str = include_str!("fixtures/kube/services-watch-1.jsonl");
const SLICES_1: &str = include_str!("fixtures/kube/endpointslices-list-1.json");
const SLICES_WATCH_1: &str = include_str!("fixtures/kube/endpointslices-watch-1.jsonl");
const PEER_AUTH_1: &str = include_str!("fixtures/kube/peerauthentications-list-1.json");
const PEER_AUTH_WATCH_1: &str = include_str!("fixtures/kube/peerauthentications-watch-1.jsonl");
/// What the API server answers for a resource it does not serve (no CRD).
const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#;

#[derive(Default)]
struct Calls {
    pod_lists: AtomicUsize,
    pod_watches: AtomicUsize,
    namespace_watches: AtomicUsize,
    service_watches: AtomicUsize,
    slice_watches: AtomicUsize,
    /// EndpointSlice requests that asked only for slices labelled with their Service.
    slice_selected: AtomicUsize,
    peer_auth_lists: AtomicUsize,
    peer_auth_watches: AtomicUsize,
}

fn json(body: Body) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_default()
}

/// A watch that stays open without events, like a quiet cluster.
fn quiet_watch() -> Body {
    Body::from_stream(futures::stream::pending::<Result<String, Infallible>>())
}

fn watching(q: Option<&str>) -> bool {
    q.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

async fn pods(State(calls): State<Arc<Calls>>, RawQuery(q): RawQuery) -> Response {
    if watching(q.as_deref()) {
        return match calls.pod_watches.fetch_add(1, Ordering::SeqCst) {
            0 => json(Body::from(WATCH_1)),
            _ => json(quiet_watch()),
        };
    }
    match calls.pod_lists.fetch_add(1, Ordering::SeqCst) {
        0 => json(Body::from(PODS_1)),
        _ => json(Body::from(PODS_2)),
    }
}

async fn nodes(RawQuery(q): RawQuery) -> Response {
    if q.as_deref().is_some_and(|q| q.contains("watch=")) {
        json(quiet_watch())
    } else {
        json(Body::from(NODES_1))
    }
}

/// The list, then one watch with a label change, then a quiet watch.
async fn namespaces(State(calls): State<Arc<Calls>>, RawQuery(q): RawQuery) -> Response {
    if !watching(q.as_deref()) {
        return json(Body::from(NAMESPACES_1));
    }
    match calls.namespace_watches.fetch_add(1, Ordering::SeqCst) {
        0 => json(Body::from(NAMESPACES_WATCH_1)),
        _ => json(quiet_watch()),
    }
}

/// The list, then one watch (legacy-db becomes ExternalName), then a quiet watch.
async fn services(State(calls): State<Arc<Calls>>, RawQuery(q): RawQuery) -> Response {
    if !watching(q.as_deref()) {
        return json(Body::from(SERVICES_1));
    }
    match calls.service_watches.fetch_add(1, Ordering::SeqCst) {
        0 => json(Body::from(SERVICES_WATCH_1)),
        _ => json(quiet_watch()),
    }
}

/// The list, then one watch (reviews' slice added, httpbin's updated, web-headless's deleted),
/// then a quiet watch.
async fn endpointslices(State(calls): State<Arc<Calls>>, RawQuery(q): RawQuery) -> Response {
    let selected = q.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "labelSelector=kubernetes.io%2Fservice-name")
    });
    if selected {
        calls.slice_selected.fetch_add(1, Ordering::SeqCst);
    }
    if !watching(q.as_deref()) {
        return json(Body::from(SLICES_1));
    }
    match calls.slice_watches.fetch_add(1, Ordering::SeqCst) {
        0 => json(Body::from(SLICES_WATCH_1)),
        _ => json(quiet_watch()),
    }
}

/// Where a ClusterIP and port lead: `namespace/workload:target_port`.
fn service(map: &SharedIdentities, addr: &str, port: u16) -> Option<String> {
    let ip: IpAddr = addr.parse().ok()?;
    let m = map.read().ok()?;
    m.service(ip, port)
        .map(|b| format!("{}/{}:{}", b.namespace, b.workload, b.target_port))
}

fn mesh(map: &SharedIdentities, addr: &str) -> Option<Mesh> {
    let ip: IpAddr = addr.parse().ok()?;
    let m = map.read().ok()?;
    match m.lookup(ip) {
        Identity::Workload(w) => w.mesh,
        _ => None,
    }
}

fn lookup(map: &SharedIdentities, addr: &str) -> Option<String> {
    let ip: IpAddr = addr.parse().ok()?;
    let m = map.read().ok()?;
    match m.lookup(ip) {
        Identity::Workload(w) => Some(format!("{}/{}", w.namespace, w.workload)),
        Identity::Node(n) => Some(format!("node:{n}")),
        Identity::Unknown => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_lists_watches_and_relists_after_410() {
    let calls = Arc::new(Calls::default());
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/api/v1/services", get(services))
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(endpointslices),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let sync = Arc::new(SyncState::default());
    tokio::spawn(watch(
        client,
        map.clone(),
        Some("node-1".to_owned()),
        sync.clone(),
    ));

    // the end state: first list, the watch's events, the 410, the relist; namespaces listed
    // and their watch's label change applied; Services and EndpointSlices listed and their
    // watches' events applied (reviews' slice came, legacy-db lost its ClusterIP)
    let end_state = || {
        lookup(&map, "10.244.1.60").is_some()
            && sync.synced()
            && mesh(&map, "10.244.1.30") == Some(Mesh::Ambient)
            && service(&map, "10.96.30.73", 9080).is_some()
            && service(&map, "10.96.30.74", 3306).is_none()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !end_state() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sync.synced(),
        "pods, nodes, namespaces, services and endpointslices listed"
    );
    assert!(
        sync.namespaces_synced.load(Ordering::SeqCst),
        "namespaces listed"
    );
    assert!(
        sync.services_synced.load(Ordering::SeqCst)
            && sync.endpointslices_synced.load(Ordering::SeqCst),
        "services and endpointslices listed"
    );
    assert!(
        calls.slice_selected.load(Ordering::SeqCst) >= 2,
        "EndpointSlices listed and watched with the kubernetes.io/service-name selector"
    );
    // Services: ClusterIP:port -> the workload of their endpoints' pods, after the pod relist
    for (addr, port, expected, what) in [
        (
            "10.96.10.21",
            80,
            Some("foo/httpbin:8000"),
            "httpbin, its new pod",
        ),
        (
            "10.96.10.13",
            80,
            Some("foo/sleep:8000"),
            "NodePort's ClusterIP",
        ),
        ("fd00:10:96::1e", 80, Some("shop/web:8000"), "dual-stack"),
        (
            "10.96.40.70",
            9090,
            Some("payments/ledger:15090"),
            "named targetPort",
        ),
        (
            "10.96.30.73",
            9080,
            Some("bookinfo/reviews:9080"),
            "slice from the watch",
        ),
        ("10.96.30.74", 3306, None, "legacy-db turned ExternalName"),
        (
            "10.96.0.1",
            443,
            None,
            "the API server's endpoint is a node",
        ),
    ] {
        assert_eq!(service(&map, addr, port).as_deref(), expected, "{what}");
    }
    assert!(
        calls.pod_lists.load(Ordering::SeqCst) >= 2,
        "410 Gone forced a relist"
    );
    assert_eq!(
        lookup(&map, "10.244.1.60").as_deref(),
        Some("shop/cart"),
        "pod from the relist"
    );
    assert_eq!(
        lookup(&map, "10.244.1.21").as_deref(),
        Some("foo/httpbin"),
        "IP reused by the new pod"
    );
    assert_eq!(
        lookup(&map, "10.244.1.50"),
        None,
        "bare pod deleted during the gap"
    );
    assert_eq!(
        lookup(&map, "fd00:10:244:1::1e").as_deref(),
        Some("shop/web"),
        "dual-stack StatefulSet pod"
    );
    assert_eq!(lookup(&map, "10.0.0.5").as_deref(), Some("node:node-1"));
    // the data plane: Kubernetes always says
    for (addr, expected, what) in [
        (
            "10.244.1.70",
            Mesh::Sidecar,
            "payments/ledger: istio-proxy container",
        ),
        (
            "10.244.2.71",
            Mesh::Sidecar,
            "payments/fraud-check: status annotation",
        ),
        (
            "10.244.1.72",
            Mesh::Sidecar,
            "payments/settle: native sidecar",
        ),
        (
            "10.244.1.73",
            Mesh::Ambient,
            "bookinfo/reviews: ambient namespace",
        ),
        ("10.244.2.74", Mesh::None, "bookinfo/legacy-db: opted out"),
        ("10.244.1.21", Mesh::None, "foo/httpbin: plain"),
        (
            "10.244.1.30",
            Mesh::Ambient,
            "shop/web: namespace relabelled by the watch",
        ),
        (
            "10.244.1.60",
            Mesh::Ambient,
            "shop/cart: relisted into the relabelled namespace",
        ),
    ] {
        assert_eq!(mesh(&map, addr), Some(expected), "{what}");
    }
    let m = map.read().expect("map");
    assert!(
        !m.workloads()
            .iter()
            .any(|w| w.namespace == "default" && w.workload == "debug"),
        "the relist dropped the workload of the pod deleted during the gap"
    );
    assert!(m.is_local("10.244.1.21".parse().expect("ip")));
    assert!(
        !m.is_local("10.244.2.13".parse().expect("ip")),
        "sleep runs on node-2"
    );
}

/// The list, then one watch (`shop/default` STRICT added, `foo/httpbin` deleted), then quiet.
async fn peerauthentications(State(calls): State<Arc<Calls>>, RawQuery(q): RawQuery) -> Response {
    if !watching(q.as_deref()) {
        calls.peer_auth_lists.fetch_add(1, Ordering::SeqCst);
        return json(Body::from(PEER_AUTH_1));
    }
    match calls.peer_auth_watches.fetch_add(1, Ordering::SeqCst) {
        0 => json(Body::from(PEER_AUTH_WATCH_1)),
        _ => json(quiet_watch()),
    }
}

/// No Istio: the resource is not served.
async fn no_peerauthentications(State(calls): State<Arc<Calls>>) -> Response {
    calls.peer_auth_lists.fetch_add(1, Ordering::SeqCst);
    Response::builder()
        .status(404)
        .header("content-type", "application/json")
        .body(Body::from(NOT_FOUND))
        .unwrap_or_default()
}

const PEER_AUTH_PATH: &str = "/apis/security.istio.io/v1/peerauthentications";
/// Istio before 1.22 serves only this version.
const PEER_AUTH_V1BETA1_PATH: &str = "/apis/security.istio.io/v1beta1/peerauthentications";

/// The identity watches with the PeerAuthentication route given (`v1`; `v1beta1` not served).
async fn start(
    peer_auth: axum::routing::MethodRouter<Arc<Calls>>,
) -> (Arc<Calls>, SharedIdentities, Arc<SyncState>) {
    start_versions(peer_auth, get(no_peerauthentications)).await
}

/// The identity watches with the PeerAuthentication routes given, `v1` and `v1beta1`.
async fn start_versions(
    peer_auth: axum::routing::MethodRouter<Arc<Calls>>,
    peer_auth_v1beta1: axum::routing::MethodRouter<Arc<Calls>>,
) -> (Arc<Calls>, SharedIdentities, Arc<SyncState>) {
    let calls = Arc::new(Calls::default());
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/api/v1/services", get(services))
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(endpointslices),
        )
        .route(PEER_AUTH_PATH, peer_auth)
        .route(PEER_AUTH_V1BETA1_PATH, peer_auth_v1beta1)
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let sync = Arc::new(SyncState::default());
    tokio::spawn(watch(
        client,
        map.clone(),
        Some("node-1".to_owned()),
        sync.clone(),
    ));
    (calls, map, sync)
}

/// The effective modes of the map's workloads, as the agent's verdicts compute them.
fn modes(map: &SharedIdentities) -> Option<BTreeMap<(String, String), String>> {
    let m = map.read().ok()?;
    let policies = m.peer_authentications()?;
    let known = m.known_workloads();
    let modes = meshwatch::peer_auth::modes_of(
        &policies,
        meshwatch::peer_auth::DEFAULT_ROOT_NAMESPACE,
        known.iter().map(|k| (k.namespace, k.workload, &*k.labels)),
    );
    Some(
        modes
            .into_iter()
            .map(|(k, v)| {
                let ports: Vec<String> = v
                    .ports
                    .iter()
                    .map(|(p, m)| format!(" {p}={}", m.mode.as_str()))
                    .collect();
                (k, format!("{}{}", v.describe(), ports.concat()))
            })
            .collect(),
    )
}

fn mode_of(
    modes: &Option<BTreeMap<(String, String), String>>,
    ns: &str,
    w: &str,
) -> Option<String> {
    modes.as_ref()?.get(&(ns.to_owned(), w.to_owned())).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentications_are_listed_watched_and_resolved() {
    let (calls, map, sync) = start(get(peerauthentications)).await;
    // the end state: listed, then the watch's ADDED shop/default and DELETED foo/httpbin
    let end_state = || {
        let m = modes(&map);
        sync.synced()
            && mode_of(&m, "shop", "web").is_some_and(|s| s.starts_with("STRICT"))
            && mode_of(&m, "foo", "httpbin").is_some_and(|s| s.starts_with("DISABLE"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !end_state() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls.peer_auth_lists.load(Ordering::SeqCst) >= 1);
    assert!(calls.peer_auth_watches.load(Ordering::SeqCst) >= 1);
    let m = modes(&map);
    for (ns, w, expected, why) in [
        (
            "payments",
            "ledger",
            "STRICT (namespace payments/default) 9090=DISABLE",
            "namespace STRICT; its UNSET workload policy adds only a port",
        ),
        (
            "payments",
            "settle",
            "STRICT (namespace payments/default)",
            "namespace-wide",
        ),
        (
            "bookinfo",
            "reviews",
            "STRICT (workload bookinfo/reviews-v1)",
            "selected by its `version: v1` label (not only `app` is kept), pod-template-hash aside",
        ),
        (
            "bookinfo",
            "legacy-db",
            "PERMISSIVE (mesh istio-system/default)",
            "mesh-wide: it has no `version` label, so the selector does not select it",
        ),
        (
            "shop",
            "web",
            "STRICT (namespace shop/default)",
            "added by the watch",
        ),
        (
            "foo",
            "httpbin",
            "DISABLE (workload foo/httpbin-disable)",
            "the older foo/httpbin (STRICT) deleted by the watch; the root namespace's selector is ignored",
        ),
    ] {
        assert_eq!(mode_of(&m, ns, w).as_deref(), Some(expected), "{ns}/{w}: {why}");
    }

    // the agent's own read side: its verdicts carry the modes, its metrics this node's modes
    let state = Arc::new(LiveState::new(
        map.clone(),
        IdentityFeed::Kubernetes(sync.clone()),
        Policy::default(),
        60_000_000_000,
        "any".to_owned(),
    ));
    let verdicts = state.verdicts(1);
    let httpbin = verdicts
        .workloads
        .iter()
        .find(|v| v.destination.display() == "foo/httpbin")
        .and_then(|v| v.mode.as_ref())
        .map(|m| m.describe());
    assert_eq!(
        httpbin.as_deref(),
        Some("DISABLE (workload foo/httpbin-disable)")
    );
    Recorder::new(state.clone()).publish(&PacketStats::default(), TableStats::default(), 0, None);
    let text = state.metrics_text();
    for line in [
        r#"meshwatch_peer_authentication_info{namespace="foo",workload="httpbin",port="",mode="DISABLE",source="workload",policy="foo/httpbin-disable"} 1"#,
        r#"meshwatch_peer_authentication_info{namespace="payments",workload="ledger",port="9090",mode="DISABLE",source="port",policy="payments/ledger-metrics"} 1"#,
        r#"meshwatch_peer_authentication_info{namespace="bookinfo",workload="reviews",port="",mode="STRICT",source="workload",policy="bookinfo/reviews-v1"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    assert!(
        !text.contains(r#"workload="sleep""#),
        "foo/sleep runs on node-2: another agent's to export"
    );
}

/// Without Istio the identities sync as before and the modes stay unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_peer_authentication_resource_is_no_failure() {
    let (calls, map, sync) = start(get(no_peerauthentications)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(sync.synced() && calls.peer_auth_lists.load(Ordering::SeqCst) >= 1)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sync.synced(), "the identity watches are not held back");
    assert!(calls.peer_auth_lists.load(Ordering::SeqCst) >= 1);
    assert_eq!(lookup(&map, "10.244.1.21").as_deref(), Some("foo/httpbin"));
    assert!(
        map.read().expect("map").peer_authentications().is_none(),
        "modes unknown, not PERMISSIVE"
    );
}

/// Istio before 1.22: `security.istio.io/v1` is not served (404), `v1beta1` is: the modes come
/// from `v1beta1`, not "Istio is not installed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentications_fall_back_to_v1beta1() {
    let (calls, map, sync) =
        start_versions(get(no_peerauthentications), get(peerauthentications)).await;
    let resolved = || {
        let m = modes(&map);
        sync.synced() && mode_of(&m, "shop", "web").is_some_and(|s| s.starts_with("STRICT"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !resolved() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        calls.peer_auth_watches.load(Ordering::SeqCst) >= 1,
        "v1beta1 watched"
    );
    let m = modes(&map);
    assert_eq!(
        mode_of(&m, "payments", "settle").as_deref(),
        Some("STRICT (namespace payments/default)")
    );
    assert_eq!(
        mode_of(&m, "shop", "web").as_deref(),
        Some("STRICT (namespace shop/default)")
    );
}
