use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::List;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use crate::identity::kubernetes::Applier;
use crate::identity::{PodIdentity, SharedIdentities};

const PODS_1: &str = include_str!("../../../../tests/fixtures/kube/pods-list-1.json");
const SERVICES_1: &str = include_str!("../../../../tests/fixtures/kube/services-list-1.json");
const SLICES_1: &str = include_str!("../../../../tests/fixtures/kube/endpointslices-list-1.json");
const SERVICES_WATCH_1: &str =
    include_str!("../../../../tests/fixtures/kube/services-watch-1.jsonl");
const SLICES_WATCH_1: &str =
    include_str!("../../../../tests/fixtures/kube/endpointslices-watch-1.jsonl");

fn list<T>(text: &str) -> Vec<T>
where
    T: k8s_openapi::ListableResource + serde::de::DeserializeOwned,
{
    serde_json::from_str::<List<T>>(text).expect("list").items
}

/// A watch stream's events as the watcher hands them on (BOOKMARK and ERROR are its own).
fn events<T: serde::de::DeserializeOwned>(jsonl: &str) -> Vec<Event<T>> {
    jsonl
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("event");
            let object = || serde_json::from_value(v["object"].clone()).expect("object");
            match v["type"].as_str() {
                Some("ADDED" | "MODIFIED") => Some(Event::Apply(object())),
                Some("DELETED") => Some(Event::Delete(object())),
                _ => None,
            }
        })
        .collect()
}

fn named<T: kube::Resource>(items: Vec<T>, name: &str) -> T {
    items
        .into_iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
        .expect("fixture object")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Where a ClusterIP and port lead: `namespace/workload` and the target port.
fn at(map: &SharedIdentities, addr: &str, port: u16) -> Option<(String, u16)> {
    let m = map.read().expect("map");
    m.service(ip(addr), port)
        .map(|b| (format!("{}/{}", b.namespace, b.workload), b.target_port))
}

fn relist_pods(applier: &mut Applier, items: Vec<Pod>) {
    applier.pod_event(Event::Init);
    for p in items {
        applier.pod_event(Event::InitApply(p));
    }
    assert!(applier.pod_event(Event::InitDone));
}

fn relist_services(applier: &mut Applier, items: Vec<Service>) {
    applier.service_event(Event::Init);
    for s in items {
        applier.service_event(Event::InitApply(s));
    }
    assert!(applier.service_event(Event::InitDone));
}

fn relist_slices(applier: &mut Applier, items: Vec<EndpointSlice>) {
    applier.endpointslice_event(Event::Init);
    for s in items {
        applier.endpointslice_event(Event::InitApply(s));
    }
    assert!(applier.endpointslice_event(Event::InitDone));
}

/// Pods, Services and EndpointSlices listed, in this order of the three.
fn listed(order: [usize; 3]) -> (SharedIdentities, Applier) {
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), None);
    for which in order {
        match which {
            0 => relist_pods(&mut applier, list(PODS_1)),
            1 => relist_services(&mut applier, list(SERVICES_1)),
            _ => relist_slices(&mut applier, list(SLICES_1)),
        }
    }
    (map, applier)
}

type Expected = (&'static str, u16, Option<(&'static str, u16)>);

/// What the three lists map: ClusterIP, port -> workload, target port.
const LISTED: [Expected; 15] = [
    ("10.96.0.1", 443, None), // default/kubernetes: its endpoint is node-1's address
    ("10.96.0.10", 53, None), // kube-dns: its CoreDNS pods are not listed
    ("10.96.10.21", 80, Some(("foo/httpbin", 8000))),
    ("10.96.10.21", 8000, None), // a target port is no Service port
    ("10.96.10.13", 80, Some(("foo/sleep", 8000))), // NodePort: its ClusterIP, unnamed port
    ("10.96.10.13", 30080, None), // the node port belongs to the nodes' addresses
    ("10.96.20.30", 80, Some(("shop/web", 8000))), // dual-stack: both ClusterIPs
    ("fd00:10:96::1e", 80, Some(("shop/web", 8000))),
    ("10.96.40.70", 80, Some(("payments/ledger", 8080))),
    // targetPort: http-envoy-prom, resolved by the slice's port of the Service port's name
    ("10.96.40.70", 9090, Some(("payments/ledger", 15090))),
    // ledger, fraud-check and settle have one endpoint each: the first by name
    ("10.96.40.1", 8080, Some(("payments/fraud-check", 8080))),
    ("10.96.30.73", 9080, None), // bookinfo/reviews: no EndpointSlice yet
    ("10.96.30.74", 3306, Some(("bookinfo/legacy-db", 3306))),
    ("10.96.99.99", 80, None),
    ("10.244.1.21", 8000, None), // a pod address is no ClusterIP
];

