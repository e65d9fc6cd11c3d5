//! Edges: finished connections rolled up by source identity x destination identity x port x
//! security. Cardinality is bounded by identities (or addresses when unknown), never by client
//! ports or SNI — and bounded outright: past [`MAX_PEERS`] unknown addresses a peer folds into
//! `(other sources)` or `(other destinations)`; past [`MAX_PORTS_PER_DESTINATION`] ports of one
//! destination, its ports fold into port 0 (`other`); past [`MAX_EDGES`] edges a new edge's
//! source folds, and if that edge is new too, its destination and port — every fold counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::classify::{Mesh, Security};
use crate::flow::{Endpoint, FlowRecord};
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
    /// Stands for the destinations beyond the bounds (folded together; never judged).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other_destinations: bool,
}

/// Distinct unknown addresses tracked as peers of their own.
pub const MAX_PEERS: usize = 16_384;
/// Distinct edges kept (a few more for the folded stand-ins).
pub const MAX_EDGES: usize = 20_000;
/// Distinct ports kept per destination; beyond, its ports are [`OTHER_PORTS`].
pub const MAX_PORTS_PER_DESTINATION: usize = 256;
/// The port of an edge that stands for a destination's ports beyond the bound (port 0 is not a
/// TCP port a connection can use).
pub const OTHER_PORTS: u16 = 0;

/// Which end of an edge a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Destination,
}

/// Edges with a folded source allowed past [`MAX_EDGES`] before destinations fold too.
pub const MAX_FOLDED_EDGES: usize = 1024;

/// Once an edge table holds [`MAX_EDGES`]: a new edge's source folds into `(other sources)`;
/// once it also holds [`MAX_FOLDED_EDGES`] more, a still-new edge's destination and port fold
/// too, so the table never exceeds `MAX_EDGES + MAX_FOLDED_EDGES` and a few stand-ins. Returns
/// whether the key was folded.
pub fn fold_when_full<K>(
    key: &mut K,
    len: usize,
    has: impl Fn(&K) -> bool,
    fold_source: impl FnOnce(&mut K),
    fold_destination: impl FnOnce(&mut K),
) -> bool {
    if len < MAX_EDGES || has(key) {
        return false;
    }
    fold_source(key);
    if len >= MAX_EDGES + MAX_FOLDED_EDGES && !has(key) {
        fold_destination(key);
    }
    true
}

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

    /// The peer that stands for destinations beyond the bounds.
    pub fn other_destinations() -> Peer {
        Peer {
            other_destinations: true,
            ..Peer::default()
        }
    }

    /// The stand-in for peers beyond the bounds in `role`.
    pub fn other(role: Role) -> Peer {
        match role {
            Role::Source => Peer::other_sources(),
            Role::Destination => Peer::other_destinations(),
        }
    }

    /// Whether this is a stand-in for folded peers.
    pub fn is_folded(&self) -> bool {
        self.other_sources || self.other_destinations
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
            _ if self.other_destinations => "(other destinations)".to_owned(),
            _ if self.other_sources => "(other sources)".to_owned(),
            // no name and no address: Prometheus' `unknown`, every address without an identity
            _ => "(addresses without identity)".to_owned(),
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
    pub origin: Origin,
}

impl EdgeKey {
    /// The edge of this key with its counters.
    pub fn edge(self, stats: EdgeStats) -> Edge {
        Edge {
            source: self.source,
            destination: self.destination,
            port: self.port,
            security: self.security,
            mesh: self.mesh,
            origin: self.origin,
            stats,
        }
    }
}

/// How the client reached the destination, when its traffic says more than its address.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Straight from the source.
    #[default]
    Direct,
    /// A kubelet HTTP probe (`User-Agent: kube-probe/…`).
    KubeletProbe,
    /// Through a node's port (NodePort/LoadBalancer), SNAT'd to the node on the way.
    Nodeport,
}

