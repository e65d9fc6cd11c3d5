//! Istio PeerAuthentications (`security.istio.io/v1`, or `v1beta1` where only that is served:
//! Istio before 1.22), all namespaces, watched read-only into
//! the identity map ([`super::super::IdentityMap::set_peer_authentications`]) so verdicts show
//! each workload's mode today. No code generation: [`DynamicObject`]s read by
//! [`crate::peer_auth::from_value`].
//!
//! The watch starts on `v1`; a 404 (version not served) moves it to `v1beta1` (the same RBAC:
//! rules are per resource, not per version). Istio may not be installed: both then fail with
//! 404. That is logged once and both are tried again with a growing pause (the CRD may be
//! installed later); until a list succeeds the modes stay unknown and verdicts carry none. An object that cannot
//! be read (an unknown mode) is logged once per object and left out.
//!
//! Bounded: at most [`MAX_PEER_AUTHENTICATIONS`] policies are kept. Over that, none is
//! published (the modes become unknown, never resolved from a partial set), the policies left
//! out are counted ([`PeerAuthTable::left_out`]) and it is logged once; a relist that fits
//! publishes again. Events that arrive together are applied together and published once.
//!
//! Each event that changed a policy is recorded with its time and the policy's scope before and
//! after ([`crate::peer_auth::PolicyChange`]; a relist: each policy it added, dropped or changed),
//! so the agent's mode clock dates a mode by the last change that may have touched it, also when
//! the mode flipped and back between two looks.
//!
//! RBAC: `get`, `list`, `watch` on `peerauthentications` in `security.istio.io`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::super::SharedIdentities;
use crate::peer_auth::{from_value, PeerAuthError, PeerAuthentication, PolicyChange};
use crate::Nanos;

/// The most PeerAuthentications kept. A cluster has one or two per namespace and a few per
/// workload that needs an exception; 10,000 is over any real one (the identity map is bounded
/// for 10k-pod clusters) and ~10 MiB at most (a few hundred bytes each, 64 ports each at most:
/// [`crate::peer_auth::MAX_PORT_LEVEL`]).
pub const MAX_PEER_AUTHENTICATIONS: usize = 10_000;

/// The API versions tried, in order: `v1` (Istio 1.22 and later), then `v1beta1`.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// The longest pause between two rounds of tries when no version is served.
const MAX_ABSENT_PAUSE: Duration = Duration::from_secs(300);

/// The resource watched, in API `version`.
pub fn api_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", version, "PeerAuthentication"),
        "peerauthentications",
    )
}

/// One PeerAuthentication from its API object.
pub fn from_object(object: &DynamicObject) -> Result<PeerAuthentication, PeerAuthError> {
    let value = serde_json::to_value(object).map_err(|e| PeerAuthError::Invalid {
        object: format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default()
        ),
        reason: e.to_string(),
    })?;
    from_value(&value)
}

type Key = (String, String);

fn key_of(object: &DynamicObject) -> Key {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// The policies as watch events leave them; a relist is collected apart and swapped in whole.
#[derive(Debug, Default)]
pub struct PeerAuthTable {
    policies: BTreeMap<Key, PeerAuthentication>,
    relist: Option<BTreeMap<Key, PeerAuthentication>>,
    /// Objects already reported unreadable (each is logged once).
    reported: BTreeSet<Key>,
    /// Policies left out over [`MAX_PEER_AUTHENTICATIONS`] since the last relist that fit.
    left_out: usize,
    /// Whether the bound was logged.
    bound_logged: bool,
    /// Changes applied and not yet taken ([`PeerAuthTable::take_changes`]).
    changes: Vec<PolicyChange>,
}

/// What the policies are now, for the identity map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// All of them.
    Policies(Vec<PeerAuthentication>),
    /// Over [`MAX_PEER_AUTHENTICATIONS`]: not known whole, so not published (modes unknown).
    OverBound,
}

/// Insert `p` under `key` unless that makes more than [`MAX_PEER_AUTHENTICATIONS`]: then
/// `false` (left out).
fn insert_bounded(
    map: &mut BTreeMap<Key, PeerAuthentication>,
    key: Key,
    p: PeerAuthentication,
) -> bool {
    if map.len() >= MAX_PEER_AUTHENTICATIONS && !map.contains_key(&key) {
        return false;
    }
    map.insert(key, p);
    true
}

impl PeerAuthTable {
    fn read(&mut self, object: &DynamicObject) -> Option<PeerAuthentication> {
        match from_object(object) {
            Ok(p) => Some(p),
            Err(e) => {
                if self.reported.insert(key_of(object)) {
                    tracing::warn!(error = %e, "PeerAuthentication left out");
                }
                None
            }
        }
    }

    /// Policies left out over [`MAX_PEER_AUTHENTICATIONS`] since the last relist that fit.
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    fn leave_out(&mut self) {
        self.left_out += 1;
        if !self.bound_logged {
            self.bound_logged = true;
            tracing::warn!(
                max = MAX_PEER_AUTHENTICATIONS,
                "more PeerAuthentications than are kept: modes unknown until a relist fits"
            );
        }
    }

