//! The readiness verdict: which destinations can go from PERMISSIVE to STRICT now, and for the
//! rest, which sources still send plaintext or non-mesh TLS, with the remedy for each.
//!
//! PURE: `(edges, policy, known workloads) -> verdicts`, the one implementation that the CLI,
//! the agent API and the dashboard use. It sees edges and the small [`KnownWorkload`] view of
//! what the identity source knows, never the identity source itself. Semantics in DESIGN.md
//! "Verdict semantics"; the same rules judge a workload and each of its ports.

mod policy_yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Edge, Origin, Peer};
use crate::classify::{Mesh, Security, SecurityCounts};
use crate::Nanos;

pub use policy_yaml::{peer_authentication, PolicyScope};

/// Istio's own plaintext ports (merged metrics and rewritten probes, health, Envoy stats) and
/// istiod's control-plane ports (xDS, CA, monitoring, webhooks: no sidecar, no
/// PeerAuthentication applies to them).
pub const DEFAULT_EXEMPT_PORTS: [u16; 7] = [15010, 15012, 15014, 15017, 15020, 15021, 15090];
/// ambient's kubelet-probe source address (SNAT by the CNI).
pub const AMBIENT_PROBE_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 7, 127));

/// What counts as evidence and what is exempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// mTLS connections needed before a destination (or a port) is `ready`.
    pub min_connections: u64,
    /// Destination ports whose traffic is not judged.
    pub exempt_ports: BTreeSet<u16>,
    /// Source addresses whose traffic is not judged.
    pub exempt_sources: BTreeSet<IpAddr>,
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
        self
    }

    fn is_exempt(&self, edge: &Edge) -> bool {
        self.exempt_ports.contains(&edge.port)
            || edge
                .source
                .ip
                .is_some_and(|ip| self.exempt_sources.contains(&ip))
    }
}

/// What the identity source knows of a workload, as the verdict needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownWorkload<'a> {
    pub namespace: &'a str,
    pub workload: &'a str,
    /// Labels for a PeerAuthentication `selector` (default `app: <workload>`).
    pub labels: &'a BTreeMap<String, String>,
    /// Its data plane, when known: `sidecar`, `ambient`, or `none` (not in the mesh).
    pub mesh: Option<Mesh>,
}

impl KnownWorkload<'_> {
    fn peer(&self) -> Peer {
        Peer {
            namespace: Some(self.namespace.to_owned()),
            workload: Some(self.workload.to_owned()),
            ..Peer::default()
        }
    }
}

/// The outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    Blocked,
    Insufficient,
    Ready,
    /// No sidecar and not in ambient: STRICT has no effect on it.
    NotInMesh,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Blocked => "blocked",
            Readiness::Insufficient => "insufficient",
            Readiness::Ready => "ready",
            Readiness::NotInMesh => "not_in_mesh",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Readiness::NotInMesh => "not in mesh",
            other => other.as_str(),
        }
    }
}

/// A source that would be refused under STRICT: the migration's to-do list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    #[serde(flatten)]
    pub source: Peer,
    pub security: Security,
    /// The client's data plane as its traffic shows it: `sidecar` for plaintext that carries
    /// Istio's metadata-exchange headers (a sidecar chose plaintext), else `none`.
    pub client_mesh: Mesh,
    pub port: u16,
    pub connections: u64,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub last_seen: Nanos,
    /// What kind of client it is, which decides the remedy.
    pub kind: BlockerKind,
    /// What to do about it.
    pub remedy: &'static str,
}

/// What kind of client blocks, as its traffic shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// Plaintext from a client without a sidecar.
    NoSidecar,
    /// Plaintext from a sidecar (Istio's metadata-exchange headers).
    SidecarPlaintext,
    /// TLS that is not Istio's.
    AppTls,
    /// A kubelet HTTP probe on an app port (Istio's probe rewrite is off).
    KubeletProbe,
    /// An outside client through a NodePort or LoadBalancer (SNAT'd to the node).
    Nodeport,
    /// Plaintext from a node: a hostNetwork client (or NodePort traffic seen only after SNAT).
    Node,
}

impl BlockerKind {
    /// The kind of a blocker from `source`.
    pub fn of(source: &Peer, security: Security, client_mesh: Mesh, origin: Origin) -> Self {
        match (security, origin) {
            (Security::Tls, _) => BlockerKind::AppTls,
            (_, Origin::KubeletProbe) => BlockerKind::KubeletProbe,
            (_, Origin::Nodeport) => BlockerKind::Nodeport,
            _ if source.is_node() => BlockerKind::Node,
            _ if client_mesh != Mesh::None => BlockerKind::SidecarPlaintext,
            _ => BlockerKind::NoSidecar,
        }
    }

