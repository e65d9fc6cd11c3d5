//! Identities from the Kubernetes API: watch Pods and Nodes cluster-wide (the source of a
//! connection is anywhere in the cluster) and keep only the compact IP map.
//!
//! Owner resolution follows Istio's `GetDeployMetaFromPod`: a ReplicaSet whose name ends with the
//! pod's `pod-template-hash` belongs to the Deployment of that prefix, a Job named
//! `<cronjob>-<8 to 10 digits>` to that CronJob; StatefulSets, DaemonSets and others are their
//! own workload; a bare pod is its own. This needs no ReplicaSet or Job watch.
//! hostNetwork pods share the node's address and resolve to the node; finished pods
//! (Succeeded/Failed) have released their addresses.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::{uid_hash, SharedIdentities, Workload};

/// What the map keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: u64,
    pub ips: Vec<IpAddr>,
    pub workload: Workload,
    pub local: bool,
}

/// The workload a pod belongs to, or `None` when it holds no address of its own.
pub fn pod_identity(pod: &Pod, this_node: Option<&str>) -> Option<PodIdentity> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    if spec.host_network == Some(true)
        || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return None;
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
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
    let selector_labels = ["app", "app.kubernetes.io/name"]
        .iter()
        .find_map(|k| labels.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .into_iter()
        .collect();
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
            labels: selector_labels,
            mesh: None,
        },
        local: match (this_node, spec.node_name.as_deref()) {
            (Some(me), Some(node)) => me == node,
            (Some(_), None) => false,
            (None, _) => true,
        },
    })
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

/// Progress of the two watches, for `/readyz` and the identity gauge.
#[derive(Debug, Default)]
pub struct SyncState {
    pub pods_synced: AtomicBool,
    pub nodes_synced: AtomicBool,
}

impl SyncState {
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Relaxed) && self.nodes_synced.load(Ordering::Relaxed)
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
}

impl Applier {
    pub fn new(map: SharedIdentities, this_node: Option<String>) -> Self {
        Applier {
            map,
            this_node,
            relist_pods: None,
            relist_nodes: None,
        }
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
                    map.clear_pods();
                    for p in list {
                        map.upsert_pod(p.uid, &p.ips, p.workload, p.local);
                    }
                }
                return true;
            }
            Event::Apply(pod) => {
                let uid = uid_hash(pod.metadata.uid.as_deref().unwrap_or_default());
                if let Ok(mut map) = self.map.write() {
                    match pod_identity(&pod, me) {
                        Some(p) => map.upsert_pod(p.uid, &p.ips, p.workload, p.local),
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
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    ips.extend(
        status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok()),
    );
    ips
}

/// Watch Pods and Nodes until the streams end (they do not, in a healthy cluster): list, then
/// watch with bookmarks; kube-rs relists on 410 Gone and backs off on errors.
pub async fn watch(
    client: Client,
    map: SharedIdentities,
    this_node: Option<String>,
    sync: Arc<SyncState>,
) {
    let config = watcher::Config::default().any_semantic();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff();
    let nodes = watcher::watcher(Api::<Node>::all(client), config).default_backoff();
    let mut pods = std::pin::pin!(pods);
    let mut nodes = std::pin::pin!(nodes);
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
            else => break,
        }
    }
}

#[cfg(test)]
mod tests;
