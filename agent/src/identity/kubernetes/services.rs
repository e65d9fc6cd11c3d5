//! Services and EndpointSlices, kept only as far as the mapping ClusterIP:port -> (namespace,
//! workload, target port) needs them.
//!
//! Per Service with a ClusterIP: its ClusterIPs and TCP ports (port, name, a numeric
//! `targetPort`). Per EndpointSlice (`discovery.k8s.io/v1`): the Service it belongs to (label
//! `kubernetes.io/service-name`), its endpoints' first addresses (the API calls the others
//! fungible) and its TCP ports by name. No Service or EndpointSlice object is kept; names that
//! are only compared (Services, ports, slices) are kept as 64-bit hashes.
//!
//! The workload behind a Service is read from the [`IdentityMap`]: its endpoints' addresses are
//! pod IPs, resolved by the same owner resolution as the pods (an endpoint's `targetRef` names
//! the pod, but the map knows pods by address, and a selectorless Service's hand-made slice may
//! have no `targetRef`). An address that resolves to no workload (a node's, an address outside
//! the cluster, a pod not listed yet) does not count; a pod that shows up later at an address
//! no pod or node held gets its Services resolved again, and every relist (pods, Services,
//! EndpointSlices) resolves them all. Headless Services (`clusterIP: None`) and ExternalName
//! Services have no ClusterIP: skipped. UDP and SCTP ports are skipped too (connections are
//! TCP; `53/UDP` and `53/TCP` would share a key). Every endpoint counts, ready or not: readiness
//! does not change which workload a Service selects.
//!
//! A Service whose endpoints belong to several workloads (a selector spanning Deployments, like
//! bookinfo's `reviews` over `reviews-v1..v3`) maps to the workload with the most endpoints:
//! kube-proxy spreads connections evenly over endpoints, so a connection seen only at the
//! ClusterIP most likely went there. The others' share of such connections is judged at it too:
//! a capture that also sees the backend view (the node, the server pod) judges each connection
//! at its real backend instead. Ties go to the first by namespace and workload name, so the
//! answer does not depend on event order.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::identity::{
    hash_table_bytes, uid_hash, Identity, IdentityMap, IdentitySource, ServiceBackend, Workload,
};

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A name kept only to be compared: a stable 64-bit hash of it. Two names colliding is out of
/// reach (about 2^-64 per pair: some 10^-11 among 10k Services).
pub type NameHash = u64;

/// A Service: the hash of its `namespace/name` (neither may contain a `/`).
pub type ServiceKey = NameHash;

fn key(namespace: Option<&str>, name: &str) -> ServiceKey {
    uid_hash(&format!("{}/{name}", namespace.unwrap_or("default")))
}

fn name_hash(name: Option<&str>) -> NameHash {
    uid_hash(name.unwrap_or_default())
}

/// What the mapping needs of a Service with a ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub cluster_ips: Box<[IpAddr]>,
    pub ports: Box<[ServicePortEntry]>,
}

/// One TCP port of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePortEntry {
    pub port: u16,
    /// Its name (an unnamed port's is the empty name's): the EndpointSlice port of the same
    /// name carries the port on the pods.
    pub name: NameHash,
    /// A numeric `targetPort` (the API server defaults it to `port`); `None` when it names a
    /// container port, which only the EndpointSlices resolve.
    pub target: Option<u16>,
}

/// What the mapping needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    /// The slice's own name (its namespace is its Service's).
    pub name: NameHash,
    /// Each endpoint's first address.
    pub addresses: Box<[IpAddr]>,
    /// TCP ports: name, port.
    pub ports: Box<[(NameHash, u16)]>,
}

fn tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

/// A Service's `namespace/name`.
pub fn service_key(service: &Service) -> ServiceKey {
    let meta = &service.metadata;
    key(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The ClusterIPs and TCP ports of a Service; `None` when it has no ClusterIP (headless,
/// ExternalName) or no TCP port.
pub fn service_entry(service: &Service) -> Option<ServiceEntry> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // clusterIPs holds clusterIP first, and the other family's address on dual-stack; "None"
    // (headless) and "" parse as no address
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }
    let ports: Box<[ServicePortEntry]> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| tcp(p.protocol.as_deref()))
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target = match &p.target_port {
                None => Some(port),
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(s)) => s.parse().ok(),
            };
            Some(ServicePortEntry {
                port,
                name: name_hash(p.name.as_deref()),
                target,
            })
        })
        .collect();
    (!cluster_ips.is_empty() && !ports.is_empty()).then(|| ServiceEntry {
        cluster_ips: cluster_ips.into_boxed_slice(),
        ports,
    })
}

