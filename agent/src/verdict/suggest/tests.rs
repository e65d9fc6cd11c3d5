//! The suggested policy does what it says: it selects this workload alone, it edits the policy
//! that decides the mode today, and applying it (simulated with the one resolver) gives the
//! mode the verdict claims and changes no other workload.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::aggregate::{Edge, EdgeStats, Origin, Peer};
use crate::classify::{Mesh, Security};
use crate::peer_auth::{parse_list, resolve, Mode, PeerAuthentication, PodLabels};
use crate::verdict::{
    evaluate, evaluate_with_modes, evaluate_with_policies, KnownWorkload, Policy, Readiness,
    Rollback, Verdict, Verdicts,
};

use super::unique_selector;

const ROOT: &str = "istio-system";

fn wl(ns: &str, name: &str) -> Peer {
    Peer {
        namespace: Some(ns.into()),
        workload: Some(name.into()),
        ..Peer::default()
    }
}

fn edge(source: Peer, destination: Peer, port: u16, security: Security, n: u64) -> Edge {
    Edge {
        source,
        destination,
        port,
        security,
        mesh: Mesh::Sidecar,
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

fn labels(pairs: &[(&str, &str)]) -> PodLabels {
    PodLabels::of_pod(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

fn known<'a>(ns: &'a str, name: &'a str, pairs: &[(&str, &str)]) -> KnownWorkload<'a> {
    KnownWorkload {
        namespace: ns,
        workload: name,
        labels: Cow::Owned(labels(pairs)),
        mesh: None,
    }
}

/// A PeerAuthentication as YAML, parsed as the agent parses the cluster's.
fn policy(yaml: &str) -> PeerAuthentication {
    let mut all = parse_list(yaml).unwrap_or_default();
    assert_eq!(all.len(), 1, "{yaml}");
    all.remove(0)
}

fn find<'a>(v: &'a Verdicts, ns: &str, name: &str) -> &'a Verdict {
    let peer = wl(ns, name);
    v.workloads
        .iter()
        .find(|w| w.destination == peer)
        .expect("verdict")
}

/// `policies` after `kubectl apply` of `yaml` (same namespace and name: replaced, keeping its
/// creation time; else the newest).
fn apply(policies: &[PeerAuthentication], yaml: &str) -> Vec<PeerAuthentication> {
    let new = policy(yaml);
    let old = policies
        .iter()
        .find(|p| (&p.namespace, &p.name) == (&new.namespace, &new.name));
    let created = old.map_or("2099-01-01T00:00:00Z".to_owned(), |p| p.created.clone());
    let mut out: Vec<_> = policies
        .iter()
        .filter(|p| (&p.namespace, &p.name) != (&new.namespace, &new.name))
        .cloned()
        .collect();
    out.push(PeerAuthentication { created, ..new });
    out
}

fn mode_after(policies: &[PeerAuthentication], ns: &str, l: &PodLabels) -> Mode {
    resolve(policies, ROOT, ns, l).mode
}

/// bookinfo: reviews-v1/v2/v3 all carry `app: reviews`. `app` alone would select all three.
#[test]
fn bookinfo_reviews_versions_get_a_selector_for_one_version_only() {
    let v1 = labels(&[("app", "reviews"), ("version", "v1")]);
    let v2 = labels(&[("app", "reviews"), ("version", "v2")]);
    let v3 = labels(&[("app", "reviews"), ("version", "v3")]);
    let ratings = labels(&[("app", "ratings"), ("version", "v1")]);
    let others = [
        ("reviews-v2", &v2),
        ("reviews-v3", &v3),
        ("ratings-v1", &ratings),
    ];
    let s = unique_selector("reviews-v1", &v1, &others).expect("a unique selector");
    assert_eq!(s.assumes, None);
    let s = s.labels;
    assert_eq!(v1.selected_by(&s), Ok(true));
    for (w, l) in others {
        assert_eq!(l.selected_by(&s), Ok(false), "{w} selected by {s:?}");
    }
    assert!(s.contains_key("app") && s.len() == 2, "{s:?}");
    // ratings alone carries its `app`: that is enough
    let alone = [("reviews-v1", &v1), ("reviews-v2", &v2)];
    let s = unique_selector("ratings-v1", &ratings, &alone).expect("unique");
    assert_eq!(s.labels, BTreeMap::from([("app".into(), "ratings".into())]));
}

/// The reviewer's case through the verdict: `app: httpbin` also selects sleep.
#[test]
fn a_ready_workload_sharing_its_app_label_gets_a_policy_for_itself_only() {
    let edges = [
        edge(
            wl("bar", "client"),
            wl("bar", "httpbin"),
            8000,
            Security::IstioMtls,
            10,
        ),
        edge(
            wl("bar", "client"),
            wl("bar", "sleep"),
            8000,
            Security::IstioMtls,
            1,
        ),
    ];
    let ks = [
        known("bar", "httpbin", &[("app", "httpbin"), ("version", "v1")]),
        known("bar", "sleep", &[("app", "httpbin"), ("version", "v2")]),
        known("bar", "client", &[("app", "client")]),
    ];
    let v = evaluate_with_policies(&edges, &Policy::default(), &ks, &[]);
    let w = find(&v, "bar", "httpbin");
    assert_eq!(w.verdict, Readiness::Ready);
    let yaml = w.suggested_policy.as_deref().expect("policy");
    let after = apply(&[], yaml);
    for k in &ks {
        let want = if k.workload == "httpbin" {
            Mode::Strict
        } else {
            Mode::Permissive
        };
        assert_eq!(
            mode_after(&after, "bar", &k.labels),
            want,
            "{}: {yaml}",
            k.workload
        );
    }
}

/// No label set tells the workload from another (its labels are a subset of the other's), or
/// another's labels are not known: no policy, and the reason says why.
#[test]
fn no_unique_selector_or_unknown_labels_suggest_nothing_and_say_why() {
    let edges = [edge(
        wl("bar", "c"),
        wl("bar", "httpbin"),
        8000,
        Security::IstioMtls,
        10,
    )];
    let subset = [
        known("bar", "httpbin", &[("app", "httpbin")]),
        known("bar", "sleep", &[("app", "httpbin"), ("version", "v2")]),
        known("bar", "c", &[("app", "c")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &subset);
    let w = find(&v, "bar", "httpbin");
    assert_eq!((w.verdict, &w.suggested_policy), (Readiness::Ready, &None));
    assert!(
        w.reason
            .contains("no policy suggested: no set of httpbin's labels leaves out sleep"),
        "{}",
        w.reason
    );
    // `c` is only seen, its labels are not known
    let unseen = [
        known("bar", "httpbin", &[("app", "httpbin")]),
        known("bar", "sleep", &[("app", "sleep")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &unseen);
    let w = find(&v, "bar", "httpbin");
    let yaml = w
        .suggested_policy
        .as_deref()
        .expect("a policy, with its caveat");
    assert!(yaml.contains("app: httpbin"), "{yaml}");
    assert!(
        w.reason.contains(
            "the pod labels of c in the namespace are not known, so the selector was not checked against them"
        ),
        "{}",
        w.reason
    );
    // the unknown workload is still not selected when its labels are known to differ
    let with_c = [
        known("bar", "httpbin", &[("app", "httpbin")]),
        known("bar", "c", &[("app", "httpbin"), ("tier", "x")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &with_c);
    assert_eq!(find(&v, "bar", "httpbin").suggested_policy, None);
}

/// Where no pod labels are known at all (the cluster view; a workloads file without `labels`),
/// the policy selects `app: <workload>` and says that it assumes so; where its own labels are
/// known, nothing is assumed.
#[test]
fn without_labels_the_suggestion_says_what_its_selector_assumes() {
    let edges = [edge(
        wl("bar", "c"),
        wl("bar", "httpbin"),
        8000,
        Security::IstioMtls,
        10,
    )];
    let v = evaluate(&edges, &Policy::default(), &[]);
    let w = find(&v, "bar", "httpbin");
    assert_eq!(w.verdict, Readiness::Ready);
    let yaml = w.suggested_policy.as_deref().expect("a policy");
    assert!(
        yaml.contains("name: httpbin-strict") && yaml.contains("app: httpbin"),
        "{yaml}"
    );
    // the assumption is in the policy itself, as a comment, not only in the reason
    assert!(
        yaml.starts_with("# ASSUMED: the pod labels are not known here"),
        "{yaml}"
    );
    assert!(
        w.reason
            .contains("the selector assumes httpbin's pods are labelled app: httpbin"),
        "{}",
        w.reason
    );
    // pods known to carry no label at all: no selector can select them, nothing is assumed
    let bare = [
        known("bar", "httpbin", &[]),
        known("bar", "c", &[("app", "c")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &bare);
    let w = find(&v, "bar", "httpbin");
    assert_eq!(w.suggested_policy, None, "{}", w.reason);
    assert!(
        w.reason.contains("carry no label they all share"),
        "{}",
        w.reason
    );
    let both = [
        known("bar", "httpbin", &[("app", "httpbin")]),
        known("bar", "c", &[("app", "c")]),
    ];
    let v = evaluate(&edges, &Policy::default(), &both);
    let w = find(&v, "bar", "httpbin");
    assert!(
        w.suggested_policy.is_some() && !w.reason.contains("assumes"),
        "{}",
        w.reason
    );
}

const PERMISSIVE_NS: &str = "metadata: {name: permissive-during-migration, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {mtls: {mode: PERMISSIVE}}\n";

fn bar_workloads() -> Vec<KnownWorkload<'static>> {
    vec![
        known("bar", "httpbin", &[("app", "httpbin")]),
        known("bar", "sleep", &[("app", "sleep")]),
    ]
}

fn bar_edges() -> Vec<Edge> {
    vec![
        edge(
            wl("bar", "sleep"),
            wl("bar", "httpbin"),
            8000,
            Security::IstioMtls,
            10,
        ),
        edge(
            wl("bar", "httpbin"),
            wl("bar", "sleep"),
            8000,
            Security::IstioMtls,
            10,
        ),
    ]
}

/// (a) An older namespace-wide policy wins over a new `bar/default`: the suggestion edits it.
#[test]
fn a_ready_namespace_edits_the_namespace_policy_in_force() {
    let policies = vec![policy(PERMISSIVE_NS)];
    let ks = bar_workloads();
    let v = evaluate_with_policies(&bar_edges(), &Policy::default(), &ks, &policies);
    let ns = &v.namespaces[0];
    assert_eq!(ns.verdict, Readiness::Ready);
    let yaml = ns.suggested_policy.as_deref().expect("namespace policy");
    assert!(yaml.contains("name: permissive-during-migration"), "{yaml}");
    let after = apply(&policies, yaml);
    for k in &ks {
        assert_eq!(
            mode_after(&after, "bar", &k.labels),
            Mode::Strict,
            "{}",
            k.workload
        );
    }
    assert_eq!(ns.suggestion_note, None);

    // a workload's own policy overrides it: named
    let own = policy("metadata: {name: httpbin-permissive, namespace: bar, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: PERMISSIVE}}\n");
    let policies = vec![policy(PERMISSIVE_NS), own];
    let edges = [bar_edges().remove(1)]; // httpbin receives nothing: idle, not holding it back
    let v = evaluate_with_policies(&edges, &Policy::default(), &ks, &policies);
    let ns = &v.namespaces[0];
    assert_eq!(ns.verdict, Readiness::Ready);
    assert!(ns.suggested_policy.is_some());
    assert!(
        ns.suggestion_note
            .as_deref()
            .is_some_and(|n| n.starts_with("httpbin keep the mode their own policy sets")),
        "{:?}",
        ns.suggestion_note
    );
}

/// (b) An older workload-level policy wins over `<workload>-strict`: the suggestion edits it;
/// when its selector also selects another workload, applying it would change that one: none.
#[test]
fn a_ready_workload_edits_its_workload_policy_in_force() {
    let own = "metadata: {name: httpbin-migrating, namespace: bar, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: PERMISSIVE}}\n";
    let policies = vec![policy(PERMISSIVE_NS), policy(own)];
    let ks = bar_workloads();
    let v = evaluate_with_policies(&bar_edges(), &Policy::default(), &ks, &policies);
    let w = find(&v, "bar", "httpbin");
    let yaml = w.suggested_policy.as_deref().expect("policy");
    assert!(
        yaml.contains("name: httpbin-migrating") && yaml.contains("app: httpbin"),
        "{yaml}"
    );
    let after = apply(&policies, yaml);
    assert_eq!(mode_after(&after, "bar", &ks[0].labels), Mode::Strict);
    assert_eq!(mode_after(&after, "bar", &ks[1].labels), Mode::Permissive);

    // the same policy selecting both by `tier`: editing it would make sleep STRICT too
    let shared = "metadata: {name: web-migrating, namespace: bar, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {tier: web}}, mtls: {mode: PERMISSIVE}}\n";
    let policies = vec![policy(PERMISSIVE_NS), policy(shared)];
    let ks = vec![
        known("bar", "httpbin", &[("app", "httpbin"), ("tier", "web")]),
        known("bar", "sleep", &[("app", "sleep"), ("tier", "web")]),
    ];
    let edges = [
        bar_edges().remove(0),
        edge(
            wl("bar", "httpbin"),
            wl("bar", "sleep"),
            8000,
            Security::Plaintext,
            3,
        ),
    ];
    let v = evaluate_with_policies(&edges, &Policy::default(), &ks, &policies);
    let w = find(&v, "bar", "httpbin");
    assert_eq!((w.verdict, &w.suggested_policy), (Readiness::Ready, &None));
    assert!(
        w.reason
            .contains("applying bar/web-migrating would also change the mode of sleep"),
        "{}",
        w.reason
    );
}

/// (c) STRICT from the namespace, one port PERMISSIVE by the workload's policy: a suggestion
/// keeps the workload STRICT (never PERMISSIVE + STRICT ports, a downgrade of the others).
#[test]
fn a_strict_workload_with_a_permissive_port_is_never_downgraded() {
    let strict_ns = "metadata: {name: default, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {mtls: {mode: STRICT}}\n";
    let ports = "metadata: {name: httpbin-ports, namespace: bar, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, portLevelMtls: {'9090': {mode: PERMISSIVE}, '8080': {mode: PERMISSIVE}}}\n";
    let policies = vec![policy(strict_ns), policy(ports)];
    let ks = bar_workloads();
    let mut edges = bar_edges(); // 8000: STRICT from the namespace, mTLS
    edges.push(edge(
        wl("bar", "sleep"),
        wl("bar", "httpbin"),
        9090,
        Security::Plaintext,
        3,
    ));
    let v = evaluate_with_policies(&edges, &Policy::default(), &ks, &policies);
    let w = find(&v, "bar", "httpbin");
    assert_eq!(w.verdict, Readiness::Blocked, "{}", w.reason);
    assert_eq!(
        w.suggested_policy, None,
        "8000 is STRICT already: nothing to change"
    );

    // 8080 is ready too: STRICT there, the rest as it is (the workload STRICT, 9090 PERMISSIVE)
    edges.push(edge(
        wl("bar", "sleep"),
        wl("bar", "httpbin"),
        8080,
        Security::IstioMtls,
        10,
    ));
    let v = evaluate_with_policies(&edges, &Policy::default(), &ks, &policies);
    let w = find(&v, "bar", "httpbin");
    let yaml = w.suggested_policy.as_deref().expect("port policy");
    assert!(
        yaml.contains("name: httpbin-ports") && !yaml.contains("PERMISSIVE\n  portLevelMtls"),
        "{yaml}"
    );
    let after = resolve(&apply(&policies, yaml), ROOT, "bar", &ks[0].labels);
    assert_eq!(after.mode, Mode::Strict, "{yaml}");
    assert_eq!(after.on_port(8080).0, Mode::Strict, "{yaml}");
    assert_eq!(after.on_port(9090).0, Mode::Permissive, "{yaml}");
    assert_eq!(
        mode_after(&apply(&policies, yaml), "bar", &ks[1].labels),
        Mode::Strict
    );
}

/// The guard itself: a policy the resolution would not make effective is never suggested. An
/// older policy whose selector cannot be decided for the workload (its pods disagree on
/// `tier`) would win if it applied: the new policy cannot be shown to take effect.
#[test]
fn a_suggestion_the_resolution_would_not_make_effective_is_withheld() {
    let older = policy("metadata: {name: tier-web, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {selector: {matchLabels: {tier: web}}, mtls: {mode: PERMISSIVE}}\n");
    let varying = labels(&[("app", "httpbin"), ("tier", "web")])
        .merge(&labels(&[("app", "httpbin"), ("tier", "api")]));
    let sleep = labels(&[("app", "sleep")]);
    let ask = super::WorkloadAsk {
        namespace: "bar",
        workload: "httpbin",
        labels: &varying,
        ready: true,
        judged_ports: &[8000],
        ready_ports: &[8000],
        mode: None, // as a caller that did not resolve it would pass
    };
    let policies = [older];
    let ctx = super::Context {
        policies: Some(&policies),
        root_namespace: ROOT,
        workloads: vec![("httpbin", &varying), ("sleep", &sleep)],
    };
    match super::for_workload(&ask, &ctx) {
        super::Suggestion::Withheld(why) => {
            assert!(why.contains("would leave the workload UNKNOWN"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // and a name already taken by a policy for another workload: replacing it would change it
    let taken = policy("metadata: {name: httpbin-strict, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: sleep}}, mtls: {mode: PERMISSIVE}}\n");
    let httpbin = labels(&[("app", "httpbin")]);
    let ask = super::WorkloadAsk {
        labels: &httpbin,
        ..ask
    };
    let policies = [taken];
    let ctx = super::Context {
        policies: Some(&policies),
        root_namespace: ROOT,
        workloads: vec![("httpbin", &httpbin), ("sleep", &sleep)],
    };
    match super::for_workload(&ask, &ctx) {
        super::Suggestion::Withheld(why) => {
            assert!(why.contains("would also change the mode of sleep"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

/// The mesh roll-up as the namespace's: nothing to apply when every workload is STRICT already
/// (here by namespace-wide policies), and the mesh-wide policy in force is the one edited.
#[test]
fn the_mesh_suggests_nothing_when_all_is_strict_and_edits_its_policy_in_force() {
    let strict_ns = "metadata: {name: default, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {mtls: {mode: STRICT}}\n";
    let ks = bar_workloads();
    let v = evaluate_with_policies(&bar_edges(), &Policy::default(), &ks, &[policy(strict_ns)]);
    assert_eq!(v.mesh.verdict, Readiness::Ready);
    assert_eq!(v.namespaces[0].suggested_policy, None);
    assert_eq!(
        v.mesh.suggested_policy, None,
        "every workload is STRICT already"
    );

    let mesh = "metadata: {name: mesh-permissive, namespace: istio-system, creationTimestamp: '2023-01-01T00:00:00Z'}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let policies = vec![policy(mesh), policy(PERMISSIVE_NS)];
    let v = evaluate_with_policies(&bar_edges(), &Policy::default(), &ks, &policies);
    let yaml = v.mesh.suggested_policy.as_deref().expect("mesh policy");
    assert!(
        yaml.contains("name: mesh-permissive\n  namespace: istio-system"),
        "{yaml}"
    );
    let after = apply(&policies, yaml);
    assert_eq!(
        mode_after(&after, "elsewhere", &PodLabels::Unknown),
        Mode::Strict
    );
    // bar keeps its own PERMISSIVE: named
    assert!(
        v.mesh
            .suggestion_note
            .as_deref()
            .is_some_and(|n| n.starts_with("bar/httpbin, bar/sleep keep the mode")),
        "{:?}",
        v.mesh.suggestion_note
    );
}

/// `policies` after the rollback.
fn undo(policies: &[PeerAuthentication], rollback: Option<&Rollback>) -> Vec<PeerAuthentication> {
    match rollback {
        Some(Rollback::Restore { policy, .. }) => apply(policies, policy),
        Some(Rollback::Delete {
            namespace, name, ..
        }) => policies
            .iter()
            .filter(|p| (&p.namespace, &p.name) != (namespace, name))
            .cloned()
            .collect(),
        None => panic!("a suggestion without its rollback"),
    }
}

/// Applying a suggestion and then its rollback gives every workload the mode (and ports, and
/// deciding policy) it had: an edited policy is restored as it was — never "the same policy
/// PERMISSIVE", which would downgrade its STRICT workload and ports — and a new one deleted.
#[test]
fn the_rollback_of_a_suggestion_gives_back_every_mode_as_it_was() {
    let strict_ns = "metadata: {name: default, namespace: bar, creationTimestamp: '2024-01-01T00:00:00Z'}\nspec: {mtls: {mode: STRICT}}\n";
    let ports = "metadata: {name: httpbin-ports, namespace: bar, creationTimestamp: '2024-02-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: httpbin}}, portLevelMtls: {'9090': {mode: PERMISSIVE}, '8080': {mode: PERMISSIVE}}}\n";
    let ks = bar_workloads();
    let mut edges = bar_edges();
    for (port, security) in [(9090, Security::Plaintext), (8080, Security::IstioMtls)] {
        edges.push(edge(
            wl("bar", "sleep"),
            wl("bar", "httpbin"),
            port,
            security,
            10,
        ));
    }
    let cases: [(&str, Vec<PeerAuthentication>, &[Edge]); 3] = [
        // edits httpbin-ports: 8080 STRICT; undone, 8080 and 9090 PERMISSIVE again
        ("edited", vec![policy(strict_ns), policy(ports)], &edges),
        // edits the namespace's PERMISSIVE policy
        ("namespace", vec![policy(PERMISSIVE_NS)], &bar_edges()),
        // nothing in force: new policies, deleted
        ("new", Vec::new(), &bar_edges()),
    ];
    for (case, policies, edges) in cases {
        let v = evaluate_with_policies(edges, &Policy::default(), &ks, &policies);
        let offered = v
            .workloads
            .iter()
            .map(|w| (&w.suggested_policy, &w.suggested_rollback))
            .chain(
                v.namespaces
                    .iter()
                    .map(|n| (&n.suggested_policy, &n.suggested_rollback)),
            );
        let mut seen = 0;
        for (yaml, rollback) in offered {
            let Some(yaml) = yaml else {
                assert_eq!(rollback, &None, "{case}: a rollback without a policy");
                continue;
            };
            seen += 1;
            let back = undo(&apply(&policies, yaml), rollback.as_ref());
            for k in &ks {
                assert_eq!(
                    resolve(&back, ROOT, "bar", &k.labels),
                    resolve(&policies, ROOT, "bar", &k.labels),
                    "{case}: {} after {yaml} and {rollback:?}",
                    k.workload
                );
            }
            if case == "new" {
                assert!(
                    matches!(
                        rollback,
                        Some(Rollback::Delete {
                            unchecked: None,
                            ..
                        })
                    ),
                    "{rollback:?}"
                );
            }
        }
        assert!(seen > 0, "{case}: nothing suggested");
    }
}

/// bar's traffic judged from the modes alone (bar's PERMISSIVE namespace policy resolved, the
/// policy set itself not passed on), as the cluster view judges.
fn bar_judged_by_modes_only() -> Verdicts {
    let policies = vec![policy(PERMISSIVE_NS)];
    let ks = bar_workloads();
    let modes = crate::peer_auth::modes_of(
        &policies,
        ROOT,
        ks.iter().map(|k| (k.namespace, k.workload, &*k.labels)),
    );
    evaluate_with_modes(&bar_edges(), &Policy::default(), &ks, Some(&modes))
}

/// Where only the modes are known (the cluster view), a new policy's rollback deletes it but
/// says that one of its name may exist unseen; a namespace's edits the policy the modes name,
/// restored with the mode it has.
#[test]
fn with_modes_only_the_rollback_says_what_it_cannot_know() {
    let v = bar_judged_by_modes_only();
    let w = find(&v, "bar", "httpbin");
    match &w.suggested_rollback {
        Some(Rollback::Delete {
            name,
            unchecked: Some(why),
            ..
        }) => {
            assert_eq!(name, "httpbin-strict");
            assert!(
                why.contains("if bar/httpbin-strict existed before"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    match &v.namespaces[0].suggested_rollback {
        Some(Rollback::Restore { name, policy, .. }) => {
            assert_eq!(name, "permissive-during-migration");
            assert!(
                policy.ends_with("spec:\n  mtls:\n    mode: PERMISSIVE\n"),
                "{policy}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// With modes only, a new workload-level policy may lose to an older one the modes cannot show
/// (mode UNSET: it inherits, naming no mode): the policy itself says so, in a `# UNCHECKED:`
/// line above it. With the policies known it is simulated instead, and says nothing of the kind.
#[test]
fn with_modes_only_a_new_workload_policy_says_an_older_one_may_win() {
    let v = bar_judged_by_modes_only();
    let (policies, ks) = (vec![policy(PERMISSIVE_NS)], bar_workloads());
    let yaml = find(&v, "bar", "httpbin")
        .suggested_policy
        .clone()
        .unwrap_or_default();
    let caveat = yaml.lines().find(|l| l.starts_with("# UNCHECKED: "));
    assert!(
        caveat.is_some_and(|l| l.contains("even with mode UNSET") && l.contains("-n bar")),
        "{yaml}"
    );
    assert!(yaml.contains("name: httpbin-strict"), "{yaml}");
    // the namespace-wide policy edits the one the modes name: nothing unchecked to say
    let ns = v.namespaces[0].suggested_policy.clone().unwrap_or_default();
    assert!(!ns.contains("# UNCHECKED"), "{ns}");
    // with the policies known, the suggestion is simulated: no caveat
    let known = evaluate_with_policies(&bar_edges(), &Policy::default(), &ks, &policies);
    let yaml = find(&known, "bar", "httpbin")
        .suggested_policy
        .clone()
        .unwrap_or_default();
    assert!(!yaml.is_empty() && !yaml.contains("# UNCHECKED"), "{yaml}");
}
