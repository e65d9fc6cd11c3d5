use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::List;

use super::*;
use crate::identity::{Identity, IdentityMap, IdentitySource};

const PODS_1: &str = include_str!("../../../tests/fixtures/kube/pods-list-1.json");
const PODS_2: &str = include_str!("../../../tests/fixtures/kube/pods-list-2.json");
const NODES_1: &str = include_str!("../../../tests/fixtures/kube/nodes-list-1.json");
const WATCH_1: &str = include_str!("../../../tests/fixtures/kube/pods-watch-1.jsonl");

fn pods(text: &str) -> Vec<Pod> {
    serde_json::from_str::<List<Pod>>(text)
        .expect("PodList")
        .items
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
        ]
    );
    let web = ids[2].as_ref().expect("web-0");
    assert_eq!(web.ips, [ip("10.244.1.30"), ip("fd00:10:244:1::1e")]);
    assert_eq!(
        web.workload
            .labels
            .get("app.kubernetes.io/name")
            .map(String::as_str),
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
        assert_eq!(w.labels.get("app").map(String::as_str), Some("httpbin"));
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
