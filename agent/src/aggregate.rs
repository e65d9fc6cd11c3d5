//! Edges: finished connections rolled up by source identity x destination identity x port x
//! security. Cardinality is bounded by identities (or addresses when unknown), never by client
//! ports or SNI.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::classify::{Mesh, Security};
use crate::flow::FlowRecord;
use crate::identity::{Identity, IdentitySource};
use crate::Nanos;

/// One end of an edge: a workload, a node, or a bare address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Peer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set for nodes and unknown addresses; workloads are named, not numbered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

impl Peer {
    pub fn resolve(ip: IpAddr, identities: &dyn IdentitySource) -> Peer {
        match identities.lookup(ip) {
            Identity::Workload(w) => Peer {
                namespace: Some(w.namespace.clone()),
                workload: Some(w.workload.clone()),
                node: None,
                ip: None,
            },
            Identity::Node(name) => Peer {
                namespace: None,
                workload: None,
                node: Some(name.to_owned()),
                ip: Some(ip),
            },
            Identity::Unknown => Peer {
                namespace: None,
                workload: None,
                node: None,
                ip: Some(ip),
            },
        }
    }

    pub fn is_node(&self) -> bool {
        self.node.is_some()
    }

    /// `ns/workload`, `node:name`, or the address.
    pub fn display(&self) -> String {
        match (&self.namespace, &self.workload, &self.node, &self.ip) {
            (Some(ns), Some(w), _, _) => format!("{ns}/{w}"),
            (_, _, Some(node), _) => format!("node:{node}"),
            (_, _, _, Some(ip)) => ip.to_string(),
            _ => "?".to_owned(),
        }
    }
}

/// What identifies an edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub destination: Peer,
    pub port: u16,
    pub source: Peer,
    pub security: Security,
    pub mesh: Mesh,
}

/// Counters of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EdgeStats {
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub first_seen: Nanos,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub last_seen: Nanos,
}

/// An edge as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub source: Peer,
    pub destination: Peer,
    pub port: u16,
    pub security: Security,
    pub mesh: Mesh,
    #[serde(flatten)]
    pub stats: EdgeStats,
}

/// Edges being accumulated.
#[derive(Debug, Default)]
pub struct Edges {
    edges: BTreeMap<EdgeKey, EdgeStats>,
}

impl Edges {
    pub fn add(&mut self, rec: &FlowRecord, identities: &dyn IdentitySource) {
        let key = EdgeKey {
            destination: Peer::resolve(rec.dst, identities),
            port: rec.dport,
            source: Peer::resolve(rec.src, identities),
            security: rec.security,
            mesh: rec.mesh,
        };
        let e = self.edges.entry(key).or_insert(EdgeStats {
            connections: 0,
            packets: 0,
            bytes: 0,
            first_seen: rec.first_seen,
            last_seen: rec.last_seen,
        });
        e.connections += 1;
        e.packets += rec.packets;
        e.bytes += rec.bytes;
        e.first_seen = e.first_seen.min(rec.first_seen);
        e.last_seen = e.last_seen.max(rec.last_seen);
    }

    /// Edges ordered by destination, port, source, security.
    pub fn to_vec(&self) -> Vec<Edge> {
        self.edges
            .iter()
            .map(|(k, s)| Edge {
                source: k.source.clone(),
                destination: k.destination.clone(),
                port: k.port,
                security: k.security,
                mesh: k.mesh,
                stats: *s,
            })
            .collect()
    }
}