fn assert_table(map: &SharedIdentities, rows: &[Expected], what: &str) {
    for (addr, port, expected) in rows {
        let expected = expected.map(|(w, p)| (w.to_owned(), p));
        assert_eq!(at(map, addr, *port), expected, "{addr}:{port} ({what})");
    }
}

#[test]
fn service_entries_keep_cluster_ips_and_tcp_ports() {
    let services: Vec<Service> = list(SERVICES_1);
    let entry = |name: &str| service_entry(&named(services.clone(), name));
    let ports = |name: &str| -> Vec<(NameHash, u16, Option<u16>)> {
        entry(name)
            .expect("a ClusterIP")
            .ports
            .iter()
            .map(|p| (p.name, p.port, p.target))
            .collect()
    };
    let h = |name: &str| name_hash(Some(name));
    assert_eq!(
        ports("kube-dns"),
        [
            (h("dns-tcp"), 53, Some(53)),
            (h("metrics"), 9153, Some(9153))
        ],
        "dns/UDP left out"
    );
    assert_eq!(
        ports("ledger"),
        [(h("http"), 80, Some(8080)), (h("metrics"), 9090, None)],
        "a named targetPort waits for the EndpointSlices"
    );
    assert_eq!(ports("sleep"), [(name_hash(None), 80, Some(8000))]);
    assert_eq!(
        name_hash(None),
        h(""),
        "an unnamed port's name is the empty name"
    );
    assert_eq!(
        entry("web").expect("web").cluster_ips.as_ref(),
        [ip("10.96.20.30"), ip("fd00:10:96::1e")]
    );
    assert_eq!(entry("web-headless"), None, "clusterIP: None");
    assert_eq!(entry("warehouse"), None, "ExternalName");
    let dns_key = key(Some("kube-system"), "kube-dns");
    assert_eq!(service_key(&named(services, "kube-dns")), dns_key);

    let slices: Vec<EndpointSlice> = list(SLICES_1);
    let (key, dns) = slice_entry(&named(slices.clone(), "kube-dns-b8l4v")).expect("labelled");
    assert_eq!(key, dns_key, "the Service's key");
    assert_eq!(dns.addresses.as_ref(), [ip("10.244.1.2"), ip("10.244.2.2")]);
    assert_eq!(
        dns.ports.as_ref(),
        [(h("dns-tcp"), 53), (h("metrics"), 9153)]
    );
    let (_, v6) = slice_entry(&named(slices.clone(), "web-8jq4m")).expect("labelled");
    assert_eq!(v6.addresses.as_ref(), [ip("fd00:10:244:1::1e")]);
    let mut orphan = named(slices, "sleep-q2w8r");
    if let Some(l) = orphan.metadata.labels.as_mut() {
        l.remove(SERVICE_NAME_LABEL);
    }
    assert_eq!(slice_entry(&orphan), None, "a slice of no Service");
}

#[test]
fn listed_services_map_to_their_workloads_in_any_order() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let (map, _) = listed(order);
        assert_table(&map, &LISTED, &format!("lists in order {order:?}"));
        // httpbin, sleep, web twice, ledger twice, backend, legacy-db: nothing else
        assert_eq!(
            map.read().expect("map").service_port_count(),
            8,
            "{order:?}"
        );
    }
}

/// A second replica of ledger, at 10.244.2.75.
fn ledger_replica() -> Pod {
    let mut pod = named(list::<Pod>(PODS_1), "ledger-7c9d5b6f8-h2k4p");
    pod.metadata.name = Some("ledger-7c9d5b6f8-t6v9w".into());
    pod.metadata.uid = Some("6f1c1a2e-0b1f-4a43-9d55-1e2f3a4b5c26".into());
    let status = pod.status.get_or_insert_default();
    status.pod_ip = Some("10.244.2.75".into());
    status.pod_ips = None;
    pod
}

