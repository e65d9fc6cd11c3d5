//! What the dashboard shows, as the JSON contract names it (README "JSON contract"): views of
//! the report's edges and verdicts that can be read back (where the agent's types serialize only),
//! and the [`Snapshot`] every source produces.
//!
//! The live sources judge with `meshwatch::verdict::evaluate` and pass its result through
//! [`Verdicts`] → JSON → these views, so every source is read through the one contract.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use meshwatch::aggregate::{Edge, EdgeStats, Peer};
use meshwatch::classify::{Mesh, Security};
use meshwatch::verdict::Verdicts;
use serde::{Deserialize, Serialize};

/// One end of an edge: a workload, a node, or a bare address (`aggregate::Peer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub other_sources: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub other_destinations: bool,
}

impl PeerView {
    /// `ns/workload`, `node:name`, or the address (as `Peer::display`).
    pub fn display(&self) -> String {
        self.to_peer().display()
    }

    /// The namespace and workload, when it is a workload.
    pub fn workload_name(&self) -> Option<(&str, &str)> {
        match (&self.namespace, &self.workload) {
            (Some(ns), Some(w)) => Some((ns, w)),
            _ => None,
        }
    }

    pub fn is_node(&self) -> bool {
        self.node.is_some()
    }

    pub fn is_folded(&self) -> bool {
        self.other_sources || self.other_destinations
    }

    pub fn to_peer(&self) -> Peer {
        Peer {
            namespace: self.namespace.clone(),
            workload: self.workload.clone(),
            node: self.node.clone(),
            ip: self.ip,
            other_sources: self.other_sources,
            other_destinations: self.other_destinations,
        }
    }
}

/// The verdict's outcomes, origins and counts are the agent's own types (they read back too).
pub use meshwatch::aggregate::Origin as OriginView;
pub use meshwatch::classify::SecurityCounts as Counts;
pub use meshwatch::verdict::{Readiness, Rollback};

/// An edge as reported (`aggregate::Edge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeView {
    pub source: PeerView,
    pub destination: PeerView,
    pub port: u16,
    pub security: Security,
    pub mesh: Mesh,
    #[serde(default)]
    pub origin: OriginView,
    pub connections: u64,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The latest connection start (`EdgeStats::last_started`); an older agent leaves it out,
    /// and its edges are then dated by `last_seen` as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected: Option<String>,
}

/// A timestamp of the contract that is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("`{value}` is not an RFC 3339 UTC timestamp")]
pub struct BadTimestamp {
    pub value: String,
}

/// Nanoseconds since the epoch of an RFC 3339 UTC timestamp as the reports print them.
pub fn parse_time(s: &str) -> Result<u64, BadTimestamp> {
    let bad = || BadTimestamp {
        value: s.chars().take(64).collect(),
    };
    let t = humantime::parse_rfc3339(s).map_err(|_| bad())?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?;
    u64::try_from(d.as_nanos()).map_err(|_| bad())
}

/// Nanoseconds since the epoch as the reports print them.
pub fn format_time(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

impl EdgeView {
    /// The edge for the verdict engine.
    pub fn to_edge(&self) -> Result<Edge, BadTimestamp> {
        Ok(Edge {
            source: self.source.to_peer(),
            destination: self.destination.to_peer(),
            port: self.port,
            security: self.security,
            mesh: self.mesh,
            origin: self.origin,
            stats: EdgeStats {
                connections: self.connections,
                attempts: self.attempts,
                packets: self.packets,
                bytes: self.bytes,
                first_seen: parse_time(&self.first_seen)?,
                last_seen: parse_time(&self.last_seen)?,
                last_started: match &self.last_connected {
                    Some(t) => parse_time(t)?,
                    None => parse_time(&self.last_seen)?,
                },
            },
        })
    }
}

/// A source that would be refused under STRICT (`verdict::Blocker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockerView {
    #[serde(flatten)]
    pub source: PeerView,
    pub security: Security,
    #[serde(default)]
    pub client_mesh: Option<Mesh>,
    pub port: u16,
    pub connections: u64,
    pub last_seen: String,
    /// `no_sidecar`, `sidecar_plaintext`, `app_tls`, `kubelet_probe`, `nodeport`, `node`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub remedy: Option<String>,
    /// STRICT already applies on its port: the client is refused now.
    #[serde(default)]
    pub broken: bool,
}

