//! The window arithmetic proven on Prometheus' own engine (promtool's unit tests evaluate the
//! exact query text the report sends), and Prometheus' answers turned into edges.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use super::promql::{Queries, Resolution, EDGE_LABELS};
use super::series::{self, parse_answer, Answer, EdgeSeries, Sample};
use crate::aggregate::{Peer, OTHER_PORTS};
use crate::classify::{Mesh, Security};

/// One hour, walked in 15 s steps; the series below are scraped once a minute.
const WINDOW: u64 = 3600;
/// 120m: the window is (60m, 120m].
const EVAL_TIME: &str = "120m";

fn edge(source: &str, destination: &str, security: &str) -> String {
    format!(
        "source_namespace=\"s\", source_workload=\"{source}\", destination_namespace=\"d\", destination_workload=\"{destination}\", destination_port=\"8000\", security=\"{security}\", mesh=\"none\""
    )
}

fn series(name: &str, labels: &str, values: &str) -> String {
    format!("      - series: '{name}{{{labels}}}'\n        values: '{values}'\n")
}

/// Series of one agent (`instance="a"`), reporting as the destination's node.
fn conn(source: &str, values: &str) -> String {
    series(
        "meshwatch_connections_total",
        &format!(
            "instance=\"a\", job=\"meshwatch\", reporter=\"destination\", {}",
            edge(source, "web", "plaintext")
        ),
        values,
    )
}

/// What each case must count in the window (60m, 120m], with the series that shows it.
/// Samples are a minute apart from 0m; `_` is a missed scrape, `stale` a staleness marker.
const CASES: &[(&str, &str, u64)] = &[
    // grows before and inside the window: only the growth inside counts (120 - 60)
    ("before_and_inside", "0+1x120", 60),
    // first scraped at 90m holding 3 connections made before that scrape: all count
    // (`increase()` would count 2, and extrapolate)
    ("first_sample_inside", "_x90 3 3 5 5", 5),
    // the agent restarts at 71m: 70 - 60 before, then 4 from zero
    ("reset_inside", "0+1x70 2 2 4x47", 14),
    // two failed scrapes (staleness markers) while the agent keeps counting: no double count
    ("scrape_gap", "0+1x80 stale stale 83+1x37", 60),
    // the agent stops at 90m: what it counted before stays
    ("stopped_inside", "0+1x90 stale", 30),
    // grew only before the window
    ("quiet_inside", "0+1x50 50x70", 0),
    // appears inside with its first sample, then grows across a reset
    ("new_then_reset", "_x100 4 6 1 3x16", 9),
];