    /// What to do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            BlockerKind::NoSidecar => {
                "the client has no sidecar: it needs a sidecar, ambient, or an explicit exception"
            }
            BlockerKind::SidecarPlaintext => {
                "the client's sidecar sends plaintext here: a DestinationRule with tls.mode DISABLE, a PeerAuthentication DISABLE, or an endpoint its mesh config does not know as meshed"
            }
            BlockerKind::AppTls => {
                "application TLS: STRICT would terminate it and demand an Istio client certificate"
            }
            BlockerKind::KubeletProbe => {
                "probe rewrite is off for this pod: STRICT will fail the probe and restart it; turn sidecar.istio.io/rewriteAppHTTPProbers back on or use an exec probe"
            }
            BlockerKind::Nodeport => {
                "NodePort/LoadBalancer traffic, SNAT'd to the node: route it through an ingress gateway, or keep this port PERMISSIVE with portLevelMtls"
            }
            BlockerKind::Node => {
                "plaintext from a node (a hostNetwork client, or NodePort traffic after SNAT): STRICT rejects it; give the client a sidecar path (an ingress gateway) or keep this port PERMISSIVE with portLevelMtls"
            }
        }
    }
}

/// The verdict of one destination port, by the same rules as the workload's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortVerdict {
    pub port: u16,
    pub verdict: Readiness,
    pub reason: String,
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
    /// Inbound connection attempts that carried no payload (not evidence).
    pub attempts: u64,
    /// Inbound connections not judged (exempt ports and sources).
    pub exempted: u64,
    pub blockers: Vec<Blocker>,
    pub ports: Vec<PortVerdict>,
    /// The PeerAuthentication to apply: STRICT when ready; when only some ports are ready,
    /// PERMISSIVE with `portLevelMtls` STRICT for exactly those ports.
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
    /// Workloads outside the mesh (STRICT has no effect on them).
    pub not_in_mesh: usize,
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

type BlockerKey = (Peer, Security, Mesh, Origin, u16);

/// The inbound evidence of one destination.
#[derive(Default)]
struct Tally {
    counts: SecurityCounts,
    attempts: u64,
    exempted: u64,
    by_port: BTreeMap<u16, SecurityCounts>,
    blockers: BTreeMap<BlockerKey, (u64, Nanos)>,
}

impl Tally {
    fn add(&mut self, edge: &Edge, policy: &Policy) {
        let (n, sec) = (edge.stats.connections, edge.security);
        self.attempts += edge.stats.attempts;
        if n == 0 {
            return;
        }
        if policy.is_exempt(edge) {
            self.exempted += n;
            return;
        }
        self.counts.add(sec, n);
        self.by_port.entry(edge.port).or_default().add(sec, n);
        if sec.blocks_strict() {
            let key = (edge.source.clone(), sec, edge.mesh, edge.origin, edge.port);
            let b = self.blockers.entry(key).or_insert((0, 0));
            b.0 += n;
            b.1 = b.1.max(edge.stats.last_seen);
        }
    }
}

