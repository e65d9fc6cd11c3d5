use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::List;

use super::*;
use crate::classify::Mesh;
use crate::identity::{Identity, IdentityMap, IdentitySource};

const PODS_1: &str = include_str!("../../../tests/fixtures/kube/pods-list-1.json");
const PODS_2: &str = include_str!("../../../tests/fixtures/kube/pods-list-2.json");
const NODES_1: &str = include_str!("../../../tests/fixtures/kube/nodes-list-1.json");
const WATCH_1: &str = include_str!("../../../tests/fixtures/kube/pods-watch-1.jsonl");
const NAMESPACES_1: &str = include_str!("../../../tests/fixtures/kube/namespaces-list-1.json");
const NAMESPACES_WATCH_1: &str =
    include_str!("../../../tests/fixtures/kube/namespaces-watch-1.jsonl");

fn pods(text: &str) -> Vec<Pod> {
    serde_json::from_str::<List<Pod>>(text)
        .expect("PodList")
        .items
}

fn namespaces(text: &str) -> Vec<Namespace> {
    serde_json::from_str::<List<Namespace>>(text)
        .expect("NamespaceList")
        .items
}

/// The pod of the fixture list named `name`.
fn pod_named(text: &str, name: &str) -> Pod {
    pods(text)
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .expect("fixture pod")
}

/// The objects of a watch stream's ADDED/MODIFIED events.
fn modified<T: serde::de::DeserializeOwned>(jsonl: &str) -> Vec<T> {
    jsonl
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("event");
            matches!(v["type"].as_str(), Some("ADDED" | "MODIFIED"))
                .then(|| serde_json::from_value(v["object"].clone()).expect("object"))
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn workload_at(map: &IdentityMap, addr: &str) -> Option<(String, String, Option<String>)> {
    match map.lookup(ip(addr)) {
        Identity::Workload(w) => Some((
            w.namespace.clone(),
            w.workload.clone(),
            w.service_account.clone(),
        )),
        _ => None,
    }
}

fn relist(applier: &mut Applier, items: Vec<Pod>) {
    applier.pod_event(Event::Init);
    for p in items {
        applier.pod_event(Event::InitApply(p));
    }
    assert!(applier.pod_event(Event::InitDone));
}

#[test]
fn owners_resolve_like_istio() {
    let ids: Vec<Option<PodIdentity>> = pods(PODS_1)
        .iter()
        .map(|p| pod_identity(p, Some("node-1")))
        .collect();
    let names: Vec<Option<(&str, &str, bool)>> = ids
        .iter()
        .map(|i| {
            i.as_ref().map(|i| {
                (
                    i.workload.namespace.as_str(),
                    i.workload.workload.as_str(),
                    i.local,
                )
            })
        })
        .collect();
    assert_eq!(
        names,
        [
            Some(("foo", "httpbin", true)), // ReplicaSet + pod-template-hash -> Deployment
            Some(("foo", "sleep", false)),  // on node-2
            Some(("shop", "web", true)),    // StatefulSet
            None,                           // hostNetwork: the node's address
            Some(("ops", "backup", false)), // Job backup-29012345 -> CronJob backup
            None,                           // Succeeded: address released
            Some(("default", "debug", true)), // bare pod
            Some(("payments", "ledger", true)),
            Some(("payments", "fraud-check", false)),
            Some(("payments", "settle", true)),
            Some(("bookinfo", "reviews", true)),
            Some(("bookinfo", "legacy-db", false)),
        ]
    );
    let web = ids[2].as_ref().expect("web-0");
    assert_eq!(web.ips, [ip("10.244.1.30"), ip("fd00:10:244:1::1e")]);
    assert_eq!(
        web.workload.labels.get("app.kubernetes.io/name"),
        Some("web")
    );
    assert_eq!(cronjob_of("backup-29012345"), Some("backup"));
    assert_eq!(cronjob_of("migrate-db"), None);
    assert_eq!(cronjob_of("job-123"), None);
}

#[test]
fn list_watch_relist() {
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), Some("node-1".to_owned()));
    applier.node_event(Event::Init);
    for n in serde_json::from_str::<List<Node>>(NODES_1)
        .expect("NodeList")
        .items
    {
        applier.node_event(Event::InitApply(n));
    }
    assert!(applier.node_event(Event::InitDone));
    relist(&mut applier, pods(PODS_1));
    {
        let m = map.read().expect("map");
        assert_eq!(
            workload_at(&m, "10.244.1.21"),
            Some(("foo".into(), "httpbin".into(), Some("httpbin".into())))
        );
        assert_eq!(
            m.lookup(ip("10.0.0.5")),
            Identity::Node("node-1"),
            "hostNetwork pod resolves to its node"
        );
        assert_eq!(
            m.lookup(ip("10.244.2.41")),
            Identity::Unknown,
            "a finished pod holds no address"
        );
        assert!(m.is_local(ip("10.244.1.21")) && !m.is_local(ip("10.244.2.13")));
    }
    // watch events, in order: the new httpbin pod takes the IP before the old one is deleted
    for line in WATCH_1.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("event");
        let object = v["object"].clone();
        match v["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                applier.pod_event(Event::Apply(serde_json::from_value(object).expect("pod")));
            }
            Some("DELETED") => {
                applier.pod_event(Event::Delete(serde_json::from_value(object).expect("pod")));
            }
            _ => {} // BOOKMARK and ERROR are the watcher's business
        }
    }
    {
        let m = map.read().expect("map");
        let w = match m.lookup(ip("10.244.1.21")) {
            Identity::Workload(w) => w.clone(),
            other => panic!("IP reuse lost the new pod: {other:?}"),
        };
        assert_eq!(w.workload, "httpbin");
        assert_eq!(w.labels.get("app"), Some("httpbin"));
    }
    relist(&mut applier, pods(PODS_2));
    let m = map.read().expect("map");
    assert_eq!(
        m.lookup(ip("10.244.1.50")),
        Identity::Unknown,
        "a pod gone during the 410 gap is dropped"
    );
    assert_eq!(
        workload_at(&m, "10.244.1.60").map(|w| w.1),
        Some("cart".into())
    );
    assert_eq!(
        m.lookup(ip("10.0.0.6")),
        Identity::Node("node-2"),
        "nodes survive a pod relist"
    );
}

