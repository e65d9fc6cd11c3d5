//! What is known of a workload's pod labels, and whether a `selector.matchLabels` selects it.
//!
//! PURE. A selector is decided only from labels known to be on every pod of the workload: a
//! key whose value differs between pods (a rollout that changes `version`, or a key set per
//! pod such as `pod-template-hash`), labels that were never given (a workloads file without
//! `labels`, series from Prometheus) or a label set over the bounds leave it undecided
//! (`None`), never guessed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Labels kept per workload at most; a pod with more is [`PodLabels::TooMany`].
pub const MAX_POD_LABELS: usize = 64;
/// Bytes of label keys and values kept per workload at most; beyond, [`PodLabels::TooMany`].
pub const MAX_POD_LABEL_BYTES: usize = 4096;

/// Keys Kubernetes sets per pod, per ReplicaSet/revision or per Job: their values differ
/// between pods of one workload, so they are not kept (a selector on them stays undecided).
pub const PER_POD_KEYS: [&str; 9] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// The labels a suggested policy prefers for its selector, in order.
pub const APP_KEYS: [&str; 2] = ["app", "app.kubernetes.io/name"];

/// What is known of a workload's pod labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodLabels {
    /// The source did not say.
    #[default]
    Unknown,
    /// Over [`MAX_POD_LABELS`] or [`MAX_POD_LABEL_BYTES`]: not kept, except the first of
    /// [`APP_KEYS`] present (for the suggested policy's selector).
    TooMany { app: Option<(String, String)> },
    /// All the pods' labels: `labels` carry one value on every pod; `varying` are keys some pod
    /// lacks or that differ between pods (among them the [`PER_POD_KEYS`] present).
    Known {
        labels: BTreeMap<String, String>,
        varying: BTreeSet<String>,
    },
}

/// Why a selector cannot be decided for a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecided {
    /// Its labels are not known.
    Unknown,
    /// It has more labels than are kept.
    TooMany,
    /// This key's value is not one value on every pod.
    Varying(String),
}

impl std::fmt::Display for Undecided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecided::Unknown => f.write_str("its pod labels are not known"),
            Undecided::TooMany => write!(
                f,
                "its pods carry more than {MAX_POD_LABELS} labels or {MAX_POD_LABEL_BYTES} bytes of labels (not kept)"
            ),
            Undecided::Varying(k) if PER_POD_KEYS.contains(&k.as_str()) => {
                write!(f, "label `{k}` differs from pod to pod")
            }
            Undecided::Varying(k) => write!(f, "its pods disagree on label `{k}`"),
        }
    }
}

fn over_bounds(labels: &BTreeMap<String, String>) -> bool {
    labels.len() > MAX_POD_LABELS
        || labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_POD_LABEL_BYTES
}

fn app_of(labels: &BTreeMap<String, String>) -> Option<(String, String)> {
    APP_KEYS
        .iter()
        .find_map(|k| labels.get(*k).map(|v| ((*k).to_owned(), v.clone())))
}

impl PodLabels {
    /// One pod's labels as the API gives them: the [`PER_POD_KEYS`] become `varying`; over the
    /// bounds, [`PodLabels::TooMany`].
    pub fn of_pod(mut labels: BTreeMap<String, String>) -> PodLabels {
        if over_bounds(&labels) {
            return PodLabels::TooMany {
                app: app_of(&labels),
            };
        }
        let varying = PER_POD_KEYS
            .iter()
            .filter(|k| labels.remove(**k).is_some())
            .map(|k| (*k).to_owned())
            .collect();
        PodLabels::Known { labels, varying }
    }

    /// Labels a source declares as all of a workload's (a workloads file); none given is
    /// [`PodLabels::Unknown`].
    pub fn declared(labels: BTreeMap<String, String>) -> PodLabels {
        if labels.is_empty() {
            PodLabels::Unknown
        } else {
            PodLabels::of_pod(labels)
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, PodLabels::Unknown)
    }

