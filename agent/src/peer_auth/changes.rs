//! When the PeerAuthentications changed, and whose mode each change may have touched: the
//! agent's mode clock dates a mode by the latest change that may have touched it, so a
//! STRICT → PERMISSIVE → STRICT flip between two looks at the modes still moves `since`.
//!
//! PURE: changes (times and scopes) in, the latest touching change out. The watcher records one
//! change per event that changed a policy (its scope before and after), a relist one per policy
//! it added, dropped or changed; the log is bounded, and what falls off it counts as a change
//! that touched every workload (never a mode dated from before a change not kept).

use std::collections::{BTreeMap, VecDeque};

use super::{PeerAuthentication, PodLabels};
use crate::Nanos;

/// The most changes kept. The agent reads the log at least once a second while it changes
/// (every change gives the identity map a new generation, and the capture thread stamps the
/// modes then), so this only has to hold a burst: a `kubectl apply` of a directory.
pub const MAX_LOGGED_CHANGES: usize = 256;

/// One change of one policy, at the time the watcher saw it: the scope it applied to (before
/// and after are recorded apart when its selector changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    pub at: Nanos,
    pub namespace: String,
    /// `None`: namespace-wide (mesh-wide in the root namespace).
    pub selector: Option<BTreeMap<String, String>>,
}

impl PolicyChange {
    /// The changes from `before` to `after` (one policy; `None`: absent) at `at`: none when it
    /// is the same, else its scope before and after (once when the same).
    pub fn between(
        before: Option<&PeerAuthentication>,
        after: Option<&PeerAuthentication>,
        at: Nanos,
    ) -> Vec<PolicyChange> {
        if before == after {
            return Vec::new();
        }
        let scope = |p: &PeerAuthentication| PolicyChange {
            at,
            namespace: p.namespace.clone(),
            selector: p.selector.clone(),
        };
        let mut out: Vec<PolicyChange> = before.into_iter().map(scope).collect();
        if let Some(a) = after.map(scope) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Whether it may have touched the mode of a workload in `namespace` with `labels`: a
    /// mesh-wide or namespace-wide policy, or a selector that selects it or cannot be told not
    /// to.
    pub fn may_touch(&self, root_namespace: &str, namespace: &str, labels: &PodLabels) -> bool {
        match &self.selector {
            None => self.namespace == root_namespace || self.namespace == namespace,
            Some(s) => self.namespace == namespace && labels.selected_by(s) != Ok(false),
        }
    }
}

/// The changes seen, oldest first, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeLog {
    changes: VecDeque<PolicyChange>,
    /// The latest time of a change that fell off the log (0: none did).
    lost_until: Nanos,
}

impl ChangeLog {
    /// Record `changes` (in the order they happened).
    pub fn record(&mut self, changes: impl IntoIterator<Item = PolicyChange>) {
        for c in changes {
            if self.changes.len() >= MAX_LOGGED_CHANGES {
                if let Some(old) = self.changes.pop_front() {
                    self.lost_until = self.lost_until.max(old.at);
                }
            }
            self.changes.push_back(c);
        }
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.lost_until == 0
    }