fn relist_namespaces(applier: &mut Applier, items: Vec<Namespace>) {
    applier.namespace_event(Event::Init);
    for n in items {
        applier.namespace_event(Event::InitApply(n));
    }
    assert!(applier.namespace_event(Event::InitDone));
}

fn mesh_at(map: &SharedIdentities, addr: &str) -> Option<Mesh> {
    match map.read().expect("map").lookup(ip(addr)) {
        Identity::Workload(w) => w.mesh,
        other => panic!("{addr} is no workload: {other:?}"),
    }
}

#[test]
fn pod_mesh_reads_the_injected_shapes() {
    let signals: Vec<(String, PodMesh)> = pods(PODS_1)
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), pod_mesh(p)))
        .filter(|(_, m)| *m != PodMesh::Unlabelled)
        .collect();
    let signals: Vec<(&str, PodMesh)> = signals.iter().map(|(n, m)| (n.as_str(), *m)).collect();
    assert_eq!(
        signals,
        [
            ("ledger-7c9d5b6f8-h2k4p", PodMesh::Sidecar), // istio-proxy container + annotation
            ("fraud-check-5f6d7c8b9-q7r2s", PodMesh::Sidecar), // annotation only
            ("settle-0", PodMesh::Sidecar),               // native sidecar + annotation
            ("legacy-db-0", PodMesh::OptedOut),           // istio.io/dataplane-mode=none
        ]
    );
}