impl Origin {
    /// The origin of a connection: a kubelet probe by its User-Agent, NodePort when one of its
    /// views went to a node.
    pub fn of(kube_probe: bool, through_node: bool) -> Self {
        if kube_probe {
            Origin::KubeletProbe
        } else if through_node {
            Origin::Nodeport
        } else {
            Origin::Direct
        }
    }
}

/// Where a connection is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub to: BackendKind,
    /// One of its views went to a node (a NodePort or LoadBalancer on the way).
    pub through_node: bool,
}

/// An address and port, or the workload behind a Service's ClusterIP and its target port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    Address(Endpoint),
    Service(Peer, u16),
}

impl Backend {
    /// The destination as a peer, and its port.
    pub fn peer(&self, identities: &dyn IdentitySource) -> (Peer, u16) {
        match &self.to {
            BackendKind::Address((ip, port)) => (Peer::resolve(*ip, identities), *port),
            BackendKind::Service(peer, port) => (peer.clone(), *port),
        }
    }
}

/// Where a connection is judged: the first of its destinations (its own, then another view's —
/// after DNAT, the backend) that is a workload; else the workload behind a Service ClusterIP
/// it went to (only that view was captured); else one that is not a node; else its own.
pub fn backend_of(
    dst: Endpoint,
    views: impl Iterator<Item = Endpoint> + Clone,
    identities: &dyn IdentitySource,
) -> Backend {
    let candidates = std::iter::once(dst).chain(views);
    let kind = |(ip, _): &Endpoint| identities.lookup(*ip);
    let is_node = |e: &Endpoint| matches!(kind(e), Identity::Node(_));
    let through_node = candidates.clone().any(|e| is_node(&e));
    if let Some(e) = candidates
        .clone()
        .find(|e| matches!(kind(e), Identity::Workload(_)))
    {
        return Backend {
            to: BackendKind::Address(e),
            through_node,
        };
    }
    if let Some(svc) = candidates
        .clone()
        .find_map(|(ip, port)| identities.service(ip, port))
    {
        let peer = Peer {
            namespace: Some(svc.namespace.clone()),
            workload: Some(svc.workload.clone()),
            ..Peer::default()
        };
        return Backend {
            to: BackendKind::Service(peer, svc.target_port),
            through_node,
        };
    }
    let chosen = candidates.clone().find(|e| !is_node(e)).unwrap_or(dst);
    Backend {
        through_node: through_node && !is_node(&chosen),
        to: BackendKind::Address(chosen),
    }
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
    /// The latest connection START among the edge's connections (a flow's first packet, the
    /// classification event's time), not its last packet: whether plaintext reached a port
    /// after STRICT took effect is judged by this, since Envoy does not refuse a connection it
    /// accepted earlier. 0 when the edge saw no connection start (only late packets).
    #[serde(
        rename = "last_connected",
        serialize_with = "crate::timestamp::serialize"
    )]
    pub last_started: Nanos,
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
            last_started: rec.first_seen,
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
        self.last_started = self.last_started.max(other.last_started);
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
    pub origin: Origin,
    #[serde(flatten)]
    pub stats: EdgeStats,
}

/// An edge by interned peer numbers: cheap to hash (two words), built without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawKey {
    source: u32,
    destination: u32,
    port: u16,
    security: Security,
    mesh: Mesh,
    origin: Origin,
}

impl std::hash::Hash for RawKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.source) << 32 | u64::from(self.destination));
        let kinds = (self.security as u32) << 8 | (self.mesh as u32) << 4 | self.origin as u32;
        state.write_u32(u32::from(self.port) << 16 | kinds);
    }
}

/// An address as a key of the peer cache: hashed as one word (the derived `Hash` of `IpAddr`
/// feeds its tag, length and bytes one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpKey(IpAddr);

impl std::hash::Hash for IpKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self.0 {
            IpAddr::V4(a) => state.write_u32(a.to_bits()),
            IpAddr::V6(a) => state.write_u128(a.to_bits()),
        }
    }
}

