//! The PeerAuthentication a verdict suggests, checked against the policies in force.
//!
//! PURE. A suggestion is a [`PeerAuthentication`] value: a new policy, or the policy that
//! decides the mode today, edited (same namespace, name and selector, so `kubectl apply`
//! replaces it). When the policy set is known, applying the suggestion is simulated with the
//! one resolver ([`crate::peer_auth::resolve`]) and the suggestion is withheld, with why,
//! unless the result is exactly what the verdict claims: the workload (or namespace) STRICT
//! where it is ready, every other port at today's mode, and no other workload changed.

use std::collections::BTreeMap;

use crate::peer_auth::{resolve, EffectiveMode, Mode, ModeSource, PeerAuthentication, PodLabels};

/// The creation time a policy not yet applied sorts by: after every real one (it is the newest).
const NOT_YET_CREATED: &str = "9999-12-31T23:59:59Z";

/// The most other workloads a withheld suggestion or a note names.
const NAMED: usize = 5;

/// What the suggestion is checked against.
pub(super) struct Context<'a> {
    /// The PeerAuthentications in force, when known (then every suggestion is simulated).
    pub policies: Option<&'a [PeerAuthentication]>,
    pub root_namespace: &'a str,
    /// Every workload known or seen in the namespace in question: (name, its pods' labels).
    pub workloads: Vec<(&'a str, &'a PodLabels)>,
}

/// The outcome: a policy, nothing to suggest, or a policy withheld and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Suggestion {
    Policy(Suggested),
    /// A policy whose selector rests on labels not known here: shown with what it assumes,
    /// so that the reader checks it before applying (the cluster view knows no pod labels).
    Assumed(Suggested, String),
    Nothing,
    Withheld(String),
}

/// A suggested policy, and what it replaces (its rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Suggested {
    pub policy: PeerAuthentication,
    /// The policy of the same namespace and name as it is today, which applying the
    /// suggestion replaces; `None`: a new policy.
    pub was: Option<PeerAuthentication>,
    /// Whether `was` is known for sure: the policy set is known, or the policy in force was
    /// named by the resolution. Otherwise a policy of that name may exist unseen.
    pub checked: bool,
}

/// "a, b, c and 2 more".
fn names(mut all: Vec<&str>) -> String {
    all.sort_unstable();
    all.dedup();
    let more = all.len().saturating_sub(NAMED);
    let mut s = all.into_iter().take(NAMED).collect::<Vec<_>>().join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// A selector, and what it assumes when labels it depends on are not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Selected {
    pub labels: BTreeMap<String, String>,
    pub assumes: Option<String>,
}

/// The labels that select `workload` and no other workload of its namespace (`others`): its
/// `app` (or `app.kubernetes.io/name`) label first, then its other common labels in order
/// (Istio's own `*istio.io/*` last), each added only when it leaves out another workload,
/// until none is left. No unique set, or more labels than are kept: why not. Its own labels
/// not known: `app: <workload>`, the convention the suggestion then says it assumes; another
/// workload's labels not known: the set unique among the known, naming the unchecked ones.
pub(super) fn unique_selector(
    workload: &str,
    labels: &PodLabels,
    others: &[(&str, &PodLabels)],
) -> Result<Selected, String> {
    let own = match labels {
        PodLabels::Known { labels, .. } if !labels.is_empty() => labels,
        PodLabels::Known { .. } => {
            return Err(format!(
                "{workload}'s pods carry no label they all share, so no selector can select them"
            ))
        }
        PodLabels::TooMany { .. } => {
            return Err(format!(
                "{workload}'s pods carry more labels than are kept, so no selector can be checked"
            ))
        }
        _ => {
            return Ok(Selected {
                labels: BTreeMap::from([("app".to_owned(), workload.to_owned())]),
                assumes: Some(format!(
                    "the pod labels are not known here, so the selector assumes {workload}'s pods are labelled app: {workload} and no other workload's are: check before applying"
                )),
            })
        }
    };
    let unknown: Vec<&str> = others
        .iter()
        .filter(|(_, l)| !matches!(l, PodLabels::Known { .. }))
        .map(|(w, _)| *w)
        .collect();
    let assumes = (!unknown.is_empty()).then(|| {
        format!(
            "the pod labels of {} in the namespace are not known, so the selector was not checked against them: check before applying",
            names(unknown)
        )
    });
    let others: Vec<(&str, &PodLabels)> = others
        .iter()
        .filter(|(_, l)| matches!(l, PodLabels::Known { .. }))
        .copied()
        .collect();
    let app = crate::peer_auth::APP_KEYS
        .iter()
        .filter_map(|k| own.get_key_value(*k));
    let plain = own
        .iter()
        .filter(|(k, _)| !crate::peer_auth::APP_KEYS.contains(&k.as_str()));
    let keys = app
        .chain(plain.clone().filter(|(k, _)| !k.contains("istio.io/")))
        .chain(plain.filter(|(k, _)| k.contains("istio.io/")));
    let mut selector = BTreeMap::new();
    // others the selector may still select (a label their pods disagree on may match)
    let mut left: Vec<&(&str, &PodLabels)> = others.iter().collect();
    for (k, v) in keys {
        if left.is_empty() && !selector.is_empty() {
            break;
        }
        let mut with = selector.clone();
        with.insert(k.clone(), v.clone());
        let still: Vec<_> = left
            .iter()
            .copied()
            .filter(|(_, l)| l.selected_by(&with) != Ok(false))
            .collect();
        if selector.is_empty() || still.len() < left.len() {
            selector = with;
            left = still;
        }
    }
    if left.is_empty() {
        Ok(Selected {
            labels: selector,
            assumes,
        })
    } else {
        Err(format!(
            "no set of {workload}'s labels leaves out {}: a policy would select them too",
            names(left.iter().map(|(w, _)| *w).collect())
        ))
    }
}

