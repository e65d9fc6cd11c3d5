//! The PeerAuthentication modes of the cluster view, from the agents'
//! `meshwatch_peer_authentication_info` series. PURE: samples in, modes out.
//!
//! The query reads the series *now* (an instant selector: a series an agent stopped exporting
//! is stale and gone), `max by` the info labels and `instance`: each agent's view stays its
//! own, port overrides included ([`modes`] joins them), so a port override one agent shows and
//! another does not is a disagreement, not "an override". Every agent hosting a pod of
//! the workload resolves it on the workload's labels across the cluster, so all export the
//! same labels. Where they do not — a policy change still reaching them, or an agent that
//! resolves on other labels (an older agent used its own node's pods only) — the mode is
//! `UNKNOWN` with both views in the reason, never the strictest: that would call clients
//! of a canary's other pods refused. An agent that cannot tell (`UNKNOWN`) makes it unknown
//! too. Workloads on a node whose agent is down have no mode until it is back. The same rule
//! ([`combine`]) joins the modes of several agents' `/api/v1/verdicts` (the dashboard's
//! `--agent`). Since when a mode holds: [`stamp_since`].

use std::collections::BTreeMap;

use super::promql::Resolution;
use super::series::Sample;
use crate::peer_auth::{EffectiveMode, Mode, ModeSource, PortMode, Since, SinceBasis};
use crate::verdict::Modes;

pub const PEER_AUTH_INFO: &str = "meshwatch_peer_authentication_info";
/// Why an `UNKNOWN` mode from the agents is unknown (the series does not carry the reason).
pub const UNDECIDED_BY_AGENT: &str =
    "the agents cannot tell whether this policy selects it (see an agent's /api/v1/verdicts for why)";

/// The query: the modes of this moment, limited to the workloads of `namespace` when given
/// (`own` is the `{namespace="…"}` matcher or empty).
pub fn query(own: &str) -> String {
    format!(
        "max by (instance, namespace, workload, port, mode, source, policy) ({PEER_AUTH_INFO}{own})"
    )
}

/// When each mode's series showed in the window, as the times of the subquery's steps it
/// showed at: `agg` `min` the first step, `max` the last (a step time is at or after the sample
/// it shows). Across agents: since when a mode holds does not move when an agent joins.
pub fn shown_query(own: &str, r: &Resolution, agg: &str) -> String {
    format!(
        "{agg} by (namespace, workload, port, mode, source, policy) ({agg}_over_time(({PEER_AUTH_INFO}{own} * 0 + time()){}))",
        r.subquery()
    )
}

/// Stamp each workload's mode with since when it holds ([`SinceBasis::Prometheus`]): the
/// latest of the first step at which each of its series now (`now`, the [`query`] answer)
/// showed, and the step after the last at which any other of its series (a mode it had
/// before) did; plus one step and the lookback, because an edge's last step (its
/// `last_seen`) means a connection after that step's start less the lookback. Not known when a
/// series now has no first step.
pub fn stamp_since(
    modes: &mut Modes,
    now: &[Sample],
    first: &[Sample],
    last: &[Sample],
    r: &Resolution,
) {
    let seconds = |s: &Sample| (s.value.is_finite() && s.value >= 0.0).then_some(s.value as u64);
    let of = |s: &Sample, ns: &str, wl: &str| {
        label(s, "namespace") == Some(ns) && label(s, "workload") == Some(wl)
    };
    for ((ns, wl), mode) in modes.iter_mut() {
        let current: Vec<&Sample> = now
            .iter()
            .filter(|s| s.value > 0.0 && of(s, ns, wl))
            .collect();
        let first_shown = current.iter().try_fold(0, |latest: u64, c| {
            let t = first.iter().find(|f| same_mode(f, c)).and_then(seconds)?;
            Some(latest.max(t))
        });
        let gone = last
            .iter()
            .filter(|s| of(s, ns, wl) && !current.iter().any(|c| same_mode(c, s)))
            .filter_map(seconds)
            .map(|t| t.saturating_add(r.step))
            .max()
            .unwrap_or(0);
        mode.since = first_shown
            .filter(|_| !current.is_empty())
            .map(|t| t.max(gone).saturating_add(r.step + r.lookback))
            .map(|s| Since {
                at: s.saturating_mul(1_000_000_000),
                basis: SinceBasis::Prometheus,
            });
    }
}

