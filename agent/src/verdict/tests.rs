use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::aggregate::EdgeStats;
use crate::classify::Mesh;

fn wl(ns: &str, name: &str) -> Peer {
    Peer {
        namespace: Some(ns.into()),
        workload: Some(name.into()),
        ..Peer::default()
    }
}

fn ip(addr: &str) -> Peer {
    Peer {
        ip: Some(addr.parse::<IpAddr>().expect("ip")),
        ..Peer::default()
    }
}

fn node() -> Peer {
    Peer {
        node: Some("node-1".into()),
        ..ip("10.0.0.5")
    }
}

fn edge(source: Peer, destination: Peer, port: u16, security: Security, n: u64) -> Edge {
    Edge {
        source,
        destination,
        port,
        security,
        mesh: if security == Security::IstioMtls {
            Mesh::Sidecar
        } else {
            Mesh::None
        },
        origin: Origin::Direct,
        stats: EdgeStats {
            connections: n,
            attempts: 0,
            packets: n * 10,
            bytes: n * 1000,
            first_seen: 1_000,
            last_seen: 2_000 + n,
            last_started: 2_000 + n,
        },
    }
}

fn find<'a>(v: &'a Verdicts, dest: &Peer) -> &'a Verdict {
    v.workloads
        .iter()
        .find(|w| &w.destination == dest)
        .expect("verdict for destination")
}

static NO_LABELS: PodLabels = PodLabels::Unknown;

fn workload<'a>(ns: &'a str, name: &'a str) -> KnownWorkload<'a> {
    KnownWorkload {
        namespace: ns,
        workload: name,
        labels: std::borrow::Cow::Borrowed(&NO_LABELS),
        mesh: None,
    }
}

/// A known workload whose pods all carry `labels`.
fn labelled<'a>(ns: &'a str, name: &'a str, labels: &[(&str, &str)]) -> KnownWorkload<'a> {
    KnownWorkload {
        labels: std::borrow::Cow::Owned(PodLabels::of_pod(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )),
        ..workload(ns, name)
    }
}

