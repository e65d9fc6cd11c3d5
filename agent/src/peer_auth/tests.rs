use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pa(ns: &str, name: &str, created: &str, mode: Mode) -> PeerAuthentication {
    PeerAuthentication {
        namespace: ns.into(),
        name: name.into(),
        created: created.into(),
        selector: None,
        mode,
        port_level: BTreeMap::new(),
        edited: false,
    }
}

fn selecting(mut p: PeerAuthentication, sel: &[(&str, &str)]) -> PeerAuthentication {
    p.selector = Some(labels(sel));
    p
}

const T1: &str = "2024-01-01T00:00:00Z";
const T2: &str = "2024-06-01T00:00:00Z";

fn httpbin() -> PodLabels {
    PodLabels::of_pod(labels(&[
        ("app", "httpbin"),
        ("version", "v1"),
        ("pod-template-hash", "5b7c9f8d4"),
    ]))
}

fn of(policies: &[PeerAuthentication]) -> EffectiveMode {
    resolve(policies, DEFAULT_ROOT_NAMESPACE, "foo", &httpbin())
}

#[test]
fn nothing_is_permissive_by_default() {
    assert_eq!(of(&[]), EffectiveMode::default());
    assert_eq!(of(&[]).mode, Mode::Permissive);
    assert_eq!(of(&[]).source, ModeSource::Default);
}

#[test]
fn root_namespace_without_selector_is_mesh_wide() {
    let m = of(&[pa("istio-system", "default", T1, Mode::Strict)]);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Mesh));
    assert_eq!(m.policy.as_deref(), Some("istio-system/default"));
    // another root namespace: istio-system is then an ordinary namespace
    let m = resolve(
        &[pa("istio-system", "default", T1, Mode::Strict)],
        "mesh-root",
        "foo",
        &httpbin(),
    );
    assert_eq!(m.source, ModeSource::Default);
}

#[test]
fn namespace_overrides_mesh_and_other_namespaces_do_not_apply() {
    let policies = [
        pa("istio-system", "default", T1, Mode::Strict),
        pa("foo", "default", T2, Mode::Permissive),
        pa("bar", "default", T1, Mode::Disable),
    ];
    let m = of(&policies);
    assert_eq!(
        (m.mode, m.source),
        (Mode::Permissive, ModeSource::Namespace)
    );
    assert_eq!(m.policy.as_deref(), Some("foo/default"));
}

#[test]
fn a_matching_selector_is_workload_level_and_wins() {
    let policies = [
        pa("foo", "default", T1, Mode::Permissive),
        selecting(
            pa("foo", "httpbin", T2, Mode::Strict),
            &[("app", "httpbin")],
        ),
        // not all labels match: ignored
        selecting(
            pa("foo", "v2-only", T1, Mode::Disable),
            &[("app", "httpbin"), ("version", "v2")],
        ),
    ];
    let m = of(&policies);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Workload));
    assert_eq!(m.policy.as_deref(), Some("foo/httpbin"));
}

#[test]
fn a_selector_in_another_namespace_does_not_apply() {
    let m = of(&[selecting(
        pa("bar", "httpbin", T1, Mode::Strict),
        &[("app", "httpbin")],
    )]);
    assert_eq!(m.source, ModeSource::Default);
}

/// Istio ignores a root-namespace policy with a selector (`ComposePeerAuthentication`: workload
/// level only outside the root namespace), for workloads elsewhere and in the root namespace.
#[test]
fn a_selector_in_the_root_namespace_is_ignored() {
    let p = [selecting(
        pa("istio-system", "httpbin", T1, Mode::Strict),
        &[("app", "httpbin")],
    )];
    assert_eq!(of(&p).source, ModeSource::Default);
    let in_root = resolve(&p, "istio-system", "istio-system", &httpbin());
    assert_eq!(in_root.source, ModeSource::Default);
}