/// The mode on every port of `ports`, and the workload's.
fn modes_on(m: &EffectiveMode, ports: &[u16]) -> (Mode, Vec<Mode>) {
    (m.mode, ports.iter().map(|&p| m.on_port(p).0).collect())
}

/// The policies that can decide a mode in `namespace` (its own and the root namespace's: the
/// resolution reads no other), so that a simulation copies and scans only those.
fn deciding_in(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    namespace: &str,
) -> Vec<PeerAuthentication> {
    policies
        .iter()
        .filter(|p| p.namespace == namespace || p.namespace == root_namespace)
        .cloned()
        .collect()
}

/// `policies` with `p` applied (`kubectl apply`: it replaces the one of the same namespace
/// and name, keeping its creation time).
fn applied(policies: &[PeerAuthentication], p: &PeerAuthentication) -> Vec<PeerAuthentication> {
    let mut out: Vec<PeerAuthentication> = policies
        .iter()
        .filter(|q| (&q.namespace, &q.name) != (&p.namespace, &p.name))
        .cloned()
        .collect();
    let created = policies
        .iter()
        .find(|q| (&q.namespace, &q.name) == (&p.namespace, &p.name))
        .map_or_else(|| NOT_YET_CREATED.to_owned(), |q| q.created.clone());
    out.push(PeerAuthentication {
        created,
        ..p.clone()
    });
    out
}

/// What a workload's suggestion is for.
pub(super) struct WorkloadAsk<'a> {
    pub namespace: &'a str,
    pub workload: &'a str,
    pub labels: &'a PodLabels,
    /// The whole workload is ready: STRICT for it.
    pub ready: bool,
    /// The ports judged (all seen), and those ready (STRICT for them).
    pub judged_ports: &'a [u16],
    pub ready_ports: &'a [u16],
    /// Its mode today, when the policies (or their resolution) are known.
    pub mode: Option<&'a EffectiveMode>,
}

