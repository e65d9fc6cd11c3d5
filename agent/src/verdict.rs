//! The readiness verdict: which destinations can go from PERMISSIVE to STRICT now, and for the
//! rest, which sources still send plaintext or non-mesh TLS.
//!
//! PURE: `(edges, policy, known workloads) -> verdicts`, the one implementation that the CLI,
//! the agent API and the dashboard use. Semantics in DESIGN.md "Verdict semantics".

mod policy_yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::aggregate::{Edge, Peer};
use crate::classify::Security;
use crate::identity::Workload;
use crate::pipeline::SecurityCounts;
use crate::Nanos;

pub use policy_yaml::{peer_authentication, PolicyScope};

/// Istio's own plaintext ports: merged metrics and rewritten probes, health, Envoy stats.
pub const DEFAULT_EXEMPT_PORTS: [u16; 3] = [15020, 15021, 15090];
/// ambient's kubelet-probe source address (SNAT by the CNI).
pub const AMBIENT_PROBE_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 7, 127));

/// What counts as evidence and what is exempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// mTLS connections needed before a destination is `ready`.
    pub min_connections: u64,
    /// Destination ports whose traffic is not judged.
    pub exempt_ports: BTreeSet<u16>,
    /// Source addresses whose traffic is not judged.
    pub exempt_sources: BTreeSet<IpAddr>,
    /// Node addresses (kubelet) are exempt sources.
    pub exempt_nodes: bool,
    /// Above this share of `unknown` connections the evidence is insufficient.
    pub max_unknown_ratio: f64,
    /// The capture lost packets: no destination without a blocker can be called ready.
    pub evidence_incomplete: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_connections: 5,
            exempt_ports: DEFAULT_EXEMPT_PORTS.into_iter().collect(),
            exempt_sources: [AMBIENT_PROBE_SOURCE].into_iter().collect(),
            exempt_nodes: true,
            max_unknown_ratio: 0.1,
            evidence_incomplete: false,
        }
    }
}

impl Policy {
    /// The policy with no default exemptions.
    pub fn without_default_exemptions(mut self) -> Self {
        self.exempt_ports.clear();
        self.exempt_sources.clear();
        self.exempt_nodes = false;
        self
    }

    fn is_exempt(&self, edge: &Edge) -> bool {
        self.exempt_ports.contains(&edge.port)
            || (self.exempt_nodes && edge.source.is_node())
            || edge
                .source
                .ip
                .is_some_and(|ip| self.exempt_sources.contains(&ip))
    }
}

/// The three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    Blocked,
    Insufficient,
    Ready,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Blocked => "blocked",
            Readiness::Insufficient => "insufficient",
            Readiness::Ready => "ready",
        }
    }
}

/// A source that would be refused under STRICT: the migration's to-do list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    #[serde(flatten)]
    pub source: Peer,
    pub security: Security,
    pub port: u16,
    pub connections: u64,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub last_seen: Nanos,
}

/// The verdict of one destination port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortVerdict {
    pub port: u16,
    pub verdict: Readiness,
    pub connections: SecurityCounts,
}

/// The verdict of one destination workload (or address, when unknown).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub destination: Peer,
    pub verdict: Readiness,
    /// Why, in one sentence.
    pub reason: String,
    /// Judged (non-exempt) inbound connections by class.
    pub connections: SecurityCounts,
    /// Inbound connections not judged (exempt ports and sources).
    pub exempted: u64,
    pub blockers: Vec<Blocker>,
    pub ports: Vec<PortVerdict>,
    /// The PeerAuthentication to apply: STRICT when ready; STRICT with `portLevelMtls`
    /// PERMISSIVE for the blocked ports when only some ports are blocked.
    pub suggested_policy: Option<String>,
}

/// A namespace's roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceVerdict {
    pub namespace: String,
    pub verdict: Readiness,
    pub ready: usize,
    pub blocked: usize,
    pub insufficient: usize,
    /// Known workloads that received no inbound connection (they do not hold the namespace back).
    pub idle: usize,
    pub suggested_policy: Option<String>,
}

