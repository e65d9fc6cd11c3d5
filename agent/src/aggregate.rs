//! Edges: finished connections rolled up by source identity x destination identity x port x
//! security. Cardinality is bounded by identities (or addresses when unknown), never by client
//! ports or SNI — and bounded outright: past [`MAX_PEERS`] unknown addresses or [`MAX_EDGES`]
//! edges, sources fold into one `(other sources)` peer, counted in `folded`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use crate::classify::{Mesh, Security};
use crate::flow::FlowRecord;
use crate::identity::{Identity, IdentitySource};
use crate::Nanos;

/// One end of an edge: a workload, a node, or a bare address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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
    /// Stands for the sources beyond the bounds (folded together).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other_sources: bool,
}

/// Distinct unknown addresses tracked as peers of their own.
pub const MAX_PEERS: usize = 16_384;
/// Distinct edges kept.
pub const MAX_EDGES: usize = 20_000;

impl Peer {
    pub fn resolve(ip: IpAddr, identities: &dyn IdentitySource) -> Peer {
        match identities.lookup(ip) {
            Identity::Workload(w) => Peer {
                namespace: Some(w.namespace.clone()),
                workload: Some(w.workload.clone()),
                ..Peer::default()
            },
            Identity::Node(name) => Peer {
                node: Some(name.to_owned()),
                ip: Some(ip),
                ..Peer::default()
            },
            Identity::Unknown => Peer {
                ip: Some(ip),
                ..Peer::default()
            },
        }
    }

    /// The peer that stands for sources beyond the bounds.
    pub fn other_sources() -> Peer {
        Peer {
            other_sources: true,
            ..Peer::default()
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
            _ => "(other sources)".to_owned(),
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
    /// Connections that carried payload (the evidence).
    pub connections: u64,
    /// Connection attempts without payload (refused, unanswered, TCP probes): counted apart.
    pub attempts: u64,
    pub packets: u64,
    pub bytes: u64,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub first_seen: Nanos,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub last_seen: Nanos,
}

impl EdgeStats {
    /// The counters of one finished flow.
    pub fn of(rec: &FlowRecord) -> Self {
        EdgeStats {
            connections: u64::from(!rec.attempt),
            attempts: u64::from(rec.attempt),
            packets: rec.packets,
            bytes: rec.bytes,
            first_seen: rec.first_seen,
            last_seen: rec.last_seen,
        }
    }

    /// Add `other` (counts add up, the time span widens).
    pub fn merge(&mut self, other: &EdgeStats) {
        if self.connections + self.attempts + self.packets + self.bytes == 0 {
            self.first_seen = other.first_seen;
            self.last_seen = other.last_seen;
        }
        self.connections += other.connections;
        self.attempts += other.attempts;
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
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

/// An edge by interned peer numbers: cheap to hash, built without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RawKey {
    source: u32,
    destination: u32,
    port: u16,
    security: Security,
    mesh: Mesh,
}

/// Edges being accumulated (offline: identities do not change during a run, so an address is
/// resolved once and its peer number cached).
#[derive(Debug, Default)]
pub struct Edges {
    peers: Vec<Peer>,
    peer_ids: HashMap<Peer, u32, FastHash>,
    by_ip: HashMap<IpAddr, u32, FastHash>,
    unknown_addresses: usize,
    edges: HashMap<RawKey, EdgeStats, FastHash>,
    folded: u64,
    /// The `(other sources)` peer, once interned.
    other: Option<u32>,
}

/// foldhash: these maps are hit once or twice per flow.
type FastHash = foldhash::fast::RandomState;

impl Edges {
    fn intern(&mut self, peer: Peer) -> u32 {
        if let Some(&id) = self.peer_ids.get(&peer) {
            return id;
        }
        let id = self.peers.len() as u32;
        self.peers.push(peer.clone());
        self.peer_ids.insert(peer, id);
        id
    }

    fn other_sources(&mut self) -> u32 {
        match self.other {
            Some(id) => id,
            None => {
                let id = self.intern(Peer::other_sources());
                self.other = Some(id);
                id
            }
        }
    }

    fn peer_of(&mut self, ip: IpAddr, identities: &dyn IdentitySource) -> u32 {
        if let Some(&id) = self.by_ip.get(&ip) {
            return id;
        }
        let peer = Peer::resolve(ip, identities);
        let unknown = peer.namespace.is_none() && peer.node.is_none();
        if unknown && self.unknown_addresses >= MAX_PEERS {
            return self.other_sources();
        }
        self.unknown_addresses += usize::from(unknown);
        let id = self.intern(peer);
        self.by_ip.insert(ip, id);
        id
    }

    /// Add a finished flow (not a local one: local traffic is never evidence).
    pub fn add(&mut self, rec: &FlowRecord, identities: &dyn IdentitySource) {
        let mut key = RawKey {
            source: self.peer_of(rec.src, identities),
            destination: self.peer_of(rec.dst, identities),
            port: rec.dport,
            security: rec.security,
            mesh: rec.mesh,
        };
        if self.edges.len() >= MAX_EDGES && !self.edges.contains_key(&key) {
            key.source = self.other_sources();
            self.folded += 1;
        }
        self.edges
            .entry(key)
            .or_default()
            .merge(&EdgeStats::of(rec));
    }

    /// Connections whose source was folded into `(other sources)`.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Edges ordered by destination, port, source, security.
    pub fn to_vec(&self) -> Vec<Edge> {
        let peer = |id: u32| self.peers.get(id as usize).cloned().unwrap_or_default();
        let mut sorted: BTreeMap<EdgeKey, EdgeStats> = BTreeMap::new();
        for (k, s) in &self.edges {
            let key = EdgeKey {
                destination: peer(k.destination),
                port: k.port,
                source: peer(k.source),
                security: k.security,
                mesh: k.mesh,
            };
            sorted.insert(key, *s);
        }
        sorted
            .into_iter()
            .map(|(k, s)| Edge {
                source: k.source,
                destination: k.destination,
                port: k.port,
                security: k.security,
                mesh: k.mesh,
                stats: s,
            })
            .collect()
    }
}