    /// The changes applied since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<PolicyChange> {
        std::mem::take(&mut self.changes)
    }

    /// Apply one event, seen `at`; whether the policies changed (a relist completed, or an
    /// object came, changed or went). Nothing is copied: [`PeerAuthTable::published`] says what
    /// they are; what changed is kept for [`PeerAuthTable::take_changes`].
    pub fn apply(&mut self, event: Event<DynamicObject>, at: Nanos) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                self.left_out = 0;
                return false;
            }
            Event::InitApply(object) => {
                let key = key_of(&object);
                let kept = match (self.read(&object), self.relist.as_mut()) {
                    (Some(p), Some(list)) => insert_bounded(list, key, p),
                    _ => true,
                };
                if !kept {
                    self.leave_out();
                }
                return false;
            }
            Event::InitDone => {
                let relisted = self.relist.take().unwrap_or_default();
                let keys: BTreeSet<&Key> = self.policies.keys().chain(relisted.keys()).collect();
                for key in keys {
                    self.changes.extend(PolicyChange::between(
                        self.policies.get(key),
                        relisted.get(key),
                        at,
                    ));
                }
                self.policies = relisted;
                // the relist is the whole set again: what it left out is all that is missing
                if self.left_out == 0 {
                    self.bound_logged = false;
                }
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                let new = self.read(&object);
                self.changes.extend(PolicyChange::between(
                    self.policies.get(&key),
                    new.as_ref(),
                    at,
                ));
                match new {
                    Some(p) => {
                        if !insert_bounded(&mut self.policies, key, p) {
                            self.leave_out();
                        }
                    }
                    // now unreadable: what it said before no longer holds
                    None => {
                        self.policies.remove(&key);
                    }
                }
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                self.reported.remove(&key);
                let old = self.policies.remove(&key);
                self.changes
                    .extend(PolicyChange::between(old.as_ref(), None, at));
            }
        }
        true
    }

    /// The policies as they are now: all of them, or none when some were left out.
    pub fn published(&self) -> Published {
        if self.left_out > 0 {
            Published::OverBound
        } else {
            Published::Policies(self.policies.values().cloned().collect())
        }
    }

    /// Apply one event seen `at`; the policies when they changed ([`PeerAuthTable::apply`],
    /// then [`PeerAuthTable::published`]).
    pub fn event(&mut self, event: Event<DynamicObject>, at: Nanos) -> Option<Published> {
        self.apply(event, at).then(|| self.published())
    }
}

/// Whether a watch error says the resource does not exist (the CRD is not installed).
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

/// What ended a watch of one version.
enum Ended {
    /// The version is not served (404).
    NotServed,
    /// The stream ended (it does not, with kube-rs's backoff).
    Stream,
}

/// Log the first error of a kind at `warn`, later ones at `debug`.
#[derive(Default)]
struct Logged {
    error: bool,
    absent: bool,
    version: Option<&'static str>,
}

/// Watch one API version until it turns out not to be served.
async fn watch_version(
    client: &Client,
    version: &'static str,
    map: &SharedIdentities,
    table: &mut PeerAuthTable,
    logged: &mut Logged,
) -> Ended {
    let resource = api_resource(version);
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let events = watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(first) = events.next().await {
        // the events already here are applied together and published once
        let (mut next, mut changed, mut error) = (Some(first), false, None);
        while let Some(event) = next.take() {
            match event {
                Ok(e) => {
                    if logged.version != Some(version) {
                        logged.version = Some(version);
                        logged.absent = false;
                        tracing::info!(
                            "watching PeerAuthentications as security.istio.io/{version}"
                        );
                    }
                    // each event at its own time: a flip within a burst is a change too
                    changed |= table.apply(e, crate::live::now());
                    next = events.next().now_or_never().flatten();
                }
                Err(e) => error = Some(e),
            }
        }
        if changed {
            let policies = match table.published() {
                Published::Policies(p) => Some(p),
                Published::OverBound => None,
            };
            let changes = table.take_changes();
            if let Ok(mut m) = map.write() {
                m.set_peer_authentications(policies);
                m.record_peer_auth_changes(changes);
            }
        }
        match error {
            Some(e) if is_not_found(&e) => return Ended::NotServed,
            Some(e) if !logged.error => {
                logged.error = true;
                tracing::warn!(error = %e, "PeerAuthentication watch (retrying; later errors at debug)");
            }
            Some(e) => tracing::debug!(error = %e, "PeerAuthentication watch"),
            None => {}
        }
    }
    Ended::Stream
}

