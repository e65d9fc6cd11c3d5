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
//! RBAC: `get`, `list`, `watch` on `peerauthentications` in `security.istio.io`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::super::SharedIdentities;
use crate::peer_auth::{from_value, PeerAuthError, PeerAuthentication};

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
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                if logged.version != Some(version) {
                    logged.version = Some(version);
                    logged.absent = false;
                    tracing::info!("watching PeerAuthentications as security.istio.io/{version}");
                }
                if let Some(policies) = table.event(e) {
                    if let Ok(mut m) = map.write() {
                        m.set_peer_authentications(Some(policies));
                    }
                }
            }
            Err(e) if is_not_found(&e) => return Ended::NotServed,
            Err(e) => {
                if !logged.error {
                    logged.error = true;
                    tracing::warn!(error = %e, "PeerAuthentication watch (retrying; later errors at debug)");
                } else {
                    tracing::debug!(error = %e, "PeerAuthentication watch");
                }
            }
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