#[test]
fn a_service_over_several_workloads_maps_to_the_one_with_most_endpoints() {
    let (map, mut applier) = listed([0, 1, 2]);
    let backend = named(list::<EndpointSlice>(SLICES_1), "backend-z9t3k");
    // one endpoint each: the first by name, whatever the order of the endpoints
    let mut reversed = backend.clone();
    reversed.endpoints.reverse();
    applier.endpointslice_event(Event::Apply(reversed));
    assert_eq!(
        at(&map, "10.96.40.1", 8080),
        Some(("payments/fraud-check".into(), 8080))
    );
    // ledger scales to two replicas: two endpoints of four
    applier.pod_event(Event::Apply(ledger_replica()));
    let mut scaled = backend;
    let mut second = scaled.endpoints[0].clone();
    second.addresses = vec!["10.244.2.75".into()];
    scaled.endpoints.push(second);
    applier.endpointslice_event(Event::Apply(scaled));
    assert_eq!(
        at(&map, "10.96.40.1", 8080),
        Some(("payments/ledger".into(), 8080))
    );
}

#[test]
fn watch_events_follow_services_and_slices() {
    let (map, mut applier) = listed([0, 1, 2]);
    for e in events::<Service>(SERVICES_WATCH_1) {
        assert!(!applier.service_event(e));
    }
    for e in events::<EndpointSlice>(SLICES_WATCH_1) {
        assert!(!applier.endpointslice_event(e));
    }
    let rows: [Expected; 4] = [
        ("10.96.30.74", 3306, None), // legacy-db became ExternalName: no ClusterIP left
        ("10.96.30.73", 9080, Some(("bookinfo/reviews", 9080))), // its slice came
        ("10.96.10.21", 80, Some(("foo/httpbin", 8000))), // a new pod behind it
        ("10.96.20.30", 80, Some(("shop/web", 8000))), // the headless twin's slice went
    ];
    assert_table(&map, &rows, "after the watches");
    // a Service deleted takes its ClusterIPs along; its slices stay for its return
    let httpbin = named(list::<Service>(SERVICES_1), "httpbin");
    applier.service_event(Event::Delete(httpbin.clone()));
    assert_eq!(at(&map, "10.96.10.21", 80), None);
    applier.service_event(Event::Apply(httpbin));
    assert_eq!(
        at(&map, "10.96.10.21", 80),
        Some(("foo/httpbin".into(), 8000))
    );
    // an EndpointSlice deleted: one of web's two families stays, ledger's only one goes
    let slices: Vec<EndpointSlice> = list(SLICES_1);
    applier.endpointslice_event(Event::Delete(named(slices.clone(), "web-8jq4m")));
    assert_eq!(
        at(&map, "fd00:10:96::1e", 80),
        Some(("shop/web".into(), 8000))
    );
    applier.endpointslice_event(Event::Delete(named(slices, "ledger-n5c7d")));
    assert_eq!(at(&map, "10.96.40.70", 80), None);
    assert_eq!(at(&map, "10.96.40.70", 9090), None);
}

/// A CoreDNS pod at `addr`, the Deployment's `coredns`.
fn coredns_pod(name: &str, addr: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "kube-system", "uid": format!("uid-{name}"),
            "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "coredns-5d78c9869d", "uid": "rs-uid-coredns", "controller": true}]
        },
        "spec": {"containers": [{"name": "coredns"}], "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}]}
    }))
    .expect("pod")
}

#[test]
fn a_pod_that_comes_after_its_endpoints_resolves_its_service() {
    let (map, mut applier) = listed([0, 1, 2]);
    assert_eq!(at(&map, "10.96.0.10", 53), None, "no CoreDNS pod known");
    applier.pod_event(Event::Apply(coredns_pod(
        "coredns-5d78c9869d-8xk5q",
        "10.244.1.2",
    )));
    assert_eq!(
        at(&map, "10.96.0.10", 53),
        Some(("kube-system/coredns".into(), 53))
    );
    assert_eq!(
        at(&map, "10.96.0.10", 9153),
        Some(("kube-system/coredns".into(), 9153))
    );
    // the default Service's endpoint is a node: it stays unmapped, the rest untouched
    assert_table(&map, &LISTED[2..], "after the pod");
    assert_eq!(at(&map, "10.96.0.1", 443), None);
}