#[test]
fn the_istio_migration_task() {
    let foo = wl("foo", "httpbin");
    let bar = wl("bar", "httpbin");
    let edges = vec![
        edge(
            wl("foo", "sleep"),
            foo.clone(),
            8000,
            Security::IstioMtls,
            6,
        ),
        edge(
            wl("legacy", "sleep"),
            foo.clone(),
            8000,
            Security::Plaintext,
            3,
        ),
        edge(
            wl("bar", "sleep"),
            bar.clone(),
            8000,
            Security::IstioMtls,
            6,
        ),
        // kubelet's HTTP probes, rewritten by Istio to pilot-agent's port
        edge(node(), bar.clone(), 15020, Security::Plaintext, 2),
        edge(
            wl("foo", "sleep"),
            bar.clone(),
            15021,
            Security::Plaintext,
            2,
        ),
    ];
    let known = [
        labelled("bar", "httpbin", &[("app", "httpbin")]),
        labelled("bar", "sleep", &[("app", "sleep")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &known);
    let f = find(&v, &foo);
    assert_eq!(f.verdict, Readiness::Blocked);
    assert_eq!(f.blockers.len(), 1);
    assert_eq!(f.blockers[0].source, wl("legacy", "sleep"));
    assert_eq!(
        (
            f.blockers[0].security,
            f.blockers[0].port,
            f.blockers[0].connections
        ),
        (Security::Plaintext, 8000, 3)
    );
    assert_eq!(f.blockers[0].last_seen, 2_003);
    assert!(
        f.suggested_policy.is_none(),
        "one port only, all blocked: nothing to apply"
    );
    let b = find(&v, &bar);
    assert_eq!(b.verdict, Readiness::Ready);
    assert_eq!(b.exempted, 4, "ports 15020 and 15021 are exempt by default");
    let yaml = b.suggested_policy.as_deref().expect("policy");
    assert!(yaml.contains("kind: PeerAuthentication") && yaml.contains("mode: STRICT"));
    assert!(
        yaml.contains("namespace: bar") && yaml.contains("app: httpbin"),
        "{yaml}"
    );
    assert_eq!(v.mesh.verdict, Readiness::Blocked);

    // without default exemptions the node's plaintext probes block bar/httpbin
    let strict = Policy::default().without_default_exemptions();
    let v = evaluate(&edges, &strict, &[]);
    let b = find(&v, &bar);
    assert_eq!(b.verdict, Readiness::Blocked);
    assert_eq!(b.exempted, 0);
    assert_eq!(b.blockers.len(), 2);
}

#[test]
fn non_mesh_tls_blocks_like_plaintext() {
    let d = wl("a", "web");
    let v = evaluate(
        &[edge(ip("10.1.1.1"), d.clone(), 443, Security::Tls, 1)],
        &Policy::default(),
        &[],
    );
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert_eq!(w.blockers[0].source, ip("10.1.1.1"));
}

#[test]
fn insufficient_evidence() {
    let d = wl("a", "web");
    let few = [edge(wl("a", "c"), d.clone(), 80, Security::IstioMtls, 4)];
    let v = evaluate(&few, &Policy::default(), &[]);
    assert_eq!(find(&v, &d).verdict, Readiness::Insufficient);
    assert!(find(&v, &d).reason.contains("4 mTLS connections, 5 needed"));

    let unknowns = [
        edge(wl("a", "c"), d.clone(), 80, Security::IstioMtls, 10),
        edge(wl("a", "c"), d.clone(), 80, Security::Unknown, 2),
    ];
    assert_eq!(
        find(&evaluate(&unknowns, &Policy::default(), &[]), &d).verdict,
        Readiness::Insufficient
    );
    let lenient = Policy {
        max_unknown_ratio: 0.5,
        ..Policy::default()
    };
    assert_eq!(
        find(&evaluate(&unknowns, &lenient, &[]), &d).verdict,
        Readiness::Ready
    );

    let dropped = Policy {
        evidence_incomplete: true,
        ..Policy::default()
    };
    let many = [edge(wl("a", "c"), d.clone(), 80, Security::IstioMtls, 100)];
    let w = evaluate(&many, &dropped, &[]);
    assert_eq!(find(&w, &d).verdict, Readiness::Insufficient);
    assert!(find(&w, &d).reason.contains("dropped"));
    // a blocker is proof even when packets were dropped
    let blocked = [edge(ip("10.9.9.9"), d.clone(), 80, Security::Plaintext, 1)];
    assert_eq!(
        find(&evaluate(&blocked, &dropped, &[]), &d).verdict,
        Readiness::Blocked
    );
}

#[test]
fn egress_never_blocks_the_sender() {
    let client = wl("legacy", "sleep");
    let edges = [edge(
        client.clone(),
        ip("93.184.216.34"),
        80,
        Security::Plaintext,
        9,
    )];
    let v = evaluate(&edges, &Policy::default(), &[workload("legacy", "sleep")]);
    let w = find(&v, &client);
    assert_eq!(w.verdict, Readiness::Insufficient);
    assert!(w.blockers.is_empty());
}

#[test]
fn plaintext_on_some_ports_suggests_port_level_mtls() {
    let d = wl("a", "web");
    let edges = [
        edge(wl("a", "c"), d.clone(), 8080, Security::IstioMtls, 10),
        edge(ip("10.3.3.3"), d.clone(), 9090, Security::Plaintext, 2),
    ];
    let known = [
        labelled("a", "web", &[("app", "web")]),
        labelled("a", "c", &[("app", "c")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &known);
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    let yaml = w.suggested_policy.as_deref().expect("port-level policy");
    // the mode today is kept (UNSET inherits it: never a downgrade), STRICT on the ready port
    assert!(
        yaml.contains("mtls:\n    mode: UNSET\n  portLevelMtls:\n    8080:\n      mode: STRICT"),
        "{yaml}"
    );
    assert!(!yaml.contains("9090:"), "{yaml}");
}

/// A port is `ready` only by the workload's rules: enough mTLS, few unknowns, a complete
/// capture; a port-level suggestion locks exactly the ready ports and says why the rest stay.
#[test]
fn port_verdicts_follow_the_policy() {
    let d = wl("a", "web");
    let edges = [
        edge(wl("a", "c"), d.clone(), 8080, Security::IstioMtls, 10),
        edge(wl("a", "c"), d.clone(), 8081, Security::IstioMtls, 1),
        edge(wl("a", "c"), d.clone(), 8082, Security::Unknown, 3),
        edge(ip("10.3.3.3"), d.clone(), 9090, Security::Plaintext, 2),
    ];
    let known = [
        labelled("a", "web", &[("app", "web")]),
        labelled("a", "c", &[("app", "c")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &known);
    let w = find(&v, &d);
    let port = |p: u16| w.ports.iter().find(|x| x.port == p).expect("port");
    assert_eq!(port(8080).verdict, Readiness::Ready);
    assert_eq!(port(8081).verdict, Readiness::Insufficient);
    assert!(port(8081).reason.contains("1 mTLS connections, 5 needed"));
    assert_eq!(port(8082).verdict, Readiness::Insufficient);
    assert_eq!(port(9090).verdict, Readiness::Blocked);
    let yaml = w.suggested_policy.as_deref().expect("port-level policy");
    assert!(yaml.contains("8080:\n      mode: STRICT"), "{yaml}");
    for p in ["8081:", "8082:", "9090:"] {
        assert!(!yaml.contains(p), "{p} must stay PERMISSIVE: {yaml}");
    }
    // dropped packets: no port is ready, so nothing is locked
    let dropped = Policy {
        evidence_incomplete: true,
        ..Policy::default()
    };
    let v = evaluate(&edges, &dropped, &[]);
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert!(w.ports.iter().all(|p| p.verdict != Readiness::Ready));
    assert_eq!(w.suggested_policy, None);
}

#[test]
fn a_workload_outside_the_mesh_is_not_judged() {
    let d = wl("legacy", "db");
    let mut known = workload("legacy", "db");
    known.mesh = Some(Mesh::None);
    let edges = [
        edge(ip("10.3.3.3"), d.clone(), 5432, Security::Plaintext, 4),
        edge(wl("a", "c"), d.clone(), 5432, Security::IstioMtls, 9),
    ];
    let v = evaluate(&edges, &Policy::default(), &[known.clone()]);
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::NotInMesh);
    assert!(w.reason.contains("STRICT has no effect"), "{}", w.reason);
    assert!(w.blockers.is_empty() && w.suggested_policy.is_none());
    let ns = &v.namespaces[0];
    assert_eq!((ns.verdict, ns.not_in_mesh), (Readiness::NotInMesh, 1));
    // in the mesh (or unknown): judged as usual
    known.mesh = Some(Mesh::Sidecar);
    let v = evaluate(&edges, &Policy::default(), &[known]);
    assert_eq!(find(&v, &d).verdict, Readiness::Blocked);
}

#[test]
fn each_blocker_carries_its_remedy() {
    let d = wl("a", "web");
    let mut from_sidecar = edge(wl("a", "c"), d.clone(), 80, Security::Plaintext, 2);
    from_sidecar.mesh = Mesh::Sidecar;
    let edges = [
        from_sidecar,
        edge(ip("10.3.3.3"), d.clone(), 80, Security::Plaintext, 1),
        edge(ip("10.3.3.4"), d.clone(), 80, Security::Tls, 1),
    ];
    let v = evaluate(&edges, &Policy::default(), &[]);
    let w = find(&v, &d);
    let of = |p: &Peer| w.blockers.iter().find(|b| &b.source == p).expect("blocker");
    let s = of(&wl("a", "c"));
    assert_eq!(s.client_mesh, Mesh::Sidecar);
    assert!(s.remedy.contains("DestinationRule"), "{}", s.remedy);
    let n = of(&ip("10.3.3.3"));
    assert_eq!(n.client_mesh, Mesh::None);
    assert!(n
        .remedy
        .contains("needs a sidecar, ambient, or an explicit exception"));
    assert!(of(&ip("10.3.3.4")).remedy.starts_with("application TLS"));
}

#[test]
fn attempts_are_not_unknown_connections() {
    let d = wl("a", "web");
    let mut probes = edge(ip("10.0.0.9"), d.clone(), 80, Security::Unknown, 0);
    probes.stats.attempts = 50;
    let edges = [
        edge(wl("a", "c"), d.clone(), 80, Security::IstioMtls, 10),
        probes,
    ];
    let v = evaluate(&edges, &Policy::default(), &[]);
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Ready, "{}", w.reason);
    assert_eq!((w.attempts, w.connections.unknown), (50, 0));
}

#[test]
fn istiod_control_plane_ports_are_exempt() {
    let istiod = wl("istio-system", "istiod");
    let edges: Vec<Edge> = [15010, 15012, 15014, 15017]
        .into_iter()
        .map(|port| edge(wl("a", "c"), istiod.clone(), port, Security::Unknown, 3))
        .collect();
    let v = evaluate(&edges, &Policy::default(), &[]);
    let w = find(&v, &istiod);
    assert_eq!((w.exempted, w.connections.total()), (12, 0));
}

#[test]
fn namespace_and_mesh_roll_ups() {
    let known = [
        workload("a", "web"),
        workload("a", "client"),
        workload("b", "api"),
        workload("c", "batch"),
    ];
    let edges = [
        edge(
            wl("a", "client"),
            wl("a", "web"),
            80,
            Security::IstioMtls,
            10,
        ),
        edge(
            wl("a", "client"),
            wl("b", "api"),
            80,
            Security::IstioMtls,
            10,
        ),
    ];
    let v = evaluate(&edges, &Policy::default(), &known);
    let ns = |n: &str| {
        v.namespaces
            .iter()
            .find(|x| x.namespace == n)
            .expect("namespace")
    };
    assert_eq!(
        (ns("a").verdict, ns("a").ready, ns("a").idle),
        (Readiness::Ready, 1, 1)
    );
    let yaml = ns("a")
        .suggested_policy
        .as_deref()
        .expect("namespace policy");
    assert!(yaml.contains("name: default") && !yaml.contains("selector"));
    assert_eq!(
        ns("c").verdict,
        Readiness::Insufficient,
        "nothing seen in c"
    );
    assert_eq!(
        v.mesh.verdict,
        Readiness::Ready,
        "namespace c receives nothing: STRICT changes nothing there"
    );
    assert!(v
        .mesh
        .suggested_policy
        .as_deref()
        .is_some_and(|y| y.contains("namespace: istio-system")));
    // an insufficient workload with traffic holds its namespace and the mesh back
    let edges2 = [
        edges[0].clone(),
        edge(
            wl("a", "client"),
            wl("b", "api"),
            80,
            Security::IstioMtls,
            1,
        ),
    ];
    let v = evaluate(&edges2, &Policy::default(), &known);
    assert_eq!(v.mesh.verdict, Readiness::Insufficient);
}

#[test]
fn policy_yaml_quotes_what_yaml_would_retype() {
    let labels: std::collections::BTreeMap<String, String> = [
        ("version".to_owned(), "1".to_owned()),
        ("tier".to_owned(), "web".to_owned()),
    ]
    .into();
    let y = peer_authentication(
        &PolicyScope::Workload {
            namespace: "a",
            workload: "web",
            labels: &PodLabels::of_pod(labels),
        },
        None,
    );
    assert!(
        y.contains("version: \"1\"") && y.contains("tier: web"),
        "{y}"
    );
}

/// The suggested selector: `app` (or `app.kubernetes.io/name`) alone when all pods carry it;
/// else the labels all pods carry alike, less Istio's; else `app: <workload>`.
#[test]
fn suggested_selector_prefers_app_then_the_common_labels() {
    let pods = |pairs: &[(&str, &str)]| {
        PodLabels::of_pod(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    };
    let selector_of = |labels: &PodLabels| {
        let y = peer_authentication(
            &PolicyScope::Workload {
                namespace: "a",
                workload: "web",
                labels,
            },
            None,
        );
        let start = y.find("matchLabels:\n").map_or(0, |i| i + 13);
        let end = y.find("  mtls:").unwrap_or(y.len());
        y.get(start..end).unwrap_or_default().to_owned()
    };
    let app = pods(&[
        ("app", "web-app"),
        ("version", "v1"),
        ("pod-template-hash", "5b7c9f8d4"),
    ]);
    assert_eq!(selector_of(&app), "      app: web-app\n");
    let named = pods(&[("app.kubernetes.io/name", "web"), ("tier", "front")]);
    assert_eq!(selector_of(&named), "      app.kubernetes.io/name: web\n");
    let neither = pods(&[
        ("istio", "ingressgateway"),
        ("security.istio.io/tlsMode", "istio"),
        ("pod-template-hash", "5b7c9f8d4"),
    ]);
    assert_eq!(selector_of(&neither), "      istio: ingressgateway\n");
    // pods that disagree on `app`: their common labels
    let split = pods(&[("app", "web"), ("tier", "front")])
        .merge(&pods(&[("app", "web2"), ("tier", "front")]));
    assert_eq!(selector_of(&split), "      tier: front\n");
    assert_eq!(selector_of(&PodLabels::Unknown), "      app: web\n");
}

/// Plaintext from a node to an app port is a kubelet probe with the rewrite off, a hostNetwork
/// client or NodePort traffic SNAT'd to the node: STRICT rejects all three, so it blocks.
#[test]
fn node_sources_are_evidence() {
    let d = wl("a", "web");
    let edges = [
        edge(wl("a", "c"), d.clone(), 8080, Security::IstioMtls, 10),
        edge(node(), d.clone(), 8080, Security::Plaintext, 3),
    ];
    let v = evaluate(&edges, &Policy::default(), &[]);
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert_eq!(w.blockers[0].source, node());
    assert!(
        w.blockers[0].remedy.contains("node"),
        "{}",
        w.blockers[0].remedy
    );
    // an explicit exemption still works
    let mut exempt = Policy::default();
    exempt
        .exempt_sources
        .insert("10.0.0.5".parse().expect("ip"));
    assert_eq!(
        find(&evaluate(&edges, &exempt, &[]), &d).verdict,
        Readiness::Ready
    );
}

#[test]
fn nodes_and_folded_destinations_get_no_verdict() {
    let edges = [
        edge(ip("192.0.2.9"), node(), 30080, Security::Plaintext, 3),
        edge(
            ip("192.0.2.9"),
            Peer::other_destinations(),
            80,
            Security::Plaintext,
            3,
        ),
    ];
    let v = evaluate(&edges, &Policy::default(), &[]);
    assert!(v.workloads.is_empty(), "{:?}", v.workloads);
}

/// A node's blockers say which kind they are: a kubelet probe on an app port, NodePort traffic
/// (the outside client named), a hostNetwork client.
#[test]
fn node_blockers_name_their_kind() {
    let d = wl("a", "web");
    let mut probe = edge(node(), d.clone(), 8080, Security::Plaintext, 2);
    probe.origin = Origin::KubeletProbe;
    let mut nodeport = edge(ip("192.0.2.10"), d.clone(), 8080, Security::Plaintext, 2);
    nodeport.origin = Origin::Nodeport;
    let host = edge(node(), d.clone(), 8080, Security::Plaintext, 1);
    let v = evaluate(&[probe, nodeport, host], &Policy::default(), &[]);
    let kinds: Vec<(String, BlockerKind)> = find(&v, &d)
        .blockers
        .iter()
        .map(|b| (b.source.display(), b.kind))
        .collect();
    assert!(
        kinds.contains(&("node:node-1".into(), BlockerKind::KubeletProbe)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("192.0.2.10".into(), BlockerKind::Nodeport)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("node:node-1".into(), BlockerKind::Node)),
        "{kinds:?}"
    );
    let probe = find(&v, &d)
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::KubeletProbe);
    assert!(probe.is_some_and(|b| b.remedy.contains("rewriteAppHTTPProbers")));
}

/// The effective modes of the named workloads, each as `mode` from `source`.
fn modes(entries: &[(&str, &str, EffectiveMode)]) -> Modes {
    entries
        .iter()
        .map(|(ns, w, m)| (((*ns).to_owned(), (*w).to_owned()), m.clone()))
        .collect()
}

fn effective(mode: Mode, source: crate::peer_auth::ModeSource, policy: &str) -> EffectiveMode {
    EffectiveMode {
        mode,
        source,
        policy: Some(policy.to_owned()),
        ports: BTreeMap::new(),
        undecided: None,
        since: None,
    }
}

fn port_override(mut m: EffectiveMode, port: u16, mode: Mode) -> EffectiveMode {
    m.ports.insert(
        port,
        crate::peer_auth::PortMode {
            mode,
            policy: "foo/httpbin".into(),
        },
    );
    m
}

use crate::peer_auth::{ModeSource, Since, SinceBasis};

/// `m`, known to hold since `at` (as an agent saw it).
fn since(mut m: EffectiveMode, at: Nanos) -> EffectiveMode {
    m.since = Some(Since {
        at,
        basis: SinceBasis::Agent,
    });
    m
}

#[test]
fn strict_with_plaintext_is_broken_clients() {
    let d = wl("foo", "httpbin");
    let edges = [
        edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10),
        edge(
            wl("legacy", "sleep"),
            d.clone(),
            8000,
            Security::Plaintext,
            3,
        ),
    ];
    // STRICT since before the plaintext was last seen (2_003)
    let strict = effective(Mode::Strict, ModeSource::Namespace, "foo/default");
    let m = modes(&[("foo", "httpbin", since(strict, 1_500))]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::BrokenClients);
    assert!(
        w.reason.starts_with(
            "already STRICT (namespace foo/default), known since 1970-01-01T00:00:00.000001Z (when the agent saw it or a policy change that may have touched it, or started and found it; plus istiod's push margin), yet 1 source sent 3 plaintext connection(s) in the window, some after that: those clients are refused now"
        ),
        "{}",
        w.reason
    );
    assert_eq!(w.suggested_policy, None, "no migration step to suggest");
    assert_eq!(w.blockers.len(), 1);
    assert!(w.blockers.iter().all(|b| b.broken));
    assert_eq!(w.ports[0].verdict, Readiness::BrokenClients);
    assert_eq!(v.namespaces[0].broken_clients, 1);
    assert_eq!(v.namespaces[0].verdict, Readiness::BrokenClients);
    assert_eq!(v.mesh.verdict, Readiness::BrokenClients);
    let json = serde_json::to_value(w).unwrap_or_default();
    assert_eq!(
        json["peer_authentication"],
        serde_json::json!({"mode": "STRICT", "source": "namespace", "policy": "foo/default",
            "since": {"at": 1_500, "basis": "agent"}})
    );
    assert_eq!(json["verdict"], "broken_clients");
    assert_eq!(json["blockers"][0]["broken"], true);

    // the same traffic without known policies is an ordinary migration step
    let plain = evaluate(&edges, &Policy::default(), &[]);
    assert_eq!(find(&plain, &d).verdict, Readiness::Blocked);
    let json = serde_json::to_value(find(&plain, &d)).unwrap_or_default();
    assert!(json.get("peer_authentication").is_none());
    assert!(json["blockers"][0].get("broken").is_none());
}

#[test]
fn a_permissive_port_of_a_strict_workload_is_a_migration_step() {
    let d = wl("foo", "httpbin");
    let edges = [
        edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10),
        edge(node(), d.clone(), 9090, Security::Plaintext, 3),
    ];
    let strict = since(
        effective(Mode::Strict, ModeSource::Workload, "foo/httpbin"),
        1_500,
    );
    let m = modes(&[(
        "foo",
        "httpbin",
        port_override(strict.clone(), 9090, Mode::Permissive),
    )]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert!(w.blockers.iter().all(|b| !b.broken));
    // STRICT on that port too: its client is refused now
    let m = modes(&[("foo", "httpbin", strict)]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    assert_eq!(find(&v, &d).verdict, Readiness::BrokenClients);
}

/// STRICT applied after the plaintext was last seen: not refused now, and the verdict says
/// so (no `broken_clients`, nothing for `check` to fail on); a client seen after the change is
/// refused, even when it also sent plaintext before.
#[test]
fn plaintext_before_strict_took_effect_is_not_broken_after_is() {
    let d = wl("foo", "httpbin");
    let mtls = edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10);
    // last seen at 2_003
    let before = edge(
        wl("legacy", "sleep"),
        d.clone(),
        8000,
        Security::Plaintext,
        3,
    );
    let strict = effective(Mode::Strict, ModeSource::Namespace, "foo/default");
    let m = modes(&[("foo", "httpbin", since(strict.clone(), 2_003))]);
    let v = evaluate_with_modes(
        &[mtls.clone(), before.clone()],
        &Policy::default(),
        &[],
        Some(&m),
    );
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Ready, "{}", w.reason);
    assert_eq!(
        w.reason,
        "all 10 inbound connections are Istio mTLS; apart from that, 3 plaintext connection(s) from 1 source was last connected before 1970-01-01T00:00:00.000002Z, from when the mode STRICT (namespace foo/default) is known to hold (when the agent saw it or a policy change that may have touched it, or started and found it; plus istiod's push margin): not counted as refused"
    );
    assert_eq!((w.blockers.len(), w.blockers[0].broken), (1, false));
    assert_eq!(
        w.ports[0].verdict,
        Readiness::Ready,
        "{}",
        w.ports[0].reason
    );
    assert_eq!(v.namespaces[0].broken_clients, 0);
    assert_eq!(v.mesh.verdict, Readiness::Ready);

    // another client, also after the change (last seen at 2_600): refused now
    let after = edge(
        wl("legacy", "cron"),
        d.clone(),
        8000,
        Security::Plaintext,
        600,
    );
    let v = evaluate_with_modes(&[mtls, before, after], &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::BrokenClients, "{}", w.reason);
    assert!(
        w.reason
            .contains("yet 1 source sent 600 plaintext connection(s) in the window"),
        "{}",
        w.reason
    );
    let broken: Vec<(String, bool)> = w
        .blockers
        .iter()
        .map(|b| (b.source.display(), b.broken))
        .collect();
    assert_eq!(
        broken,
        [
            ("legacy/cron".to_owned(), true),
            ("legacy/sleep".to_owned(), false)
        ]
    );
    assert_eq!(w.ports[0].verdict, Readiness::BrokenClients);
}

/// A keep-alive plaintext connection accepted while PERMISSIVE keeps sending (its last packets,
/// even its FIN, after STRICT took effect): Envoy does not refuse a connection it already
/// accepted, so it is not refused now; dated by when it started, not by its last packet. A
/// connection that started after the change is refused.
#[test]
fn a_connection_accepted_before_strict_is_not_refused_by_its_late_packets() {
    let d = wl("foo", "httpbin");
    let mtls = edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10);
    let mut keep_alive = edge(
        wl("legacy", "sleep"),
        d.clone(),
        8000,
        Security::Plaintext,
        1,
    );
    keep_alive.stats.first_seen = 1_000;
    keep_alive.stats.last_started = 1_000;
    keep_alive.stats.last_seen = 5_000;
    let strict = effective(Mode::Strict, ModeSource::Namespace, "foo/default");
    let m = modes(&[("foo", "httpbin", since(strict, 2_000))]);

    let v = evaluate_with_modes(
        &[mtls.clone(), keep_alive.clone()],
        &Policy::default(),
        &[],
        Some(&m),
    );
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Ready, "{}", w.reason);
    assert_eq!(
        (
            w.blockers.len(),
            w.blockers[0].broken,
            w.blockers[0].last_seen
        ),
        (1, false, 5_000)
    );
    assert_eq!(v.namespaces[0].broken_clients, 0);

    // the same client connecting again after the change: refused now
    let mut reconnect = keep_alive.clone();
    reconnect.stats.first_seen = 3_000;
    reconnect.stats.last_started = 3_000;
    reconnect.stats.last_seen = 3_500;
    let v = evaluate_with_modes(
        &[mtls, keep_alive, reconnect],
        &Policy::default(),
        &[],
        Some(&m),
    );
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::BrokenClients, "{}", w.reason);
    assert_eq!(
        (
            w.blockers.len(),
            w.blockers[0].broken,
            w.blockers[0].last_seen
        ),
        (1, true, 5_000)
    );
    assert_eq!(v.namespaces[0].broken_clients, 1);
}

