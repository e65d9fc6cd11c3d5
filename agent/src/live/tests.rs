use std::sync::RwLock;

use super::*;
use crate::classify::{Mesh, Security};
use crate::identity::file::WorkloadsFile;
use crate::identity::IdentityMap;

const HOUR: Nanos = 3_600 * 1_000_000_000;

fn state(workloads: &str, feed: IdentityFeed) -> Arc<LiveState> {
    let map = WorkloadsFile::parse(workloads, Some("node-1")).expect("workloads");
    Arc::new(LiveState::new(
        Arc::new(RwLock::new(map)),
        feed,
        Policy::default(),
        HOUR,
        "test".into(),
    ))
}

fn file_feed() -> IdentityFeed {
    IdentityFeed::File("w.yaml".into())
}

fn conn(src: &str, dst: &str, security: Security) -> Connection {
    Connection {
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        dport: 8000,
        security,
        mesh: if security == Security::IstioMtls {
            Mesh::Sidecar
        } else {
            Mesh::None
        },
        ts: 1_000,
        local: false,
        attempt: false,
        view: false,
        kube_probe: false,
        alt_dst: None,
    }
}

fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .collect()
}

const HTTPBIN_HERE: &str = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1}\n  - {namespace: foo, workload: remote, ips: [10.244.2.11], node: node-2}\n";

#[test]
fn a_hundred_thousand_source_ips_make_a_bounded_number_of_series() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    for i in 0..100_000u32 {
        let src = IpAddr::from([172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let security = if i % 2 == 0 {
            Security::Plaintext
        } else {
            Security::IstioMtls
        };
        let mut c = conn("10.244.1.11", "10.244.1.11", security);
        c.src = src;
        c.ts = 1_000 + u64::from(i);
        rec.on_connection(&c);
    }
    let text = state.metrics_text();
    assert_eq!(
        series(&text, "meshwatch_connections_total").len(),
        2,
        "one series per security class, sources are `unknown`:\n{text}"
    );
    assert!(text.contains("source_workload=\"unknown\""));
    let edges = state.edges(2_000_000);
    assert!(
        edges.len() <= crate::aggregate::MAX_EDGES + 4,
        "{} edges",
        edges.len()
    );
    let v = state.verdicts(2_000_000);
    let httpbin = v
        .workloads
        .iter()
        .find(|w| w.destination.workload.as_deref() == Some("httpbin"))
        .expect("verdict");
    assert_eq!(httpbin.verdict, crate::verdict::Readiness::Blocked);
    assert_eq!(httpbin.connections.plaintext, 50_000);
}

/// Local traffic has its own counter only; attempts have theirs, never `connections_total`;
/// a connection between two pods of other nodes is another agent's to report.
#[test]
fn only_evidence_this_agent_reports_is_counted() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    let mut local = conn("127.0.0.6", "10.244.1.11", Security::Plaintext);
    local.local = true;
    rec.on_connection(&local);
    let mut probe = conn("10.0.0.5", "10.244.1.11", Security::Unknown);
    probe.attempt = true;
    rec.on_connection(&probe);
    rec.on_connection(&conn("10.9.9.9", "10.244.2.11", Security::Plaintext));
    rec.on_connection(&conn("10.9.9.9", "10.244.1.11", Security::IstioMtls));
    let text = state.metrics_text();
    assert_eq!(
        series(&text, "meshwatch_local_connections_total"),
        ["meshwatch_local_connections_total 1"]
    );
    let attempts = series(&text, "meshwatch_connection_attempts_total");
    assert_eq!(attempts.len(), 1, "{text}");
    assert!(
        attempts[0].contains("destination_workload=\"httpbin\"") && attempts[0].ends_with(" 1")
    );
    let conns = series(&text, "meshwatch_connections_total");
    assert_eq!(conns.len(), 1, "{text}");
    assert!(
        conns[0].contains("security=\"istio_mtls\"")
            && conns[0].contains("reporter=\"destination\"")
    );
    let edges = state.edges(2_000);
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert!(edges
        .iter()
        .all(|e| e.destination.workload.as_deref() == Some("httpbin")));
}