/// The verdict of one port (`verdict::PortVerdict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortVerdictView {
    pub port: u16,
    pub verdict: Readiness,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub connections: Counts,
}

/// The verdict of one destination (`verdict::Verdict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictView {
    #[serde(flatten)]
    pub destination: PeerView,
    pub verdict: Readiness,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub connections: Counts,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default)]
    pub exempted: u64,
    #[serde(default)]
    pub blockers: Vec<BlockerView>,
    #[serde(default)]
    pub ports: Vec<PortVerdictView>,
    #[serde(default)]
    pub suggested_policy: Option<String>,
    /// How to undo the suggestion (an older report leaves it out: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
    /// The workload's PeerAuthentication mode today, when the policies are known.
    #[serde(
        default,
        rename = "peer_authentication",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<meshwatch::peer_auth::EffectiveMode>,
}

/// A namespace's roll-up (`verdict::NamespaceVerdict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceView {
    pub namespace: String,
    pub verdict: Readiness,
    #[serde(default)]
    pub ready: usize,
    #[serde(default)]
    pub blocked: usize,
    #[serde(default)]
    pub insufficient: usize,
    /// Workloads already STRICT that still receive plaintext or non-mesh TLS.
    #[serde(default)]
    pub broken_clients: usize,
    #[serde(default)]
    pub idle: usize,
    #[serde(default)]
    pub not_in_mesh: usize,
    #[serde(default)]
    pub suggested_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
}

/// The mesh's roll-up (`verdict::MeshVerdict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshView {
    pub verdict: Readiness,
    #[serde(default)]
    pub suggested_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
}

/// The parts of `summary` that are evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SummaryView {
    pub packets: u64,
    pub flows: u64,
    pub decode_errors: u64,
    pub decode_errors_by_reason: BTreeMap<String, u64>,
    pub reassembly_gave_up: u64,
    pub flows_evicted: u64,
    pub edges_folded: u64,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    pub truncated_files: Vec<String>,
}

/// `meshwatch analyze --format json`, the parts the dashboard reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReportView {
    #[serde(default)]
    pub summary: SummaryView,
    #[serde(default)]
    pub edges: Vec<EdgeView>,
    pub verdicts: Vec<VerdictView>,
    #[serde(default)]
    pub namespaces: Vec<NamespaceView>,
    pub mesh: MeshView,
}

/// The verdicts of one evaluation, as views.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VerdictsView {
    #[serde(rename = "workloads")]
    pub verdicts: Vec<VerdictView>,
    pub namespaces: Vec<NamespaceView>,
    pub mesh: MeshView,
}

/// The engine's output does not read back through the contract (a bug: a test guards it).
#[derive(Debug, thiserror::Error)]
#[error("the verdicts do not match the JSON contract: {0}")]
pub struct ContractError(#[from] serde_json::Error);

impl VerdictsView {
    /// The engine's verdicts, read through the contract.
    pub fn from_engine(v: &Verdicts) -> Result<Self, ContractError> {
        Ok(serde_json::from_value(serde_json::to_value(v)?)?)
    }
}

/// Edges of the engine, read through the contract.
pub fn edges_from_engine(edges: &[Edge]) -> Result<Vec<EdgeView>, ContractError> {
    Ok(serde_json::from_value(serde_json::to_value(edges)?)?)
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    /// `report`, `agents` or `prometheus`.
    pub kind: &'static str,
    /// The file, the agents' URLs, or Prometheus' URL.
    pub detail: String,
    /// Refreshed while the dashboard runs.
    pub live: bool,
}

/// One agent of an `--agent` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    pub url: String,
    /// Why it could not be read; `None` when it answered.
    pub error: Option<String>,
    pub window_seconds: Option<u64>,
    pub evidence_incomplete: bool,
    /// Packets its capture dropped since it started (kernel + interface), when it says.
    pub dropped_packets: Option<u64>,
    pub edges: usize,
}

