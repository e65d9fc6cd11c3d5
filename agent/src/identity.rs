//! Who an IP address is: `{namespace, workload, service_account}` of a pod, or a node.
//!
//! One compact map, [`IdentityMap`], fed by a workloads file ([`file`]) or by the Kubernetes API
//! ([`kubernetes`]). It holds only IP -> (interned workload, pod UID hash, locality), never Pod
//! objects: a cluster-wide map of 10k pods stays a few MB.
//!
//! Interned workloads count the pod addresses that resolve to them. One without pods is
//! forgotten once it has had none for longer than a retention ([`IdentityMap::forget_idle`],
//! time passed in by the caller), and a relist rebuilds the table from the pods listed
//! ([`IdentityMap::replace_pods`]): Job and bare-pod churn leaves the map flat.
//!
//! A Kubernetes workload's data plane ([`Workload::mesh`]) is derived from its pods' own signal
//! ([`PodMesh`]) and its namespace's `istio.io/dataplane-mode` label, kept here as the set of
//! ambient namespaces, so a namespace relabel updates its workloads at once.
//!
//! Services are kept as their ClusterIPs and ports -> [`ServiceBackend`] (namespace, workload,
//! target port), set by the source (the workloads file's `services:`, or Kubernetes Services
//! and EndpointSlices resolved to the workloads of their pods' addresses).

pub mod file;
#[cfg(feature = "agent")]
pub mod kubernetes;

use std::collections::hash_map::Entry::{Occupied, Vacant};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::classify::Mesh;
use crate::peer_auth::{PeerAuthentication, PodLabels};
use crate::verdict::KnownWorkload;
use crate::Nanos;

/// A workload identity (what a pod IP resolves to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub workload: String,
    #[serde(default)]
    pub service_account: Option<String>,
    /// Its pods' labels, for a PeerAuthentication `selector` (all of them, bounded; unknown
    /// when the source does not say).
    #[serde(default, skip_serializing_if = "PodLabels::is_unknown")]
    pub labels: PodLabels,
    /// Its data plane when known (`sidecar`, `ambient`, or `none`: not in the mesh); unknown
    /// when the source does not say (a workloads file without `mesh:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<Mesh>,
}

impl Workload {
    /// The view of it the verdict needs.
    pub fn as_known(&self) -> KnownWorkload<'_> {
        KnownWorkload {
            namespace: &self.namespace,
            workload: &self.workload,
            labels: std::borrow::Cow::Borrowed(&self.labels),
            mesh: self.mesh,
        }
    }
}

/// What an address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity<'a> {
    Workload(&'a Workload),
    /// A node's own address (kubelet probes, hostNetwork pods).
    Node(&'a str),
    Unknown,
}

/// Resolves addresses to identities.
pub trait IdentitySource {
    fn lookup(&self, ip: IpAddr) -> Identity<'_>;
    /// Every workload known, seen in traffic or not (for namespace-wide verdicts).
    fn workloads(&self) -> Vec<&Workload>;
    /// The same, as the verdict sees them.
    fn known_workloads(&self) -> Vec<KnownWorkload<'_>> {
        self.workloads()
            .into_iter()
            .map(Workload::as_known)
            .collect()
    }
    /// Whether the address is a pod on this node (the agent's `reporter` label).
    fn is_local(&self, _ip: IpAddr) -> bool {
        false
    }
    /// The workload behind a Service's ClusterIP and port, and the port it targets.
    fn service(&self, _ip: IpAddr, _port: u16) -> Option<&ServiceBackend> {
        None
    }
}

/// Where a Service port leads: the workload behind it and the port on its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBackend {
    pub namespace: String,
    pub workload: String,
    pub target_port: u16,
}

/// No identities: every address stays an address.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIdentities;

impl IdentitySource for NoIdentities {
    fn lookup(&self, _ip: IpAddr) -> Identity<'_> {
        Identity::Unknown
    }
    fn workloads(&self) -> Vec<&Workload> {
        Vec::new()
    }
}

/// What a pod itself says about its data plane. For an [`PodMesh::Unlabelled`] pod its
/// namespace decides, and a namespace label can change while the pod runs: the map keeps this
/// signal per workload and derives [`Workload::mesh`] from it and the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodMesh {
    /// An `istio-proxy` container (a native sidecar among the init containers counts too), or
    /// the injector's `sidecar.istio.io/status` annotation.
    Sidecar,
    /// Labelled `istio.io/dataplane-mode=ambient`.
    Ambient,
    /// Labelled `istio.io/dataplane-mode=none`: out of ambient even in an ambient namespace.
    OptedOut,
    /// None of these: in ambient exactly when its namespace is.
    Unlabelled,
}

impl PodMesh {
    /// The pod's data plane, given whether its namespace is labelled
    /// `istio.io/dataplane-mode=ambient`. A sidecar wins over ambient labels.
    pub fn effective(self, namespace_ambient: bool) -> Mesh {
        match self {
            PodMesh::Sidecar => Mesh::Sidecar,
            PodMesh::Ambient => Mesh::Ambient,
            PodMesh::OptedOut => Mesh::None,
            PodMesh::Unlabelled if namespace_ambient => Mesh::Ambient,
            PodMesh::Unlabelled => Mesh::None,
        }
    }
}

/// One pod as an authoritative source (Kubernetes) reports it; see [`IdentityMap::apply_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub uid: u64,
    pub ips: Vec<IpAddr>,
    /// Its workload; the map sets `mesh` from `pod_mesh` and the namespace's label.
    pub workload: Workload,
    pub local: bool,
    pub pod_mesh: PodMesh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A pod: its workload (index into `slots`), a hash of its UID (so a late delete of an
    /// old pod does not remove the new pod that reuses its IP), and whether it runs here.
    Pod {
        workload: u32,
        uid: u64,
        local: bool,
    },
    Node(u32),
}

/// An interned workload, and what decides when it is forgotten.
#[derive(Debug, Clone)]
struct Slot {
    workload: Workload,
    /// The pods' own signal when the map derives `workload.mesh` (Kubernetes); `None` when the
    /// source gave the mesh (workloads file).
    pod_mesh: Option<PodMesh>,
    /// Pod addresses that resolve to it: 0 when it has no pods.
    addresses: u32,
    /// Declared by the source (workloads file): kept without pods, never forgotten.
    pinned: bool,
    /// The first [`IdentityMap::forget_idle`] sweep that found it without pods.
    idle_since: Option<Nanos>,
}