    /// The latest change that may have touched a workload in `namespace` whose pods carry any
    /// of `labels` (a workload's sets of pods); a change no longer kept counts as one.
    pub fn last_touching<'a>(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: impl IntoIterator<Item = &'a PodLabels> + Clone,
    ) -> Option<Nanos> {
        let touching = self
            .changes
            .iter()
            .filter(|c| {
                labels
                    .clone()
                    .into_iter()
                    .any(|l| c.may_touch(root_namespace, namespace, l))
            })
            .map(|c| c.at)
            .max();
        let lost = (self.lost_until > 0).then_some(self.lost_until);
        touching.max(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_auth::Mode;

    fn pod(pairs: &[(&str, &str)]) -> PodLabels {
        PodLabels::of_pod(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn change(at: Nanos, namespace: &str, selector: Option<(&str, &str)>) -> PolicyChange {
        PolicyChange {
            at,
            namespace: namespace.into(),
            selector: selector.map(|(k, v)| [(k.to_owned(), v.to_owned())].into()),
        }
    }

    /// A change touches the workloads of its scope: the mesh's, its namespace's, and the ones
    /// its selector selects or may select (labels not known).
    #[test]
    fn a_change_touches_the_workloads_of_its_scope() {
        let httpbin = pod(&[("app", "httpbin")]);
        let root = "istio-system";
        let c = |ns, sel| change(1, ns, sel);
        assert!(c(root, None).may_touch(root, "foo", &httpbin));
        assert!(c("foo", None).may_touch(root, "foo", &httpbin));
        assert!(!c("bar", None).may_touch(root, "foo", &httpbin));
        assert!(c("foo", Some(("app", "httpbin"))).may_touch(root, "foo", &httpbin));
        assert!(!c("foo", Some(("app", "sleep"))).may_touch(root, "foo", &httpbin));
        assert!(!c("bar", Some(("app", "httpbin"))).may_touch(root, "foo", &httpbin));
        assert!(c("foo", Some(("app", "sleep"))).may_touch(root, "foo", &PodLabels::Unknown));
        // Istio ignores a selector in the root namespace
        assert!(!c(root, Some(("app", "httpbin"))).may_touch(root, "foo", &httpbin));
    }

    /// The latest touching change is found; one that fell off the log counts for everyone.
    #[test]
    fn the_latest_touching_change_and_the_lost_ones() {
        let (httpbin, sleep) = (pod(&[("app", "httpbin")]), pod(&[("app", "sleep")]));
        let root = "istio-system";
        let mut log = ChangeLog::default();
        assert_eq!(log.last_touching(root, "foo", [&httpbin]), None);
        log.record([
            change(10, "foo", Some(("app", "httpbin"))),
            change(20, "foo", Some(("app", "sleep"))),
        ]);
        assert_eq!(log.last_touching(root, "foo", [&httpbin]), Some(10));
        assert_eq!(log.last_touching(root, "foo", [&sleep]), Some(20));
        // a workload whose pods carry either label set: either change
        assert_eq!(log.last_touching(root, "foo", [&httpbin, &sleep]), Some(20));
        assert_eq!(log.last_touching(root, "bar", [&httpbin]), None);
        for at in 100..100 + MAX_LOGGED_CHANGES as Nanos {
            log.record([change(at, "other", None)]);
        }
        assert_eq!(log.len(), MAX_LOGGED_CHANGES);
        assert_eq!(
            log.last_touching(root, "bar", [&httpbin]),
            Some(20),
            "the lost changes count as touching"
        );
    }

    /// The scopes of one policy's change: before and after; nothing when it did not change.
    #[test]
    fn a_policy_change_is_its_scope_before_and_after() {
        let p = PeerAuthentication {
            namespace: "foo".into(),
            name: "p".into(),
            created: String::new(),
            selector: Some([("app".to_owned(), "httpbin".to_owned())].into()),
            mode: Mode::Strict,
            port_level: BTreeMap::new(),
            edited: false,
        };
        assert_eq!(PolicyChange::between(Some(&p), Some(&p), 5), []);
        let permissive = PeerAuthentication {
            mode: Mode::Permissive,
            ..p.clone()
        };
        let scope = change(5, "foo", Some(("app", "httpbin")));
        assert_eq!(
            PolicyChange::between(Some(&p), Some(&permissive), 5),
            vec![scope.clone()]
        );
        assert_eq!(
            PolicyChange::between(None, Some(&p), 5),
            vec![scope.clone()]
        );
        assert_eq!(
            PolicyChange::between(Some(&p), None, 5),
            vec![scope.clone()]
        );
        let wide = PeerAuthentication {
            selector: None,
            ..p.clone()
        };
        assert_eq!(
            PolicyChange::between(Some(&p), Some(&wide), 5),
            [scope, change(5, "foo", None)]
        );
    }
}