/// A promtool unit test (`promtool test rules`) of the exact queries the report sends.
fn promtool_test() -> String {
    let r = Resolution::of(WINDOW);
    assert_eq!((r.step, r.lookback), (15, 300));
    let q = Queries::new(&r, None);
    let mut input = String::new();
    for (name, values, _) in CASES {
        input.push_str(&conn(name, values));
    }
    // a connection between two nodes, reported by both agents: it counts once; a destination
    // whose agent was down part of the time: the source's larger count stands; an unknown
    // destination (no agent hosts it) is reported by the source only
    let both = edge("cross", "api", "istio_mtls");
    for (instance, reporter, values) in [
        ("a", "destination", "_x99 4 4 6x20"),
        ("b", "source", "_x99 4 4 6x20"),
    ] {
        input.push_str(&series(
            "meshwatch_connections_total",
            &format!("instance=\"{instance}\", job=\"meshwatch\", reporter=\"{reporter}\", {both}"),
            values,
        ));
    }
    let partly = edge("partly", "api", "istio_mtls");
    for (instance, reporter, values) in [
        ("a", "destination", "_x110 3x10"),
        ("b", "source", "_x100 5x20"),
    ] {
        input.push_str(&series(
            "meshwatch_connections_total",
            &format!(
                "instance=\"{instance}\", job=\"meshwatch\", reporter=\"{reporter}\", {partly}"
            ),
            values,
        ));
    }
    // a connection between two nodes in a fleet of old and new agents: the destination's
    // (new) agent labels it `origin="direct"`, the source's (old) agent has no `origin`: it
    // counts once
    let mixed = edge("mixed", "api", "istio_mtls");
    for (instance, reporter, origin, values) in [
        ("a", "destination", ", origin=\"direct\"", "_x99 4 4 6x20"),
        ("b", "source", "", "_x99 4 4 6x20"),
    ] {
        input.push_str(&series(
            "meshwatch_connections_total",
            &format!("instance=\"{instance}\", job=\"meshwatch\", reporter=\"{reporter}\", {mixed}{origin}"),
            values,
        ));
    }
    let outside = "source_namespace=\"s\", source_workload=\"out\", destination_namespace=\"unknown\", destination_workload=\"unknown\", destination_port=\"443\", security=\"tls\", mesh=\"none\"";
    input.push_str(&series(
        "meshwatch_connections_total",
        &format!("instance=\"b\", job=\"meshwatch\", reporter=\"source\", {outside}"),
        "_x100 2x20",
    ));
    // drops: agent a never, agent b at 101m; agent c dropped only before the window
    for (instance, values) in [("a", "0x120"), ("b", "0x100 7x20"), ("c", "0x30 9x90")] {
        input.push_str(&series(
            "meshwatch_capture_dropped_packets_total",
            &format!("instance=\"{instance}\", job=\"meshwatch\", point=\"kernel\""),
            values,
        ));
    }
    // up: agent a missed one scrape inside the window, agent c one before it; a target of
    // another job was down too (not an agent)
    for (job, instance, values) in [
        ("meshwatch", "a", "1x99 0 1x20"),
        ("meshwatch", "b", "1x120"),
        ("meshwatch", "c", "1x30 0 1x89"),
        ("node", "n", "0x120"),
    ] {
        input.push_str(&series(
            "up",
            &format!("instance=\"{instance}\", job=\"{job}\""),
            values,
        ));
    }
    for instance in ["a", "b", "c"] {
        input.push_str(&series(
            "meshwatch_build_info",
            &format!("instance=\"{instance}\", job=\"meshwatch\", version=\"0.1.0\""),
            "1x120",
        ));
    }
    // every edge counted carries `origin` (`direct` where a series had none)
    let direct = |labels: &str| format!("{labels}, origin=\"direct\"");
    let mut expected = String::new();
    for (name, _, n) in CASES {
        expected.push_str(&sample(&direct(&edge(name, "web", "plaintext")), *n));
    }
    expected.push_str(&sample(&direct(&both), 6));
    expected.push_str(&sample(&direct(&partly), 5));
    expected.push_str(&sample(&direct(outside), 2));
    expected.push_str(&sample(&direct(&mixed), 6));
    let mut out =
        String::from("evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n");
    out.push_str(&input);
    out.push_str("    promql_expr_test:\n");
    let mut test = |expr: &str, samples: &str| {
        let _ = write!(
            out,
            "      - expr: |\n          {}\n        eval_time: {EVAL_TIME}\n        exp_samples:\n{samples}",
            expr.replace('\n', " ")
        );
    };
    test(&q.connections, &expected);
    // growth times, to a step: first_sample_inside first grew (appeared) at 90m, last at 92m;
    // cross appeared at 99m and last grew at 101m
    let only = " and on (source_workload) last_over_time(meshwatch_connections_total{source_workload=~\"first_sample_inside|cross\"}[1h])";
    test(
        &format!("{}{only}", q.connections_last_seen),
        &(sample(&edge("first_sample_inside", "web", "plaintext"), 92 * 60)
            + &sample(&both, 101 * 60)),
    );
    test(
        &format!("{}{only}", q.connections_first_seen),
        &(sample(&edge("first_sample_inside", "web", "plaintext"), 90 * 60)
            + &sample(&both, 99 * 60)),
    );
    test(&q.drops, &sample("instance=\"b\"", 7));
    test(&q.agents_down, &sample("instance=\"a\"", 1));
    test(&q.agents, &sample("", 3));
    out
}

fn sample(labels: &str, value: u64) -> String {
    format!("          - labels: '{{{labels}}}'\n            value: {value}\n")
}