#[test]
fn the_oldest_wins_then_the_name() {
    let m = of(&[
        pa("foo", "newer", T2, Mode::Strict),
        pa("foo", "older", T1, Mode::Disable),
    ]);
    assert_eq!(m.policy.as_deref(), Some("foo/older"));
    assert_eq!(m.mode, Mode::Disable);
    let m = of(&[
        pa("foo", "b", T1, Mode::Strict),
        pa("foo", "a", T1, Mode::Disable),
    ]);
    assert_eq!(m.policy.as_deref(), Some("foo/a"));
    let m = of(&[
        selecting(pa("foo", "late", T2, Mode::Disable), &[("app", "httpbin")]),
        selecting(pa("foo", "early", T1, Mode::Strict), &[("version", "v1")]),
    ]);
    assert_eq!(m.policy.as_deref(), Some("foo/early"));
    // the oldest mesh policy
    let m = of(&[
        pa("istio-system", "z", T1, Mode::Strict),
        pa("istio-system", "a", T2, Mode::Disable),
    ]);
    assert_eq!(m.policy.as_deref(), Some("istio-system/z"));
}

#[test]
fn unset_inherits_from_the_parent_level() {
    let m = of(&[
        pa("istio-system", "default", T1, Mode::Strict),
        pa("foo", "default", T1, Mode::Unset),
        selecting(pa("foo", "httpbin", T1, Mode::Unset), &[("app", "httpbin")]),
    ]);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Mesh));
    // an UNSET oldest policy still takes its level: the newer one's mode does not apply
    let m = of(&[
        pa("foo", "old-unset", T1, Mode::Unset),
        pa("foo", "new-disable", T2, Mode::Disable),
    ]);
    assert_eq!(m.source, ModeSource::Default);
}

#[test]
fn port_level_counts_only_from_the_workload_policy() {
    let mut ns = pa("foo", "default", T1, Mode::Strict);
    ns.port_level.insert(8080, Mode::Disable);
    let m = of(&[ns.clone()]);
    assert!(
        m.ports.is_empty(),
        "namespace-wide portLevelMtls is ignored"
    );
    assert_eq!(m.on_port(8080).0, Mode::Strict);

    let mut w = selecting(pa("foo", "httpbin", T1, Mode::Unset), &[("app", "httpbin")]);
    w.port_level.insert(8080, Mode::Disable);
    w.port_level.insert(9090, Mode::Unset);
    let m = of(&[ns, w]);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Namespace));
    assert_eq!(
        m.on_port(8080),
        (Mode::Disable, ModeSource::Port, Some("foo/httpbin"))
    );
    // UNSET on a port inherits the workload's effective mode
    assert_eq!(m.on_port(9090).0, Mode::Strict);
    assert_eq!(
        m.on_port(80),
        (Mode::Strict, ModeSource::Namespace, Some("foo/default"))
    );
}

#[test]
fn describes_mode_and_source() {
    let m = of(&[pa("foo", "default", T1, Mode::Strict)]);
    assert_eq!(m.describe(), "STRICT (namespace foo/default)");
    assert_eq!(EffectiveMode::default().describe(), "PERMISSIVE (default)");
}

#[test]
fn serializes_as_the_api_spells_modes() {
    let mut w = selecting(
        pa("foo", "httpbin", T1, Mode::Strict),
        &[("app", "httpbin")],
    );
    w.port_level.insert(8080, Mode::Disable);
    let v = serde_json::to_value(of(&[w])).unwrap_or_default();
    assert_eq!(
        v,
        serde_json::json!({"mode": "STRICT", "source": "workload", "policy": "foo/httpbin",
            "ports": {"8080": {"mode": "DISABLE", "policy": "foo/httpbin"}}})
    );
}

#[test]
fn reads_an_api_object() {
    let obj = serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "httpbin", "namespace": "foo",
                     "creationTimestamp": T1, "resourceVersion": "1"},
        "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                 "mtls": {"mode": "STRICT"},
                 "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {}}}
    });
    let p = from_value(&obj);
    let mut expected = selecting(
        pa("foo", "httpbin", T1, Mode::Strict),
        &[("app", "httpbin")],
    );
    expected.port_level.insert(8080, Mode::Disable);
    expected.port_level.insert(9090, Mode::Unset);
    assert_eq!(p, Ok(expected));
}