/// The Service an EndpointSlice belongs to, and what the mapping needs of it; `None` without a
/// `kubernetes.io/service-name` label (a slice of no Service: kube-proxy ignores it too).
pub fn slice_entry(slice: &EndpointSlice) -> Option<(ServiceKey, SliceEntry)> {
    let meta = &slice.metadata;
    let service = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let addresses = slice
        .endpoints
        .iter()
        .filter_map(|e| e.addresses.first()?.parse().ok())
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| tcp(p.protocol.as_deref()))
        .filter_map(|p| Some((name_hash(p.name.as_deref()), u16::try_from(p.port?).ok()?)))
        .collect();
    Some((
        key(meta.namespace.as_deref(), service),
        SliceEntry {
            name: name_hash(meta.name.as_deref()),
            addresses,
            ports,
        },
    ))
}

/// What a Service resolves to: the backend (its `target_port` unset) and `(port, target_port)`
/// pairs, or nothing; and whether some endpoint address was unknown (no pod, no node: maybe a
/// pod not seen yet).
type Resolved = (Option<(ServiceBackend, Vec<(u16, u16)>)>, bool);

/// The workload behind a Service and its target ports (see the module's doc for the choice
/// among several workloads). Per Service port: the port of that name in an EndpointSlice
/// holding the workload's endpoints, else the numeric `targetPort`; a port named on the pods
/// that no slice resolves is left out.
fn resolve(service: &ServiceEntry, slices: &[SliceEntry], map: &IdentityMap) -> Resolved {
    let same = |a: &Workload, b: &Workload| a.namespace == b.namespace && a.workload == b.workload;
    let mut tally: Vec<(&Workload, u32)> = Vec::new();
    let mut unknown = false;
    for ip in slices.iter().flat_map(|s| s.addresses.iter()) {
        let w = match map.lookup(*ip) {
            Identity::Workload(w) => w,
            Identity::Node(_) => continue,
            Identity::Unknown => {
                unknown = true;
                continue;
            }
        };
        match tally.iter_mut().find(|(t, _)| same(t, w)) {
            Some((_, n)) => *n += 1,
            None => tally.push((w, 1)),
        }
    }
    let best = tally.iter().max_by(|(a, m), (b, n)| {
        m.cmp(n)
            .then_with(|| (&b.namespace, &b.workload).cmp(&(&a.namespace, &a.workload)))
    });
    let Some((best, _)) = best else {
        return (None, unknown);
    };
    let holds_best = |s: &&SliceEntry| {
        s.addresses
            .iter()
            .any(|ip| matches!(map.lookup(*ip), Identity::Workload(w) if same(w, best)))
    };
    let its_slices: Vec<&SliceEntry> = slices.iter().filter(holds_best).collect();
    let ports: Vec<(u16, u16)> = service
        .ports
        .iter()
        .filter_map(|p| {
            let named = its_slices
                .iter()
                .flat_map(|s| s.ports.iter())
                .find_map(|(name, port)| (*name == p.name).then_some(*port));
            Some((p.port, named.or(p.target)?))
        })
        .collect();
    if ports.is_empty() {
        return (None, unknown);
    }
    let backend = ServiceBackend {
        namespace: best.namespace.clone(),
        workload: best.workload.clone(),
        target_port: 0,
    };
    (Some((backend, ports)), unknown)
}

/// Write what a Service resolves to into the map, replacing what its addresses meant; returns
/// whether an endpoint address was unknown.
fn publish(map: &mut IdentityMap, service: &ServiceEntry, slices: &[SliceEntry]) -> bool {
    let (found, unknown) = resolve(service, slices, map);
    map.remove_service_ips(&service.cluster_ips);
    if let Some((backend, ports)) = found {
        map.set_service(&service.cluster_ips, &ports, &backend);
    }
    unknown
}

/// What is known of one Service: the Service once listed, if it has a ClusterIP, and its
/// EndpointSlices (which may come first, and are kept for a headless Service too: which
/// Service a slice belongs to is all its label says).
#[derive(Debug, Default)]
struct Known {
    service: Option<ServiceEntry>,
    slices: Vec<SliceEntry>,
}

impl Known {
    fn is_empty(&self) -> bool {
        self.service.is_none() && self.slices.is_empty()
    }
}

/// The Services and EndpointSlices as the mapping needs them; every change is written through
/// to the [`IdentityMap`] it is given.
#[derive(Debug, Default)]
pub struct ServiceTable {
    known: HashMap<ServiceKey, Known>,
    /// Services with an endpoint address no pod or node held when last resolved.
    unknown: HashSet<ServiceKey>,
}

impl ServiceTable {
    /// Resolve one Service again and write it to the map; forget it when nothing is left.
    fn refresh(&mut self, key: ServiceKey, map: &mut IdentityMap) {
        let mut unknown = false;
        if let Some(k) = self.known.get(&key) {
            if let Some(service) = &k.service {
                unknown = publish(map, service, &k.slices);
            }
            if k.is_empty() {
                self.known.remove(&key);
            }
        }
        if unknown {
            self.unknown.insert(key);
        } else {
            self.unknown.remove(&key);
        }
    }