/// Evaluate every destination seen in `edges`, plus every `known` workload (idle ones are
/// `insufficient`: no evidence).
pub fn evaluate(edges: &[Edge], policy: &Policy, known: &[KnownWorkload<'_>]) -> Verdicts {
    let known: BTreeMap<Peer, &KnownWorkload<'_>> = known.iter().map(|k| (k.peer(), k)).collect();
    let mut tallies: BTreeMap<Peer, Tally> = known
        .keys()
        .map(|p| (p.clone(), Tally::default()))
        .collect();
    for edge in edges {
        // a node is judged nowhere (hostNetwork has no sidecar; NodePort traffic is judged at
        // the backend it reaches), nor are the destinations folded past the bounds
        if edge.destination.is_node() || edge.destination.is_folded() {
            continue;
        }
        tallies
            .entry(edge.destination.clone())
            .or_default()
            .add(edge, policy);
    }
    let workloads: Vec<Verdict> = tallies
        .into_iter()
        .map(|(peer, t)| {
            let k = known.get(&peer).copied();
            judge(peer, t, policy, k)
        })
        .collect();
    let namespaces = roll_up_namespaces(&workloads);
    let mesh = roll_up_mesh(&namespaces);
    Verdicts {
        workloads,
        namespaces,
        mesh,
    }
}

/// The rules for evidence without blockers, the same for a workload and for a port.
fn evidence(c: &SecurityCounts, policy: &Policy) -> (Readiness, String) {
    if policy.evidence_incomplete {
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
    }
}

/// The traffic that blocks, in words.
fn blocking_traffic(c: &SecurityCounts) -> String {
    match (c.plaintext, c.tls) {
        (p, 0) => format!("{p} plaintext connection(s)"),
        (0, t) => format!("{t} non-mesh TLS connection(s)"),
        (p, t) => format!("{p} plaintext and {t} non-mesh TLS connection(s)"),
    }
}

/// A port: blocked by any plaintext or TLS, else judged by the evidence rules.
fn port_readiness(c: &SecurityCounts, policy: &Policy) -> (Readiness, String) {
    if c.plaintext + c.tls > 0 {
        (Readiness::Blocked, blocking_traffic(c))
    } else {
        evidence(c, policy)
    }
}

const NOT_IN_MESH: &str =
    "no sidecar and not in ambient: STRICT has no effect until it gets a sidecar or joins ambient";

fn judge(peer: Peer, t: Tally, policy: &Policy, known: Option<&KnownWorkload<'_>>) -> Verdict {
    let c = t.counts;
    let in_mesh = known.and_then(|k| k.mesh) != Some(Mesh::None);
    let (verdict, reason) = if !in_mesh {
        (Readiness::NotInMesh, NOT_IN_MESH.to_owned())
    } else if !t.blockers.is_empty() {
        let sources = t
            .blockers
            .keys()
            .map(|(p, ..)| p)
            .collect::<BTreeSet<_>>()
            .len();
        let plural = if sources == 1 { "" } else { "s" };
        let reason = format!("{} from {sources} source{plural}", blocking_traffic(&c));
        (Readiness::Blocked, reason)
    } else {
        evidence(&c, policy)
    };
    let ports: Vec<PortVerdict> = t
        .by_port
        .iter()
        .map(|(&port, counts)| {
            let (verdict, reason) = port_readiness(counts, policy);
            PortVerdict {
                port,
                verdict,
                reason,
                connections: *counts,
            }
        })
        .collect();
    let blockers: Vec<Blocker> = if in_mesh {
        t.blockers
            .into_iter()
            .map(
                |((source, security, client_mesh, origin, port), (connections, last_seen))| {
                    let kind = BlockerKind::of(&source, security, client_mesh, origin);
                    Blocker {
                        source,
                        security,
                        client_mesh,
                        port,
                        connections,
                        last_seen,
                        kind,
                        remedy: kind.remedy(),
                    }
                },
            )
            .collect()
    } else {
        Vec::new()
    };
    let suggested_policy = suggest(&peer, verdict, &ports, known);
    Verdict {
        destination: peer,
        verdict,
        reason,
        connections: c,
        attempts: t.attempts,
        exempted: t.exempted,
        blockers,
        ports,
        suggested_policy,
    }
}

/// STRICT for a ready workload; for one that is not, PERMISSIVE with STRICT on exactly the
/// ports that are ready by the same rules (never on a port without enough evidence).
fn suggest(
    peer: &Peer,
    verdict: Readiness,
    ports: &[PortVerdict],
    known: Option<&KnownWorkload<'_>>,
) -> Option<String> {
    let (Some(namespace), Some(workload)) = (&peer.namespace, &peer.workload) else {
        return None; // an unknown address has no selector to put in a policy
    };
    let no_labels = BTreeMap::new();
    let scope = PolicyScope::Workload {
        namespace,
        workload,
        labels: known.map_or(&no_labels, |k| k.labels),
    };
    match verdict {
        Readiness::Ready => Some(peer_authentication(&scope, None)),
        Readiness::Blocked | Readiness::Insufficient => {
            let ready: Vec<u16> = ports
                .iter()
                .filter(|p| p.verdict == Readiness::Ready)
                .map(|p| p.port)
                .collect();
            (!ready.is_empty()).then(|| peer_authentication(&scope, Some(&ready)))
        }
        Readiness::NotInMesh => None,
    }
}

fn is_idle(v: &Verdict) -> bool {
    v.connections.total() == 0 && v.exempted == 0 && v.verdict == Readiness::Insufficient
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
            let idle = vs.iter().filter(|v| is_idle(v)).count();
            let (ready, blocked) = (count(Readiness::Ready), count(Readiness::Blocked));
            let not_in_mesh = count(Readiness::NotInMesh);
            let insufficient = count(Readiness::Insufficient) - idle;
            let verdict = if blocked > 0 {
                Readiness::Blocked
            } else if insufficient > 0 {
                Readiness::Insufficient
            } else if ready > 0 {
                Readiness::Ready
            } else if not_in_mesh > 0 {
                Readiness::NotInMesh
            } else {
                Readiness::Insufficient
            };
            NamespaceVerdict {
                namespace: namespace.to_owned(),
                verdict,
                ready,
                blocked,
                insufficient,
                idle,
                not_in_mesh,
                suggested_policy: (verdict == Readiness::Ready)
                    .then(|| peer_authentication(&PolicyScope::Namespace(namespace), None)),
            }
        })
        .collect()
}

/// The mesh is as ready as its least ready namespace; namespaces where no meshed workload
/// received a connection (only clients, nothing seen, or only workloads outside the mesh) are
/// left out: STRICT changes nothing there.
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
            .then(|| peer_authentication(&PolicyScope::Mesh, None)),
    }
}

#[cfg(test)]
mod tests;