#[test]
fn empty_spec_and_empty_selector_mean_unset_and_namespace_wide() {
    let obj = serde_json::json!({
        "metadata": {"name": "default", "namespace": "foo"},
        "spec": {"selector": {"matchLabels": {}}, "mtls": {}}
    });
    assert_eq!(from_value(&obj), Ok(pa("foo", "default", "", Mode::Unset)));
    let bare = serde_json::json!({"metadata": {"name": "default", "namespace": "foo"}});
    assert_eq!(from_value(&bare), Ok(pa("foo", "default", "", Mode::Unset)));
}

#[test]
fn bad_objects_are_errors_that_name_them() {
    let bad = [
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"mtls": {"mode": "STRICTEST"}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"mtls": {"mode": 3}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"portLevelMtls": {"http": {"mode": "STRICT"}}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"portLevelMtls": {"70000": {"mode": "STRICT"}}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"portLevelMtls": {"8080": {"mode": "strict"}}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"selector": {"matchLabels": {"app": 1}}}}),
        serde_json::json!({"metadata": {"name": "x", "namespace": "foo"},
                           "spec": {"selector": {"matchLabels": ["app"]}}}),
    ];
    for obj in &bad {
        let err = from_value(obj)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("foo/x"), "{obj}: `{err}`");
    }
    let nameless = serde_json::json!({"spec": {}});
    assert!(from_value(&nameless).is_err());
}

#[test]
fn reads_a_kubectl_list_in_yaml() {
    let yaml = r#"
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata:
    name: default
    namespace: istio-system
    creationTimestamp: "2024-01-01T00:00:00Z"
  spec:
    mtls:
      mode: STRICT
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata:
    name: httpbin
    namespace: foo
    creationTimestamp: "2024-06-01T00:00:00Z"
  spec:
    selector:
      matchLabels:
        app: httpbin
    portLevelMtls:
      "8080":
        mode: PERMISSIVE
metadata:
  resourceVersion: ""
"#;
    let list = parse_list(yaml).unwrap_or_default();
    assert_eq!(list.len(), 2);
    let m = of(&list);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Mesh));
    assert_eq!(m.on_port(8080).0, Mode::Permissive);
    assert!(parse_list("items: 3").is_err());
    assert!(parse_list("[1, 2]").is_err());
    assert!(parse_list(":\n - ]").is_err());
}

/// Every pod label counts: a `version` selector selects, an `istio: ingressgateway` one does
/// not, and the pod-template-hash (another per ReplicaSet) breaks neither.
#[test]
fn selectors_match_on_any_pod_label() {
    let ns = pa("foo", "default", T1, Mode::Permissive);
    let v1 = selecting(
        pa("foo", "v1-strict", T2, Mode::Strict),
        &[("version", "v1")],
    );
    let m = of(&[ns.clone(), v1]);
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Workload));
    assert_eq!(m.policy.as_deref(), Some("foo/v1-strict"));
    let gw = selecting(
        pa("foo", "gateway", T1, Mode::Disable),
        &[("istio", "ingressgateway")],
    );
    let m = of(&[ns, gw]);
    assert_eq!(
        (m.mode, m.source),
        (Mode::Permissive, ModeSource::Namespace)
    );
    assert!(m.is_known() && m.undecided.is_none());
}