/// STRICT now, but since when is not known: plaintext of the window is named, never called
/// refused; not enough to tell, so `insufficient` (not `broken_clients`, not `blocked`).
#[test]
fn strict_since_an_unknown_time_never_claims_broken_clients() {
    let d = wl("foo", "httpbin");
    let edges = [
        edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10),
        edge(
            wl("legacy", "sleep"),
            d.clone(),
            8000,
            Security::Plaintext,
            3,
        ),
    ];
    let strict = effective(Mode::Strict, ModeSource::Namespace, "foo/default");
    let m = modes(&[("foo", "httpbin", strict)]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Insufficient);
    assert_eq!(
        w.reason,
        "3 plaintext connection(s) from 1 source arrived in the window while the mode is STRICT (namespace foo/default) now; since when it is STRICT is not known, so whether they are refused cannot be told"
    );
    assert!(w.blockers.iter().all(|b| !b.broken));
    assert_eq!(w.ports[0].verdict, Readiness::Insufficient);
    assert_eq!(v.namespaces[0].broken_clients, 0);
}

#[test]
fn already_strict_and_all_mtls_is_ready_with_nothing_to_apply() {
    let d = wl("foo", "httpbin");
    let edges = [edge(
        wl("foo", "sleep"),
        d.clone(),
        8000,
        Security::IstioMtls,
        10,
    )];
    let m = modes(&[(
        "foo",
        "httpbin",
        effective(Mode::Strict, ModeSource::Mesh, "istio-system/default"),
    )]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Ready);
    assert_eq!(w.suggested_policy, None);
    assert!(
        w.reason
            .contains("already STRICT (mesh istio-system/default)"),
        "{}",
        w.reason
    );
    // PERMISSIVE today: the policy to apply is suggested
    let m = modes(&[("foo", "httpbin", EffectiveMode::default())]);
    let known = [
        labelled("foo", "httpbin", &[("app", "httpbin")]),
        labelled("foo", "sleep", &[("app", "sleep")]),
    ];
    let v = evaluate_with_modes(&edges, &Policy::default(), &known, Some(&m));
    assert!(find(&v, &d).suggested_policy.is_some());
}