/// The whole mesh's roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshVerdict {
    pub verdict: Readiness,
    pub suggested_policy: Option<String>,
}

/// All verdicts of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdicts {
    pub workloads: Vec<Verdict>,
    pub namespaces: Vec<NamespaceVerdict>,
    pub mesh: MeshVerdict,
}

#[derive(Default)]
struct Tally {
    counts: SecurityCounts,
    exempted: u64,
    by_port: BTreeMap<u16, SecurityCounts>,
    blockers: BTreeMap<(Peer, Security, u16), (u64, Nanos)>,
}

/// Evaluate every destination seen in `edges`, plus every `known` workload (idle ones are
/// `insufficient`: no evidence).
pub fn evaluate(edges: &[Edge], policy: &Policy, known: &[&Workload]) -> Verdicts {
    let mut tallies: BTreeMap<Peer, Tally> = BTreeMap::new();
    for w in known {
        tallies.entry(peer_of(w)).or_default();
    }
    for edge in edges {
        let t = tallies.entry(edge.destination.clone()).or_default();
        if policy.is_exempt(edge) {
            t.exempted += edge.stats.connections;
            continue;
        }
        t.counts.add(edge.security, edge.stats.connections);
        t.by_port
            .entry(edge.port)
            .or_default()
            .add(edge.security, edge.stats.connections);
        if edge.security.blocks_strict() {
            let b = t
                .blockers
                .entry((edge.source.clone(), edge.security, edge.port))
                .or_insert((0, 0));
            b.0 += edge.stats.connections;
            b.1 = b.1.max(edge.stats.last_seen);
        }
    }
    let labels: BTreeMap<Peer, &Workload> = known.iter().map(|w| (peer_of(w), *w)).collect();
    let workloads: Vec<Verdict> = tallies
        .into_iter()
        .map(|(peer, t)| judge(peer, t, policy, &labels))
        .collect();
    let namespaces = roll_up_namespaces(&workloads);
    let mesh = roll_up_mesh(&namespaces);
    Verdicts {
        workloads,
        namespaces,
        mesh,
    }
}

fn peer_of(w: &Workload) -> Peer {
    Peer {
        namespace: Some(w.namespace.clone()),
        workload: Some(w.workload.clone()),
        ..Peer::default()
    }
}

fn judge(peer: Peer, t: Tally, policy: &Policy, known: &BTreeMap<Peer, &Workload>) -> Verdict {
    let c = t.counts;
    let (verdict, reason) = if !t.blockers.is_empty() {
        let sources: BTreeSet<&Peer> = t.blockers.keys().map(|(p, _, _)| p).collect();
        let what = match (c.plaintext, c.tls) {
            (p, 0) => format!("{p} plaintext"),
            (0, t) => format!("{t} non-mesh TLS"),
            (p, t) => format!("{p} plaintext and {t} non-mesh TLS"),
        };
        let n = sources.len();
        (
            Readiness::Blocked,
            format!(
                "{what} connection(s) from {n} source{}",
                if n == 1 { "" } else { "s" }
            ),
        )
    } else if policy.evidence_incomplete {
        (
            Readiness::Insufficient,
            "evidence incomplete: the capture dropped packets".to_owned(),
        )
    } else if c.total() == 0 {
        (
            Readiness::Insufficient,
            "no inbound connections seen".to_owned(),
        )
    } else if c.istio_mtls < policy.min_connections {
        (
            Readiness::Insufficient,
            format!(
                "{} mTLS connections, {} needed",
                c.istio_mtls, policy.min_connections
            ),
        )
    } else if c.unknown as f64 > policy.max_unknown_ratio * c.total() as f64 {
        (
            Readiness::Insufficient,
            format!(
                "{} of {} connections could not be classified",
                c.unknown,
                c.total()
            ),
        )
    } else {
        (
            Readiness::Ready,
            format!("all {} inbound connections are Istio mTLS", c.total()),
        )
    };
    let ports: Vec<PortVerdict> = t
        .by_port
        .iter()
        .map(|(&port, counts)| PortVerdict {
            port,
            verdict: if counts.plaintext + counts.tls > 0 {
                Readiness::Blocked
            } else if counts.istio_mtls > 0 {
                Readiness::Ready
            } else {
                Readiness::Insufficient
            },
            connections: *counts,
        })
        .collect();
    let blockers: Vec<Blocker> = t
        .blockers
        .into_iter()
        .map(
            |((source, security, port), (connections, last_seen))| Blocker {
                source,
                security,
                port,
                connections,
                last_seen,
            },
        )
        .collect();
    let suggested_policy = suggest(&peer, verdict, &ports, known);
    Verdict {
        destination: peer,
        verdict,
        reason,
        connections: c,
        exempted: t.exempted,
        blockers,
        ports,
        suggested_policy,
    }
}

