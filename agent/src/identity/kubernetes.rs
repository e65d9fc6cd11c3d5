//! Identities from the Kubernetes API: watch Pods, Nodes, Namespaces, Services and
//! EndpointSlices cluster-wide (the source of a connection is anywhere in the cluster) and keep
//! only the compact IP map, and per Service its ClusterIP:port -> (namespace, workload, target
//! port) ([`services`]).
//!
//! Owner resolution follows Istio's `GetDeployMetaFromPod`: a ReplicaSet whose name ends with the
//! pod's `pod-template-hash` belongs to the Deployment of that prefix, a Job named
//! `<cronjob>-<8 to 10 digits>` to that CronJob; StatefulSets, DaemonSets and others are their
//! own workload; a bare pod is its own. This needs no ReplicaSet or Job watch.
//! hostNetwork pods share the node's address and resolve to the node; finished pods
//! (Succeeded/Failed) have released their addresses.
//!
//! The data plane, as Istio's injector and ztunnel decide it: an `istio-proxy` container (among
//! `containers`, or among `initContainers` with `restartPolicy: Always`: a native sidecar) or the
//! `sidecar.istio.io/status` annotation is a sidecar; else a pod labelled
//! `istio.io/dataplane-mode=ambient`, or in a namespace so labelled unless the pod is labelled
//! `istio.io/dataplane-mode=none`, is in ambient; else it is not in the mesh. The pod's part is
//! kept per workload ([`PodMesh`]), the namespace's in the map, which combines them.
//!
//! A pod's labels are kept for PeerAuthentication selectors ([`PodLabels::of_pod`]: all of
//! them up to a bound, less the keys Kubernetes sets per pod or per ReplicaSet such as
//! `pod-template-hash`, so the pods of one rollout intern as one workload).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::{uid_hash, SharedIdentities, Workload};
pub use super::{PodIdentity, PodMesh};
use crate::peer_auth::PodLabels;
use services::{
    service_entry, service_key, slice_entry, ServiceEntry, ServiceKey, ServiceTable, SliceEntry,
    SERVICE_NAME_LABEL,
};

pub mod peer_auth;
pub mod services;

/// The name of Istio's proxy container (a sidecar, or a native sidecar init container).
const PROXY_CONTAINER: &str = "istio-proxy";
/// The injector's record of what it added to a pod.
const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
/// The ambient enrollment label, on a namespace or a pod.
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// The workload a pod belongs to, or `None` when it holds no address of its own. Its
/// `workload.mesh` is left to the map (it depends on the namespace too); `pod_mesh` is the
/// pod's part.
pub fn pod_identity(pod: &Pod, this_node: Option<&str>) -> Option<PodIdentity> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    if spec.host_network == Some(true)
        || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return None;
    }
    let ips = pod_ips(pod);
    if ips.is_empty() {
        return None;
    }
    let name = meta.name.clone().unwrap_or_default();
    let labels = meta.labels.clone().unwrap_or_default();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let workload = match owner {
        Some(o) if o.kind == "ReplicaSet" => match labels.get("pod-template-hash") {
            Some(hash) => o
                .name
                .strip_suffix(hash.as_str())
                .and_then(|p| p.strip_suffix('-'))
                .unwrap_or(&o.name)
                .to_owned(),
            None => o.name.clone(),
        },
        Some(o) if o.kind == "Job" => cronjob_of(&o.name).unwrap_or(&o.name).to_owned(),
        Some(o) => o.name.clone(),
        None => name,
    };
    Some(PodIdentity {
        uid: uid_hash(meta.uid.as_deref().unwrap_or_default()),
        ips,
        workload: Workload {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            workload,
            service_account: spec.service_account_name.clone(),
            labels: PodLabels::of_pod(labels),
            mesh: None,
        },
        local: match (this_node, spec.node_name.as_deref()) {
            (Some(me), Some(node)) => me == node,
            (Some(_), None) => false,
            (None, _) => true,
        },
        pod_mesh: pod_mesh(pod),
    })
}