/// The policy that makes a workload STRICT where it is ready: STRICT for a ready workload;
/// else its mode today kept, and STRICT through `portLevelMtls` on exactly the ready ports.
pub(super) fn for_workload(ask: &WorkloadAsk<'_>, ctx: &Context<'_>) -> Suggestion {
    if !ask.ready && ask.ready_ports.is_empty() {
        return Suggestion::Nothing;
    }
    if ask.namespace == ctx.root_namespace {
        return Suggestion::Withheld(
            "Istio ignores a policy with a selector in its root namespace".to_owned(),
        );
    }
    if let Some(m) = ask.mode.filter(|m| !m.is_known()) {
        return Suggestion::Withheld(format!(
            "the mode today is {}, so no policy can be shown to take effect",
            m.describe()
        ));
    }
    let in_namespace =
        |p: &&PeerAuthentication| p.namespace == ask.namespace && p.namespace != ctx.root_namespace;
    // the workload-level policy in force: the one to edit
    let existing = match ctx.policies {
        Some(set) => set
            .iter()
            .filter(in_namespace)
            .filter(|p| {
                p.selector
                    .as_ref()
                    .is_some_and(|s| ask.labels.selected_by(s) == Ok(true))
            })
            .min_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)))
            .cloned(),
        None => match ask.mode {
            Some(m) if m.source == ModeSource::Workload || !m.ports.is_empty() => {
                return Suggestion::Withheld(format!(
                    "its mode comes from the workload-level policy {}, which is not known here to be edited",
                    m.policy.as_deref().unwrap_or("in force")
                ))
            }
            _ => None,
        },
    };
    let others: Vec<(&str, &PodLabels)> = ctx
        .workloads
        .iter()
        .filter(|(w, _)| *w != ask.workload)
        .copied()
        .collect();
    let strict_ports = if ask.ready {
        ask.judged_ports
    } else {
        ask.ready_ports
    };
    let mut assumes = None;
    let mut p = match existing {
        Some(p) => p,
        None => match unique_selector(ask.workload, ask.labels, &others) {
            Ok(selected) => {
                assumes = selected.assumes;
                PeerAuthentication {
                    namespace: ask.namespace.to_owned(),
                    name: format!("{}-strict", ask.workload),
                    created: String::new(),
                    selector: Some(selected.labels),
                    mode: Mode::Unset,
                    port_level: BTreeMap::new(),
                    edited: false,
                }
            }
            Err(why) => return Suggestion::Withheld(why),
        },
    };
    if ask.ready {
        p.mode = Mode::Strict;
        // STRICT everywhere it was judged; a port not seen keeps its override
        p.port_level.retain(|port, _| !strict_ports.contains(port));
    } else {
        for &port in strict_ports {
            p.port_level.insert(port, Mode::Strict);
        }
    }
    let checked = match ctx.policies {
        Some(set) => {
            let set = deciding_in(set, ctx.root_namespace, ask.namespace);
            simulate_workload(ask, ctx, &set, &p, &others, strict_ports)
        }
        // a new policy, as far as the modes tell: one of its name may exist unseen
        None => Suggestion::Policy(Suggested {
            policy: p,
            was: None,
            checked: false,
        }),
    };
    match (checked, assumes) {
        (Suggestion::Policy(p), Some(why)) => Suggestion::Assumed(p, why),
        (other, _) => other,
    }
}

/// The suggestion `p` if applying it to `set` makes exactly what the verdict claims.
fn simulate_workload(
    ask: &WorkloadAsk<'_>,
    ctx: &Context<'_>,
    set: &[PeerAuthentication],
    p: &PeerAuthentication,
    others: &[(&str, &PodLabels)],
    strict_ports: &[u16],
) -> Suggestion {
    let after_set = applied(set, p);
    let resolve_in = |policies: &[PeerAuthentication], labels: &PodLabels| {
        resolve(policies, ctx.root_namespace, ask.namespace, labels)
    };
    let before = resolve_in(set, ask.labels);
    let after = resolve_in(&after_set, ask.labels);
    let (mode_before, ports_before) = modes_on(&before, ask.judged_ports);
    let (mode_after, ports_after) = modes_on(&after, ask.judged_ports);
    let want_mode = if ask.ready { Mode::Strict } else { mode_before };
    let want_ports: Vec<Mode> = ask
        .judged_ports
        .iter()
        .zip(&ports_before)
        .map(|(port, &m)| {
            if strict_ports.contains(port) {
                Mode::Strict
            } else {
                m
            }
        })
        .collect();
    if (mode_after, &ports_after) != (want_mode, &want_ports) {
        return Suggestion::Withheld(format!(
            "applying {} would leave the workload {} (simulated with the policies in force), not STRICT where it is ready",
            p.id(),
            after.describe()
        ));
    }
    if (mode_after, &ports_after) == (mode_before, &ports_before) {
        return Suggestion::Nothing;
    }
    let changed: Vec<&str> = others
        .iter()
        .filter(|(_, labels)| {
            // its mode, ports, or the policy that decides them
            resolve_in(set, labels) != resolve_in(&after_set, labels)
        })
        .map(|(w, _)| *w)
        .collect();
    if !changed.is_empty() {
        return Suggestion::Withheld(format!(
            "applying {} would also change the mode of {}, or the policy that sets it",
            p.id(),
            names(changed)
        ));
    }
    Suggestion::Policy(Suggested {
        policy: p.clone(),
        was: same_name(set, p),
        checked: true,
    })
}

/// The policy of `set` that applying `p` replaces (same namespace and name), as it is today.
fn same_name(set: &[PeerAuthentication], p: &PeerAuthentication) -> Option<PeerAuthentication> {
    set.iter()
        .find(|q| (&q.namespace, &q.name) == (&p.namespace, &p.name))
        .cloned()
}

