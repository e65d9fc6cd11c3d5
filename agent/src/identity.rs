//! Who an IP address is: `{namespace, workload, service_account}` of a pod, or a node.
//!
//! One compact map, [`IdentityMap`], fed by a workloads file ([`file`]) or by the Kubernetes API
//! ([`kubernetes`]). It holds only IP -> (interned workload, pod UID hash, locality), never Pod
//! objects: a cluster-wide map of 10k pods stays a few MB.

pub mod file;
#[cfg(feature = "agent")]
pub mod kubernetes;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::classify::Mesh;
use crate::verdict::KnownWorkload;

/// A workload identity (what a pod IP resolves to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub workload: String,
    #[serde(default)]
    pub service_account: Option<String>,
    /// Pod labels used for a PeerAuthentication `selector`; default `app: <workload>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
            labels: &self.labels,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A pod: its workload (index into `workloads`), a hash of its UID (so a late delete of an
    /// old pod does not remove the new pod that reuses its IP), and whether it runs here.
    Pod {
        workload: u32,
        uid: u64,
        local: bool,
    },
    Node(u32),
}

/// The compact IP -> identity map.
#[derive(Debug, Default, Clone)]
pub struct IdentityMap {
    by_ip: HashMap<IpAddr, Entry>,
    workloads: Vec<Workload>,
    interned: HashMap<Workload, u32>,
    nodes: Vec<String>,
}

/// The map shared between its feeder and its readers (read per flow event, never per packet).
pub type SharedIdentities = Arc<RwLock<IdentityMap>>;

impl IdentityMap {
    fn intern(&mut self, w: Workload) -> u32 {
        if let Some(&i) = self.interned.get(&w) {
            return i;
        }
        let i = self.workloads.len() as u32;
        self.workloads.push(w.clone());
        self.interned.insert(w, i);
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

    /// Record a workload (known even without addresses, for namespace verdicts).
    pub fn add_workload(&mut self, w: Workload) -> u32 {
        self.intern(w)
    }

    /// A pod's addresses now belong to it (a new pod reusing an address wins).
    pub fn upsert_pod(&mut self, uid: u64, ips: &[IpAddr], workload: Workload, local: bool) {
        let workload = self.intern(workload);
        for ip in ips {
            self.by_ip.insert(
                *ip,
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
                self.by_ip.remove(ip);
            }
        }
    }

    /// Remove every pod (before a relist replaces them).
    pub fn clear_pods(&mut self) {
        self.by_ip.retain(|_, e| matches!(e, Entry::Node(_)));
    }

    /// A node's addresses. Node addresses win over pods (hostNetwork pods share them).
    pub fn upsert_node(&mut self, name: &str, ips: &[IpAddr]) {
        let n = self.intern_node(name);
        for ip in ips {
            self.by_ip.insert(*ip, Entry::Node(n));
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(n) = self.nodes.iter().position(|x| x == name) {
            let n = n as u32;
            self.by_ip.retain(|_, e| *e != Entry::Node(n));
        }
    }

    pub fn clear_nodes(&mut self) {
        self.by_ip.retain(|_, e| !matches!(e, Entry::Node(_)));
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Approximate heap bytes held (for the per-10k-pods figure).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(IpAddr, Entry)>() + 1;
        let workload_bytes: usize = self
            .workloads
            .iter()
            .map(|w| {
                std::mem::size_of::<Workload>()
                    + w.namespace.capacity()
                    + w.workload.capacity()
                    + w.service_account.as_ref().map_or(0, String::capacity)
                    + w.labels
                        .iter()
                        .map(|(k, v)| k.capacity() + v.capacity() + 48)
                        .sum::<usize>()
            })
            .sum();
        self.by_ip.capacity() * entry + 2 * workload_bytes + self.interned.capacity() * 8
    }
}

impl IdentitySource for IdentityMap {
    fn lookup(&self, ip: IpAddr) -> Identity<'_> {
        match self.by_ip.get(&ip) {
            Some(Entry::Pod { workload, .. }) => self
                .workloads
                .get(*workload as usize)
                .map_or(Identity::Unknown, Identity::Workload),
            Some(Entry::Node(n)) => self
                .nodes
                .get(*n as usize)
                .map_or(Identity::Unknown, |n| Identity::Node(n)),
            None => Identity::Unknown,
        }
    }

    fn workloads(&self) -> Vec<&Workload> {
        self.workloads.iter().collect()
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        matches!(self.by_ip.get(&ip), Some(Entry::Pod { local: true, .. }))
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
            labels: BTreeMap::new(),
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

    fn rss_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    #[test]
    fn measured_rss_per_ten_thousand_pods() {
        let before = rss_kib();
        let mut m = IdentityMap::default();
        for i in 0..100_000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            m.upsert_pod(
                u64::from(i),
                &[ip],
                w("ns", &format!("deploy-{}", i % 5000)),
                false,
            );
        }
        if let (Some(a), Some(b)) = (before, rss_kib()) {
            let per_10k = b.saturating_sub(a) / 10;
            println!(
                "identity map: measured RSS {} KiB per 10k pods (100k pods, 5k workloads)",
                per_10k
            );
            assert!(per_10k < 4096, "{per_10k} KiB per 10k pods");
        }
        assert_eq!(m.len(), 100_000);
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
    }
}