#[test]
fn each_sidecar_signal_decides_alone() {
    let without_status = |mut p: Pod| {
        if let Some(a) = p.metadata.annotations.as_mut() {
            a.remove("sidecar.istio.io/status");
        }
        p
    };
    let ledger = without_status(pod_named(PODS_1, "ledger-7c9d5b6f8-h2k4p"));
    assert_eq!(pod_mesh(&ledger), PodMesh::Sidecar, "istio-proxy container");
    let settle = without_status(pod_named(PODS_1, "settle-0"));
    assert_eq!(pod_mesh(&settle), PodMesh::Sidecar, "native sidecar");
    // an istio-proxy init container that runs to completion is no sidecar
    let mut run_once = settle.clone();
    for c in run_once
        .spec
        .as_mut()
        .and_then(|s| s.init_containers.as_mut())
        .into_iter()
        .flatten()
    {
        c.restart_policy = None;
    }
    assert_eq!(pod_mesh(&run_once), PodMesh::Unlabelled);
    // a sidecar wins over an ambient label; a pod label enrolls it alone
    let label = |mut p: Pod, mode: &str| {
        p.metadata
            .labels
            .get_or_insert_default()
            .insert("istio.io/dataplane-mode".into(), mode.into());
        p
    };
    assert_eq!(pod_mesh(&label(ledger, "ambient")), PodMesh::Sidecar);
    let httpbin = pod_named(PODS_1, "httpbin-5b7c9f8d4-x2k9q");
    assert_eq!(pod_mesh(&label(httpbin, "ambient")), PodMesh::Ambient);
}

#[test]
fn namespace_ambient_reads_the_dataplane_mode_label() {
    let all = namespaces(NAMESPACES_1);
    let ambient: Vec<String> = all
        .iter()
        .map(namespace_ambient)
        .filter_map(|(name, ambient)| ambient.then_some(name))
        .collect();
    assert_eq!(
        ambient,
        ["bookinfo"],
        "istio-injection=enabled is no ambient"
    );
    let mut none = all
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("shop"))
        .expect("shop");
    none.metadata
        .labels
        .get_or_insert_default()
        .insert("istio.io/dataplane-mode".into(), "none".into());
    assert_eq!(namespace_ambient(&none), ("shop".to_owned(), false));
}

#[test]
fn pod_ips_reads_both_fields_once() {
    let web = pod_named(PODS_1, "web-0");
    let both = [ip("10.244.1.30"), ip("fd00:10:244:1::1e")];
    assert_eq!(pod_ips(&web), both, "podIP is podIPs[0]: listed once");
    let mut only_pod_ip = web.clone();
    if let Some(s) = only_pod_ip.status.as_mut() {
        s.pod_ips = None;
    }
    assert_eq!(pod_ips(&only_pod_ip), [ip("10.244.1.30")]);
    let mut only_pod_ips = web.clone();
    if let Some(s) = only_pod_ips.status.as_mut() {
        s.pod_ip = None;
    }
    assert_eq!(pod_ips(&only_pod_ips), both);
    // a pod known only by its podIP is released by its delete event
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), None);
    applier.pod_event(Event::Apply(only_pod_ip.clone()));
    assert!(workload_at(&map.read().expect("map"), "10.244.1.30").is_some());
    applier.pod_event(Event::Delete(only_pod_ip));
    assert!(map.read().expect("map").is_empty());
}

#[test]
fn mesh_from_pods_and_namespace_labels() {
    // the namespace list may come before or after the pods: the same result
    for namespaces_first in [true, false] {
        let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
        let mut applier = Applier::new(map.clone(), None);
        if namespaces_first {
            relist_namespaces(&mut applier, namespaces(NAMESPACES_1));
        }
        relist(&mut applier, pods(PODS_1));
        if !namespaces_first {
            relist_namespaces(&mut applier, namespaces(NAMESPACES_1));
        }
        let expected = [
            ("10.244.1.70", Mesh::Sidecar), // payments/ledger
            ("10.244.2.71", Mesh::Sidecar), // payments/fraud-check
            ("10.244.1.72", Mesh::Sidecar), // payments/settle
            ("10.244.1.73", Mesh::Ambient), // bookinfo/reviews: the namespace's label
            ("10.244.2.74", Mesh::None),    // bookinfo/legacy-db: opted out
            ("10.244.1.21", Mesh::None),    // foo/httpbin
            ("10.244.1.30", Mesh::None),    // shop/web
        ];
        for (addr, mesh) in expected {
            assert_eq!(
                mesh_at(&map, addr),
                Some(mesh),
                "{addr}, namespaces first: {namespaces_first}"
            );
        }
    }
}