/// Edges being accumulated (offline: identities do not change during a run, so an address is
/// resolved once and its peer number cached).
#[derive(Debug, Default)]
pub struct Edges {
    peers: Vec<Peer>,
    peer_ids: HashMap<Peer, u32, FastHash>,
    by_ip: HashMap<IpKey, u32, FastHash>,
    unknown_addresses: usize,
    edges: HashMap<RawKey, EdgeStats, FastHash>,
    /// Ports seen per destination, up to [`MAX_PORTS_PER_DESTINATION`] each.
    ports: HashMap<u32, HashSet<u16, FastHash>, FastHash>,
    folded: u64,
    /// The stand-ins' peer numbers, once interned.
    stand_ins: Option<(u32, u32)>,
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

    fn peer_of(&mut self, ip: IpAddr, role: Role, identities: &dyn IdentitySource) -> u32 {
        if let Some(&id) = self.by_ip.get(&IpKey(ip)) {
            return id;
        }
        let peer = Peer::resolve(ip, identities);
        let unknown = peer.namespace.is_none() && peer.node.is_none();
        if unknown && self.unknown_addresses >= MAX_PEERS {
            self.folded += 1;
            return self.intern(Peer::other(role));
        }
        self.unknown_addresses += usize::from(unknown);
        let id = self.intern(peer);
        self.by_ip.insert(IpKey(ip), id);
        id
    }

    /// The interned `(other sources)` and `(other destinations)` peers.
    fn stand_ins(&mut self) -> (u32, u32) {
        if let Some(ids) = self.stand_ins {
            return ids;
        }
        let ids = (
            self.intern(Peer::other_sources()),
            self.intern(Peer::other_destinations()),
        );
        self.stand_ins = Some(ids);
        ids
    }

    /// The port as counted: past the destination's port bound, [`OTHER_PORTS`].
    fn port_of(&mut self, destination: u32, port: u16) -> u16 {
        let seen = self.ports.entry(destination).or_default();
        if seen.contains(&port) || seen.len() < MAX_PORTS_PER_DESTINATION && seen.insert(port) {
            port
        } else {
            self.folded += 1;
            OTHER_PORTS
        }
    }

    /// Add a finished flow (not a local one, not another view of a connection: neither is
    /// evidence), judged at its backend.
    pub fn add(&mut self, rec: &FlowRecord, identities: &dyn IdentitySource) {
        let views = rec.views.iter().map(|v| (v.dst, v.dport));
        let backend = backend_of((rec.dst, rec.dport), views, identities);
        let (destination, dport) = match &backend.to {
            BackendKind::Address((ip, port)) => {
                (self.peer_of(*ip, Role::Destination, identities), *port)
            }
            BackendKind::Service(peer, port) => (self.intern(peer.clone()), *port),
        };
        let mut key = RawKey {
            source: self.peer_of(rec.src, Role::Source, identities),
            destination,
            port: self.port_of(destination, dport),
            security: rec.security,
            mesh: rec.mesh,
            origin: Origin::of(rec.kube_probe, backend.through_node),
        };
        let stats = EdgeStats::of(rec);
        // an edge already there takes it as it is (one lookup); a new one may fold first
        if let Some(edge) = self.edges.get_mut(&key) {
            edge.merge(&stats);
            return;
        }
        let (other_sources, other_destinations) = self.stand_ins();
        let edges = &self.edges;
        let folded = fold_when_full(
            &mut key,
            edges.len(),
            |k| edges.contains_key(k),
            |k| k.source = other_sources,
            |k| {
                k.destination = other_destinations;
                k.port = OTHER_PORTS;
            },
        );
        self.folded += u64::from(folded);
        self.edges.entry(key).or_default().merge(&stats);
    }