fn suggest(
    peer: &Peer,
    verdict: Readiness,
    ports: &[PortVerdict],
    known: &BTreeMap<Peer, &Workload>,
) -> Option<String> {
    let (Some(namespace), Some(workload)) = (&peer.namespace, &peer.workload) else {
        return None; // an unknown address has no selector to put in a policy
    };
    let labels = known
        .get(peer)
        .map(|w| w.labels.clone())
        .unwrap_or_default();
    let scope = PolicyScope::Workload {
        namespace,
        workload,
        labels: &labels,
    };
    match verdict {
        Readiness::Ready => Some(peer_authentication(&scope, &[])),
        Readiness::Blocked => {
            let blocked: Vec<u16> = ports
                .iter()
                .filter(|p| p.verdict == Readiness::Blocked)
                .map(|p| p.port)
                .collect();
            let some_ready = ports.iter().any(|p| p.verdict == Readiness::Ready);
            (some_ready && blocked.len() < ports.len())
                .then(|| peer_authentication(&scope, &blocked))
        }
        Readiness::Insufficient => None,
    }
}

fn roll_up_namespaces(workloads: &[Verdict]) -> Vec<NamespaceVerdict> {
    let mut by_ns: BTreeMap<&str, Vec<&Verdict>> = BTreeMap::new();
    for v in workloads {
        if let (Some(ns), Some(_)) = (&v.destination.namespace, &v.destination.workload) {
            by_ns.entry(ns).or_default().push(v);
        }
    }
    by_ns
        .into_iter()
        .map(|(namespace, vs)| {
            let count = |r: Readiness| vs.iter().filter(|v| v.verdict == r).count();
            let idle = vs
                .iter()
                .filter(|v| {
                    v.connections.total() == 0
                        && v.exempted == 0
                        && v.verdict == Readiness::Insufficient
                })
                .count();
            let (ready, blocked) = (count(Readiness::Ready), count(Readiness::Blocked));
            let insufficient = count(Readiness::Insufficient) - idle;
            let verdict = if blocked > 0 {
                Readiness::Blocked
            } else if insufficient > 0 || ready == 0 {
                Readiness::Insufficient
            } else {
                Readiness::Ready
            };
            NamespaceVerdict {
                namespace: namespace.to_owned(),
                verdict,
                ready,
                blocked,
                insufficient,
                idle,
                suggested_policy: (verdict == Readiness::Ready)
                    .then(|| peer_authentication(&PolicyScope::Namespace(namespace), &[])),
            }
        })
        .collect()
}

/// The mesh is as ready as its least ready namespace; namespaces where no workload received a
/// connection (only clients, or nothing seen) are left out: STRICT changes nothing there.
fn roll_up_mesh(namespaces: &[NamespaceVerdict]) -> MeshVerdict {
    let verdict = namespaces
        .iter()
        .filter(|n| n.ready + n.blocked + n.insufficient > 0)
        .map(|n| n.verdict)
        .min()
        .unwrap_or(Readiness::Insufficient);
    MeshVerdict {
        verdict,
        suggested_policy: (verdict == Readiness::Ready)
            .then(|| peer_authentication(&PolicyScope::Mesh, &[])),
    }
}

#[cfg(test)]
mod tests;