/// A pod's addresses: `status.podIPs` (dual-stack), and `status.podIP` when not among them.
/// The one place addresses are read, for adding a pod and for releasing it.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// What the pod itself says about its data plane (its namespace decides the rest).
pub fn pod_mesh(pod: &Pod) -> PodMesh {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SIDECAR_STATUS));
    let proxy =
        pod.spec.as_ref().is_some_and(|spec| {
            spec.containers.iter().any(|c| c.name == PROXY_CONTAINER)
                || spec.init_containers.iter().flatten().any(|c| {
                    c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always")
                })
        });
    if annotated || proxy {
        return PodMesh::Sidecar;
    }
    let mode = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(DATAPLANE_MODE));
    match mode.map(String::as_str) {
        Some("ambient") => PodMesh::Ambient,
        Some("none") => PodMesh::OptedOut,
        _ => PodMesh::Unlabelled,
    }
}

/// A namespace's name, and whether it is labelled `istio.io/dataplane-mode=ambient`.
pub fn namespace_ambient(namespace: &Namespace) -> (String, bool) {
    let ambient = namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(DATAPLANE_MODE))
        .is_some_and(|mode| mode == "ambient");
    (namespace.metadata.name.clone().unwrap_or_default(), ambient)
}

/// `nightly-backup-29012345` -> `nightly-backup` (a CronJob's Job: minutes since the epoch).
fn cronjob_of(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    ((8..=10).contains(&suffix.len()) && suffix.bytes().all(|b| b.is_ascii_digit()))
        .then_some(prefix)
}

/// A node's addresses (InternalIP and ExternalIP).
pub fn node_addresses(node: &Node) -> (String, Vec<IpAddr>) {
    let ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    (node.metadata.name.clone().unwrap_or_default(), ips)
}

/// Progress of the five watches, for `/readyz` and the identity gauge.
#[derive(Debug, Default)]
pub struct SyncState {
    pub pods_synced: AtomicBool,
    pub nodes_synced: AtomicBool,
    pub namespaces_synced: AtomicBool,
    pub services_synced: AtomicBool,
    pub endpointslices_synced: AtomicBool,
}

impl SyncState {
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Relaxed)
            && self.nodes_synced.load(Ordering::Relaxed)
            && self.namespaces_synced.load(Ordering::Relaxed)
            && self.services_synced.load(Ordering::Relaxed)
            && self.endpointslices_synced.load(Ordering::Relaxed)
    }
}

/// Applies watch events to the map. A relist (start, after a 410 Gone) is collected apart and
/// swapped in whole when it is done, so readers never see a half-built map.
#[derive(Debug)]
pub struct Applier {
    map: SharedIdentities,
    this_node: Option<String>,
    relist_pods: Option<Vec<PodIdentity>>,
    relist_nodes: Option<Vec<(String, Vec<IpAddr>)>>,
    /// The ambient namespaces of a namespace relist.
    relist_namespaces: Option<Vec<String>>,
    /// Services and EndpointSlices as the ClusterIP mapping needs them.
    services: ServiceTable,
    relist_services: Option<Vec<(ServiceKey, ServiceEntry)>>,
    relist_slices: Option<Vec<(ServiceKey, SliceEntry)>>,
}

impl Applier {
    pub fn new(map: SharedIdentities, this_node: Option<String>) -> Self {
        Applier {
            map,
            this_node,
            relist_pods: None,
            relist_nodes: None,
            relist_namespaces: None,
            services: ServiceTable::default(),
            relist_services: None,
            relist_slices: None,
        }
    }

    /// Heap bytes the Service and EndpointSlice table holds (the map's part is in
    /// [`super::IdentityMap::heap_bytes`]).
    pub fn service_table_bytes(&self) -> usize {
        self.services.heap_bytes()
    }