impl Slot {
    fn live(&self) -> bool {
        self.pinned || self.addresses > 0
    }
}

/// What a workload is interned by: the same workload with another pod signal is another slot
/// (its mesh may diverge when the namespace label changes).
type Key = (Workload, Option<PodMesh>);

/// The compact IP -> identity map.
#[derive(Debug, Default, Clone)]
pub struct IdentityMap {
    /// foldhash: looked up several times per flow event by the agent (SipHash was a tenth of its
    /// capture thread); the keys come from the identity source, never from packets.
    by_ip: HashMap<IpAddr, Entry, foldhash::fast::RandomState>,
    slots: Vec<Slot>,
    interned: HashMap<Key, u32>,
    nodes: Vec<String>,
    /// Namespaces labelled `istio.io/dataplane-mode=ambient`.
    ambient_namespaces: HashSet<String>,
    /// Service ClusterIP -> its ports' backends (a ClusterIP is never a destination of its own).
    /// Keyed by address alone, so a Service's addresses go in one step whatever its ports; a
    /// Service has a handful of ports, searched in order.
    services: HashMap<IpAddr, Vec<(u16, ServiceBackend)>, foldhash::fast::RandomState>,
    /// The cluster's PeerAuthentications, when watched and listed (`None`: unknown).
    peer_authentications: Option<Arc<Vec<PeerAuthentication>>>,
    /// When the watcher saw them change, and what each change touched (the mode clock's input).
    peer_auth_changes: crate::peer_auth::ChangeLog,
    /// Changes with every change of what the map answers ([`IdentityMap::generation`]).
    generation: u64,
}

/// The map shared between its feeder and its readers (read per flow event, never per packet).
pub type SharedIdentities = Arc<RwLock<IdentityMap>>;

/// Slot index meaning "forgotten" while the table is compacted.
const GONE: u32 = u32::MAX;

