//! Istio PeerAuthentications (`security.istio.io/v1`, all namespaces), watched read-only into
//! the identity map ([`super::super::IdentityMap::set_peer_authentications`]) so verdicts show
//! each workload's mode today. No code generation: [`DynamicObject`]s read by
//! [`crate::peer_auth::from_value`].
//!
//! Istio may not be installed: the list then fails with 404 (no such resource). That is logged
//! once and the watch keeps retrying with kube-rs's backoff (the CRD may be installed later);
//! until a list succeeds the modes stay unknown and verdicts carry none. An object that cannot
//! be read (an unknown mode) is logged once per object and left out.
//!
//! RBAC: `get`, `list`, `watch` on `peerauthentications` in `security.istio.io`.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::super::SharedIdentities;
use crate::peer_auth::{from_value, PeerAuthError, PeerAuthentication};

/// The resource watched.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", "v1", "PeerAuthentication"),
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

    /// Apply one event; the policies when they changed (a relist completed, or an object
    /// came, changed or went).
    pub fn event(&mut self, event: Event<DynamicObject>) -> Option<Vec<PeerAuthentication>> {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                return None;
            }
            Event::InitApply(object) => {
                let key = key_of(&object);
                if let Some(p) = self.read(&object) {
                    if let Some(list) = self.relist.as_mut() {
                        list.insert(key, p);
                    }
                }
                return None;
            }
            Event::InitDone => {
                self.policies = self.relist.take().unwrap_or_default();
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                match self.read(&object) {
                    Some(p) => self.policies.insert(key, p),
                    // now unreadable: what it said before no longer holds
                    None => self.policies.remove(&key),
                };
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                self.reported.remove(&key);
                self.policies.remove(&key);
            }
        }
        Some(self.policies.values().cloned().collect())
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

/// Watch PeerAuthentications in all namespaces until the stream ends (it does not).
pub async fn watch(client: Client, map: SharedIdentities) {
    let resource = api_resource();
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let events = watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut table = PeerAuthTable::default();
    let (mut absent_logged, mut error_logged) = (false, false);
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                if let Some(policies) = table.event(e) {
                    if let Ok(mut m) = map.write() {
                        m.set_peer_authentications(Some(policies));
                    }
                }
            }
            Err(e) if is_not_found(&e) => {
                if !absent_logged {
                    absent_logged = true;
                    tracing::info!(
                        "no PeerAuthentication resource (security.istio.io/v1): Istio is not installed here; verdicts carry no mode until it is"
                    );
                }
            }
            Err(e) => {
                if !error_logged {
                    error_logged = true;
                    tracing::warn!(error = %e, "PeerAuthentication watch (retrying; later errors at debug)");
                } else {
                    tracing::debug!(error = %e, "PeerAuthentication watch");
                }
            }
        }
    }
}