    /// A Service added or changed (a change to ExternalName drops its ClusterIP).
    pub fn apply_service(&mut self, service: &Service, map: &mut IdentityMap) {
        let key = service_key(service);
        let k = self.known.entry(key).or_default();
        if let Some(old) = k.service.take() {
            map.remove_service_ips(&old.cluster_ips);
        }
        k.service = service_entry(service);
        self.refresh(key, map);
    }

    pub fn delete_service(&mut self, service: &Service, map: &mut IdentityMap) {
        let key = service_key(service);
        if let Some(old) = self.known.get_mut(&key).and_then(|k| k.service.take()) {
            map.remove_service_ips(&old.cluster_ips);
        }
        self.refresh(key, map);
    }

    /// An EndpointSlice added or changed. Its Service label is taken as fixed (the
    /// EndpointSlice controller never moves a slice to another Service).
    pub fn apply_slice(&mut self, slice: &EndpointSlice, map: &mut IdentityMap) {
        let Some((key, entry)) = slice_entry(slice) else {
            return;
        };
        let slices = &mut self.known.entry(key).or_default().slices;
        match slices.iter_mut().find(|s| s.name == entry.name) {
            Some(s) => *s = entry,
            None => {
                slices.reserve_exact(1);
                slices.push(entry);
            }
        }
        self.refresh(key, map);
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice, map: &mut IdentityMap) {
        let Some((key, entry)) = slice_entry(slice) else {
            return;
        };
        if let Some(k) = self.known.get_mut(&key) {
            k.slices.retain(|s| s.name != entry.name);
            k.slices.shrink_to_fit();
        }
        self.refresh(key, map);
    }

    /// A relist of Services: exactly these exist.
    pub fn replace_services(
        &mut self,
        services: impl IntoIterator<Item = (ServiceKey, ServiceEntry)>,
        map: &mut IdentityMap,
    ) {
        for k in self.known.values_mut() {
            k.service = None;
        }
        for (key, service) in services {
            self.known.entry(key).or_default().service = Some(service);
        }
        self.resolve_all(map);
    }

    /// A relist of EndpointSlices: exactly these exist.
    pub fn replace_slices(
        &mut self,
        slices: impl IntoIterator<Item = (ServiceKey, SliceEntry)>,
        map: &mut IdentityMap,
    ) {
        for k in self.known.values_mut() {
            k.slices.clear();
        }
        for (key, slice) in slices {
            self.known.entry(key).or_default().slices.push(slice);
        }
        for k in self.known.values_mut() {
            k.slices.shrink_to_fit();
        }
        self.resolve_all(map);
    }

    /// Resolve every Service again (after a relist of any of the three: the pods decide the
    /// workloads) and write the map's Service table anew; forget what is left of nothing.
    pub fn resolve_all(&mut self, map: &mut IdentityMap) {
        self.known.retain(|_, k| !k.is_empty());
        self.known.shrink_to_fit();
        map.clear_services();
        self.unknown.clear();
        for (key, k) in &self.known {
            let Some(service) = &k.service else { continue };
            if publish(map, service, &k.slices) {
                self.unknown.insert(*key);
            }
        }
    }

    /// A pod now holds `ips`: resolve again the Services whose endpoints listed one of them
    /// before it was known (an EndpointSlice event may come before its pod's).
    pub fn pod_added(&mut self, ips: &[IpAddr], map: &mut IdentityMap) {
        if self.unknown.is_empty() {
            return;
        }
        let listing: Vec<ServiceKey> = self
            .unknown
            .iter()
            .filter(|key| {
                self.known.get(*key).is_some_and(|k| {
                    k.slices
                        .iter()
                        .flat_map(|s| s.addresses.iter())
                        .any(|a| ips.contains(a))
                })
            })
            .copied()
            .collect();
        for key in listing {
            self.refresh(key, map);
        }
    }

    /// Whether some Service has an endpoint address no pod or node holds yet.
    pub fn has_unknown(&self) -> bool {
        !self.unknown.is_empty()
    }

    /// Approximate heap bytes held, from capacities (as [`IdentityMap::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let held: usize = self
            .known
            .values()
            .map(|k| {
                let service = k.service.as_ref().map_or(0, |s| {
                    s.cluster_ips.len() * size_of::<IpAddr>()
                        + s.ports.len() * size_of::<ServicePortEntry>()
                });
                let slices: usize = k
                    .slices
                    .iter()
                    .map(|s| {
                        s.addresses.len() * size_of::<IpAddr>()
                            + s.ports.len() * size_of::<(NameHash, u16)>()
                    })
                    .sum();
                service + k.slices.capacity() * size_of::<SliceEntry>() + slices
            })
            .sum();
        hash_table_bytes(self.known.capacity(), size_of::<(ServiceKey, Known)>())
            + held
            + hash_table_bytes(self.unknown.capacity(), size_of::<ServiceKey>())
    }
}

#[cfg(test)]
mod tests;