    /// Apply one pod event; true when a (re)list completed.
    pub fn pod_event(&mut self, event: Event<Pod>) -> bool {
        let me = self.this_node.as_deref();
        match event {
            Event::Init => self.relist_pods = Some(Vec::new()),
            Event::InitApply(pod) => {
                if let (Some(list), Some(id)) = (self.relist_pods.as_mut(), pod_identity(&pod, me))
                {
                    list.push(id);
                }
            }
            Event::InitDone => {
                let list = self.relist_pods.take().unwrap_or_default();
                if let Ok(mut map) = self.map.write() {
                    map.replace_pods(list);
                    // the workloads behind Services are the pods'
                    self.services.resolve_all(&mut map);
                }
                return true;
            }
            Event::Apply(pod) => {
                let uid = uid_hash(pod.metadata.uid.as_deref().unwrap_or_default());
                if let Ok(mut map) = self.map.write() {
                    match pod_identity(&pod, me) {
                        Some(p) if self.services.has_unknown() => {
                            let ips = p.ips.clone();
                            map.apply_pod(p);
                            self.services.pod_added(&ips, &mut map);
                        }
                        Some(p) => map.apply_pod(p),
                        // finished or moved to hostNetwork: release whatever it held
                        None => map.remove_pod(uid, &pod_ips(&pod)),
                    }
                }
            }
            Event::Delete(pod) => {
                let uid = uid_hash(pod.metadata.uid.as_deref().unwrap_or_default());
                if let Ok(mut map) = self.map.write() {
                    map.remove_pod(uid, &pod_ips(&pod));
                }
            }
        }
        false
    }

    /// Apply one node event; true when a (re)list completed.
    pub fn node_event(&mut self, event: Event<Node>) -> bool {
        match event {
            Event::Init => self.relist_nodes = Some(Vec::new()),
            Event::InitApply(node) => {
                if let Some(list) = self.relist_nodes.as_mut() {
                    list.push(node_addresses(&node));
                }
            }
            Event::InitDone => {
                let list = self.relist_nodes.take().unwrap_or_default();
                if let Ok(mut map) = self.map.write() {
                    map.clear_nodes();
                    for (name, ips) in list {
                        map.upsert_node(&name, &ips);
                    }
                }
                return true;
            }
            Event::Apply(node) => {
                let (name, ips) = node_addresses(&node);
                if let Ok(mut map) = self.map.write() {
                    map.remove_node(&name);
                    map.upsert_node(&name, &ips);
                }
            }
            Event::Delete(node) => {
                let (name, _) = node_addresses(&node);
                if let Ok(mut map) = self.map.write() {
                    map.remove_node(&name);
                }
            }
        }
        false
    }

    /// Apply one Service event; true when a (re)list completed.
    pub fn service_event(&mut self, event: Event<Service>) -> bool {
        match event {
            Event::Init => self.relist_services = Some(Vec::new()),
            Event::InitApply(service) => {
                if let (Some(list), Some(entry)) =
                    (self.relist_services.as_mut(), service_entry(&service))
                {
                    list.push((service_key(&service), entry));
                }
            }
            Event::InitDone => {
                let list = self.relist_services.take().unwrap_or_default();
                if let Ok(mut map) = self.map.write() {
                    self.services.replace_services(list, &mut map);
                }
                return true;
            }
            Event::Apply(service) => {
                if let Ok(mut map) = self.map.write() {
                    self.services.apply_service(&service, &mut map);
                }
            }
            Event::Delete(service) => {
                if let Ok(mut map) = self.map.write() {
                    self.services.delete_service(&service, &mut map);
                }
            }
        }
        false
    }

    /// Apply one EndpointSlice event; true when a (re)list completed.
    pub fn endpointslice_event(&mut self, event: Event<EndpointSlice>) -> bool {
        match event {
            Event::Init => self.relist_slices = Some(Vec::new()),
            Event::InitApply(slice) => {
                if let (Some(list), Some(entry)) =
                    (self.relist_slices.as_mut(), slice_entry(&slice))
                {
                    list.push(entry);
                }
            }
            Event::InitDone => {
                let list = self.relist_slices.take().unwrap_or_default();
                if let Ok(mut map) = self.map.write() {
                    self.services.replace_slices(list, &mut map);
                }
                return true;
            }
            Event::Apply(slice) => {
                if let Ok(mut map) = self.map.write() {
                    self.services.apply_slice(&slice, &mut map);
                }
            }
            Event::Delete(slice) => {
                if let Ok(mut map) = self.map.write() {
                    self.services.delete_slice(&slice, &mut map);
                }
            }
        }
        false
    }