#[test]
fn disable_is_named_in_the_reason() {
    let d = wl("foo", "httpbin");
    let edges = [
        edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10),
        edge(
            wl("legacy", "sleep"),
            d.clone(),
            9090,
            Security::Plaintext,
            1,
        ),
    ];
    let m = modes(&[(
        "foo",
        "httpbin",
        port_override(
            effective(Mode::Permissive, ModeSource::Namespace, "foo/default"),
            9090,
            Mode::Disable,
        ),
    )]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert!(w.reason.contains("port 9090 is DISABLE"), "{}", w.reason);
    let m = modes(&[(
        "foo",
        "httpbin",
        effective(Mode::Disable, ModeSource::Workload, "foo/httpbin"),
    )]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    assert!(
        find(&v, &d)
            .reason
            .contains("DISABLE (workload foo/httpbin)"),
        "{}",
        find(&v, &d).reason
    );
}

#[test]
fn a_namespace_already_strict_gets_no_policy_again() {
    let (api, web) = (wl("foo", "api"), wl("foo", "web"));
    let edges = [
        edge(
            wl("foo", "sleep"),
            api.clone(),
            8000,
            Security::IstioMtls,
            10,
        ),
        edge(
            wl("foo", "sleep"),
            web.clone(),
            8000,
            Security::IstioMtls,
            10,
        ),
    ];
    let ns_strict = effective(Mode::Strict, ModeSource::Namespace, "foo/default");
    let all = modes(&[
        ("foo", "api", ns_strict.clone()),
        ("foo", "web", ns_strict.clone()),
        ("foo", "sleep", ns_strict.clone()),
    ]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&all));
    assert_eq!(v.namespaces[0].verdict, Readiness::Ready);
    assert_eq!(v.namespaces[0].suggested_policy, None);
    // one workload still PERMISSIVE: the namespace-wide policy is the step to take
    let one = modes(&[
        ("foo", "api", ns_strict.clone()),
        ("foo", "web", EffectiveMode::default()),
        ("foo", "sleep", ns_strict),
    ]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&one));
    assert!(v.namespaces[0].suggested_policy.is_some());
}