/// Labels not known: a selector policy makes the mode unknown, never `app: <workload>`; with
/// no selector in the namespace the labels are not needed.
#[test]
fn unknown_labels_make_a_selecting_policy_unknown() {
    let ns = pa("foo", "default", T1, Mode::Strict);
    let v1 = selecting(pa("foo", "v1-off", T2, Mode::Disable), &[("version", "v1")]);
    let m = resolve(
        &[ns.clone(), v1],
        DEFAULT_ROOT_NAMESPACE,
        "foo",
        &PodLabels::Unknown,
    );
    assert_eq!((m.mode, m.source), (Mode::Unknown, ModeSource::Workload));
    assert_eq!(m.policy.as_deref(), Some("foo/v1-off"));
    let why = m.undecided.clone().unwrap_or_default();
    assert!(why.contains("labels are not known"), "{why}");
    assert_eq!(m.describe(), "UNKNOWN (workload foo/v1-off)");
    // a selector elsewhere does not matter
    let elsewhere = selecting(pa("bar", "v1-off", T1, Mode::Disable), &[("version", "v1")]);
    let m = resolve(
        &[ns, elsewhere],
        DEFAULT_ROOT_NAMESPACE,
        "foo",
        &PodLabels::Unknown,
    );
    assert_eq!((m.mode, m.source), (Mode::Strict, ModeSource::Namespace));
}

/// Over the bounds: unknown, with that reason.
#[test]
fn too_many_labels_make_a_selecting_policy_unknown() {
    let many: BTreeMap<String, String> = (0..=MAX_POD_LABELS)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .chain([("app".to_owned(), "httpbin".to_owned())])
        .collect();
    let p = [selecting(
        pa("foo", "httpbin", T1, Mode::Strict),
        &[("app", "httpbin")],
    )];
    let m = resolve(&p, DEFAULT_ROOT_NAMESPACE, "foo", &PodLabels::of_pod(many));
    assert_eq!(m.mode, Mode::Unknown);
    let why = m.undecided.unwrap_or_default();
    assert!(why.contains("more than 64 labels"), "{why}");
}

/// A selector on a per-pod key (`pod-template-hash`) cannot be told for the workload.
#[test]
fn a_selector_on_a_per_pod_key_is_unknown() {
    let p = [selecting(
        pa("foo", "one-rs", T1, Mode::Strict),
        &[("pod-template-hash", "5b7c9f8d4")],
    )];
    let m = of(&p);
    assert_eq!(m.mode, Mode::Unknown);
    let why = m.undecided.unwrap_or_default();
    assert!(
        why.contains("`pod-template-hash` differs from pod to pod"),
        "{why}"
    );
}

/// An undecided policy matters only when it would win: older than the oldest sure match.
#[test]
fn an_undecided_policy_matters_only_if_it_is_older_than_the_sure_match() {
    let v1 = PodLabels::of_pod(labels(&[("app", "httpbin"), ("version", "v1")]));
    let v2 = PodLabels::of_pod(labels(&[("app", "httpbin"), ("version", "v2")]));
    let split = v1.merge(&v2);
    let sure = |t| selecting(pa("foo", "app", t, Mode::Strict), &[("app", "httpbin")]);
    let unsure = |t| selecting(pa("foo", "v1", t, Mode::Disable), &[("version", "v1")]);
    let m = resolve(
        &[sure(T1), unsure(T2)],
        DEFAULT_ROOT_NAMESPACE,
        "foo",
        &split,
    );
    assert_eq!(
        (m.mode, m.policy.as_deref()),
        (Mode::Strict, Some("foo/app"))
    );
    let m = resolve(
        &[sure(T2), unsure(T1)],
        DEFAULT_ROOT_NAMESPACE,
        "foo",
        &split,
    );
    assert_eq!(
        (m.mode, m.policy.as_deref()),
        (Mode::Unknown, Some("foo/v1"))
    );
    let why = m.undecided.unwrap_or_default();
    assert!(
        why.contains("its pods disagree on label `version`"),
        "{why}"
    );
    // a label no pod carries decides `false` whatever the undecided one
    let never = selecting(
        pa("foo", "never", T1, Mode::Disable),
        &[("version", "v1"), ("app", "web")],
    );
    let m = resolve(&[never], DEFAULT_ROOT_NAMESPACE, "foo", &split);
    assert_eq!((m.mode, m.source), (Mode::Permissive, ModeSource::Default));
}