/// Watch PeerAuthentications in all namespaces, in the first API version served, forever.
pub async fn watch(client: Client, map: SharedIdentities) {
    let mut table = PeerAuthTable::default();
    let mut logged = Logged::default();
    let mut pause = Duration::from_secs(1);
    loop {
        let mut served = false;
        for version in VERSIONS {
            match watch_version(&client, version, &map, &mut table, &mut logged).await {
                Ended::NotServed => {
                    tracing::debug!("security.istio.io/{version} PeerAuthentications not served");
                }
                Ended::Stream => {
                    served = true;
                    break;
                }
            }
        }
        if !served && !logged.absent {
            logged.absent = true;
            tracing::info!(
                "no PeerAuthentication resource (neither security.istio.io/v1 nor v1beta1): Istio is not installed here; verdicts carry no mode until it is"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_ABSENT_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(i: usize) -> DynamicObject {
        DynamicObject::new(&format!("p{i}"), &api_resource("v1"))
            .within("ns")
            .data(serde_json::json!({"spec": {"mtls": {"mode": "STRICT"}}}))
    }

    fn policy(name: &str, spec: serde_json::Value) -> DynamicObject {
        DynamicObject::new(name, &api_resource("v1"))
            .within("foo")
            .data(serde_json::json!({ "spec": spec }))
    }

    fn scope(at: Nanos, selector: Option<(&str, &str)>) -> PolicyChange {
        PolicyChange {
            at,
            namespace: "foo".into(),
            selector: selector.map(|(k, v)| [(k.to_owned(), v.to_owned())].into()),
        }
    }

    /// Every event that changes a policy is recorded at its own time with the policy's scope
    /// before and after (the mode clock's input); one that changes nothing, and a relist that
    /// finds what was there, are not.
    #[test]
    fn each_policy_change_is_recorded_with_its_time_and_scope() {
        let strict = || policy("p", serde_json::json!({"mtls": {"mode": "STRICT"}}));
        let mut t = PeerAuthTable::default();
        t.apply(Event::Init, 1);
        t.apply(Event::InitApply(strict()), 1);
        assert!(t.apply(Event::InitDone, 2));
        assert_eq!(t.take_changes(), [scope(2, None)], "listed: new");
        t.apply(Event::Apply(strict()), 5);
        assert_eq!(t.take_changes(), [], "the same policy again");
        // STRICT -> PERMISSIVE -> STRICT in one burst: each at its time
        t.apply(
            Event::Apply(policy(
                "p",
                serde_json::json!({"mtls": {"mode": "PERMISSIVE"}}),
            )),
            10,
        );
        t.apply(Event::Apply(strict()), 11);
        assert_eq!(t.take_changes(), [scope(10, None), scope(11, None)]);
        // a selector added: its scope before and after
        let web = policy(
            "p",
            serde_json::json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "STRICT"}}),
        );
        t.apply(Event::Apply(web.clone()), 20);
        assert_eq!(
            t.take_changes(),
            [scope(20, None), scope(20, Some(("app", "web")))]
        );
        t.apply(Event::Delete(web.clone()), 30);
        assert_eq!(t.take_changes(), [scope(30, Some(("app", "web")))]);
        // a relist that finds nothing new changes nothing; one that finds it again does
        t.apply(Event::Init, 40);
        t.apply(Event::InitDone, 40);
        assert_eq!(t.take_changes(), []);
        t.apply(Event::Init, 50);
        t.apply(Event::InitApply(web), 50);
        t.apply(Event::InitDone, 51);
        assert_eq!(t.take_changes(), [scope(51, Some(("app", "web")))]);
    }

    /// Over the bound nothing is published (modes unknown, not resolved from part of the
    /// set), what is left out is counted, and a relist that fits publishes again.
    #[test]
    fn over_the_bound_the_policies_are_not_published_and_counted() {
        let mut t = PeerAuthTable::default();
        assert_eq!(t.event(Event::Init, 1), None);
        for i in 0..=MAX_PEER_AUTHENTICATIONS {
            assert_eq!(t.event(Event::InitApply(object(i)), 1), None);
        }
        assert_eq!(t.event(Event::InitDone, 1), Some(Published::OverBound));
        assert_eq!(t.left_out(), 1);
        // one more by the watch: still over, counted
        assert_eq!(
            t.event(Event::Apply(object(MAX_PEER_AUTHENTICATIONS + 1)), 2),
            Some(Published::OverBound)
        );
        assert_eq!(t.left_out(), 2);
        // a relist that fits
        t.event(Event::Init, 1);
        for i in 0..MAX_PEER_AUTHENTICATIONS {
            t.event(Event::InitApply(object(i)), 1);
        }
        match t.event(Event::InitDone, 1) {
            Some(Published::Policies(p)) => assert_eq!(p.len(), MAX_PEER_AUTHENTICATIONS),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.left_out(), 0);
        // a change to one already kept is no new policy
        match t.event(Event::Apply(object(0)), 3) {
            Some(Published::Policies(p)) => assert_eq!(p.len(), MAX_PEER_AUTHENTICATIONS),
            other => panic!("{other:?}"),
        }
    }
}
