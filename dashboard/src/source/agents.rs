//! `--agent URL` (repeatable): each agent's `/api/v1/edges` summed into one set of edges and
//! judged here with `meshwatch::verdict::evaluate_with_modes`, the one verdict implementation.
//!
//! Each connection is in exactly one agent's edges: the agent of the destination pod's node
//! reports it (`reporter="destination"`); the client's agent only when the destination is no
//! pod of the cluster. So the edges of all agents add up — an edge in several agents' answers is
//! a workload with pods on several nodes. What the agents know of workloads (outside the mesh,
//! idle, their labels) comes from their `/api/v1/verdicts`; an agent that cannot be read makes
//! the evidence incomplete (its node's connections are missing). The agents that watch the
//! PeerAuthentications give each verdict the workload's mode today (`peer_authentication`):
//! combined as the Prometheus view does ([`meshwatch::cluster::modes::combine`]: unknown
//! where agents disagree), and unknown (not PERMISSIVE) when no agent gives any.

use std::collections::BTreeMap;

use futures::future::join_all;
use meshwatch::aggregate::{Edge, EdgeKey, EdgeStats};
use meshwatch::classify::Mesh;
use meshwatch::cluster::credentials::token_over_plain_http;
use meshwatch::cluster::modes::combine;
use meshwatch::peer_auth::PodLabels;
use meshwatch::verdict::{evaluate_with_modes, KnownWorkload, Modes, Policy};
use serde::Deserialize;

use super::access::Access;
use super::http::{BaseUrl, FetchError, HttpClient};
use super::{now_rfc3339, SourceError};
use crate::model::{
    edges_from_engine, AgentStatus, EdgeView, Evidence, Readiness, Snapshot, SourceInfo,
    VerdictView, VerdictsView,
};

/// The agents of a run.
#[derive(Debug)]
pub struct Agents {
    urls: Vec<BaseUrl>,
    policy: Policy,
    client: HttpClient,
    access: Access,
}

/// `/api/v1/edges`.
#[derive(Debug, Deserialize)]
struct EdgesBody {
    #[serde(default)]
    window_seconds: Option<u64>,
    edges: Vec<EdgeView>,
}

/// `/api/v1/verdicts` (what the agent knows of workloads).
#[derive(Debug, Deserialize)]
struct VerdictsBody {
    #[serde(default)]
    evidence_incomplete: bool,
    #[serde(default)]
    verdicts: Vec<VerdictView>,
}

/// `/api/v1/status` (drop counters; optional).
#[derive(Debug, Deserialize)]
struct StatusBody {
    capture: CaptureBody,
}

#[derive(Debug, Deserialize)]
struct CaptureBody {
    #[serde(default)]
    dropped_kernel: u64,
    #[serde(default)]
    dropped_interface: u64,
}

/// What one agent answered.
#[derive(Debug, Clone)]
pub struct AgentData {
    pub url: String,
    pub window_seconds: Option<u64>,
    pub evidence_incomplete: bool,
    pub dropped_packets: Option<u64>,
    pub edges: Vec<Edge>,
    pub verdicts: Vec<VerdictView>,
}

impl Agents {
    /// Agents over plain HTTP, or HTTPS trusting the webpki roots, without a token.
    pub fn new(
        urls: &[String],
        policy: Policy,
        timeout: std::time::Duration,
    ) -> Result<Self, SourceError> {
        Self::with_access(urls, policy, timeout, Access::default())
    }