/// A mode that cannot be told is shown as unknown, with why: plaintext to it is an ordinary
/// blocker (not broken clients), and a ready workload still gets its policy.
#[test]
fn an_unknown_mode_is_said_and_never_taken_for_strict() {
    let d = wl("foo", "httpbin");
    let edges = [
        edge(wl("foo", "sleep"), d.clone(), 8000, Security::IstioMtls, 10),
        edge(wl("legacy", "x"), d.clone(), 8000, Security::Plaintext, 3),
    ];
    let unknown = EffectiveMode {
        mode: Mode::Unknown,
        source: ModeSource::Workload,
        policy: Some("foo/v1-strict".into()),
        ports: BTreeMap::new(),
        undecided: Some(
            "whether foo/v1-strict selects it cannot be told: its pods disagree on label `version`"
                .into(),
        ),
        since: None,
    };
    let m = modes(&[("foo", "httpbin", unknown.clone())]);
    let v = evaluate_with_modes(&edges, &Policy::default(), &[], Some(&m));
    let w = find(&v, &d);
    assert_eq!(w.verdict, Readiness::Blocked);
    assert!(w.blockers.iter().all(|b| !b.broken));
    assert!(
        w.reason.ends_with(
            "; the mode today is UNKNOWN (workload foo/v1-strict): whether foo/v1-strict selects it cannot be told: its pods disagree on label `version`"
        ),
        "{}",
        w.reason
    );
    let json = serde_json::to_value(w).unwrap_or_default();
    assert_eq!(json["peer_authentication"]["mode"], "UNKNOWN");
    assert!(json["peer_authentication"]["undecided"]
        .as_str()
        .is_some_and(|s| s.contains("`version`")));
    // ready, but no policy can be shown to take effect: none, and the reason says why
    let ready = evaluate_with_modes(&edges[..1], &Policy::default(), &[], Some(&m));
    let w = find(&ready, &d);
    assert_eq!(w.verdict, Readiness::Ready);
    assert_eq!(w.suggested_policy, None);
    assert!(
        w.reason
            .contains("no policy suggested: the mode today is UNKNOWN (workload foo/v1-strict)"),
        "{}",
        w.reason
    );
    assert_eq!(ready.namespaces[0].suggested_policy, None);
    assert!(ready.namespaces[0]
        .suggestion_note
        .as_deref()
        .is_some_and(|n| n.contains("UNKNOWN")));
}