/// Whether two samples show the same mode series, whichever agent's: the answer of now keeps
/// `instance` (each agent's view), the shown queries do not.
fn same_mode(a: &Sample, b: &Sample) -> bool {
    fn mode_labels(s: &Sample) -> impl Iterator<Item = (&String, &String)> {
        s.labels.iter().filter(|(k, _)| k.as_str() != "instance")
    }
    mode_labels(a).eq(mode_labels(b))
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels.get(name).map(String::as_str)
}

/// The modes of the samples, by (namespace, workload): each agent's (`instance`) view of a
/// workload, its port overrides included, then the agents' views joined by [`combine`] — a
/// port override one agent reports and another that knows the workload does not makes the
/// mode unknown, both views in the reason. A sample with an unknown mode or source, or a bad
/// port, is skipped; port-level samples without their agent's workload-level sample are too.
pub fn modes(samples: &[Sample]) -> Modes {
    let mut agents: BTreeMap<Option<&str>, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        agents.entry(label(s, "instance")).or_default().push(s);
    }
    let mut workloads = Modes::new();
    for samples in agents.into_values() {
        for (key, m) in agent_modes(&samples) {
            combine(&mut workloads, key, m);
        }
    }
    workloads
}

/// The modes one agent's samples show (samples without `instance` count as one agent).
fn agent_modes(samples: &[&Sample]) -> Modes {
    let mut workloads: Modes = BTreeMap::new();
    let mut ports: Vec<((String, String), u16, PortMode)> = Vec::new();
    for s in samples.iter().filter(|s| s.value > 0.0) {
        let (Some(ns), Some(wl)) = (label(s, "namespace"), label(s, "workload")) else {
            continue;
        };
        let Some(mode) = label(s, "mode").and_then(Mode::parse_effective) else {
            continue;
        };
        let Some(source) = label(s, "source").and_then(ModeSource::parse) else {
            continue;
        };
        let policy = label(s, "policy").filter(|p| !p.is_empty());
        let key = (ns.to_owned(), wl.to_owned());
        match label(s, "port").unwrap_or_default() {
            "" => {
                let m = EffectiveMode {
                    mode,
                    source,
                    policy: policy.map(str::to_owned),
                    ports: BTreeMap::new(),
                    undecided: (mode == Mode::Unknown).then(|| UNDECIDED_BY_AGENT.to_owned()),
                    since: None,
                };
                combine(&mut workloads, key, m);
            }
            port => {
                let Some(port) = port.parse::<u16>().ok().filter(|&p| p != 0) else {
                    continue;
                };
                let policy = policy.unwrap_or_default().to_owned();
                ports.push((key, port, PortMode { mode, policy }));
            }
        }
    }
    for (key, port, p) in ports {
        // an unknown mode has no port overrides to show
        if let Some(w) = workloads.get_mut(&key).filter(|w| w.mode != Mode::Unknown) {
            combine_port(&mut w.ports, port, p);
        }
    }
    workloads
}

/// Add one source's view of a workload's mode to `modes`. Sources that agree (mode, source,
/// policy and port overrides) give that mode, since the later of their `since`s; one that
/// cannot tell gives [`Mode::Unknown`] with its reason; sources that disagree give
/// [`Mode::Unknown`] naming both views — never a guess such as the strictest, which would
/// call a canary's other pods' clients refused.
pub fn combine(modes: &mut Modes, key: (String, String), m: EffectiveMode) {
    let Some(seen) = modes.get_mut(&key) else {
        modes.insert(key, m);
        return;
    };
    if seen.mode == Mode::Unknown {
        return; // the first reason stays
    }
    if m.mode == Mode::Unknown {
        *seen = m;
    } else if same_view(seen, &m) {
        // the later of the two (a view that does not know: not known)
        seen.since = seen
            .since
            .zip(m.since)
            .map(|(a, b)| if b.at > a.at { b } else { a });
    } else {
        *seen = EffectiveMode {
            mode: Mode::Unknown,
            source: seen.source,
            policy: seen.policy.clone(),
            ports: BTreeMap::new(),
            undecided: Some(disagreement(seen, &m)),
            since: None,
        };
    }
}

fn same_view(a: &EffectiveMode, b: &EffectiveMode) -> bool {
    (a.mode, a.source, &a.policy, &a.ports) == (b.mode, b.source, &b.policy, &b.ports)
}