    /// Apply one namespace event (its ambient label); true when a (re)list completed.
    pub fn namespace_event(&mut self, event: Event<Namespace>) -> bool {
        match event {
            Event::Init => self.relist_namespaces = Some(Vec::new()),
            Event::InitApply(ns) => {
                if let (Some(list), (name, true)) =
                    (self.relist_namespaces.as_mut(), namespace_ambient(&ns))
                {
                    list.push(name);
                }
            }
            Event::InitDone => {
                let list = self.relist_namespaces.take().unwrap_or_default();
                if let Ok(mut map) = self.map.write() {
                    map.replace_ambient_namespaces(list);
                }
                return true;
            }
            Event::Apply(ns) => {
                let (name, ambient) = namespace_ambient(&ns);
                if let Ok(mut map) = self.map.write() {
                    map.set_namespace_ambient(&name, ambient);
                }
            }
            Event::Delete(ns) => {
                let (name, _) = namespace_ambient(&ns);
                if let Ok(mut map) = self.map.write() {
                    map.set_namespace_ambient(&name, false);
                }
            }
        }
        false
    }
}

/// Watch Pods, Nodes, Namespaces, Services and EndpointSlices until the streams end (they do
/// not, in a healthy cluster): list, then watch with bookmarks; kube-rs relists on 410 Gone and
/// backs off on errors. Only EndpointSlices labelled with their Service are listed.
///
/// Read-only RBAC: `list` and `watch` on `pods`, `nodes`, `namespaces` and `services` (core
/// group) and on `endpointslices` (`discovery.k8s.io`); `get`, `list`, `watch` on Istio's
/// `peerauthentications` (`security.istio.io`), watched beside them ([`peer_auth::watch`]; a
/// cluster without Istio only logs it).
pub async fn watch(
    client: Client,
    map: SharedIdentities,
    this_node: Option<String>,
    sync: Arc<SyncState>,
) {
    tokio::spawn(peer_auth::watch(client.clone(), map.clone()));
    let config = watcher::Config::default().any_semantic();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff();
    let nodes =
        watcher::watcher(Api::<Node>::all(client.clone()), config.clone()).default_backoff();
    let namespaces =
        watcher::watcher(Api::<Namespace>::all(client.clone()), config.clone()).default_backoff();
    let services =
        watcher::watcher(Api::<Service>::all(client.clone()), config.clone()).default_backoff();
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        config.labels(SERVICE_NAME_LABEL),
    )
    .default_backoff();
    let mut pods = std::pin::pin!(pods);
    let mut nodes = std::pin::pin!(nodes);
    let mut namespaces = std::pin::pin!(namespaces);
    let mut services = std::pin::pin!(services);
    let mut slices = std::pin::pin!(slices);
    let mut applier = Applier::new(map, this_node);
    loop {
        tokio::select! {
            Some(event) = pods.next() => match event {
                Ok(e) => if applier.pod_event(e) { sync.pods_synced.store(true, Ordering::Relaxed) },
                Err(e) => tracing::warn!(error = %e, "pod watch"),
            },
            Some(event) = nodes.next() => match event {
                Ok(e) => if applier.node_event(e) { sync.nodes_synced.store(true, Ordering::Relaxed) },
                Err(e) => tracing::warn!(error = %e, "node watch"),
            },
            Some(event) = namespaces.next() => match event {
                Ok(e) => if applier.namespace_event(e) { sync.namespaces_synced.store(true, Ordering::Relaxed) },
                Err(e) => tracing::warn!(error = %e, "namespace watch"),
            },
            Some(event) = services.next() => match event {
                Ok(e) => if applier.service_event(e) { sync.services_synced.store(true, Ordering::Relaxed) },
                Err(e) => tracing::warn!(error = %e, "service watch"),
            },
            Some(event) = slices.next() => match event {
                Ok(e) => if applier.endpointslice_event(e) { sync.endpointslices_synced.store(true, Ordering::Relaxed) },
                Err(e) => tracing::warn!(error = %e, "endpointslice watch"),
            },
            else => break,
        }
    }
}

#[cfg(test)]
mod tests;
