//! Who an IP address is: `{namespace, workload, service_account}` of a pod, or a node.
//! Sources: a workloads file (offline, tests); the Kubernetes API arrives with the agent.

pub mod file;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