/// `modes_of`: a workload listed with pods that disagree is judged on what they share; a
/// listing without labels adds nothing to one with labels; no labels at all is unknown.
#[test]
fn modes_of_merges_the_listings_of_one_workload() {
    let p = [selecting(
        pa("foo", "v1", T1, Mode::Strict),
        &[("version", "v1")],
    )];
    let v1 = PodLabels::of_pod(labels(&[("app", "httpbin"), ("version", "v1")]));
    let v2 = PodLabels::of_pod(labels(&[("app", "httpbin"), ("version", "v2")]));
    let none = PodLabels::Unknown;
    let m = modes_of(
        &p,
        DEFAULT_ROOT_NAMESPACE,
        [
            ("foo", "httpbin", &v1),
            ("foo", "httpbin", &v2),
            ("foo", "web", &none),
            ("foo", "web", &v1),
            ("foo", "sleep", &none),
            ("foo", "other", &v2),
        ],
    );
    let of = |w: &str| m.get(&("foo".to_owned(), w.to_owned())).map(|e| e.mode);
    assert_eq!(of("httpbin"), Some(Mode::Unknown));
    assert_eq!(of("web"), Some(Mode::Strict));
    assert_eq!(of("sleep"), Some(Mode::Unknown));
    assert_eq!(of("other"), Some(Mode::Permissive));
    assert_eq!(m.len(), 4);
}

#[test]
fn unknown_is_no_api_mode() {
    assert_eq!(Mode::parse("UNKNOWN"), None);
    assert_eq!(Mode::parse_effective("UNKNOWN"), Some(Mode::Unknown));
    assert_eq!(Mode::parse_effective("STRICT"), Some(Mode::Strict));
    let pa = serde_json::json!({"metadata": {"namespace": "a", "name": "b"},
        "spec": {"mtls": {"mode": "UNKNOWN"}}});
    assert!(from_value(&pa).is_err());
}

/// `portLevelMtls` is read up to [`MAX_PORT_LEVEL`] ports; a policy with more is unreadable,
/// named, never cut to a part.
#[test]
fn port_level_mtls_is_bounded() {
    let with_ports = |n: usize| {
        let ports: serde_json::Map<String, serde_json::Value> = (1..=n)
            .map(|p| (p.to_string(), serde_json::json!({"mode": "STRICT"})))
            .collect();
        serde_json::json!({
            "metadata": {"namespace": "foo", "name": "many"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": ports}
        })
    };
    let p = from_value(&with_ports(MAX_PORT_LEVEL)).expect("at the bound");
    assert_eq!(p.port_level.len(), MAX_PORT_LEVEL);
    let err = from_value(&with_ports(MAX_PORT_LEVEL + 1)).expect_err("over the bound");
    assert!(
        err.to_string()
            .contains("foo/many: portLevelMtls has 65 ports, more than the 64 read"),
        "{err}"
    );
}

/// `kubectl apply` of an edited policy keeps its `creationTimestamp` and raises
/// `metadata.generation`: then the creation time does not tell since when the mode holds, and
/// no `since` is claimed (so plaintext is never called refused on it).
#[test]
fn an_edited_policy_tells_no_since() {
    let list = |generation: u64| {
        format!(
            r#"
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata:
    name: default
    namespace: foo
    creationTimestamp: "2024-01-01T00:00:00Z"
    generation: {generation}
  spec:
    mtls:
      mode: STRICT
"#
        )
    };
    let fresh = parse_list(&list(1)).unwrap_or_default();
    let edited = parse_list(&list(2)).unwrap_or_default();
    assert_eq!((fresh.len(), edited.len()), (1, 1));
    assert!(!fresh[0].edited && edited[0].edited);
    let mode = resolve(&fresh, "istio-system", "foo", &httpbin());
    assert_eq!(mode.mode, Mode::Strict);
    assert!(created_since(&mode, &fresh).is_some());
    let mode = resolve(&edited, "istio-system", "foo", &httpbin());
    assert_eq!(mode.mode, Mode::Strict);
    assert_eq!(created_since(&mode, &edited), None);
}