    /// The value every pod carries for `key`, when known.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self {
            PodLabels::Known { labels, .. } => labels.get(key).map(String::as_str),
            PodLabels::TooMany { app: Some((k, v)) } if k == key => Some(v),
            _ => None,
        }
    }

    /// The labels on every pod (none unless [`PodLabels::Known`]).
    pub fn common(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            PodLabels::Known { labels, .. } => Some(labels),
            _ => None,
        }
    }

    /// The labels of two sets of pods of one workload: what both carry alike. Unknown says
    /// nothing (the other wins); too many stays too many.
    pub fn merge(&self, other: &PodLabels) -> PodLabels {
        match (self, other) {
            (PodLabels::Unknown, x) | (x, PodLabels::Unknown) => x.clone(),
            (PodLabels::TooMany { app: a }, PodLabels::TooMany { app: b }) => PodLabels::TooMany {
                app: a.clone().filter(|a| Some(a) == b.as_ref()),
            },
            (PodLabels::TooMany { app }, PodLabels::Known { labels, varying })
            | (PodLabels::Known { labels, varying }, PodLabels::TooMany { app }) => {
                let same = app_of(labels).filter(|a| !varying.contains(&a.0));
                PodLabels::TooMany {
                    app: app.clone().filter(|a| Some(a) == same.as_ref()),
                }
            }
            (
                PodLabels::Known {
                    labels: la,
                    varying: va,
                },
                PodLabels::Known {
                    labels: lb,
                    varying: vb,
                },
            ) => {
                let mut varying: BTreeSet<String> = va.union(vb).cloned().collect();
                let mut labels = BTreeMap::new();
                for (k, v) in la {
                    match lb.get(k) {
                        Some(w) if w == v => {
                            labels.insert(k.clone(), v.clone());
                        }
                        _ => {
                            varying.insert(k.clone());
                        }
                    }
                }
                varying.extend(lb.keys().filter(|k| !la.contains_key(*k)).cloned());
                labels.retain(|k, _| !varying.contains(k));
                PodLabels::Known { labels, varying }
            }
        }
    }

    /// Whether `selector` (`matchLabels`: all must match) selects every pod (`Ok(true)`), none
    /// (`Ok(false)`), or cannot be told (`Err`: why). A label that does not match decides
    /// `false` even when others are undecided.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> Result<bool, Undecided> {
        let (labels, varying) = match self {
            PodLabels::Unknown => return Err(Undecided::Unknown),
            PodLabels::TooMany { .. } => return Err(Undecided::TooMany),
            PodLabels::Known { labels, varying } => (labels, varying),
        };
        let mut undecided = None;
        for (k, v) in selector {
            if varying.contains(k) {
                undecided.get_or_insert_with(|| Undecided::Varying(k.clone()));
            } else if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
        undecided.map_or(Ok(true), Err)
    }

    /// Heap bytes held (a B-tree allocates leaves of 11 entries).
    pub fn heap_bytes(&self) -> usize {
        const LEAF: usize = 11 * 2 * std::mem::size_of::<String>() + 16;
        const SET_LEAF: usize = 11 * std::mem::size_of::<String>() + 16;
        match self {
            PodLabels::Unknown => 0,
            PodLabels::TooMany { app } => {
                app.as_ref().map_or(0, |(k, v)| k.capacity() + v.capacity())
            }
            PodLabels::Known { labels, varying } => {
                labels.len().div_ceil(11) * LEAF
                    + labels
                        .iter()
                        .map(|(k, v)| k.capacity() + v.capacity())
                        .sum::<usize>()
                    + varying.len().div_ceil(11) * SET_LEAF
                    + varying.iter().map(String::capacity).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn per_pod_keys_are_dropped_and_undecided() {
        let l = PodLabels::of_pod(map(&[
            ("app", "web"),
            ("version", "v1"),
            ("pod-template-hash", "5b7c9f8d4"),
        ]));
        assert_eq!(l.get("pod-template-hash"), None);
        assert_eq!(l.selected_by(&map(&[("version", "v1")])), Ok(true));
        assert_eq!(
            l.selected_by(&map(&[("app", "web"), ("version", "v1")])),
            Ok(true),
            "the hash does not break matching"
        );
        assert_eq!(l.selected_by(&map(&[("version", "v2")])), Ok(false));
        assert_eq!(
            l.selected_by(&map(&[("istio", "ingressgateway")])),
            Ok(false)
        );
        assert_eq!(
            l.selected_by(&map(&[("pod-template-hash", "5b7c9f8d4")])),
            Err(Undecided::Varying("pod-template-hash".into()))
        );
        // another ReplicaSet's hash is the same workload's labels
        let other = PodLabels::of_pod(map(&[
            ("app", "web"),
            ("version", "v1"),
            ("pod-template-hash", "77f9c6b5d"),
        ]));
        assert_eq!(l, other);
    }

    #[test]
    fn unknown_labels_decide_nothing() {
        let l = PodLabels::declared(BTreeMap::new());
        assert_eq!(l, PodLabels::Unknown);
        assert_eq!(
            l.selected_by(&map(&[("app", "web")])),
            Err(Undecided::Unknown)
        );
    }

    #[test]
    fn over_the_bounds_is_too_many_keeping_app() {
        let mut many: BTreeMap<String, String> = (0..=MAX_POD_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        many.insert("app".into(), "web".into());
        let l = PodLabels::of_pod(many);
        assert_eq!(
            l,
            PodLabels::TooMany {
                app: Some(("app".into(), "web".into()))
            }
        );
        assert_eq!(l.get("app"), Some("web"));
        assert_eq!(
            l.selected_by(&map(&[("app", "web")])),
            Err(Undecided::TooMany)
        );
        // exactly at the bounds is kept
        let at: BTreeMap<String, String> = (0..MAX_POD_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(matches!(PodLabels::of_pod(at), PodLabels::Known { .. }));
        let big = map(&[("a", &"x".repeat(MAX_POD_LABEL_BYTES))]);
        assert!(matches!(
            PodLabels::of_pod(big),
            PodLabels::TooMany { app: None }
        ));
    }

    #[test]
    fn pods_that_disagree_leave_that_key_undecided() {
        let v1 = PodLabels::of_pod(map(&[("app", "web"), ("version", "v1")]));
        let v2 = PodLabels::of_pod(map(&[("app", "web"), ("version", "v2"), ("canary", "y")]));
        let both = v1.merge(&v2);
        assert_eq!(both, v2.merge(&v1), "symmetric");
        assert_eq!(both.selected_by(&map(&[("app", "web")])), Ok(true));
        assert_eq!(
            both.selected_by(&map(&[("version", "v1")])),
            Err(Undecided::Varying("version".into()))
        );
        assert_eq!(
            both.selected_by(&map(&[("canary", "y")])),
            Err(Undecided::Varying("canary".into()))
        );
        // a label that matches no pod decides, whatever the others
        assert_eq!(
            both.selected_by(&map(&[("version", "v1"), ("app", "api")])),
            Ok(false)
        );
        // unknown says nothing; too many stays too many
        assert_eq!(PodLabels::Unknown.merge(&v1), v1);
        let many = PodLabels::TooMany {
            app: Some(("app".into(), "web".into())),
        };
        assert_eq!(v1.merge(&many), many);
        assert_eq!(
            PodLabels::of_pod(map(&[("app", "api")])).merge(&many),
            PodLabels::TooMany { app: None }
        );
    }

    #[test]
    fn heap_bytes_count_labels() {
        let small = PodLabels::of_pod(map(&[("app", "web")]));
        let more = PodLabels::of_pod(map(&[("app", "web"), ("version", "v1")]));
        assert!(more.heap_bytes() > small.heap_bytes());
        assert_eq!(PodLabels::Unknown.heap_bytes(), 0);
    }
}