    /// Connections counted under a stand-in (`(other sources)`, `(other destinations)`, or
    /// port 0 for other ports) because a bound was reached.
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
                origin: k.origin,
            };
            sorted.insert(key, *s);
        }
        sorted.into_iter().map(|(k, s)| k.edge(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NoIdentities;

    fn record(src: IpAddr, dst: IpAddr, dport: u16) -> FlowRecord {
        FlowRecord {
            src,
            dst,
            dport,
            ..crate::flow::tests_support::record()
        }
    }

    fn addr(i: u32) -> IpAddr {
        IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
    }

    fn connections(edges: &[Edge]) -> u64 {
        edges.iter().map(|e| e.stats.connections).sum()
    }

    /// A scan of 100k destinations, and of 60k ports of one destination: the edges stay
    /// bounded, every connection is still counted, and stand-ins keep their role.
    #[test]
    fn edges_are_bounded_on_destinations_and_ports() {
        let mut e = Edges::default();
        let client = addr(1);
        for i in 0..100_000u32 {
            e.add(&record(client, addr(100_000 + i), 80), &NoIdentities);
        }
        let target = addr(7);
        for port in 1..=60_000u16 {
            e.add(&record(client, target, port), &NoIdentities);
        }
        let edges = e.to_vec();
        assert!(
            edges.len() <= MAX_EDGES + MAX_FOLDED_EDGES + 12,
            "{} edges",
            edges.len()
        );
        assert_eq!(connections(&edges), 160_000);
        assert!(e.folded() > 0);
        let target_ports = edges.iter().filter(|x| x.destination.ip == Some(target));
        assert!(target_ports.count() <= MAX_PORTS_PER_DESTINATION + 1);
        assert!(edges.iter().any(|x| x.destination.other_destinations));
        assert!(
            !edges.iter().any(|x| x.destination.other_sources),
            "a destination never stands as (other sources)"
        );
        assert!(edges.iter().any(|x| x.port == OTHER_PORTS));
    }

    /// A connection is judged at its backend: the view that is a workload (after DNAT), the
    /// workload behind a ClusterIP when only that view exists, never a node.
    #[test]
    fn connections_are_judged_at_their_backend() {
        let ids = crate::identity::file::WorkloadsFile::parse(
            "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.21]}\nnodes:\n  - {name: node-1, ips: [10.0.0.5]}\nservices:\n  - {namespace: foo, name: httpbin, cluster_ips: [10.96.0.50], ports: [{port: 80, target_port: 8000}], workload: httpbin}\n",
            None,
        )
        .expect("workloads");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let pod = (ip("10.244.1.21"), 8000);
        // DNAT: the ClusterIP view first, the pod view second
        let b = backend_of((ip("10.96.0.50"), 80), Some(pod).into_iter(), &ids);
        assert_eq!(
            (b.to.clone(), b.through_node),
            (BackendKind::Address(pod), false)
        );
        // only the ClusterIP view (a capture in the client pod)
        let b = backend_of((ip("10.96.0.50"), 80), None.into_iter(), &ids);
        let (peer, port) = b.peer(&ids);
        assert_eq!((peer.display(), port), ("foo/httpbin".to_owned(), 8000));
        // NodePort: outside -> node:30080, then node -> pod
        let b = backend_of((ip("10.0.0.5"), 30080), Some(pod).into_iter(), &ids);
        assert_eq!(
            (b.to.clone(), b.through_node),
            (BackendKind::Address(pod), true)
        );
        // only the node view: it stays the node (and gets no verdict)
        let b = backend_of((ip("10.0.0.5"), 30080), None.into_iter(), &ids);
        assert!(!b.through_node);
        assert!(b.peer(&ids).0.is_node());
        // an edge built from the DNAT record names the client and the backend
        let mut e = Edges::default();
        let mut rec = record(ip("10.244.1.31"), ip("10.96.0.50"), 80);
        rec.views.push(crate::flow::FlowView {
            src: ip("10.244.1.31"),
            sport: 40000,
            dst: pod.0,
            dport: pod.1,
        });
        e.add(&rec, &ids);
        let edges = e.to_vec();
        assert_eq!(
            (
                edges[0].destination.display(),
                edges[0].port,
                edges[0].origin
            ),
            ("foo/httpbin".to_owned(), 8000, Origin::Direct)
        );
    }
}