/// A namespace-wide (or, in the root namespace, mesh-wide) STRICT policy: the one in force
/// edited, else a new `default`; with the workloads it would not make STRICT (their own policy
/// overrides it), named. `modes` are the namespace's (or mesh's) workloads' modes today.
pub(super) fn for_namespace_wide(
    namespace: &str,
    ctx: &Context<'_>,
    modes: &[(&str, Option<&EffectiveMode>)],
) -> (Suggestion, Option<String>) {
    let mesh = namespace == ctx.root_namespace;
    let wide = |p: &&PeerAuthentication| p.namespace == namespace && p.selector.is_none();
    let existing = match ctx.policies {
        Some(set) => set
            .iter()
            .filter(wide)
            .min_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)))
            .cloned(),
        None => {
            let level = if mesh {
                ModeSource::Mesh
            } else {
                ModeSource::Namespace
            };
            if let Some((w, m)) = modes
                .iter()
                .find_map(|(w, m)| m.filter(|m| !m.is_known()).map(|m| (w, m)))
            {
                return (
                    Suggestion::Withheld(format!(
                        "the mode of {w} today is {}, so the policy in force is not known",
                        m.describe()
                    )),
                    None,
                );
            }
            // the policy in force at this level, as the resolution named it: its mode is the
            // level's (a policy without a selector has no `portLevelMtls` that counts)
            modes
                .iter()
                .filter_map(|(_, m)| {
                    let m = m.filter(|m| m.source == level)?;
                    Some((m.policy.as_deref()?, m.mode))
                })
                .find_map(|(id, mode)| Some((id.split_once('/')?, mode)))
                .map(|((ns, name), mode)| PeerAuthentication {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    created: String::new(),
                    selector: None,
                    mode,
                    port_level: BTreeMap::new(),
                    edited: false,
                })
        }
    };
    // what applying the suggestion replaces: known with the policy set, or named by the modes
    let (was, checked) = match ctx.policies {
        Some(_) => (None, true),
        None => (existing.clone(), existing.is_some()),
    };
    let mut p = existing.unwrap_or_else(|| PeerAuthentication {
        namespace: namespace.to_owned(),
        name: "default".to_owned(),
        created: String::new(),
        selector: None,
        mode: Mode::Strict,
        port_level: BTreeMap::new(),
        edited: false,
    });
    p.mode = Mode::Strict;
    let simulated = ctx
        .policies
        .map(|set| applied(&deciding_in(set, ctx.root_namespace, namespace), &p));
    if let (true, Some(after_set)) = (mesh, &simulated) {
        // the mesh level alone: a namespace without policies of its own
        let m = resolve(after_set, ctx.root_namespace, "", &PodLabels::Unknown);
        if (m.source, m.mode) != (ModeSource::Mesh, Mode::Strict) {
            return (
                Suggestion::Withheld(format!(
                    "applying {} would leave the mesh level {}",
                    p.id(),
                    m.describe()
                )),
                None,
            );
        }
    }
    let overridden: Vec<&str> = match (&simulated, mesh) {
        (Some(after_set), false) => ctx
            .workloads
            .iter()
            .filter(|(_, labels)| {
                let a = resolve(after_set, ctx.root_namespace, namespace, labels);
                a.mode != Mode::Strict || a.ports.values().any(|p| p.mode != Mode::Strict)
            })
            .map(|(w, _)| *w)
            .collect(),
        // as the resolution today names them: a narrower level that sets its own mode
        _ => modes
            .iter()
            .filter(|(_, m)| {
                m.is_some_and(|m| {
                    let narrower = match m.source {
                        ModeSource::Workload | ModeSource::Port => true,
                        ModeSource::Namespace => mesh,
                        ModeSource::Default | ModeSource::Mesh => false,
                    };
                    (narrower && m.mode != Mode::Strict)
                        || m.ports.values().any(|p| p.mode != Mode::Strict)
                })
            })
            .map(|(w, _)| *w)
            .collect(),
    };
    let note = (!overridden.is_empty()).then(|| {
        format!(
            "{} keep the mode their own policy sets: it overrides {}",
            names(overridden),
            p.id()
        )
    });
    let was = match ctx.policies {
        Some(set) => same_name(set, &p),
        None => was,
    };
    (
        Suggestion::Policy(Suggested {
            policy: p,
            was,
            checked,
        }),
        note,
    )
}

#[cfg(test)]
mod tests;