#[test]
fn namespace_label_change_moves_its_workloads() {
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), None);
    relist_namespaces(&mut applier, namespaces(NAMESPACES_1));
    relist(&mut applier, pods(PODS_1));
    // the watch: shop gets istio.io/dataplane-mode=ambient
    for ns in modified::<Namespace>(NAMESPACES_WATCH_1) {
        assert!(!applier.namespace_event(Event::Apply(ns)));
    }
    assert_eq!(
        mesh_at(&map, "10.244.1.30"),
        Some(Mesh::Ambient),
        "shop/web"
    );
    assert_eq!(
        mesh_at(&map, "fd00:10:244:1::1e"),
        Some(Mesh::Ambient),
        "shop/web v6"
    );
    assert_eq!(
        mesh_at(&map, "10.244.1.21"),
        Some(Mesh::None),
        "foo/httpbin untouched"
    );
    // bookinfo leaves ambient: its plain pod leaves with it, sidecars elsewhere stay
    let mut bookinfo = namespaces(NAMESPACES_1)
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("bookinfo"))
        .expect("bookinfo");
    if let Some(l) = bookinfo.metadata.labels.as_mut() {
        l.remove("istio.io/dataplane-mode");
    }
    applier.namespace_event(Event::Apply(bookinfo));
    assert_eq!(
        mesh_at(&map, "10.244.1.73"),
        Some(Mesh::None),
        "bookinfo/reviews"
    );
    assert_eq!(
        mesh_at(&map, "10.244.2.74"),
        Some(Mesh::None),
        "bookinfo/legacy-db"
    );
    assert_eq!(
        mesh_at(&map, "10.244.1.72"),
        Some(Mesh::Sidecar),
        "payments/settle"
    );
    // a pod added afterwards follows the namespace as it is now
    let cart = pod_named(PODS_2, "cart-59d6c7f9bd-q4t8m");
    applier.pod_event(Event::Apply(cart));
    assert_eq!(
        mesh_at(&map, "10.244.1.60"),
        Some(Mesh::Ambient),
        "shop/cart"
    );
    // the verdict sees each workload once, with its current mesh
    let m = map.read().expect("map");
    let known = m.known_workloads();
    let meshes: Vec<(&str, Option<Mesh>)> = known
        .iter()
        .filter(|k| k.namespace == "shop" || k.namespace == "bookinfo")
        .map(|k| (k.workload, k.mesh))
        .collect();
    assert_eq!(
        meshes,
        [
            ("web", Some(Mesh::Ambient)),
            ("reviews", Some(Mesh::None)),
            ("legacy-db", Some(Mesh::None)),
            ("cart", Some(Mesh::Ambient)),
        ]
    );
}

#[test]
fn relist_keeps_only_workloads_with_pods() {
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), None);
    relist(&mut applier, pods(PODS_1));
    let names = |map: &SharedIdentities| -> Vec<String> {
        let m = map.read().expect("map");
        let mut n: Vec<String> = m
            .workloads()
            .iter()
            .map(|w| format!("{}/{}", w.namespace, w.workload))
            .collect();
        n.sort();
        n
    };
    assert!(names(&map).contains(&"default/debug".to_owned()));
    assert!(
        !names(&map).contains(&"ops/migrate-db".to_owned()),
        "a finished Job's pod interns nothing"
    );
    relist(&mut applier, pods(PODS_2));
    let after = names(&map);
    assert!(
        !after.contains(&"default/debug".to_owned()),
        "the bare pod deleted during the gap took its workload along: {after:?}"
    );
    assert_eq!(
        after,
        [
            "bookinfo/legacy-db",
            "bookinfo/reviews",
            "foo/httpbin",
            "foo/sleep",
            "ops/backup",
            "payments/fraud-check",
            "payments/ledger",
            "payments/settle",
            "shop/cart",
            "shop/web",
        ]
    );
}