/// Why two views make the mode unknown.
fn disagreement(a: &EffectiveMode, b: &EffectiveMode) -> String {
    let view = |m: &EffectiveMode| {
        let ports: Vec<String> = m
            .ports
            .iter()
            .map(|(port, p)| format!("port {port} {}", p.mode.as_str()))
            .collect();
        match ports.is_empty() {
            true => m.describe(),
            false => format!("{} with {}", m.describe(), ports.join(", ")),
        }
    };
    format!("{DISAGREE}: {} and {}", view(a), view(b))
}

/// The start of the reason of a mode the agents disagree on.
pub const DISAGREE: &str =
    "the agents disagree (a policy change still reaching them, or agents that see other labels)";

/// A second port-level series of one view (one agent's, or an answer without `instance`): the
/// same mode, or unknown.
fn combine_port(ports: &mut BTreeMap<u16, PortMode>, port: u16, p: PortMode) {
    match ports.get_mut(&port) {
        None => {
            ports.insert(port, p);
        }
        Some(seen) if *seen == p => {}
        Some(seen) => seen.mode = Mode::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::run_promtool;

    fn sample(pairs: &[(&str, &str)]) -> Sample {
        Sample {
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: 1.0,
        }
    }

    fn info(ns: &str, wl: &str, port: &str, mode: &str, source: &str, policy: &str) -> Sample {
        sample(&[
            ("namespace", ns),
            ("workload", wl),
            ("port", port),
            ("mode", mode),
            ("source", source),
            ("policy", policy),
        ])
    }

    #[test]
    fn samples_become_modes_with_their_ports() {
        let m = modes(&[
            info("foo", "httpbin", "", "STRICT", "workload", "foo/httpbin"),
            info("foo", "httpbin", "9090", "DISABLE", "port", "foo/httpbin"),
            info("foo", "sleep", "", "PERMISSIVE", "default", ""),
            // a port without its workload's sample, and garbage: skipped
            info("bar", "orphan", "80", "STRICT", "port", "bar/x"),
            info("foo", "odd", "", "STRICTEST", "workload", "foo/odd"),
            info("foo", "odd2", "", "STRICT", "galaxy", "foo/odd"),
            info("foo", "httpbin", "http", "STRICT", "port", "foo/httpbin"),
        ]);
        let httpbin = &m[&("foo".to_owned(), "httpbin".to_owned())];
        assert_eq!(httpbin.describe(), "STRICT (workload foo/httpbin)");
        assert_eq!(
            httpbin.on_port(9090),
            (Mode::Disable, ModeSource::Port, Some("foo/httpbin"))
        );
        assert_eq!(httpbin.ports.len(), 1);
        let sleep = &m[&("foo".to_owned(), "sleep".to_owned())];
        assert_eq!(sleep, &EffectiveMode::default());
        assert_eq!(m.len(), 2, "{m:?}");
    }

    /// A canary seen by two agents: one says STRICT, the other PERMISSIVE. Whichever comes
    /// first, the mode is UNKNOWN, naming both views — never STRICT.
    #[test]
    fn agents_that_disagree_give_unknown() {
        for order in [[0, 1], [1, 0]] {
            let samples = [
                info("foo", "web", "", "PERMISSIVE", "default", ""),
                info("foo", "web", "", "STRICT", "workload", "foo/v1-strict"),
            ];
            let m = modes(&[samples[order[0]].clone(), samples[order[1]].clone()]);
            let web = &m[&("foo".to_owned(), "web".to_owned())];
            assert_eq!(web.mode, Mode::Unknown, "{order:?}");
            let why = web.undecided.as_deref().unwrap_or_default();
            assert!(why.starts_with(DISAGREE), "{why}");
            assert!(
                why.contains("STRICT (workload foo/v1-strict)")
                    && why.contains("PERMISSIVE (default)"),
                "{why}"
            );
        }
    }

    #[test]
    fn combine_agrees_or_is_unknown_per_workload_and_port() {
        let key = || ("foo".to_owned(), "web".to_owned());
        let mode = |mode, source, policy: &str| EffectiveMode {
            mode,
            source,
            policy: Some(policy.to_owned()),
            ..EffectiveMode::default()
        };
        let port = |mode| PortMode {
            mode,
            policy: "foo/web".into(),
        };
        let since = |at| {
            Some(Since {
                at,
                basis: SinceBasis::Agent,
            })
        };
        // agreeing views: that mode, since the later
        let mut strict = mode(Mode::Strict, ModeSource::Namespace, "foo/default");
        strict.ports.insert(9090, port(Mode::Permissive));
        let (mut a, mut b) = (strict.clone(), strict.clone());
        (a.since, b.since) = (since(10), since(20));
        let mut m = Modes::new();
        combine(&mut m, key(), a.clone());
        combine(&mut m, key(), b);
        assert_eq!(m[&key()].mode, Mode::Strict);
        assert_eq!(m[&key()].since, since(20));
        // a view without the port override: unknown, the override named
        let mut other = strict.clone();
        other.ports.clear();
        combine(&mut m, key(), other);
        assert_eq!(m[&key()].mode, Mode::Unknown);
        assert!(m[&key()].ports.is_empty());
        let why = m[&key()].undecided.clone().unwrap_or_default();
        assert!(why.contains("with port 9090 PERMISSIVE"), "{why}");
        // an agent that cannot tell: unknown with its reason, in any order
        let unknown = EffectiveMode {
            undecided: Some("why".into()),
            ..mode(Mode::Unknown, ModeSource::Workload, "foo/v1")
        };
        for order in [[0, 1], [1, 0]] {
            let views = [a.clone(), unknown.clone()];
            let mut m = Modes::new();
            for i in order {
                combine(&mut m, key(), views[i].clone());
            }
            assert_eq!(m[&key()].mode, Mode::Unknown);
            assert_eq!(m[&key()].undecided.as_deref(), Some("why"), "{order:?}");
        }
        // port series of two agents that disagree: that port is unknown
        let m = modes(&[
            info("foo", "web", "", "STRICT", "namespace", "foo/default"),
            info("foo", "web", "9090", "DISABLE", "port", "foo/web"),
            info("foo", "web", "9090", "STRICT", "port", "foo/web"),
        ]);
        assert_eq!(m[&key()].on_port(9090).0, Mode::Unknown);
        // UNKNOWN from the series: parsed, with a reason
        let m = modes(&[info("foo", "web", "", "UNKNOWN", "workload", "foo/v1")]);
        assert_eq!(m[&key()].mode, Mode::Unknown);
        assert_eq!(m[&key()].undecided.as_deref(), Some(UNDECIDED_BY_AGENT));
    }

    #[test]
    fn the_query_groups_by_the_info_labels() {
        assert_eq!(
            query("{namespace=\"foo\"}"),
            "max by (instance, namespace, workload, port, mode, source, policy) (meshwatch_peer_authentication_info{namespace=\"foo\"})"
        );
    }

    /// The query on Prometheus' engine (`promtool test rules`): two agents hosting one
    /// workload give a series each (their views are joined by [`modes`]); a mode an agent
    /// stopped exporting (the policy changed) is gone; empty labels (`port` of the workload
    /// level) are dropped by Prometheus.
    #[test]
    fn the_query_on_prometheus_engine() {
        let series = |instance: &str, labels: &str, values: &str| {
            format!(
                "      - series: '{PEER_AUTH_INFO}{{instance=\"{instance}\", job=\"meshwatch\", namespace=\"foo\", {labels}}}'\n        values: '{values}'\n"
            )
        };
        let web =
            r#"workload="web", port="", mode="STRICT", source="namespace", policy="foo/default""#;
        let mut input = String::new();
        input += &series("a", web, "1x20");
        input += &series("b", web, "1x20");
        input += &series(
            "a",
            r#"workload="api", port="", mode="PERMISSIVE", source="default", policy="""#,
            "1x10 stale",
        );
        input += &series(
            "a",
            r#"workload="api", port="", mode="STRICT", source="workload", policy="foo/api""#,
            "_x11 1x9",
        );
        input += &series(
            "b",
            r#"workload="api", port="9090", mode="DISABLE", source="port", policy="foo/api""#,
            "1x20",
        );
        input += &series(
            "b",
            r#"workload="gone", port="", mode="STRICT", source="namespace", policy="foo/default""#,
            "1x5 stale",
        );
        let expected = [
            r#"instance="a", namespace="foo", workload="web", mode="STRICT", source="namespace", policy="foo/default""#,
            r#"instance="b", namespace="foo", workload="web", mode="STRICT", source="namespace", policy="foo/default""#,
            r#"instance="a", namespace="foo", workload="api", mode="STRICT", source="workload", policy="foo/api""#,
            r#"instance="b", namespace="foo", workload="api", port="9090", mode="DISABLE", source="port", policy="foo/api""#,
        ];
        let mut test = format!(
            "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n      - expr: '{}'\n        eval_time: 20m\n        exp_samples:\n",
            query("{namespace=\"foo\"}")
        );
        for labels in expected {
            test += &format!("          - labels: '{{{labels}}}'\n            value: 1\n");
        }
        run_promtool("modes", &test);
    }

    /// The series of one agent in the `foo` namespace.
    fn input_series(instance: &str, labels: &str, values: &str) -> String {
        format!(
            "      - series: '{PEER_AUTH_INFO}{{instance=\"{instance}\", job=\"meshwatch\", namespace=\"foo\", {labels}}}'\n        values: '{values}'\n"
        )
    }

    const API_PERMISSIVE: &str =
        r#"workload="api", port="", mode="PERMISSIVE", source="default", policy="""#;
    const API_STRICT: &str =
        r#"workload="api", port="", mode="STRICT", source="workload", policy="foo/api""#;
    const WEB_STRICT: &str =
        r#"workload="web", port="", mode="STRICT", source="namespace", policy="foo/default""#;

    /// A `k="v", …` label list as a sample's labels, without the empty ones (Prometheus drops
    /// them).
    fn answer_sample(instance: &str, labels: &str) -> Sample {
        let mut pairs = vec![("instance", instance), ("namespace", "foo")];
        for pair in labels.split(", ") {
            if let Some((k, v)) = pair.split_once('=') {
                pairs.push((k, v.trim_matches('"')));
            }
        }
        pairs.retain(|(_, v)| !v.is_empty());
        sample(&pairs)
    }

    const API_NAMESPACE: &str =
        r#"workload="api", port="", mode="STRICT", source="namespace", policy="foo/default""#;
    const API_9090_DISABLE: &str =
        r#"workload="api", port="9090", mode="DISABLE", source="port", policy="foo/api""#;

    /// Two agents host foo/api: both see it STRICT namespace-wide, only agent a sees a
    /// port-level DISABLE on 9090 (a policy change that reached one agent). On Prometheus'
    /// engine the query keeps each agent's view apart (by `instance`), and those views make the
    /// mode UNKNOWN, naming both — not "STRICT with port 9090 DISABLE" as if all agreed; both
    /// agents seeing the override: that mode.
    #[test]
    fn a_port_override_one_agent_lacks_is_unknown() {
        let mut input = String::new();
        input += &input_series("a", API_NAMESPACE, "1x20");
        input += &input_series("b", API_NAMESPACE, "1x20");
        input += &input_series("a", API_9090_DISABLE, "1x20");
        let answer = [
            ("a", API_NAMESPACE),
            ("b", API_NAMESPACE),
            ("a", API_9090_DISABLE),
        ];
        let mut test = format!(
            "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n      - expr: '{}'\n        eval_time: 20m\n        exp_samples:\n",
            query("{namespace=\"foo\"}")
        );
        for (instance, l) in answer {
            let l = l.replace(r#"port="", "#, "");
            test += &format!(
                "          - labels: '{{instance=\"{instance}\", namespace=\"foo\", {l}}}'\n            value: 1\n"
            );
        }
        run_promtool("modes-port-override", &test);
        let key = ("foo".to_owned(), "api".to_owned());
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let samples: Vec<Sample> = order
                .iter()
                .map(|&i| answer_sample(answer[i].0, answer[i].1))
                .collect();
            let m = modes(&samples);
            let api = &m[&key];
            assert_eq!(api.mode, Mode::Unknown, "{order:?}: {api:?}");
            assert_eq!(api.on_port(9090).0, Mode::Unknown, "{order:?}");
            let why = api.undecided.as_deref().unwrap_or_default();
            assert!(why.starts_with(DISAGREE), "{why}");
            assert!(
                why.contains("STRICT (namespace foo/default) with port 9090 DISABLE")
                    && why.contains("and STRICT (namespace foo/default)"),
                "{why}"
            );
        }
        // both agents see the override: it holds
        let m = modes(&[
            answer_sample("a", API_NAMESPACE),
            answer_sample("b", API_NAMESPACE),
            answer_sample("a", API_9090_DISABLE),
            answer_sample("b", API_9090_DISABLE),
        ]);
        assert_eq!(m[&key].mode, Mode::Strict);
        assert_eq!(
            m[&key].on_port(9090),
            (Mode::Disable, ModeSource::Port, Some("foo/api"))
        );
    }

    /// The first and last steps each mode's series showed at, on Prometheus' engine: api was
    /// PERMISSIVE until 10m (stale at 11m) and STRICT from 11m, web STRICT all along (a
    /// 20-minute window walked in 5 s steps, evaluated at 20m).
    #[test]
    fn the_shown_queries_on_prometheus_engine() {
        let r = Resolution::of(1200);
        assert_eq!((r.step, r.lookback), (5, 300));
        let mut input = String::new();
        input += &input_series("a", API_PERMISSIVE, "1x10 stale");
        input += &input_series("a", API_STRICT, "_x11 1x9");
        input += &input_series("a", WEB_STRICT, "1x20");
        input += &input_series("b", WEB_STRICT, "_x5 1x15");
        let own = "{namespace=\"foo\"}";
        let labels = |l: &str| l.replace(r#"port="", "#, "").replace(r#", policy="""#, "");
        let mut test = format!(
            "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n"
        );
        for (agg, expected) in [
            (
                "min",
                [(API_PERMISSIVE, 5), (API_STRICT, 660), (WEB_STRICT, 5)],
            ),
            (
                "max",
                [
                    (API_PERMISSIVE, 655),
                    (API_STRICT, 1200),
                    (WEB_STRICT, 1200),
                ],
            ),
        ] {
            test += &format!(
                "      - expr: '{}'\n        eval_time: 20m\n        exp_samples:\n",
                shown_query(own, &r, agg)
            );
            for (l, v) in expected {
                test += &format!(
                    "          - labels: '{{namespace=\"foo\", {}}}'\n            value: {v}\n",
                    labels(l)
                );
            }
        }
        run_promtool("modes-shown", &test);
    }

    /// Since when a mode holds, from those answers: the latest of its series' first steps and
    /// the step after its other modes' last, plus a step and the lookback; unknown without a
    /// first step.
    #[test]
    fn since_is_when_the_mode_showed_plus_the_margin() {
        let r = Resolution::of(1200);
        let at = |pairs: &[(&str, &str)], value: f64| Sample {
            value,
            ..sample(pairs)
        };
        let api_strict = [
            ("namespace", "foo"),
            ("workload", "api"),
            ("mode", "STRICT"),
            ("source", "workload"),
            ("policy", "foo/api"),
        ];
        let api_permissive = [
            ("namespace", "foo"),
            ("workload", "api"),
            ("mode", "PERMISSIVE"),
            ("source", "default"),
        ];
        let web = [
            ("namespace", "foo"),
            ("workload", "web"),
            ("mode", "STRICT"),
            ("source", "namespace"),
            ("policy", "foo/default"),
        ];
        // the answer of now names each agent (`instance`), the shown queries do not
        let with_instance = |pairs: &[(&'static str, &'static str)]| {
            let mut s = sample(pairs);
            s.labels.insert("instance".into(), "a".into());
            s
        };
        let now = [with_instance(&api_strict), with_instance(&web)];
        let first = [
            at(&api_permissive, 5.0),
            at(&api_strict, 660.0),
            at(&web, 5.0),
        ];
        let last = [
            at(&api_permissive, 655.0),
            at(&api_strict, 1200.0),
            at(&web, 1200.0),
        ];
        let mut m = modes(&now);
        stamp_since(&mut m, &now, &first, &last, &r);
        let since = |m: &Modes, wl: &str| m[&("foo".to_owned(), wl.to_owned())].since;
        let prometheus = |s: u64| {
            Some(Since {
                at: s * 1_000_000_000,
                basis: SinceBasis::Prometheus,
            })
        };
        assert_eq!(since(&m, "api"), prometheus(660 + 5 + 300));
        assert_eq!(since(&m, "web"), prometheus(5 + 5 + 300));
        // the PERMISSIVE series showed until later than STRICT first did (a flip back):
        // since the step after it last showed
        let last_late = [at(&api_permissive, 900.0)];
        stamp_since(&mut m, &now, &first, &last_late, &r);
        assert_eq!(since(&m, "api"), prometheus(905 + 5 + 300));
        // no first step for a series of now: not known
        stamp_since(&mut m, &now, &first[..1], &last, &r);
        assert_eq!(since(&m, "api"), None);
        assert_eq!(since(&m, "web"), None);
    }
}