/// Generations of every map of the process, handed out in turn: a map that replaces another
/// (a reloaded workloads file is a new map) never shows a generation the replaced one had.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl IdentityMap {
    /// Changes whenever what the map answers may have changed (pods, nodes, namespaces,
    /// Services, PeerAuthentications, workloads forgotten); equal generations mean equal
    /// contents, also across maps (a fresh map is 0, and empty). Readers that derive something
    /// from the map (the agent's `meshwatch_workload_info`) skip the work when it is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The map changed: a new generation.
    fn changed(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    fn intern(&mut self, mut workload: Workload, pod_mesh: Option<PodMesh>) -> u32 {
        if let Some(signal) = pod_mesh {
            let ambient = self.ambient_namespaces.contains(&workload.namespace);
            workload.mesh = Some(signal.effective(ambient));
        }
        let key = (workload, pod_mesh);
        if let Some(&i) = self.interned.get(&key) {
            return i;
        }
        let i = self.slots.len() as u32;
        self.slots.push(Slot {
            workload: key.0.clone(),
            pod_mesh,
            addresses: 0,
            pinned: false,
            idle_since: None,
        });
        self.interned.insert(key, i);
        i
    }

    fn intern_node(&mut self, name: &str) -> u32 {
        match self.nodes.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                self.nodes.push(name.to_owned());
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// `ip` now means `entry`; the workload it meant before loses an address.
    fn hold(&mut self, ip: IpAddr, entry: Entry) {
        if let Entry::Pod { workload, .. } = entry {
            if let Some(s) = self.slots.get_mut(workload as usize) {
                s.addresses = s.addresses.saturating_add(1);
                s.idle_since = None;
            }
        }
        let before = self.by_ip.insert(ip, entry);
        self.release(before);
    }

    fn release(&mut self, entry: Option<Entry>) {
        if let Some(Entry::Pod { workload, .. }) = entry {
            if let Some(s) = self.slots.get_mut(workload as usize) {
                s.addresses = s.addresses.saturating_sub(1);
            }
        }
    }

    /// Record a workload declared by the source (known even without addresses, for namespace
    /// verdicts): it is never forgotten.
    pub fn add_workload(&mut self, w: Workload) {
        self.changed();
        let i = self.intern(w, None);
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.pinned = true;
        }
    }

    /// A pod's addresses now belong to it (a new pod reusing an address wins). Its mesh is what
    /// `workload.mesh` says (a workloads file).
    pub fn upsert_pod(&mut self, uid: u64, ips: &[IpAddr], workload: Workload, local: bool) {
        self.changed();
        let workload = self.intern(workload, None);
        for ip in ips {
            self.hold(
                *ip,
                Entry::Pod {
                    workload,
                    uid,
                    local,
                },
            );
        }
    }

    /// The same for a pod whose mesh follows its own signal and its namespace's label
    /// (Kubernetes: always known, so `mesh` is always `Some`).
    pub fn apply_pod(&mut self, pod: PodIdentity) {
        self.changed();
        let PodIdentity {
            uid,
            ips,
            workload,
            local,
            pod_mesh,
        } = pod;
        let workload = self.intern(workload, Some(pod_mesh));
        for ip in ips {
            self.hold(
                ip,
                Entry::Pod {
                    workload,
                    uid,
                    local,
                },
            );
        }
    }

    /// Forget a pod's addresses, unless another pod holds them by now.
    pub fn remove_pod(&mut self, uid: u64, ips: &[IpAddr]) {
        for ip in ips {
            if matches!(self.by_ip.get(ip), Some(Entry::Pod { uid: u, .. }) if *u == uid) {
                let gone = self.by_ip.remove(ip);
                self.release(gone);
                self.changed();
            }
        }
    }

    /// Remove every pod's addresses (their workloads stay, without pods).
    pub fn clear_pods(&mut self) {
        self.changed();
        self.by_ip.retain(|_, e| matches!(e, Entry::Node(_)));
        for s in &mut self.slots {
            s.addresses = 0;
        }
    }

    /// A relist: these are all the pods there are. The workload table is rebuilt from them
    /// (plus the workloads the source declared): workloads without pods are dropped now.
    pub fn replace_pods(&mut self, pods: impl IntoIterator<Item = PodIdentity>) {
        self.changed();
        self.clear_pods();
        self.retain_slots(|s| s.pinned);
        for p in pods {
            self.apply_pod(p);
        }
        self.shrink_if_sparse();
    }

    /// A node's addresses. Node addresses win over pods (hostNetwork pods share them).
    pub fn upsert_node(&mut self, name: &str, ips: &[IpAddr]) {
        self.changed();
        let n = self.intern_node(name);
        for ip in ips {
            self.hold(*ip, Entry::Node(n));
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        self.changed();
        if let Some(n) = self.nodes.iter().position(|x| x == name) {
            let n = n as u32;
            self.by_ip.retain(|_, e| *e != Entry::Node(n));
        }
    }

    /// Remove every node (before a relist replaces them); their names go too.
    pub fn clear_nodes(&mut self) {
        self.changed();
        self.by_ip.retain(|_, e| !matches!(e, Entry::Node(_)));
        self.nodes.clear();
    }

    /// A namespace's `istio.io/dataplane-mode` label: its workloads' mesh follows at once.
    pub fn set_namespace_ambient(&mut self, namespace: &str, ambient: bool) {
        let changed = if ambient {
            self.ambient_namespaces.insert(namespace.to_owned())
        } else {
            self.ambient_namespaces.remove(namespace)
        };
        if changed {
            self.changed();
            self.refresh_mesh(Some(namespace));
        }
    }

    /// A relist of namespaces: exactly these are labelled for ambient.
    pub fn replace_ambient_namespaces(&mut self, namespaces: impl IntoIterator<Item = String>) {
        self.changed();
        self.ambient_namespaces = namespaces.into_iter().collect();
        self.refresh_mesh(None);
    }

    /// Derive the mesh again for workloads that carry a pod signal (in `only`, or everywhere).
    /// Every such slot is kept consistent with `ambient_namespaces`, so the key a slot moves to
    /// cannot be another slot's.
    fn refresh_mesh(&mut self, only: Option<&str>) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(signal) = s.pod_mesh else { continue };
            if only.is_some_and(|ns| ns != s.workload.namespace) {
                continue;
            }
            let ambient = self.ambient_namespaces.contains(&s.workload.namespace);
            let mesh = Some(signal.effective(ambient));
            if s.workload.mesh == mesh {
                continue;
            }
            let mut key = (s.workload.clone(), s.pod_mesh);
            self.interned.remove(&key);
            key.0.mesh = mesh;
            s.workload.mesh = mesh;
            self.interned.insert(key, i as u32);
        }
    }

    /// Drop workloads that have had no pods for longer than `retention` (the agent passes its
    /// `--window`: verdicts keep naming a workload as long as its traffic is in the window).
    /// Call it periodically with the current time: a workload's idle time starts at the first
    /// sweep that finds it without pods (a pod coming back resets it), and it goes at the first
    /// sweep after that plus `retention`: between `retention` and `retention` + two sweep
    /// intervals after its last pod left. Declared workloads stay. Also gives back table space
    /// that churn left empty. Returns how many workloads were forgotten.
    pub fn forget_idle(&mut self, now: Nanos, retention: Nanos) -> usize {
        let expired = |s: &Slot| {
            !s.live()
                && s.idle_since
                    .is_some_and(|t| now.saturating_sub(t) > retention)
        };
        let mut any = false;
        for s in &mut self.slots {
            if s.live() {
                s.idle_since = None;
            } else {
                s.idle_since.get_or_insert(now);
                any |= expired(s);
            }
        }
        let forgotten = if any {
            self.retain_slots(|s| !expired(s))
        } else {
            0
        };
        // a sweep that only starts idle clocks or gives back space changes no answer
        if forgotten > 0 {
            self.changed();
        }
        self.shrink_if_sparse();
        forgotten
    }

    /// Keep the slots `keep` accepts, renumbering them in order; returns how many went. A slot
    /// that goes must hold no address.
    fn retain_slots(&mut self, mut keep: impl FnMut(&Slot) -> bool) -> usize {
        let mut next = 0u32;
        let remap: Vec<u32> = self
            .slots
            .iter()
            .map(|s| {
                if keep(s) {
                    next += 1;
                    next - 1
                } else {
                    GONE
                }
            })
            .collect();
        let gone = self.slots.len() - next as usize;
        if gone == 0 {
            return 0;
        }
        let renumber = |i: u32| remap.get(i as usize).copied().unwrap_or(GONE);
        let mut kept = remap.iter();
        self.slots
            .retain(|_| kept.next().is_some_and(|&i| i != GONE));
        self.interned.retain(|_, i| {
            *i = renumber(*i);
            *i != GONE
        });
        for e in self.by_ip.values_mut() {
            if let Entry::Pod { workload, .. } = e {
                *workload = renumber(*workload);
            }
        }
        gone
    }

    /// Give back table space once churn has left most of it empty.
    fn shrink_if_sparse(&mut self) {
        const SPARSE: usize = 4;
        const MIN: usize = 64;
        if self.slots.capacity() > SPARSE * self.slots.len().max(MIN) {
            self.slots.shrink_to(2 * self.slots.len());
        }
        if self.interned.capacity() > SPARSE * self.interned.len().max(MIN) {
            self.interned.shrink_to(2 * self.interned.len());
        }
        if self.by_ip.capacity() > SPARSE * self.by_ip.len().max(MIN) {
            self.by_ip.shrink_to(2 * self.by_ip.len());
        }
    }

    /// A Service: each of its ClusterIPs and ports (`(port, target_port)`) leads to `backend`'s
    /// workload (its `target_port` is taken from each pair). A port set again is replaced.
    pub fn set_service(
        &mut self,
        cluster_ips: &[IpAddr],
        ports: &[(u16, u16)],
        backend: &ServiceBackend,
    ) {
        if ports.is_empty() {
            return;
        }
        self.changed();
        for ip in cluster_ips {
            let at = self.services.entry(*ip).or_default();
            let new = ports
                .iter()
                .filter(|(port, _)| !at.iter().any(|(p, _)| p == port))
                .count();
            at.reserve_exact(new);
            for &(port, target_port) in ports {
                let to = ServiceBackend {
                    target_port,
                    ..backend.clone()
                };
                match at.iter_mut().find(|(p, _)| *p == port) {
                    Some(slot) => slot.1 = to,
                    None => at.push((port, to)),
                }
            }
        }
    }

    /// Forget a Service's ClusterIPs (before it is set again, or when it is deleted).
    pub fn remove_service_ips(&mut self, cluster_ips: &[IpAddr]) {
        self.changed();
        for ip in cluster_ips {
            self.services.remove(ip);
        }
    }

    /// Forget every Service (before a relist sets them again).
    pub fn clear_services(&mut self) {
        self.changed();
        self.services.clear();
    }

    /// Service ports known (ClusterIP and port pairs).
    pub fn service_port_count(&self) -> usize {
        self.services.values().map(Vec::len).sum()
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Set the cluster's PeerAuthentications (`None`: not known).
    pub fn set_peer_authentications(&mut self, policies: Option<Vec<PeerAuthentication>>) {
        self.changed();
        self.peer_authentications = policies.map(Arc::new);
    }

    /// The cluster's PeerAuthentications, when known (a cheap shared copy).
    pub fn peer_authentications(&self) -> Option<Arc<Vec<PeerAuthentication>>> {
        self.peer_authentications.clone()
    }

    /// Record changes of the PeerAuthentications as the watcher saw them (bounded).
    pub fn record_peer_auth_changes(&mut self, changes: Vec<crate::peer_auth::PolicyChange>) {
        if !changes.is_empty() {
            self.changed();
            self.peer_auth_changes.record(changes);
        }
    }

    /// The changes of the PeerAuthentications recorded.
    pub fn peer_auth_changes(&self) -> &crate::peer_auth::ChangeLog {
        &self.peer_auth_changes
    }

    /// Workloads interned (with pods, declared, or idle and not yet forgotten).
    /// The workloads with a pod on this node (for `meshwatch_workload_info`).
    pub fn local_workloads(&self) -> Vec<&Workload> {
        let mut seen = HashSet::new();
        self.by_ip
            .values()
            .filter_map(|e| match e {
                Entry::Pod {
                    workload,
                    local: true,
                    ..
                } => Some(*workload),
                _ => None,
            })
            .filter(|w| seen.insert(*w))
            .filter_map(|w| self.slots.get(w as usize).map(|s| &s.workload))
            .collect()
    }

    pub fn workload_count(&self) -> usize {
        self.slots.len()
    }

    /// Approximate heap bytes held: table capacities times their entry sizes, plus the strings.
    /// It does not depend on what else the process does; the same insertions give the same
    /// figure. After removals it may read low: a hash table's capacity leaves out the buckets
    /// its deleted entries hold until it rehashes.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let strings: usize = self.slots.iter().map(|s| workload_heap(&s.workload)).sum();
        hash_table_bytes(self.by_ip.capacity(), size_of::<(IpAddr, Entry)>())
            + self.slots.capacity() * size_of::<Slot>()
            + hash_table_bytes(self.interned.capacity(), size_of::<(Key, u32)>())
            + 2 * strings // a slot and its interned key each own a copy
            + self.nodes.capacity() * size_of::<String>()
            + self.nodes.iter().map(String::capacity).sum::<usize>()
            + hash_table_bytes(self.ambient_namespaces.capacity(), size_of::<String>())
            + self
                .ambient_namespaces
                .iter()
                .map(String::capacity)
                .sum::<usize>()
            + self.services_heap_bytes()
            + self.peer_authentications_heap_bytes()
    }

    /// The part of [`IdentityMap::heap_bytes`] the PeerAuthentications hold.
    pub fn peer_authentications_heap_bytes(&self) -> usize {
        self.peer_authentications.as_ref().map_or(0, |p| {
            p.capacity() * std::mem::size_of::<PeerAuthentication>()
                + p.iter().map(PeerAuthentication::heap_bytes).sum::<usize>()
        })
    }

    /// The part of [`IdentityMap::heap_bytes`] the Service table holds.
    pub fn services_heap_bytes(&self) -> usize {
        use std::mem::size_of;
        type Ports = Vec<(u16, ServiceBackend)>;
        hash_table_bytes(self.services.capacity(), size_of::<(IpAddr, Ports)>())
            + self
                .services
                .values()
                .map(|ports| {
                    ports.capacity() * size_of::<(u16, ServiceBackend)>()
                        + ports
                            .iter()
                            .map(|(_, b)| b.namespace.capacity() + b.workload.capacity())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// A hashbrown table: buckets are 8/7 of the capacity, each an entry and a control byte.
fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    capacity * 8 / 7 * (entry + 1)
}

/// Heap bytes a workload's strings and labels hold.
fn workload_heap(w: &Workload) -> usize {
    w.namespace.capacity()
        + w.workload.capacity()
        + w.service_account.as_ref().map_or(0, String::capacity)
        + w.labels.heap_bytes()
}

impl IdentitySource for IdentityMap {
    fn lookup(&self, ip: IpAddr) -> Identity<'_> {
        match self.by_ip.get(&ip) {
            Some(Entry::Pod { workload, .. }) => self
                .slots
                .get(*workload as usize)
                .map_or(Identity::Unknown, |s| Identity::Workload(&s.workload)),
            Some(Entry::Node(n)) => self
                .nodes
                .get(*n as usize)
                .map_or(Identity::Unknown, |n| Identity::Node(n)),
            None => Identity::Unknown,
        }
    }

    fn workloads(&self) -> Vec<&Workload> {
        self.slots.iter().map(|s| &s.workload).collect()
    }

    /// One per (namespace, workload): the variants with pods (or declared) win over idle ones
    /// (an old rollout's service account, a mesh before a relabel); variants that disagree on
    /// the mesh (a rollout adding a sidecar) leave it unknown, judged as usual; their labels
    /// are what they carry alike ([`PodLabels::merge`]: a key they disagree on decides no
    /// selector).
    fn known_workloads(&self) -> Vec<KnownWorkload<'_>> {
        let mut out: Vec<KnownWorkload<'_>> = Vec::new();
        let mut seen: HashMap<(&str, &str), (usize, bool)> = HashMap::new();
        for s in &self.slots {
            let w = &s.workload;
            let live = s.live();
            match seen.entry((&w.namespace, &w.workload)) {
                Vacant(e) => {
                    e.insert((out.len(), live));
                    out.push(w.as_known());
                }
                Occupied(mut e) => {
                    let (i, was_live) = *e.get();
                    let Some(k) = out.get_mut(i) else { continue };
                    if live && !was_live {
                        *k = w.as_known();
                        e.insert((i, true));
                    } else if live == was_live {
                        if k.mesh != w.mesh {
                            k.mesh = None;
                        }
                        if *k.labels != w.labels {
                            k.labels = std::borrow::Cow::Owned(k.labels.merge(&w.labels));
                        }
                    }
                }
            }
        }
        out
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        matches!(self.by_ip.get(&ip), Some(Entry::Pod { local: true, .. }))
    }

    fn service(&self, ip: IpAddr, port: u16) -> Option<&ServiceBackend> {
        self.services
            .get(&ip)?
            .iter()
            .find_map(|(p, b)| (*p == port).then_some(b))
    }
}