    /// Agents reached with `access`: its trust for `https://` URLs, its token (sent only over
    /// HTTPS: a URL with `http://` and a token is refused).
    pub fn with_access(
        urls: &[String],
        policy: Policy,
        timeout: std::time::Duration,
        access: Access,
    ) -> Result<Self, SourceError> {
        let urls = urls
            .iter()
            .map(|u| {
                BaseUrl::parse(u).map_err(|reason| SourceError::BadUrl {
                    url: u.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if access.has_token() {
            let plain = urls
                .iter()
                .find_map(|u| Some((u, token_over_plain_http(u.as_str())?)));
            if let Some((url, reason)) = plain {
                return Err(SourceError::BadUrl {
                    url: url.as_str().to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
        Ok(Agents {
            urls,
            policy,
            client: HttpClient::with_access(timeout, &access)?,
            access,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        base: &BaseUrl,
        path: &str,
        token: Option<&str>,
    ) -> Result<T, String> {
        let uri = base.join(path)?;
        let body = self
            .client
            .get(uri, token)
            .await
            .map_err(|e| format!("{path}: {e}{}", hint(&e, base, token.is_some())))?;
        serde_json::from_slice(&body).map_err(|e| format!("{path}: not the agent's JSON: {e}"))
    }

    async fn fetch(&self, base: &BaseUrl, token: Option<&str>) -> Result<AgentData, String> {
        let edges: EdgesBody = self.json(base, "/api/v1/edges", token).await?;
        let verdicts: VerdictsBody = self.json(base, "/api/v1/verdicts", token).await?;
        let status: Option<StatusBody> = self.json(base, "/api/v1/status", token).await.ok();
        let window_seconds = edges.window_seconds;
        let edges = edges
            .edges
            .iter()
            .map(EdgeView::to_edge)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("/api/v1/edges: {e}"))?;
        Ok(AgentData {
            url: base.as_str().to_owned(),
            window_seconds,
            evidence_incomplete: verdicts.evidence_incomplete,
            dropped_packets: status.map(|s| s.capture.dropped_kernel + s.capture.dropped_interface),
            edges,
            verdicts: verdicts.verdicts,
        })
    }

    /// Read every agent (at once) and judge what they saw.
    pub async fn load(&self) -> Result<Snapshot, SourceError> {
        // read at each load: a projected token is rotated by the kubelet
        let token = self.access.token()?;
        let answers = join_all(self.urls.iter().map(|u| self.fetch(u, token.as_deref()))).await;
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (url, answer) in self.urls.iter().zip(answers) {
            match answer {
                Ok(d) => up.push(d),
                Err(e) => down.push((url.as_str().to_owned(), e)),
            }
        }
        judge(&up, &down, &self.policy, self.detail())
    }

    /// The agents' URLs, comma-separated.
    pub fn detail(&self) -> String {
        self.urls
            .iter()
            .map(BaseUrl::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a failed read means for the flags.
fn hint(e: &FetchError, base: &BaseUrl, with_token: bool) -> &'static str {
    match e {
        FetchError::Unauthorized(_) if with_token => {
            " — the agent did not accept the --token-file token (is it a token its API server knows, and not expired?)"
        }
        FetchError::Unauthorized(_) => {
            " — the agent wants a bearer token: pass --token-file (a service-account token)"
        }
        FetchError::Forbidden(_) => {
            " — the token's user may not get this path: bind it to the ClusterRole meshwatch-metrics-reader"
        }
        // a TLS server answers a plain request with an alert, or closes
        FetchError::Connect(reason)
            if !base.is_https()
                && (reason.contains("invalid HTTP version")
                    || reason.contains("closed before message completed")) =>
        {
            " — not an HTTP answer: does the agent serve HTTPS? use https://"
        }
        _ => "",
    }
}

/// The edges of all agents added up (each connection is in one agent's edges), ordered as
/// `analyze` orders them, and how many edges more than one agent reported.
pub fn merge(per_agent: &[&[Edge]]) -> (Vec<Edge>, usize) {
    let mut merged: BTreeMap<EdgeKey, (EdgeStats, usize)> = BTreeMap::new();
    for edges in per_agent {
        let mut seen_here: std::collections::BTreeSet<EdgeKey> = Default::default();
        for e in edges.iter() {
            let key = key_of(e);
            let (stats, agents) = merged.entry(key.clone()).or_default();
            stats.merge(&e.stats);
            if seen_here.insert(key) {
                *agents += 1;
            }
        }
    }
    let in_several = merged.values().filter(|(_, n)| *n > 1).count();
    let edges = merged.into_iter().map(|(k, (s, _))| k.edge(s)).collect();
    (edges, in_several)
}

fn key_of(e: &Edge) -> EdgeKey {
    EdgeKey {
        destination: e.destination.clone(),
        port: e.port,
        source: e.source.clone(),
        security: e.security,
        mesh: e.mesh,
        origin: e.origin,
    }
}

/// What the agents know of a workload: outside the mesh (any agent says so) and the labels of
/// the policy an agent suggested for it (for the suggested policy here; no selector is decided
/// from them: the modes come resolved from the agents).
#[derive(Debug, Default)]
struct Known {
    labels: PodLabels,
    not_in_mesh: bool,
}

fn known_workloads(agents: &[AgentData]) -> BTreeMap<(String, String), Known> {
    let mut known: BTreeMap<(String, String), Known> = BTreeMap::new();
    for v in agents.iter().flat_map(|a| &a.verdicts) {
        let Some((ns, w)) = v.destination.workload_name() else {
            continue;
        };
        let k = known.entry((ns.to_owned(), w.to_owned())).or_default();
        k.not_in_mesh |= v.verdict == Readiness::NotInMesh;
        let selector = v
            .suggested_policy
            .as_deref()
            .and_then(|y| crate::policy::target(y).ok())
            .and_then(|t| t.selector);
        if let Some(labels) = selector {
            k.labels = PodLabels::declared(labels);
        }
    }
    known
}

/// The modes the agents give (`None` when none watches the PeerAuthentications).
fn agents_modes(agents: &[AgentData]) -> Option<Modes> {
    let mut modes = Modes::new();
    for v in agents.iter().flat_map(|a| &a.verdicts) {
        let (Some((ns, w)), Some(m)) = (v.destination.workload_name(), &v.mode) else {
            continue;
        };
        combine(&mut modes, (ns.to_owned(), w.to_owned()), m.clone());
    }
    (!modes.is_empty()).then_some(modes)
}

/// What the agents' answers (and silences) say about the evidence.
fn agents_evidence(up: &[AgentData], down: &[(String, String)]) -> Evidence {
    let mut agents: Vec<AgentStatus> = up
        .iter()
        .map(|a| AgentStatus {
            url: a.url.clone(),
            error: None,
            window_seconds: a.window_seconds,
            evidence_incomplete: a.evidence_incomplete,
            dropped_packets: a.dropped_packets,
            edges: a.edges.len(),
        })
        .collect();
    agents.extend(down.iter().map(|(url, e)| AgentStatus {
        url: url.clone(),
        error: Some(e.clone()),
        window_seconds: None,
        evidence_incomplete: true,
        dropped_packets: None,
        edges: 0,
    }));
    let mut incomplete_because: Vec<String> = up
        .iter()
        .filter(|a| a.evidence_incomplete)
        .map(|a| format!("agent {} dropped packets within its window", a.url))
        .collect();
    incomplete_because.extend(
        down.iter().map(|(u, e)| {
            format!("agent {u} could not be read ({e}): its node's traffic is missing")
        }),
    );
    Evidence {
        window_seconds: up.iter().filter_map(|a| a.window_seconds).min(),
        drops_known: true,
        incomplete_because,
        agents_down: down.iter().map(|(u, _)| u.clone()).collect(),
        agents,
        ..Evidence::default()
    }
}

/// Merge what the agents that answered saw and judge it; `down` names those that did not.
pub fn judge(
    up: &[AgentData],
    down: &[(String, String)],
    policy: &Policy,
    detail: String,
) -> Result<Snapshot, SourceError> {
    if up.is_empty() {
        let all = down
            .iter()
            .map(|(u, e)| format!("{u} ({e})"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SourceError::NoAgent(all));
    }
    let per_agent: Vec<&[Edge]> = up.iter().map(|a| a.edges.as_slice()).collect();
    let (edges, in_several) = merge(&per_agent);
    let known = known_workloads(up);
    let known_views: Vec<KnownWorkload<'_>> = known
        .iter()
        .map(|((ns, w), k)| KnownWorkload {
            namespace: ns,
            workload: w,
            labels: std::borrow::Cow::Borrowed(&k.labels),
            mesh: k.not_in_mesh.then_some(Mesh::None),
        })
        .collect();
    let incomplete = up.iter().any(|a| a.evidence_incomplete) || !down.is_empty();
    let judged_with = Policy {
        evidence_incomplete: policy.evidence_incomplete || incomplete,
        ..policy.clone()
    };
    let modes = agents_modes(up);
    let verdicts = evaluate_with_modes(&edges, &judged_with, &known_views, modes.as_ref());
    let views = VerdictsView::from_engine(&verdicts)?;
    let evidence = Evidence {
        evidence_incomplete: judged_with.evidence_incomplete,
        edges_seen_by_several_agents: in_several,
        min_connections: Some(policy.min_connections),
        max_unknown_ratio: Some(policy.max_unknown_ratio),
        ..agents_evidence(up, down)
    };
    Ok(Snapshot {
        source: SourceInfo {
            kind: "agents",
            detail,
            live: true,
        },
        loaded_at: now_rfc3339(),
        evidence,
        edges: edges_from_engine(&edges)?,
        verdicts: views.verdicts,
        namespaces: views.namespaces,
        mesh: views.mesh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch::aggregate::{Origin, Peer};
    use meshwatch::classify::Security;

    fn edge(src: &str, dst: &str, connections: u64, last_seen: u64) -> Edge {
        let peer = |w: &str| Peer {
            namespace: Some("ns".to_owned()),
            workload: Some(w.to_owned()),
            ..Peer::default()
        };
        Edge {
            source: peer(src),
            destination: peer(dst),
            port: 8000,
            security: Security::IstioMtls,
            mesh: Mesh::Sidecar,
            origin: Origin::Direct,
            stats: EdgeStats {
                connections,
                attempts: 0,
                packets: connections * 10,
                bytes: connections * 100,
                first_seen: last_seen - 5,
                last_seen,
                last_started: last_seen - 1,
            },
        }
    }

    /// api has pods on two nodes: each node's agent reports the connections to its own pod,
    /// under the same edge; together they are all of them.
    #[test]
    fn an_edge_of_several_agents_adds_up() {
        let node1 = [edge("client", "api", 3, 100), edge("client", "web", 2, 50)];
        let node2 = [edge("client", "api", 4, 200)];
        let (edges, in_several) = merge(&[&node1, &node2]);
        assert_eq!(in_several, 1);
        let api = edges
            .iter()
            .find(|e| e.destination.workload.as_deref() == Some("api"));
        let stats = api.map(|e| e.stats).unwrap_or_default();
        assert_eq!((stats.connections, stats.packets), (7, 70));
        assert_eq!((stats.first_seen, stats.last_seen), (95, 200));
        assert_eq!(edges.len(), 2);
    }
}