/// A lab agent without identities counts what it sees, with `unknown` identities.
#[test]
fn without_identities_every_connection_counts() {
    let state = Arc::new(LiveState::new(
        Arc::new(RwLock::new(IdentityMap::default())),
        IdentityFeed::None,
        Policy::default(),
        HOUR,
        "br0".into(),
    ));
    let mut rec = Recorder::new(state.clone());
    rec.on_connection(&conn("10.1.1.1", "10.1.1.2", Security::Plaintext));
    let text = state.metrics_text();
    let conns = series(&text, "meshwatch_connections_total");
    assert_eq!(conns.len(), 1, "{text}");
    assert!(conns[0].contains("destination_workload=\"unknown\"") && conns[0].ends_with(" 1"));
    assert_eq!(state.edges(2_000).len(), 1);
}

/// A reader holding the recent-flows ring never makes the capture thread wait: the records
/// wait in its spill buffer and arrive with the next flow.
#[test]
fn a_reader_never_blocks_the_recorder() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    let record = |port: u16| {
        let mut r = crate::flow::tests_support::record();
        r.sport = port;
        r
    };
    {
        let _reader = state.flows.lock().expect("ring");
        rec.on_finished(record(1));
        rec.on_finished(record(2));
    }
    assert!(state.recent_flows(10).is_empty());
    rec.on_finished(record(3));
    let ports: Vec<u16> = state.recent_flows(10).iter().map(|r| r.sport).collect();
    assert_eq!(ports, [3, 2, 1]);
}

/// `meshwatch_workload_info` names the workloads with a pod on this node, and their mesh.
#[test]
fn workload_info_lists_this_nodes_workloads() {
    let text = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1, mesh: sidecar}\n  - {namespace: foo, workload: remote, ips: [10.244.2.11], node: node-2}\n  - {namespace: legacy, workload: db, ips: [10.244.1.40], node: node-1}\n";
    let state = state(text, file_feed());
    let mut rec = Recorder::new(state.clone());
    rec.publish(
        &PacketStats::default(),
        crate::flow::TableStats::default(),
        0,
        None,
    );
    let text = state.metrics_text();
    let info = series(&text, "meshwatch_workload_info");
    assert_eq!(info.len(), 2, "{text}");
    assert!(info
        .iter()
        .any(|l| l.contains("workload=\"httpbin\"") && l.contains("mesh=\"sidecar\"")));
    assert!(info
        .iter()
        .any(|l| l.contains("workload=\"db\"") && l.contains("mesh=\"unknown\"")));
    assert!(series(&text, "meshwatch_identity_synced").contains(&"meshwatch_identity_synced 1"));
}

/// A pod of `foo/sleep` at 10.244.1.12 on this node (a change of the identity map).
fn add_sleep_pod(state: &LiveState, mesh: Option<Mesh>) {
    state.identities.write().expect("identities").upsert_pod(
        7,
        &["10.244.1.12".parse().expect("ip")],
        Workload {
            namespace: "foo".into(),
            workload: "sleep".into(),
            service_account: None,
            labels: crate::peer_auth::PodLabels::Unknown,
            mesh,
        },
        true,
    );
}

fn publish(rec: &mut Recorder) {
    rec.publish(
        &PacketStats::default(),
        crate::flow::TableStats::default(),
        0,
        None,
    );
}

/// The workload series are rebuilt when the identity map changed, and only then: a series taken
/// away behind the publisher's back stays away while the map is unchanged, and a change brings
/// the series back with the new workload.
#[test]
fn workload_info_is_rebuilt_only_when_the_identities_change() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    publish(&mut rec);
    let text = state.metrics_text();
    assert_eq!(series(&text, "meshwatch_workload_info").len(), 1, "{text}");
    assert!(series(&text, "meshwatch_peer_authentication_info").is_empty());

    state.metrics.identity.workloads.clear();
    publish(&mut rec);
    publish(&mut rec);
    let text = state.metrics_text();
    assert!(
        series(&text, "meshwatch_workload_info").is_empty(),
        "rebuilt from an unchanged map:\n{text}"
    );

    add_sleep_pod(&state, Some(Mesh::Sidecar));
    publish(&mut rec);
    let text = state.metrics_text();
    let info = series(&text, "meshwatch_workload_info");
    assert_eq!(info.len(), 2, "not rebuilt after a change:\n{text}");
    assert!(info.iter().any(|l| l.contains("workload=\"sleep\"")));
    assert!(info.iter().any(|l| l.contains("workload=\"httpbin\"")));

    // the PeerAuthentications become known: a change too
    state
        .identities
        .write()
        .expect("identities")
        .set_peer_authentications(Some(Vec::new()));
    publish(&mut rec);
    let text = state.metrics_text();
    assert_eq!(
        series(&text, "meshwatch_peer_authentication_info").len(),
        2,
        "the policies are known: each local workload's mode (the default):\n{text}"
    );
}