/// A stable 64-bit hash of a pod UID.
pub fn uid_hash(uid: &str) -> u64 {
    // FNV-1a: stable across runs and processes, unlike the std hasher.
    uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ns: &str, name: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            workload: name.into(),
            service_account: None,
            labels: PodLabels::Unknown,
            mesh: None,
        }
    }

    #[test]
    fn ip_reuse_after_deletion_resolves_to_the_new_pod() {
        let ip: IpAddr = "10.244.1.7".parse().expect("ip");
        let mut m = IdentityMap::default();
        m.upsert_pod(uid_hash("old"), &[ip], w("a", "old"), true);
        // the new pod is added before the old pod's DELETED event arrives
        m.upsert_pod(uid_hash("new"), &[ip], w("b", "new"), false);
        m.remove_pod(uid_hash("old"), &[ip]);
        assert_eq!(m.lookup(ip), Identity::Workload(&w("b", "new")));
        assert!(!m.is_local(ip));
        m.remove_pod(uid_hash("new"), &[ip]);
        assert_eq!(m.lookup(ip), Identity::Unknown);
    }

    #[test]
    fn nodes_and_pods_clear_separately() {
        let mut m = IdentityMap::default();
        let (p, n): (IpAddr, IpAddr) = (
            "10.0.0.9".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
        );
        m.upsert_pod(1, &[p], w("a", "x"), true);
        m.upsert_node("node-1", &[n]);
        m.clear_pods();
        assert_eq!(
            (m.lookup(p), m.lookup(n)),
            (Identity::Unknown, Identity::Node("node-1"))
        );
        m.remove_node("node-1");
        assert!(m.is_empty());
    }

    fn pods_of(n: u32, workloads: u32) -> IdentityMap {
        let mut m = IdentityMap::default();
        for i in 0..n {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            m.upsert_pod(
                u64::from(i),
                &[ip],
                w("ns", &format!("deploy-{}", i % workloads)),
                false,
            );
        }
        m
    }

    #[test]
    fn heap_bytes_per_ten_thousand_pods() {
        // heap_bytes() is computed from the map's own capacities, not from the process: other
        // tests running at the same time do not move it, and the same pods give the same figure
        let m = pods_of(100_000, 5_000);
        let per_10k = m.heap_bytes() / 10;
        println!(
            "identity map: {} KiB heap per 10k pods (100k pods, 5k workloads)",
            per_10k / 1024
        );
        assert!(per_10k < 1 << 20, "{per_10k} bytes per 10k pods");
        assert_eq!(m.heap_bytes(), pods_of(100_000, 5_000).heap_bytes());
        assert_eq!((m.len(), m.workload_count()), (100_000, 5_000));
    }

    fn job_pod(m: &mut IdentityMap, i: u32, add: bool) {
        let ip = IpAddr::from([10, 244, (i >> 8) as u8, i as u8]);
        if add {
            // a Job's pod: a new workload name each time (not a CronJob's, which would repeat)
            m.upsert_pod(
                u64::from(i),
                &[ip],
                w("batch", &format!("job-{i:x}")),
                false,
            );
        } else {
            m.remove_pod(u64::from(i), &[ip]);
        }
    }

    #[test]
    fn job_churn_keeps_the_map_flat() {
        const SECOND: Nanos = 1_000_000_000;
        const JOBS: u32 = 100_000;
        const RUNNING: u32 = 20; // each Job's pod lives 20 s; one starts every second
        const RETENTION: Nanos = 600 * SECOND;
        const SWEEP_EVERY: u32 = 50;
        const EARLY: u32 = 5_000; // a multiple of SWEEP_EVERY
        let mut m = IdentityMap::default();
        let mut early = (0, 0);
        let mut peak = (0, 0);
        for i in 0..JOBS {
            let now = Nanos::from(i) * SECOND;
            job_pod(&mut m, i, true);
            if let Some(done) = i.checked_sub(RUNNING) {
                job_pod(&mut m, done, false);
            }
            if i % SWEEP_EVERY != 0 {
                continue;
            }
            m.forget_idle(now, RETENTION);
            let (workloads, bytes) = (m.workload_count(), m.heap_bytes());
            if i == EARLY {
                early = (workloads, bytes);
            } else if i > EARLY {
                peak = (peak.0.max(workloads), peak.1.max(bytes));
            }
        }
        let (workloads, bytes) = (m.workload_count(), m.heap_bytes());
        println!(
            "identity map, {JOBS} Jobs: {workloads} workloads, {bytes} heap bytes at the end \
             (peak {} and {} after {EARLY} Jobs; {} and {} at {EARLY})",
            peak.0, peak.1, early.0, early.1
        );
        // running ones, plus idle ones: a Job is forgotten within the retention and two sweep
        // intervals after its pod left (one until a sweep sees it idle, one until a sweep
        // finds the retention passed)
        let bound = (RUNNING + (RETENTION / SECOND) as u32 + 2 * SWEEP_EVERY) as usize;
        assert!(
            peak.0 <= bound,
            "{} workloads interned (bound {bound})",
            peak.0
        );
        // heap_bytes() reads table capacities: a table may double once (a rehash) and stay
        assert!(
            peak.1 <= 2 * early.1,
            "heap grew from {} to {} bytes",
            early.1,
            peak.1
        );
        assert!(peak.1 < 512 << 10, "{} bytes", peak.1);
        // at the end, also the Jobs since the last sweep
        assert!(
            workloads <= bound + SWEEP_EVERY as usize,
            "{workloads} at the end"
        );
        assert!(bytes <= 2 * early.1, "{bytes} bytes at the end");
        assert_eq!(m.len(), RUNNING as usize, "addresses: the running pods");
        assert!(
            m.workloads().iter().all(|w| w.workload != "job-0"),
            "workloads() no longer lists a forgotten Job"
        );
    }

    #[test]
    fn idle_workloads_go_after_the_retention_and_the_rest_keep_resolving() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let names = |m: &IdentityMap| -> Vec<String> {
            m.workloads().iter().map(|w| w.workload.clone()).collect()
        };
        let mut m = IdentityMap::default();
        m.add_workload(w("a", "declared")); // from a workloads file: stays without pods
        m.upsert_pod(1, &[ip("10.0.0.1")], w("a", "gone"), false);
        m.upsert_pod(2, &[ip("10.0.0.2")], w("a", "back"), false);
        m.upsert_pod(3, &[ip("10.0.0.3"), ip("fd00::3")], w("a", "stays"), false);
        m.remove_pod(1, &[ip("10.0.0.1")]);
        m.remove_pod(2, &[ip("10.0.0.2")]);
        // dual-stack: one address left is still a pod
        m.remove_pod(3, &[ip("fd00::3")]);
        assert_eq!(m.forget_idle(100, 50), 0, "first sweep: idle from now on");
        assert_eq!(
            m.forget_idle(150, 50),
            0,
            "not longer than the retention yet"
        );
        m.upsert_pod(4, &[ip("10.0.0.4")], w("a", "back"), false);
        assert_eq!(m.forget_idle(151, 50), 1);
        assert_eq!(names(&m), ["declared", "back", "stays"]);
        // slots were renumbered: every address still resolves to its own workload
        assert_eq!(
            m.lookup(ip("10.0.0.3")),
            Identity::Workload(&w("a", "stays"))
        );
        assert_eq!(
            m.lookup(ip("10.0.0.4")),
            Identity::Workload(&w("a", "back"))
        );
        assert_eq!(m.lookup(ip("10.0.0.1")), Identity::Unknown);
        // "back" lost its pod again: idle since this sweep
        m.remove_pod(4, &[ip("10.0.0.4")]);
        assert_eq!(m.forget_idle(160, 50), 0);
        // a pod came and went between two sweeps: its idle time starts over
        m.upsert_pod(5, &[ip("10.0.0.5")], w("a", "back"), false);
        m.remove_pod(5, &[ip("10.0.0.5")]);
        assert_eq!(
            m.forget_idle(211, 50),
            0,
            "idle since this sweep, not since 160"
        );
        assert_eq!(m.forget_idle(261, 50), 0);
        assert_eq!(m.forget_idle(262, 50), 1);
        assert_eq!(names(&m), ["declared", "stays"]);
        assert_eq!(
            m.lookup(ip("10.0.0.3")),
            Identity::Workload(&w("a", "stays"))
        );
        assert_eq!(
            m.forget_idle(10_000, 50),
            0,
            "declared and running ones stay"
        );
    }

    #[test]
    fn a_node_taking_a_pod_address_leaves_the_workload_without_pods() {
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        let mut m = IdentityMap::default();
        m.upsert_pod(1, &[ip], w("a", "x"), true);
        m.upsert_node("node-1", &[ip]);
        m.forget_idle(0, 10);
        assert_eq!(m.forget_idle(11, 10), 1);
        assert_eq!(m.workload_count(), 0);
        assert_eq!(m.lookup(ip), Identity::Node("node-1"));
    }

    #[test]
    fn replace_pods_keeps_only_workloads_with_pods_and_declared_ones() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let pod = |uid, addr: &str, name: &str| PodIdentity {
            uid,
            ips: vec![ip(addr)],
            workload: w("a", name),
            local: false,
            pod_mesh: PodMesh::Unlabelled,
        };
        let mut m = IdentityMap::default();
        m.add_workload(w("a", "declared"));
        m.apply_pod(pod(1, "10.0.0.1", "old-job"));
        m.apply_pod(pod(2, "10.0.0.2", "web"));
        m.remove_pod(1, &[ip("10.0.0.1")]);
        m.upsert_node("node-1", &[ip("10.0.0.100")]);
        m.replace_pods([pod(3, "10.0.0.3", "web"), pod(4, "10.0.0.4", "new-job")]);
        let names: Vec<&str> = m.workloads().iter().map(|w| w.workload.as_str()).collect();
        assert_eq!(names, ["declared", "web", "new-job"]);
        assert_eq!(m.lookup(ip("10.0.0.2")), Identity::Unknown);
        assert_eq!(m.lookup(ip("10.0.0.100")), Identity::Node("node-1"));
        match m.lookup(ip("10.0.0.4")) {
            Identity::Workload(x) => assert_eq!(x.workload, "new-job"),
            other => panic!("new-job: {other:?}"),
        }
    }

    #[test]
    fn pod_signal_and_namespace_decide_the_mesh() {
        let rows = [
            (PodMesh::Sidecar, false, Mesh::Sidecar),
            (PodMesh::Sidecar, true, Mesh::Sidecar),
            (PodMesh::Ambient, false, Mesh::Ambient),
            (PodMesh::Ambient, true, Mesh::Ambient),
            (PodMesh::OptedOut, true, Mesh::None),
            (PodMesh::OptedOut, false, Mesh::None),
            (PodMesh::Unlabelled, true, Mesh::Ambient),
            (PodMesh::Unlabelled, false, Mesh::None),
        ];
        for (signal, ambient, mesh) in rows {
            assert_eq!(
                signal.effective(ambient),
                mesh,
                "{signal:?} ambient={ambient}"
            );
        }
    }

    #[test]
    fn known_workloads_prefer_live_variants_and_leave_a_split_mesh_unknown() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let pod = |uid, addr: &str, name: &str, sa: &str, pod_mesh| PodIdentity {
            uid,
            ips: vec![ip(addr)],
            workload: Workload {
                service_account: Some(sa.into()),
                ..w("a", name)
            },
            local: false,
            pod_mesh,
        };
        let mut m = IdentityMap::default();
        // a rollout that changed the service account and added a sidecar: the old variant
        // has no pods left
        m.apply_pod(pod(1, "10.0.0.1", "api", "old", PodMesh::Unlabelled));
        m.apply_pod(pod(2, "10.0.0.2", "api", "new", PodMesh::Sidecar));
        m.remove_pod(1, &[ip("10.0.0.1")]);
        // a rollout in progress: one pod with a sidecar, one without
        m.apply_pod(pod(3, "10.0.0.3", "web", "web", PodMesh::Sidecar));
        m.apply_pod(pod(4, "10.0.0.4", "web", "web", PodMesh::Unlabelled));
        assert_eq!(m.workloads().len(), 4);
        let known: Vec<(&str, Option<Mesh>)> = m
            .known_workloads()
            .iter()
            .map(|k| (k.workload, k.mesh))
            .collect();
        assert_eq!(known, [("api", Some(Mesh::Sidecar)), ("web", None)]);
    }

    /// Pods of one workload with other labels (a rollout changing `version`): while both have
    /// pods, the known labels are what they share; once the old ones are gone, the new ones'.
    #[test]
    fn known_workloads_merge_the_labels_of_live_variants() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let labelled = |pairs: &[(&str, &str)]| {
            PodLabels::of_pod(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let pod = |uid, addr: &str, version: &str, hash: &str| PodIdentity {
            uid,
            ips: vec![ip(addr)],
            workload: Workload {
                labels: labelled(&[
                    ("app", "reviews"),
                    ("version", version),
                    ("pod-template-hash", hash),
                ]),
                ..w("a", "reviews")
            },
            local: true,
            pod_mesh: PodMesh::Sidecar,
        };
        let v1: std::collections::BTreeMap<String, String> =
            [("version".to_owned(), "v1".to_owned())].into();
        let mut m = IdentityMap::default();
        m.apply_pod(pod(1, "10.0.0.1", "v1", "aaa"));
        m.apply_pod(pod(2, "10.0.0.2", "v1", "bbb"));
        assert_eq!(
            m.workload_count(),
            1,
            "pod-template-hash makes no new variant"
        );
        let selected = |m: &IdentityMap| m.known_workloads()[0].labels.selected_by(&v1);
        assert_eq!(selected(&m), Ok(true));
        m.apply_pod(pod(3, "10.0.0.3", "v2", "ccc"));
        assert_eq!(
            selected(&m),
            Err(crate::peer_auth::Undecided::Varying("version".into()))
        );
        assert_eq!(m.known_workloads()[0].labels.get("app"), Some("reviews"));
        m.remove_pod(1, &[ip("10.0.0.1")]);
        m.remove_pod(2, &[ip("10.0.0.2")]);
        assert_eq!(selected(&m), Ok(false), "only v2 pods are left");
    }

    #[test]
    fn heap_bytes_count_labels_and_policies() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut m = IdentityMap::default();
        m.upsert_pod(1, &[ip("10.0.0.1")], w("a", "web"), false);
        let bare = m.heap_bytes();
        let mut labelled = IdentityMap::default();
        let labels = (0..20)
            .map(|i| (format!("example.com/key-{i}"), format!("value-{i}")))
            .collect();
        labelled.upsert_pod(
            1,
            &[ip("10.0.0.1")],
            Workload {
                labels: PodLabels::of_pod(labels),
                ..w("a", "web")
            },
            false,
        );
        assert!(
            labelled.heap_bytes() >= bare + 2 * 20 * 20,
            "{} vs {bare}",
            labelled.heap_bytes()
        );
        let policies = crate::peer_auth::parse_list(
            "items:\n- metadata: {namespace: a, name: web-strict, creationTimestamp: '2026-01-01T00:00:00Z'}\n  spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}\n",
        )
        .expect("policies");
        m.set_peer_authentications(Some(vec![policies[0].clone(); 100]));
        assert!(
            m.heap_bytes() >= bare + 100 * std::mem::size_of::<PeerAuthentication>(),
            "{} vs {bare}",
            m.heap_bytes()
        );
        assert_eq!(m.heap_bytes() - bare, m.peer_authentications_heap_bytes());
    }

    #[test]
    fn service_ports_are_set_replaced_and_removed_per_address() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let backend = |workload: &str| ServiceBackend {
            namespace: "a".into(),
            workload: workload.into(),
            target_port: 0,
        };
        let at = |m: &IdentityMap, addr: IpAddr, port| {
            m.service(addr, port)
                .map(|b| (b.workload.clone(), b.target_port))
        };
        let (v4, v6) = (ip("10.96.0.5"), ip("fd00:10:96::5"));
        let mut m = IdentityMap::default();
        m.set_service(&[v4, v6], &[(80, 8080), (443, 8443)], &backend("web"));
        assert_eq!(at(&m, v6, 443), Some(("web".into(), 8443)));
        // a port set again is replaced, the others stay
        m.set_service(&[v4], &[(80, 9090)], &backend("api"));
        assert_eq!(at(&m, v4, 80), Some(("api".into(), 9090)));
        assert_eq!(at(&m, v4, 443), Some(("web".into(), 8443)));
        assert_eq!(m.service_port_count(), 4);
        assert!(
            m.services_heap_bytes() > 0 && m.is_empty(),
            "no address is a pod"
        );
        m.remove_service_ips(&[v4]);
        assert_eq!(
            (at(&m, v4, 443), at(&m, v6, 80)),
            (None, Some(("web".into(), 8080)))
        );
        m.clear_services();
        assert_eq!((m.service_port_count(), at(&m, v6, 80)), (0, None));
    }

    #[test]
    fn ten_thousand_pods_stay_compact() {
        let mut m = IdentityMap::default();
        for i in 0..10_000u32 {
            let ip = IpAddr::from([10, 244, (i >> 8) as u8, i as u8]);
            // 500 workloads of 20 replicas each
            m.upsert_pod(
                u64::from(i),
                &[ip],
                w("ns", &format!("deploy-{}", i % 500)),
                false,
            );
        }
        let bytes = m.heap_bytes();
        println!(
            "identity map: 10000 pods, 500 workloads: ~{} KiB",
            bytes / 1024
        );
        assert!(bytes < 4 << 20, "{bytes} bytes for 10k pods");
        // with the labels an injected Deployment's pods carry (the hash is not kept)
        let mut labelled = IdentityMap::default();
        for i in 0..10_000u32 {
            let ip = IpAddr::from([10, 244, (i >> 8) as u8, i as u8]);
            let name = format!("deploy-{}", i % 500);
            let labels = [
                ("app", name.as_str()),
                ("version", "v1"),
                ("team", "payments"),
                ("security.istio.io/tlsMode", "istio"),
                ("service.istio.io/canonical-name", name.as_str()),
                ("service.istio.io/canonical-revision", "v1"),
                ("pod-template-hash", "5b7c9f8d4"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            labelled.upsert_pod(
                u64::from(i),
                &[ip],
                Workload {
                    labels: PodLabels::of_pod(labels),
                    ..w("ns", &name)
                },
                false,
            );
        }
        let with_labels = labelled.heap_bytes();
        println!(
            "identity map: the same with 6 labels per workload: ~{} KiB",
            with_labels / 1024
        );
        assert_eq!(labelled.workload_count(), 500);
        assert!(
            with_labels > bytes && with_labels < 4 << 20,
            "{with_labels}"
        );
    }

    /// A change of every kind gives the map a new generation (the agent rebuilds
    /// `meshwatch_workload_info` only then); what changes no answer keeps it. Every public
    /// `&mut self` method of the map must be in the list.
    #[test]
    fn every_change_gives_a_new_generation_and_no_change_none() {
        fn ip(s: &str) -> IpAddr {
            s.parse().expect("ip")
        }
        fn pod(uid: u64, addr: &str) -> PodIdentity {
            PodIdentity {
                uid,
                ips: vec![ip(addr)],
                workload: w("a", "web"),
                local: true,
                pod_mesh: PodMesh::Unlabelled,
            }
        }
        fn backend() -> ServiceBackend {
            ServiceBackend {
                namespace: "a".into(),
                workload: "web".into(),
                target_port: 8080,
            }
        }
        // something of every kind, so each change below is a real one
        fn base() -> IdentityMap {
            let mut m = IdentityMap::default();
            m.upsert_pod(1, &[ip("10.0.0.1")], w("a", "web"), true);
            m.apply_pod(pod(2, "10.0.0.2"));
            m.upsert_node("node-1", &[ip("10.0.1.1")]);
            m.set_service(&[ip("10.96.0.1")], &[(80, 8080)], &backend());
            m
        }
        fn nothing(_: &mut IdentityMap) {}
        type Step = fn(&mut IdentityMap);
        // (method, what prepares the map for it, the change)
        let changes: [(&str, Step, Step); 17] = [
            ("add_workload", nothing, |m| {
                m.add_workload(w("b", "declared"))
            }),
            ("upsert_pod", nothing, |m| {
                m.upsert_pod(3, &[ip("10.0.0.3")], w("a", "web"), true)
            }),
            ("apply_pod", nothing, |m| m.apply_pod(pod(4, "10.0.0.4"))),
            ("remove_pod", nothing, |m| {
                m.remove_pod(1, &[ip("10.0.0.1")])
            }),
            ("clear_pods", nothing, IdentityMap::clear_pods),
            ("replace_pods", nothing, |m| {
                m.replace_pods([pod(5, "10.0.0.5")])
            }),
            ("upsert_node", nothing, |m| {
                m.upsert_node("node-2", &[ip("10.0.1.2")])
            }),
            ("remove_node", nothing, |m| m.remove_node("node-1")),
            ("clear_nodes", nothing, IdentityMap::clear_nodes),
            ("set_namespace_ambient", nothing, |m| {
                m.set_namespace_ambient("a", true)
            }),
            ("replace_ambient_namespaces", nothing, |m| {
                m.replace_ambient_namespaces(["a".to_owned()])
            }),
            (
                "forget_idle",
                |m| {
                    m.clear_pods();
                    m.forget_idle(100, 50); // idle from now on
                },
                |m| {
                    assert_eq!(m.forget_idle(200, 50), 2, "both pod variants of a/web go");
                },
            ),
            ("set_service", nothing, |m| {
                m.set_service(&[ip("10.96.0.2")], &[(443, 8443)], &backend())
            }),
            ("remove_service_ips", nothing, |m| {
                m.remove_service_ips(&[ip("10.96.0.1")])
            }),
            ("clear_services", nothing, IdentityMap::clear_services),
            ("set_peer_authentications", nothing, |m| {
                m.set_peer_authentications(Some(Vec::new()))
            }),
            ("record_peer_auth_changes", nothing, |m| {
                m.record_peer_auth_changes(vec![crate::peer_auth::PolicyChange {
                    at: 1,
                    namespace: "a".into(),
                    selector: None,
                }])
            }),
        ];
        for (name, prepare, change) in changes {
            let mut m = base();
            prepare(&mut m);
            let before = m.generation();
            change(&mut m);
            assert_ne!(
                m.generation(),
                before,
                "{name} changed the map, not its generation"
            );
        }
        // the list covers every public method that takes the map mutably
        let source = include_str!("identity.rs");
        let code = source
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(source);
        for (at, _) in code.match_indices("    pub fn ") {
            let signature = &code[at..];
            let signature = &signature[..signature.find(')').unwrap_or(signature.len())];
            let name = signature["    pub fn ".len()..]
                .split(['(', '<'])
                .next()
                .unwrap_or_default();
            if signature.contains("&mut self") {
                assert!(
                    changes.iter().any(|(n, ..)| *n == name),
                    "IdentityMap::{name} takes &mut self: add it to this test"
                );
            }
        }
        // what changes no answer keeps the generation
        let mut m = base();
        let before = m.generation();
        m.remove_pod(99, &[ip("10.0.0.1")]); // not its pod
        m.set_namespace_ambient("a", false); // already not ambient
        m.set_service(&[ip("10.96.0.1")], &[], &backend()); // no port
        assert_eq!(m.forget_idle(100, 50), 0, "nothing idle");
        assert_eq!(
            m.generation(),
            before,
            "nothing changed, yet a new generation"
        );
        // a map built the same way again (a reloaded workloads file) has another generation
        assert_ne!(base().generation(), base().generation());
        assert_eq!(IdentityMap::default().generation(), 0);
    }
}