/// What the verdicts rest on, as far as the source knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// How far back the verdicts look (live sources).
    pub window_seconds: Option<u64>,
    /// The capture's span (reports).
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    /// Whether packet drops are known to the source at all (capture files do not record them).
    pub drops_known: bool,
    /// Some capture dropped packets within the window: nothing without a blocker is `ready`.
    pub evidence_incomplete: bool,
    /// Why the evidence is incomplete, in words (drops, agents that could not be read).
    pub incomplete_because: Vec<String>,
    pub decode_errors: Option<u64>,
    pub decode_errors_by_reason: BTreeMap<String, u64>,
    pub flows_evicted: Option<u64>,
    pub reassembly_gave_up: Option<u64>,
    pub edges_folded: Option<u64>,
    pub truncated_files: Vec<String>,
    /// Agents (or scrape targets) that could not be read: their nodes' traffic is missing.
    pub agents_down: Vec<String>,
    pub agents: Vec<AgentStatus>,
    /// Edges in several agents' answers (a workload with pods on several nodes): summed.
    pub edges_seen_by_several_agents: usize,
    /// The policy the dashboard judged with (live sources; a report was judged by `analyze`).
    pub min_connections: Option<u64>,
    pub max_unknown_ratio: Option<f64>,
}

/// Everything a page needs, from one load of the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub source: SourceInfo,
    /// When the source was read (RFC 3339 UTC).
    pub loaded_at: String,
    pub evidence: Evidence,
    pub edges: Vec<EdgeView>,
    pub verdicts: Vec<VerdictView>,
    pub namespaces: Vec<NamespaceView>,
    pub mesh: MeshView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let s = "2026-11-27T14:11:22.282191Z";
        let ns = parse_time(s).unwrap_or_default();
        assert_eq!(format_time(ns), s);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn engine_output_reads_back_through_the_contract() {
        let edge = EdgeView {
            source: PeerView {
                namespace: Some("legacy".into()),
                workload: Some("sleep".into()),
                ..PeerView::default()
            },
            destination: PeerView {
                namespace: Some("foo".into()),
                workload: Some("httpbin".into()),
                ..PeerView::default()
            },
            port: 8000,
            security: Security::Plaintext,
            mesh: Mesh::None,
            origin: OriginView::Direct,
            connections: 3,
            attempts: 0,
            packets: 30,
            bytes: 900,
            first_seen: "2026-11-27T14:11:22.000000Z".into(),
            last_seen: "2026-11-27T14:11:23.000000Z".into(),
            last_connected: Some("2026-11-27T14:11:22.500000Z".into()),
        };
        let engine_edge = edge.to_edge().unwrap_or_else(|e| panic!("{e}"));
        let back =
            edges_from_engine(std::slice::from_ref(&engine_edge)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, vec![edge]);
        let v = meshwatch::verdict::evaluate(&[engine_edge], &Default::default(), &[]);
        let view = VerdictsView::from_engine(&v).unwrap_or_else(|e| panic!("{e}"));
        let foo = &view.verdicts[0];
        assert_eq!(foo.verdict, Readiness::Blocked);
        assert_eq!(foo.blockers[0].kind.as_deref(), Some("no_sidecar"));
        assert_eq!(foo.blockers[0].source.display(), "legacy/sleep");
        assert_eq!(view.mesh.verdict, Readiness::Blocked);
    }
}