/// Where promtool is on `path`; when it is not: skipped (`Ok(None)`) on a developer's machine,
/// an error under CI (`ci`: the `CI` variable CI sets, set and neither empty nor `false`), so a
/// CI image without it cannot pass these tests silently.
fn find_promtool(
    path: Option<std::ffi::OsString>,
    ci: Option<std::ffi::OsString>,
) -> Result<Option<PathBuf>, String> {
    let found = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    let under_ci = ci.is_some_and(|v| !v.is_empty() && v != "false");
    match found {
        Some(p) => Ok(Some(p)),
        None if under_ci => Err(
            "promtool is not installed (Debian package prometheus), and CI is set: these tests must run there"
                .to_owned(),
        ),
        None => Ok(None),
    }
}

/// promtool for the tests that run Prometheus' engine: `None` (say so, skip) when it is not
/// installed, a failure when it is not and `CI` is set.
pub(super) fn promtool() -> Option<PathBuf> {
    match find_promtool(std::env::var_os("PATH"), std::env::var_os("CI")) {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            eprintln!("skipped: promtool is not installed (Debian package prometheus)");
            None
        }
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn a_missing_promtool_fails_under_ci_and_skips_elsewhere() {
    let nowhere = Some(std::ffi::OsString::from("/nonexistent-meshwatch-dir"));
    assert!(find_promtool(nowhere.clone(), Some("true".into())).is_err());
    assert!(find_promtool(nowhere.clone(), Some("1".into())).is_err());
    assert_eq!(find_promtool(nowhere.clone(), None), Ok(None));
    assert_eq!(find_promtool(nowhere.clone(), Some("".into())), Ok(None));
    assert_eq!(find_promtool(nowhere, Some("false".into())), Ok(None));
    // present: found, CI or not
    let dir = std::env::temp_dir().join(format!("meshwatch-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    std::fs::write(dir.join("promtool"), "").expect("write");
    let here = Some(dir.clone().into_os_string());
    assert_eq!(
        find_promtool(here, Some("true".into())),
        Ok(Some(dir.join("promtool")))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The queries, evaluated by Prometheus' engine on recorded-style series, count what
/// DESIGN.md says: from the first sample, through resets and scrape gaps, each connection
/// once; drops and down agents by instance.
#[test]
fn window_arithmetic_on_prometheus_engine() {
    run_promtool("promql", &promtool_test());
}

/// Run a `promtool test rules` file named `name`; skipped when promtool is not installed (a
/// failure under CI, see [`promtool`]).
pub(super) fn run_promtool(name: &str, test: &str) {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("meshwatch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("test.yaml");
    std::fs::write(&file, test).expect("write test");
    let out = Command::new(promtool)
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}\n{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent upgraded in place (same `instance`, same scrape target): its old series, without
/// `origin`, ends and the new one, `origin="direct"`, starts from zero, both inside the window.
/// `(old values, new values, in the last hour, in all)`: the old series' growth in the window
/// plus all of the new one's. Samples a minute apart from 0m.
const UPGRADES: &[(&str, &str, u64, u64)] = &[
    // the scrape after the upgrade marks the old series stale: 80 - 60, then 40
    ("0+1x80 stale", "_x81 1+1x39", 60, 120),
    // the target was gone for a scrape (no staleness marker): 80 - 60, then 39
    ("0+1x80", "_x82 1+1x38", 59, 119),
    // both pods scraped as one instance for four minutes (a surge): 84 - 60, then 41
    ("0+1x84 stale", "_x80 1+1x40", 65, 125),
];

/// The upgrade cases, each its own edge, as a promtool test of the connections query at
/// 120m over the window `(60m, 120m]` (`hour`) or one from before the first sample.
fn upgrade_test(hour: bool) -> String {
    let r = Resolution::of(if hour { WINDOW } else { 20 * WINDOW });
    let q = Queries::new(&r, None);
    let mut input = String::new();
    let mut expected = String::new();
    for (i, (old, new, in_hour, in_all)) in UPGRADES.iter().enumerate() {
        let e = edge(&format!("upgraded{i}"), "web", "plaintext");
        let agent = "instance=\"a\", job=\"meshwatch\", reporter=\"destination\"";
        input.push_str(&series(
            "meshwatch_connections_total",
            &format!("{agent}, {e}"),
            old,
        ));
        input.push_str(&series(
            "meshwatch_connections_total",
            &format!("{agent}, {e}, origin=\"direct\""),
            new,
        ));
        let n = if hour { *in_hour } else { *in_all };
        expected.push_str(&sample(&format!("{e}, origin=\"direct\""), n));
    }
    format!(
        "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n      - expr: |\n          {}\n        eval_time: {EVAL_TIME}\n        exp_samples:\n{expected}",
        q.connections.replace('\n', " ")
    )
}

/// An in-place upgrade of an agent to one that labels `origin`: the old and the new series of
/// one edge count as one edge, their growths added — and the query is not refused (relabelled
/// to one label set, two series in one step make Prometheus reject the whole query). With the
/// 1 h window's 15 s steps and a 20 h window's 5 min steps (which hold the old series' last
/// samples and the new one's first).
#[test]
fn an_in_place_upgrade_counts_both_series_on_prometheus_engine() {
    for hour in [true, false] {
        run_promtool(&format!("upgrade-{hour}"), &upgrade_test(hour));
    }
}

#[test]
fn resolution_steps_and_alignment() {
    let day = Resolution::of(86_400);
    assert_eq!((day.step, day.lookback, day.walked()), (360, 720, 86_400));
    let odd = Resolution::of(1001);
    assert_eq!((odd.step, odd.walked()), (5, 1005));
    assert_eq!(odd.eval_time(1_000_001), 1_000_005);
    assert_eq!(odd.eval_time(1_000_005), 1_000_005);
    let tiny = Resolution::of(0);
    assert_eq!((tiny.window, tiny.step, tiny.lookback), (1, 1, 300));
}

#[test]
fn namespace_is_quoted_in_every_edge_query() {
    let q = Queries::new(&Resolution::of(600), Some("fo\"o\\"));
    for text in [&q.connections, &q.attempts, &q.connections_last_seen] {
        assert!(
            text.contains(r#"{destination_namespace="fo\"o\\"}"#),
            "{text}"
        );
    }
    assert!(q.workloads.contains(r#"{namespace="fo\"o\\"}"#));
    assert!(!q.drops.contains("namespace"), "drops are per agent");
    assert!(q.connections.starts_with(&format!(
        "max by ({EDGE_LABELS}) (sum_over_time((sum by (reporter, {EDGE_LABELS})"
    )));
}

const CONNECTIONS: &str = include_str!("../../tests/fixtures/prometheus/connections.json");
const CONNECTIONS_LAST_SEEN: &str =
    include_str!("../../tests/fixtures/prometheus/connections_last_seen.json");
const ATTEMPTS: &str = include_str!("../../tests/fixtures/prometheus/attempts.json");
const WORKLOADS: &str = include_str!("../../tests/fixtures/prometheus/workloads.json");
const BAD_DATA: &str = include_str!("../../tests/fixtures/prometheus/error_bad_data.json");

fn vector(body: &str) -> Vec<Sample> {
    match parse_answer(body) {
        Ok(Answer::Vector(v)) => v,
        other => panic!("not a vector: {other:?}"),
    }
}

#[test]
fn answers_are_parsed() {
    assert!(!vector(CONNECTIONS).is_empty());
    match parse_answer(BAD_DATA) {
        Ok(Answer::Error { error_type, error }) => {
            assert_eq!(error_type, "bad_data");
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}"#;
    assert!(parse_answer(scalar)
        .expect_err("a scalar")
        .contains("scalar"));
    assert!(parse_answer("<html>502 Bad Gateway</html>").is_err());
    assert!(parse_answer(r#"{"status":"success"}"#).is_err());
    let odd = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]},{"metric":{"a":"b"},"value":[1,"+Inf"]}]}}"#;
    let v = vector(odd);
    assert!(v.iter().all(|s| !s.value.is_finite()));
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn labels_become_peers_ports_and_classes() {
    assert_eq!(
        series::peer_of(Some("node"), Some("node-1")),
        Peer {
            node: Some("node-1".into()),
            ..Peer::default()
        }
    );
    assert_eq!(
        series::peer_of(Some("unknown"), Some("unknown")),
        Peer::default()
    );
    assert_eq!(series::peer_of(None, Some("x")), Peer::default());
    assert_eq!(series::port_of(Some("other")), OTHER_PORTS);
    assert_eq!(series::port_of(Some("8000")), 8000);
    assert_eq!(series::port_of(None), OTHER_PORTS);
    assert_eq!(series::security_of(Some("plaintext")), Security::Plaintext);
    assert_eq!(series::security_of(Some("quantum")), Security::Unknown);
    assert_eq!(series::mesh_of(Some("ambient")), Mesh::Ambient);
    // a connection and an attempt of one edge meet; counts are rounded, NaN counts nothing
    let conn = Sample {
        labels: labels(&[
            ("source_namespace", "legacy"),
            ("source_workload", "sleep"),
            ("destination_namespace", "foo"),
            ("destination_workload", "httpbin"),
            ("destination_port", "other"),
            ("security", "unknown"),
            ("mesh", "none"),
        ]),
        value: 2.0000001,
    };
    let mut attempt = conn.clone();
    attempt.labels.remove("security");
    attempt.labels.remove("mesh");
    attempt.value = 3.0;
    let mut nan = conn.clone();
    nan.labels.insert("source_workload".into(), "other".into());
    nan.value = f64::NAN;
    let edges = series::edges(&EdgeSeries {
        connections: vec![conn, nan],
        attempts: vec![attempt],
        ..EdgeSeries::default()
    });
    assert_eq!(edges.len(), 1, "{edges:?}");
    let e = &edges[0];
    assert_eq!((e.stats.connections, e.stats.attempts, e.port), (2, 3, 0));
    assert_eq!(e.source.display(), "legacy/sleep");
}

#[test]
fn workloads_keep_their_mesh_when_agents_agree() {
    let s = |ns: &str, w: &str, mesh: &str| Sample {
        labels: labels(&[("namespace", ns), ("workload", w), ("mesh", mesh)]),
        value: 1.0,
    };
    let w = series::workloads(&[
        s("foo", "a", "sidecar"),
        s("foo", "a", "sidecar"),
        s("foo", "b", "none"),
        s("foo", "c", "none"),
        s("foo", "c", "sidecar"),
        s("foo", "d", "unknown"),
    ]);
    let mesh: Vec<_> = w.iter().map(|w| (w.workload.as_str(), w.mesh)).collect();
    assert_eq!(
        mesh,
        [
            ("a", Some(Mesh::Sidecar)),
            ("b", Some(Mesh::None)),
            ("c", None),
            ("d", None)
        ]
    );
}

/// Answers recorded from a real Prometheus scraping two agents (tests/live/cluster_e2e.py):
/// the edges carry the workloads, classes, counts and times the series say.
#[test]
fn recorded_answers_become_edges() {
    let edges = series::edges(&EdgeSeries {
        connections: vector(CONNECTIONS),
        connections_last_seen: vector(CONNECTIONS_LAST_SEEN),
        attempts: vector(ATTEMPTS),
        ..EdgeSeries::default()
    });
    let find = |src: &str, dst: &str, sec: Security| {
        edges.iter().find(|e| {
            e.source.display() == src && e.destination.display() == dst && e.security == sec
        })
    };
    let cross = find("alpha/client", "alpha/api", Security::IstioMtls).expect("alpha/api edge");
    assert_eq!(cross.stats.connections, 6);
    assert!(cross.stats.last_seen > 1_600_000_000_000_000_000);
    assert_eq!(cross.mesh, Mesh::Sidecar);
    let plain = find("legacy/cron", "beta/db", Security::Plaintext).expect("beta/db edge");
    assert_eq!(plain.stats.connections, 2);
    assert!(edges.iter().any(|e| e.stats.attempts > 0), "{edges:?}");
    let known = series::workloads(&vector(WORKLOADS));
    assert!(known
        .iter()
        .any(|w| w.namespace == "legacy" && w.workload == "store" && w.mesh == Some(Mesh::None)));
}

/// The `{k="v",…}` labels of an exposition line (the values here hold no quotes).
fn exposition_labels(line: &str) -> BTreeMap<String, String> {
    let inner = line
        .split_once('{')
        .and_then(|(_, rest)| rest.rsplit_once('}'))
        .map_or("", |(inner, _)| inner);
    inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// How a client came (a kubelet probe, NodePort) crosses Prometheus: the agent's
/// `meshwatch_connections_total` carries `origin`, the series become edges with it, and the
/// blockers keep their kind and remedy (not `node`).
#[test]
fn a_kubelet_probe_blocker_survives_the_round_trip_through_series() {
    use crate::flow::Connection;
    use crate::live::{IdentityFeed, LiveState, Recorder};
    use crate::verdict::{evaluate, BlockerKind, Policy};
    use std::sync::{Arc, RwLock};

    let workloads = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11], node: node-1}\nnodes:\n  - {name: node-1, ips: [10.0.0.5]}\n";
    let map =
        crate::identity::file::WorkloadsFile::parse(workloads, Some("node-1")).expect("workloads");
    let state = Arc::new(LiveState::new(
        Arc::new(RwLock::new(map)),
        IdentityFeed::File("w.yaml".into()),
        Policy::default(),
        3_600_000_000_000,
        "test".into(),
    ));
    let mut rec = Recorder::new(state.clone());
    let probe = Connection {
        src: "10.0.0.5".parse().expect("ip"),
        dst: "10.244.1.11".parse().expect("ip"),
        dport: 8000,
        security: Security::Plaintext,
        mesh: Mesh::None,
        ts: 1_000,
        local: false,
        attempt: false,
        view: false,
        kube_probe: true,
        alt_dst: None,
    };
    for _ in 0..2 {
        rec.on_connection(&probe);
    }
    let text = state.metrics_text();
    let samples: Vec<Sample> = text
        .lines()
        .filter(|l| l.starts_with("meshwatch_connections_total{"))
        .map(|l| Sample {
            labels: exposition_labels(l),
            value: l
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(f64::NAN),
        })
        .collect();
    assert_eq!(samples.len(), 1, "{text}");
    assert_eq!(
        samples[0].labels.get("origin").map(String::as_str),
        Some("kubelet_probe"),
        "{text}"
    );
    let edges = series::edges(&EdgeSeries {
        connections: samples,
        ..EdgeSeries::default()
    });
    let v = evaluate(&edges, &Policy::default(), &[]);
    let httpbin = v
        .workloads
        .iter()
        .find(|w| w.destination.workload.as_deref() == Some("httpbin"))
        .expect("a verdict for foo/httpbin");
    let kinds: Vec<_> = httpbin
        .blockers
        .iter()
        .map(|b| (b.source.display(), b.kind, b.connections))
        .collect();
    assert_eq!(
        kinds,
        [("node:node-1".to_owned(), BlockerKind::KubeletProbe, 2)],
        "{httpbin:?}"
    );
    // series of agents before the label, and `direct`, are direct
    assert_eq!(series::origin_of(None), crate::aggregate::Origin::Direct);
    assert_eq!(
        series::origin_of(Some("nodeport")),
        crate::aggregate::Origin::Nodeport
    );
}

/// Prometheus' `unknown`/`unknown` stands for every address without an identity (the metrics
/// never carry addresses): it is shown as such, not as the folded `(other sources)`.
#[test]
fn an_unknown_peer_is_shown_as_addresses_without_identity() {
    let unknown = series::peer_of(Some("unknown"), Some("unknown"));
    assert_eq!(unknown.display(), "(addresses without identity)");
    assert_eq!(Peer::other_sources().display(), "(other sources)");
    assert_eq!(Peer::other_destinations().display(), "(other destinations)");
    assert_eq!(
        series::peer_of(Some("node"), Some("node-1")).display(),
        "node:node-1"
    );
}