/// A canary: a STRICT policy selects `version: v1`; this node runs only v1's pod, another
/// node v2's. The info metric resolves the mode on the workload's labels across the cluster,
/// as /api/v1/verdicts does: UNKNOWN (its pods disagree on `version`), not STRICT from this
/// node's pods alone; and only this node's workloads are exported.
#[test]
fn the_info_metric_resolves_modes_on_the_clusters_labels() {
    let text = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1, labels: {app: httpbin, version: v1}}\n  - {namespace: foo, workload: httpbin, ips: [10.244.2.11], node: node-2, labels: {app: httpbin, version: v2}}\n  - {namespace: foo, workload: remote, ips: [10.244.2.12], node: node-2, labels: {app: remote}}\n";
    let state = state(text, file_feed());
    let canary = crate::peer_auth::PeerAuthentication {
        namespace: "foo".into(),
        name: "v1-strict".into(),
        created: "2026-11-20T00:00:00Z".into(),
        selector: Some([("version".to_owned(), "v1".to_owned())].into()),
        mode: crate::peer_auth::Mode::Strict,
        port_level: Default::default(),
        edited: false,
    };
    state
        .identities
        .write()
        .expect("identities")
        .set_peer_authentications(Some(vec![canary]));
    let mut rec = Recorder::new(state.clone());
    publish(&mut rec);
    let text = state.metrics_text();
    let info = series(&text, "meshwatch_peer_authentication_info");
    assert_eq!(info.len(), 1, "this node's workload only:\n{text}");
    assert!(
        info[0].contains("workload=\"httpbin\"") && info[0].contains("mode=\"UNKNOWN\""),
        "{text}"
    );
    let verdicts = state.verdicts(now());
    let api = verdicts
        .workloads
        .iter()
        .find(|v| v.destination.workload.as_deref() == Some("httpbin"))
        .and_then(|v| v.mode.as_ref())
        .map(|m| m.mode);
    assert_eq!(
        api,
        Some(crate::peer_auth::Mode::Unknown),
        "the API says the same"
    );
}

/// A connection from a pod here to a pod on another node is that node's agent's to report (as
/// `destination`); one to an address that is no pod is reported here, as `source`. Summed over
/// agents, each counts once.
#[test]
fn the_source_reports_only_what_no_destination_agent_will() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    // 10.244.1.11 is here, 10.244.2.11 is a pod on node-2, 93.184.216.34 is no pod
    rec.on_connection(&conn("10.244.1.11", "10.244.2.11", Security::Plaintext));
    rec.on_connection(&conn("10.244.1.11", "93.184.216.34", Security::Plaintext));
    let text = state.metrics_text();
    let conns = series(&text, "meshwatch_connections_total");
    assert_eq!(conns.len(), 1, "{text}");
    assert!(
        conns[0].contains("reporter=\"source\"")
            && conns[0].contains("destination_workload=\"unknown\"")
    );
}

fn policy(
    namespace: &str,
    name: &str,
    created: &str,
    selector: Option<(&str, &str)>,
    mode: crate::peer_auth::Mode,
) -> crate::peer_auth::PeerAuthentication {
    crate::peer_auth::PeerAuthentication {
        namespace: namespace.into(),
        name: name.into(),
        created: created.into(),
        selector: selector.map(|(k, v)| [(k.to_owned(), v.to_owned())].into()),
        mode,
        port_level: Default::default(),
        edited: false,
    }
}