#[test]
fn a_relist_drops_what_went_during_the_gap() {
    let (map, mut applier) = listed([0, 1, 2]);
    let without = |mut items: Vec<Service>, name: &str| {
        items.retain(|s| s.metadata.name.as_deref() != Some(name));
        items
    };
    relist_services(&mut applier, without(list(SERVICES_1), "httpbin"));
    assert_eq!(
        at(&map, "10.96.10.21", 80),
        None,
        "httpbin deleted in the gap"
    );
    let mut slices: Vec<EndpointSlice> = list(SLICES_1);
    slices.retain(|s| s.metadata.name.as_deref() != Some("ledger-n5c7d"));
    relist_slices(&mut applier, slices);
    assert_eq!(
        at(&map, "10.96.40.70", 80),
        None,
        "ledger's slice deleted in the gap"
    );
    assert_table(&map, &LISTED[4..8], "the others stay");
    // a pod relist resolves every Service again: the workload of a pod gone goes with it
    let mut pods: Vec<Pod> = list(PODS_1);
    pods.retain(|p| p.metadata.name.as_deref() != Some("sleep-868c754c4b-7m4vd"));
    relist_pods(&mut applier, pods);
    assert_eq!(
        at(&map, "10.96.10.13", 80),
        None,
        "sleep's pod deleted in the gap"
    );
    assert_eq!(at(&map, "10.96.20.30", 80), Some(("shop/web".into(), 8000)));
}

/// Service `i` of a synthetic cluster: two ports (one with a named targetPort), one ClusterIP,
/// one EndpointSlice of three pods of its own Deployment.
fn synthetic(i: u32) -> (Service, EndpointSlice, Vec<PodIdentity>) {
    let ns = format!("team-{:02}", i % 50);
    let name = format!("service-{i:04}");
    let cluster_ip = format!("10.96.{}.{}", i >> 8, i & 0xff);
    let pod_ip = |r: u32| IpAddr::from([10, 244, (i * 3 + r) as u8, ((i * 3 + r) >> 8) as u8]);
    let service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("svc-{i}")},
        "spec": {
            "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "selector": {"app": name},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": "metrics"}
            ]
        }
    }))
    .expect("service");
    let endpoints: Vec<serde_json::Value> = (0..3)
        .map(|r| {
            json!({
                "addresses": [pod_ip(r).to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{name}-{r}")}
            })
        })
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-abcde"), "namespace": ns,
            "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080},
                  {"name": "metrics", "protocol": "TCP", "port": 15020}]
    }))
    .expect("slice");
    let pods = (0..3)
        .map(|r| PodIdentity {
            uid: u64::from(i * 3 + r),
            ips: vec![pod_ip(r)],
            workload: Workload {
                namespace: ns.clone(),
                workload: name.clone(),
                service_account: None,
                labels: Default::default(),
                mesh: None,
            },
            local: false,
            pod_mesh: crate::identity::PodMesh::Unlabelled,
        })
        .collect();
    (service, slice, pods)
}

#[test]
fn heap_bytes_per_thousand_services() {
    let map: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let mut applier = Applier::new(map.clone(), None);
    let (mut services, mut slices, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..1000 {
        let (s, e, p) = synthetic(i);
        services.push(s);
        slices.push(e);
        pods.extend(p);
    }
    map.write().expect("map").replace_pods(pods);
    let pods_only = map.read().expect("map").heap_bytes();
    relist_services(&mut applier, services);
    relist_slices(&mut applier, slices);
    let m = map.read().expect("map");
    assert_eq!(m.service_port_count(), 2000);
    let b = m.service(ip("10.96.3.231"), 9090).expect("service 999");
    assert_eq!(
        (b.namespace.as_str(), b.workload.as_str(), b.target_port),
        ("team-49", "service-0999", 15020)
    );
    let (in_map, table) = (m.services_heap_bytes(), applier.service_table_bytes());
    println!(
        "1000 Services (2 ports, 1 ClusterIP, 3 endpoints each): {} KiB in the identity map, \
         {} KiB in the Service/EndpointSlice table",
        in_map / 1024,
        table / 1024
    );
    assert_eq!(m.heap_bytes(), pods_only + in_map);
    // measured: 260 KiB and 297 KiB (hash tables at 1000 of 1792 slots, then per Service its
    // two ports' backends in the map; its ClusterIP, ports and three endpoint addresses here)
    assert!(in_map < 320 << 10, "{in_map} bytes in the map");
    assert!(table < 360 << 10, "{table} bytes in the table");
}