/// An UNSET workload-level policy is invisible in the modes (httpbin inherits the namespace's
/// PERMISSIVE), but it is the oldest that selects httpbin: a new `httpbin-strict` would lose
/// to it and change nothing. The API judges with the policies, as `analyze` does: the
/// suggestion edits that policy, and its rollback restores it as it was.
#[test]
fn the_api_suggests_editing_an_unset_workload_policy_in_force() {
    use crate::peer_auth::{parse_list, resolve, Mode, PodLabels};
    let text = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1, labels: {app: httpbin}}\n  - {namespace: foo, workload: sleep, ips: [10.244.1.12], node: node-1, labels: {app: sleep}}\n";
    let state = state(text, file_feed());
    let policies = vec![
        policy(
            "foo",
            "default",
            "2024-01-01T00:00:00Z",
            None,
            Mode::Permissive,
        ),
        policy(
            "foo",
            "httpbin-legacy",
            "2024-02-01T00:00:00Z",
            Some(("app", "httpbin")),
            Mode::Unset,
        ),
    ];
    state
        .identities
        .write()
        .expect("identities")
        .set_peer_authentications(Some(policies.clone()));
    let mut rec = Recorder::new(state.clone());
    for i in 0..6 {
        let mut c = conn("10.244.1.12", "10.244.1.11", Security::IstioMtls);
        c.ts = 1_000 + i;
        rec.on_connection(&c);
    }
    let v = state.verdicts(2_000);
    let httpbin = v
        .workloads
        .iter()
        .find(|w| w.destination.workload.as_deref() == Some("httpbin"))
        .expect("verdict");
    assert_eq!(
        httpbin.verdict,
        crate::verdict::Readiness::Ready,
        "{}",
        httpbin.reason
    );
    let yaml = httpbin.suggested_policy.as_deref().expect("a suggestion");
    assert!(yaml.contains("  name: httpbin-legacy\n"), "{yaml}");
    // applied, it makes httpbin STRICT
    let applied: Vec<_> = policies
        .iter()
        .filter(|p| p.name != "httpbin-legacy")
        .cloned()
        .chain(parse_list(yaml).expect("yaml").into_iter().map(|mut p| {
            p.created = "2024-02-01T00:00:00Z".into();
            p
        }))
        .collect();
    let labels = PodLabels::of_pod([("app".to_owned(), "httpbin".to_owned())].into());
    assert_eq!(
        resolve(&applied, "istio-system", "foo", &labels).mode,
        Mode::Strict
    );
    // its rollback is the policy as it was: UNSET, same selector
    match &httpbin.suggested_rollback {
        Some(crate::verdict::Rollback::Restore { name, policy, .. }) => {
            assert_eq!(name, "httpbin-legacy");
            assert!(
                policy.contains("      app: httpbin\n  mtls:\n    mode: UNSET\n"),
                "{policy}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The watcher's changes reach the mode clock through the identity map: a change of the
/// policy selecting httpbin between two looks (a flip and back) dates httpbin's STRICT by it,
/// plus istiod's push margin; sleep, which that policy does not select, keeps its date.
#[test]
fn a_policy_change_between_two_looks_dates_the_modes_it_touched() {
    use crate::peer_auth::{Mode, PolicyChange};
    const S: Nanos = 1_000_000_000;
    // after the policy's creation (2024)
    const T0: Nanos = 1_800_000_000 * S;
    let text = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1, labels: {app: httpbin}}\n  - {namespace: foo, workload: sleep, ips: [10.244.1.12], node: node-1, labels: {app: sleep}}\n";
    let state = state(text, file_feed());
    let strict = policy(
        "foo",
        "httpbin-strict",
        "2024-01-01T00:00:00Z",
        Some(("app", "httpbin")),
        Mode::Strict,
    );
    state
        .identities
        .write()
        .expect("identities")
        .set_peer_authentications(Some(vec![strict]));
    let since = |v: &Verdicts, w: &str| {
        v.workloads
            .iter()
            .find(|v| v.destination.workload.as_deref() == Some(w))
            .and_then(|v| v.mode.as_ref()?.since)
            .map(|s| s.at)
    };
    let first = state.verdicts(T0 + 1_000 * S);
    let margin = super::mode_clock::PUSH_MARGIN;
    assert_eq!(since(&first, "httpbin"), Some(T0 + 1_000 * S + margin));
    // STRICT -> PERMISSIVE -> STRICT, seen by the watcher at 1,100 s and 1,101 s
    let change = |at| PolicyChange {
        at,
        namespace: "foo".into(),
        selector: Some([("app".to_owned(), "httpbin".to_owned())].into()),
    };
    state
        .identities
        .write()
        .expect("identities")
        .record_peer_auth_changes(vec![change(T0 + 1_100 * S), change(T0 + 1_101 * S)]);
    let later = state.verdicts(T0 + 1_200 * S);
    assert_eq!(since(&later, "httpbin"), Some(T0 + 1_101 * S + margin));
    assert_eq!(since(&later, "sleep"), Some(T0 + 1_000 * S + margin));
}

/// A connection is described once for its two events (remembered in between), unless the
/// identity map changed between them: the finished flow's bytes then go where describing it
/// now says, as they did before anything was remembered (red with the generation left out of
/// the memory's key). And the series cache starting over between the two events leaves the
/// bytes on their edge (that a remembered position of an old epoch is never used is checked
/// in `described.rs`: here the 16,384 other connections also push it out of the memory).
#[test]
fn a_remembered_connection_is_described_again_once_the_identities_or_the_cache_change() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    let flow = || {
        let mut r = crate::flow::tests_support::record();
        r.src = "10.244.1.12".parse().expect("ip");
        r.dst = "10.244.1.11".parse().expect("ip");
        r
    };
    let bytes = |text: &str, source: &str| -> u64 {
        series(text, "meshwatch_bytes_total")
            .iter()
            .filter(|l| l.contains(&format!("source_workload=\"{source}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // an unknown client: both events on the `unknown` source's edge
    rec.on_connection(&Connection::from(&flow()));
    // the client becomes a pod between the connection and its end
    add_sleep_pod(&state, None);
    rec.on_finished(flow());
    let text = state.metrics_text();
    assert_eq!(bytes(&text, "sleep"), 100, "described anew:\n{text}");
    assert_eq!(bytes(&text, "unknown"), 0, "{text}");

    // the cache starts over between a connection and its end: its bytes still go to its edge
    rec.on_connection(&Connection::from(&flow()));
    for i in 0..super::series::MAX_CACHED_EDGES as u32 {
        let mut c = Connection::from(&flow());
        c.src = IpAddr::from([172, 16, (i >> 8) as u8, i as u8]);
        c.dport = 1 + (i % 60_000) as u16;
        rec.on_connection(&c);
    }
    rec.on_finished(flow());
    let text = state.metrics_text();
    assert_eq!(bytes(&text, "sleep"), 200, "{text}");
    let sleep_edge = state
        .edges(10)
        .into_iter()
        .find(|e| e.source.workload.as_deref() == Some("sleep"))
        .expect("the sleep edge");
    assert_eq!(
        (sleep_edge.stats.connections, sleep_edge.stats.bytes),
        (1, 200),
        "one connection (the first was counted as unknown), both flows' bytes"
    );
}

/// The series cache starting over between a connection's two events: the position remembered
/// for the connection names another edge in the new epoch and is never used (red with the
/// epoch left out of what `edge_of` remembers by: the bytes went to another edge).
#[test]
fn a_position_of_an_old_epoch_is_never_used() {
    let state = state(HTTPBIN_HERE, file_feed());
    let mut rec = Recorder::new(state.clone());
    let mut r = crate::flow::tests_support::record();
    r.src = "10.244.2.11".parse().expect("ip");
    r.dst = "10.244.1.11".parse().expect("ip");
    rec.on_connection(&Connection::from(&r));
    // the cache starts over behind the memory's back (which keeps its answer)
    let epoch = rec.series.epoch();
    for port in 0..super::series::MAX_CACHED_EDGES as u16 {
        rec.series.position(EdgeKey {
            destination: Peer {
                ip: Some([10, 9, 9, 9].into()),
                ..Peer::default()
            },
            port,
            source: Peer::default(),
            security: Security::Plaintext,
            mesh: Mesh::None,
            origin: Origin::Direct,
        });
    }
    assert_ne!(rec.series.epoch(), epoch, "the cache started over");
    rec.on_finished(r);
    let edges = state.edges(10);
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(
        (
            edges[0].source.workload.as_deref(),
            edges[0].stats.connections,
            edges[0].stats.bytes
        ),
        (Some("remote"), 1, 100)
    );
}
