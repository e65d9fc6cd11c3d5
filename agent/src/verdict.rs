//! The readiness verdict: which destinations can go from PERMISSIVE to STRICT now, and for the
//! rest, which sources still send plaintext or non-mesh TLS, with the remedy for each.
//!
//! PURE: `(edges, policy, known workloads) -> verdicts`, the one implementation that the CLI,
//! the agent API and the dashboard use. It sees edges and the small [`KnownWorkload`] view of
//! what the identity source knows, never the identity source itself. Semantics in DESIGN.md
//! "Verdict semantics"; the same rules judge a workload and each of its ports.
//!
//! When the PeerAuthentications are known ([`evaluate_with_modes`]), each verdict carries the
//! workload's effective mode today ([`EffectiveMode`]); a workload already STRICT on a port
//! that still receives plaintext or non-mesh TLS there has `broken_clients`: those clients are
//! being refused now, which is an outage to fix, not a migration step.

mod policy_yaml;
mod suggest;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Edge, Origin, Peer};
use crate::classify::{Mesh, Security, SecurityCounts};
use crate::peer_auth::{EffectiveMode, Mode, PeerAuthentication, PodLabels};
use crate::Nanos;

pub use policy_yaml::{peer_authentication, render, PolicyScope};

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
    /// Istio's root namespace: its PeerAuthentication without a selector is mesh-wide.
    pub istio_root_namespace: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_connections: 5,
            exempt_ports: DEFAULT_EXEMPT_PORTS.into_iter().collect(),
            exempt_sources: [AMBIENT_PROBE_SOURCE].into_iter().collect(),
            max_unknown_ratio: 0.1,
            evidence_incomplete: false,
            istio_root_namespace: crate::peer_auth::DEFAULT_ROOT_NAMESPACE.to_owned(),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownWorkload<'a> {
    pub namespace: &'a str,
    pub workload: &'a str,
    /// Its pods' labels, for a PeerAuthentication `selector` (owned when the source merged
    /// several sets of pods).
    pub labels: Cow<'a, PodLabels>,
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
    /// Already STRICT, yet plaintext or non-mesh TLS arrives: those clients are refused now.
    BrokenClients,
    Blocked,
    Insufficient,
    Ready,
    /// No sidecar and not in ambient: STRICT has no effect on it.
    NotInMesh,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::BrokenClients => "broken_clients",
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
            Readiness::BrokenClients => "broken clients",
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
    /// STRICT already applies on this port: the client is being refused now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub broken: bool,
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
    /// the mode today kept and `portLevelMtls` STRICT for exactly those ports. It edits the
    /// workload-level policy in force, else it is a new one whose selector selects this
    /// workload alone; none when that cannot be shown (the reason says why).
    pub suggested_policy: Option<String>,
    /// How to undo `suggested_policy` once applied ([`Rollback`]): present with a suggestion,
    /// absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
    /// The effective PeerAuthentication mode today, when the policies are known.
    #[serde(
        rename = "peer_authentication",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<EffectiveMode>,
}

/// How to undo a suggested policy once applied. Not "the same policy PERMISSIVE": that would
/// downgrade ports that were STRICT before, and a new PERMISSIVE policy may not even take
/// effect (an older one at its level wins) or may override STRICT it inherited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Rollback {
    /// The suggestion edits this policy (same namespace and name): apply it again as it is
    /// today (`policy`: its YAML — mode, `portLevelMtls`, selector).
    Restore {
        namespace: String,
        name: String,
        policy: String,
    },
    /// The suggestion creates this policy: delete it. `unchecked` (only when the policies
    /// themselves are not known, as in the cluster view): why a policy of that name may exist
    /// already, unseen — then restore that one instead.
    Delete {
        namespace: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unchecked: Option<String>,
    },
}

/// A new workload-level policy suggested without the policies in force (the cluster view, a
/// report without `--peer-authentications`): the modes cannot show an older policy that selects
/// the same pods with mode UNSET (it inherits, so it names no mode), and Istio lets the oldest
/// workload-level policy win, so the new one might not take effect. Said in the policy itself,
/// as a `# UNCHECKED:` comment line; empty where the policies were known.
fn unchecked_caveat(s: &suggest::Suggested) -> String {
    if s.checked || s.was.is_some() || s.policy.selector.is_none() {
        return String::new();
    }
    // a comment line stays one line whatever the name holds
    let ns: String = s
        .policy
        .namespace
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!(
        "# UNCHECKED: the PeerAuthentications in force are not known here: an older one in {ns} that selects these pods, even with mode UNSET, would win over this one (Istio applies the oldest): check kubectl get peerauthentications -n {ns} before applying\n"
    )
}

impl Rollback {
    fn of(s: &suggest::Suggested) -> Rollback {
        let p = &s.policy;
        match &s.was {
            Some(was) => Rollback::Restore {
                namespace: was.namespace.clone(),
                name: was.name.clone(),
                policy: render(was),
            },
            None => Rollback::Delete {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                unchecked: (!s.checked).then(|| {
                    format!(
                        "the PeerAuthentications in force are not known here: if {} existed before, restore it as it was instead of deleting it",
                        p.id()
                    )
                }),
            },
        }
    }
}

/// A namespace's roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceVerdict {
    pub namespace: String,
    pub verdict: Readiness,
    pub ready: usize,
    pub blocked: usize,
    pub insufficient: usize,
    /// Workloads already STRICT that still receive plaintext or non-mesh TLS.
    pub broken_clients: usize,
    /// Known workloads that received no inbound connection (they do not hold the namespace back).
    pub idle: usize,
    /// Workloads outside the mesh (STRICT has no effect on them).
    pub not_in_mesh: usize,
    /// The namespace-wide STRICT policy: the one in force edited, else a new `default`.
    pub suggested_policy: Option<String>,
    /// How to undo `suggested_policy` once applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
    /// What the suggestion leaves out (workloads whose own policy overrides it), or why there
    /// is none although the namespace is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion_note: Option<String>,
}

/// The whole mesh's roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshVerdict {
    pub verdict: Readiness,
    /// The mesh-wide STRICT policy (in Istio's root namespace): the one in force edited, else a
    /// new `default`; none when every workload is STRICT already.
    pub suggested_policy: Option<String>,
    /// How to undo `suggested_policy` once applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_rollback: Option<Rollback>,
    /// What the suggestion leaves out (workloads whose namespace or own policy overrides it),
    /// or why there is none although the mesh is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion_note: Option<String>,
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
    /// Connections, last seen (shown), last started (judged by `refused_now`).
    blockers: BTreeMap<BlockerKey, (u64, Nanos, Nanos)>,
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
            let b = self.blockers.entry(key).or_insert((0, 0, 0));
            b.0 += n;
            b.1 = b.1.max(edge.stats.last_seen);
            b.2 = b.2.max(edge.stats.last_started);
        }
    }
}

/// The effective PeerAuthentication modes by (namespace, workload).
pub type Modes = BTreeMap<(String, String), EffectiveMode>;

/// Evaluate every destination seen in `edges`, plus every `known` workload (idle ones are
/// `insufficient`: no evidence). The PeerAuthentications are not known.
pub fn evaluate(edges: &[Edge], policy: &Policy, known: &[KnownWorkload<'_>]) -> Verdicts {
    evaluate_with_modes(edges, policy, known, None)
}

/// [`evaluate`], with each workload's effective mode when the PeerAuthentications are known
/// (`modes`; a workload missing from it has no mode shown). The policies themselves are not:
/// a suggestion that would edit one is withheld, and none is simulated.
pub fn evaluate_with_modes(
    edges: &[Edge],
    policy: &Policy,
    known: &[KnownWorkload<'_>],
    modes: Option<&Modes>,
) -> Verdicts {
    evaluate_inner(edges, policy, known, modes, None)
}

/// [`evaluate`] with the PeerAuthentications in force: each workload's mode today, and every
/// suggested policy checked by simulating it with them ([`crate::peer_auth::resolve`]).
/// A workload seen in `edges` but not `known` has unknown labels.
pub fn evaluate_with_policies(
    edges: &[Edge],
    policy: &Policy,
    known: &[KnownWorkload<'_>],
    policies: &[PeerAuthentication],
) -> Verdicts {
    evaluate_with_policies_stamped(edges, policy, known, policies, |_| {})
}

/// [`evaluate_with_policies`], with each mode's `since` set by `stamp` before the modes judge
/// (the agent's mode clock knows better than the policies' `creationTimestamp` since when a
/// mode holds). The modes are every workload's known or seen, resolved with `policies`.
pub fn evaluate_with_policies_stamped(
    edges: &[Edge],
    policy: &Policy,
    known: &[KnownWorkload<'_>],
    policies: &[PeerAuthentication],
    stamp: impl FnOnce(&mut Modes),
) -> Verdicts {
    let labels = labels_by_namespace(known, edges);
    let workloads = labels
        .iter()
        .flat_map(|(ns, wls)| wls.iter().map(move |(wl, l)| (*ns, *wl, &**l)));
    let mut modes = crate::peer_auth::modes_of(policies, &policy.istio_root_namespace, workloads);
    stamp(&mut modes);
    evaluate_inner(edges, policy, known, Some(&modes), Some(policies))
}

/// Every workload known or seen (as source or destination) by namespace, with its pods' labels
/// (unknown for one only seen; merged for one known twice).
type Labels<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Cow<'a, PodLabels>>>;

static UNKNOWN_LABELS: PodLabels = PodLabels::Unknown;

fn labels_by_namespace<'a>(known: &'a [KnownWorkload<'a>], edges: &'a [Edge]) -> Labels<'a> {
    let mut out = Labels::new();
    let seen = edges.iter().flat_map(|e| [&e.source, &e.destination]);
    for peer in seen.filter(|p| !p.is_folded() && !p.is_node()) {
        if let (Some(ns), Some(wl)) = (&peer.namespace, &peer.workload) {
            out.entry(ns.as_str())
                .or_default()
                .entry(wl.as_str())
                .or_insert(Cow::Borrowed(&UNKNOWN_LABELS));
        }
    }
    for k in known {
        let slot = out.entry(k.namespace).or_default().entry(k.workload);
        match slot {
            std::collections::btree_map::Entry::Occupied(mut e) if !e.get().is_unknown() => {
                let merged = e.get().merge(&k.labels);
                e.insert(Cow::Owned(merged));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.insert(Cow::Borrowed(&*k.labels));
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Cow::Borrowed(&*k.labels));
            }
        }
    }
    out
}

fn evaluate_inner(
    edges: &[Edge],
    policy: &Policy,
    known: &[KnownWorkload<'_>],
    modes: Option<&Modes>,
    policies: Option<&[PeerAuthentication]>,
) -> Verdicts {
    let labels = labels_by_namespace(known, edges);
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
    let mut workloads: Vec<Verdict> = tallies
        .into_iter()
        .map(|(peer, t)| {
            let k = known.get(&peer).copied();
            let mode = modes.and_then(|m| mode_of(m, &peer));
            judge(peer, t, policy, k, mode)
        })
        .collect();
    for v in &mut workloads {
        suggest_for(v, &labels, policy, policies);
    }
    let namespaces = roll_up_namespaces(&workloads, &labels, policy, policies);
    let mesh = roll_up_mesh(&namespaces, &workloads, policy, policies);
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

fn mode_of(modes: &Modes, peer: &Peer) -> Option<EffectiveMode> {
    let (Some(ns), Some(wl)) = (&peer.namespace, &peer.workload) else {
        return None;
    };
    modes.get(&(ns.clone(), wl.clone())).cloned()
}

/// Whether STRICT applies on `port` today.
fn strict_on(mode: Option<&EffectiveMode>, port: u16) -> bool {
    mode.is_some_and(|m| m.on_port(port).0 == Mode::Strict)
}

/// STRICT on the workload and on every port it overrides: nothing left to apply.
fn fully_strict(mode: Option<&EffectiveMode>) -> bool {
    mode.is_some_and(|m| m.mode == Mode::Strict && m.ports.values().all(|p| p.mode == Mode::Strict))
}

/// What DISABLE applies today, or that the mode today is unknown, in words ("" when neither).
fn disable_note(mode: Option<&EffectiveMode>) -> String {
    let Some(m) = mode else {
        return String::new();
    };
    let mut notes = Vec::new();
    if m.mode == Mode::Unknown {
        let why = m.undecided.as_deref().unwrap_or("it cannot be told");
        notes.push(format!("the mode today is {}: {why}", m.describe()));
    }
    if m.mode == Mode::Disable {
        notes.push(format!("the workload is {} today", m.describe()));
    }
    for (port, p) in m.ports.iter().filter(|(_, p)| p.mode == Mode::Disable) {
        notes.push(format!("port {port} is DISABLE (port {})", p.policy));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join(", "))
    }
}

/// Whether traffic to `port` whose latest connection started at `last_started` is refused now:
/// STRICT applies there and a connection started after the mode took effect. Dated by the
/// connection's start, not its last packet: a keep-alive connection accepted while PERMISSIVE
/// keeps flowing (and finishes) after the change, and Envoy does not refuse it. When the time
/// the mode took effect is not known, never.
fn refused_now(mode: Option<&EffectiveMode>, port: u16, last_started: Nanos) -> bool {
    strict_on(mode, port)
        && mode
            .and_then(|m| m.since)
            .is_some_and(|s| last_started > s.at)
}

/// The blockers of a tally by what STRICT does to them today.
#[derive(Default)]
struct BlockersToday<'a> {
    /// On a STRICT port, seen after the mode took effect: refused now.
    refused: Vec<(&'a BlockerKey, u64)>,
    /// On a STRICT port, last connected before the mode took effect (or when that is not known).
    earlier: Vec<(&'a BlockerKey, u64)>,
    /// On a port STRICT does not apply to yet: the migration's to-do list.
    open: Vec<(&'a BlockerKey, u64)>,
}

impl<'a> BlockersToday<'a> {
    fn of(t: &'a Tally, mode: Option<&EffectiveMode>, port: Option<u16>) -> Self {
        let mut out = BlockersToday::default();
        for (k, &(n, _, last_started)) in t
            .blockers
            .iter()
            .filter(|(k, _)| port.is_none_or(|p| k.4 == p))
        {
            let list = if refused_now(mode, k.4, last_started) {
                &mut out.refused
            } else if strict_on(mode, k.4) {
                &mut out.earlier
            } else {
                &mut out.open
            };
            list.push((k, n));
        }
        out
    }
}

/// The connections of `blockers` by class.
fn counts_of(blockers: &[(&BlockerKey, u64)]) -> SecurityCounts {
    let mut c = SecurityCounts::default();
    for ((_, security, ..), n) in blockers {
        c.add(*security, *n);
    }
    c
}

/// `c` without the connections of `blockers` (which are among them).
fn counts_without(c: &SecurityCounts, blockers: &[(&BlockerKey, u64)]) -> SecurityCounts {
    let gone = counts_of(blockers);
    SecurityCounts {
        plaintext: c.plaintext.saturating_sub(gone.plaintext),
        tls: c.tls.saturating_sub(gone.tls),
        ..*c
    }
}

/// "3 sources": the distinct sources of `blockers`.
fn sources_of(blockers: &[(&BlockerKey, u64)]) -> String {
    let n = blockers
        .iter()
        .map(|((p, ..), _)| p)
        .collect::<BTreeSet<_>>()
        .len();
    format!("{n} source{}", if n == 1 { "" } else { "s" })
}

/// Traffic on a STRICT port that is not known to be refused now, in words: it connected before
/// the mode took effect, or when that was is not known.
fn earlier_note(m: &EffectiveMode, earlier: &[(&BlockerKey, u64)]) -> String {
    let traffic = blocking_traffic(&counts_of(earlier));
    match m.since {
        Some(since) => format!(
            "{traffic} from {} was last connected before {}, from when the mode {} is known to hold ({}): not counted as refused",
            sources_of(earlier),
            crate::timestamp::format(since.at),
            m.describe(),
            since.basis.describe()
        ),
        None => format!(
            "{traffic} from {} arrived in the window while the mode is {} now; since when it is STRICT is not known, so whether they are refused cannot be told",
            sources_of(earlier),
            m.describe()
        ),
    }
}

/// The workload's readiness and why, from its tally and its mode today. Only traffic seen
/// after the mode became STRICT makes `broken_clients`; traffic of the window from before
/// (or from an unknown time) is said, not counted as refused.
fn workload_readiness(
    t: &Tally,
    policy: &Policy,
    in_mesh: bool,
    mode: Option<&EffectiveMode>,
) -> (Readiness, String) {
    if !in_mesh {
        return (Readiness::NotInMesh, NOT_IN_MESH.to_owned());
    }
    let today = BlockersToday::of(t, mode, None);
    let Some(m) = mode else {
        return open_or_evidence(t, policy, &today, mode);
    };
    if let Some(since) = m.since.filter(|_| !today.refused.is_empty()) {
        let reason = format!(
            "already {}, known since {} ({}), yet {} sent {} in the window, some after that: those clients are refused now",
            m.describe(),
            crate::timestamp::format(since.at),
            since.basis.describe(),
            sources_of(&today.refused),
            blocking_traffic(&counts_of(&today.refused)),
        );
        return (Readiness::BrokenClients, reason);
    }
    if today.earlier.is_empty() || !today.open.is_empty() {
        let (verdict, reason) = open_or_evidence(t, policy, &today, mode);
        return match today.earlier.is_empty() {
            true => (verdict, reason),
            false => (
                verdict,
                format!("{reason}; {}", earlier_note(m, &today.earlier)),
            ),
        };
    }
    if m.since.is_none() {
        return (Readiness::Insufficient, earlier_note(m, &today.earlier));
    }
    // all of it before the mode became STRICT: judged on the rest
    let rest = counts_without(&t.counts, &today.earlier);
    let (verdict, reason) = evidence(&rest, policy);
    (
        verdict,
        format!(
            "{reason}; apart from that, {}",
            earlier_note(m, &today.earlier)
        ),
    )
}

/// Blocked by the blockers STRICT does not apply to yet, else judged by the evidence rules.
fn open_or_evidence(
    t: &Tally,
    policy: &Policy,
    today: &BlockersToday<'_>,
    mode: Option<&EffectiveMode>,
) -> (Readiness, String) {
    if !today.open.is_empty() {
        let reason = format!(
            "{} from {}",
            blocking_traffic(&counts_of(&today.open)),
            sources_of(&today.open)
        );
        return (Readiness::Blocked, reason + &disable_note(mode));
    }
    let (verdict, reason) = evidence(&t.counts, policy);
    match mode {
        Some(m) if verdict == Readiness::Ready && fully_strict(mode) => (
            verdict,
            format!("{reason}; already {}: no policy to apply", m.describe()),
        ),
        _ => (verdict, reason + &disable_note(mode)),
    }
}

fn judge(
    peer: Peer,
    t: Tally,
    policy: &Policy,
    known: Option<&KnownWorkload<'_>>,
    mode: Option<EffectiveMode>,
) -> Verdict {
    let c = t.counts;
    let in_mesh = known.and_then(|k| k.mesh) != Some(Mesh::None);
    let (verdict, reason) = workload_readiness(&t, policy, in_mesh, mode.as_ref());
    let ports: Vec<PortVerdict> = t
        .by_port
        .iter()
        .map(|(&port, counts)| {
            let (verdict, reason) = match port_readiness(counts, policy) {
                (Readiness::Blocked, why) if strict_on(mode.as_ref(), port) => {
                    strict_port_readiness(&t, policy, mode.as_ref(), port, counts, why)
                }
                other => other,
            };
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
                |(
                    (source, security, client_mesh, origin, port),
                    (connections, last_seen, started),
                )| {
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
                        broken: refused_now(mode.as_ref(), port, started),
                    }
                },
            )
            .collect()
    } else {
        Vec::new()
    };
    // written by `suggest_for`, which sees the other workloads of the namespace
    let suggested_policy = None;
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
        suggested_rollback: None,
        mode,
    }
}

/// A STRICT port that received plaintext or non-mesh TLS in the window: refused now when some
/// arrived after the mode took effect; else judged as the workload is (see
/// [`workload_readiness`]).
fn strict_port_readiness(
    t: &Tally,
    policy: &Policy,
    mode: Option<&EffectiveMode>,
    port: u16,
    counts: &SecurityCounts,
    why: String,
) -> (Readiness, String) {
    let today = BlockersToday::of(t, mode, Some(port));
    match mode {
        Some(_) if !today.refused.is_empty() => (
            Readiness::BrokenClients,
            format!("already STRICT, yet {why}, some after it took effect: refused now"),
        ),
        Some(m @ EffectiveMode { since: Some(_), .. }) => {
            let (verdict, reason) = evidence(&counts_without(counts, &today.earlier), policy);
            (
                verdict,
                format!(
                    "{reason}; apart from that, {}",
                    earlier_note(m, &today.earlier)
                ),
            )
        }
        Some(m) => (Readiness::Insufficient, earlier_note(m, &today.earlier)),
        None => (Readiness::Blocked, why),
    }
}

/// The workload's suggested policy ([`suggest::for_workload`]): none when it is STRICT already,
/// not in the mesh or refusing clients now; when one cannot be shown to do what it says, none
/// and the reason says why.
fn suggest_for(
    v: &mut Verdict,
    labels: &Labels<'_>,
    policy: &Policy,
    policies: Option<&[PeerAuthentication]>,
) {
    let judged = matches!(
        v.verdict,
        Readiness::Ready | Readiness::Blocked | Readiness::Insufficient
    );
    if !judged || fully_strict(v.mode.as_ref()) {
        return;
    }
    let (Some(namespace), Some(workload)) = (&v.destination.namespace, &v.destination.workload)
    else {
        return; // an unknown address has no selector to put in a policy
    };
    let in_namespace = labels.get(namespace.as_str());
    let own = in_namespace
        .and_then(|m| m.get(workload.as_str()))
        .map_or(&UNKNOWN_LABELS, |l| &**l);
    let judged_ports: Vec<u16> = v.ports.iter().map(|p| p.port).collect();
    let ready_ports: Vec<u16> = v
        .ports
        .iter()
        .filter(|p| p.verdict == Readiness::Ready)
        .map(|p| p.port)
        .collect();
    let ctx = suggest::Context {
        policies,
        root_namespace: &policy.istio_root_namespace,
        workloads: in_namespace
            .map(|m| m.iter().map(|(w, l)| (*w, &**l)).collect())
            .unwrap_or_default(),
    };
    let ask = suggest::WorkloadAsk {
        namespace,
        workload,
        labels: own,
        ready: v.verdict == Readiness::Ready,
        judged_ports: &judged_ports,
        ready_ports: &ready_ports,
        mode: v.mode.as_ref(),
    };
    match suggest::for_workload(&ask, &ctx) {
        suggest::Suggestion::Policy(s) => {
            v.suggested_policy = Some(format!("{}{}", unchecked_caveat(&s), render(&s.policy)));
            v.suggested_rollback = Some(Rollback::of(&s));
        }
        suggest::Suggestion::Assumed(s, why) => {
            // the assumption travels with the policy itself (a YAML comment), not only in the
            // reason: whoever applies it, or a script that reads only the policy, sees it
            v.suggested_policy = Some(format!(
                "# ASSUMED: {why}\n{}{}",
                unchecked_caveat(&s),
                render(&s.policy)
            ));
            v.suggested_rollback = Some(Rollback::of(&s));
            v.reason = format!("{}; {why}", v.reason);
        }
        suggest::Suggestion::Nothing => {}
        suggest::Suggestion::Withheld(why) => {
            v.reason = format!("{}; no policy suggested: {why}", v.reason);
        }
    }
}

/// A ready namespace's policy and its note ([`suggest::for_namespace_wide`]).
fn suggest_namespace(
    namespace: &str,
    vs: &[&Verdict],
    labels: &Labels<'_>,
    policy: &Policy,
    policies: Option<&[PeerAuthentication]>,
) -> (Option<(String, Rollback)>, Option<String>) {
    if namespace == policy.istio_root_namespace {
        return (
            None,
            Some(
                "a policy without a selector in Istio's root namespace is mesh-wide: see the mesh"
                    .to_owned(),
            ),
        );
    }
    let ctx = suggest::Context {
        policies,
        root_namespace: &policy.istio_root_namespace,
        workloads: labels
            .get(namespace)
            .map(|m| m.iter().map(|(w, l)| (*w, &**l)).collect())
            .unwrap_or_default(),
    };
    let modes: Vec<(&str, Option<&EffectiveMode>)> = vs
        .iter()
        .filter_map(|v| Some((v.destination.workload.as_deref()?, v.mode.as_ref())))
        .collect();
    offered(suggest::for_namespace_wide(namespace, &ctx, &modes))
}

/// A namespace- or mesh-wide suggestion as the roll-up shows it: the policy and its rollback,
/// and the note.
fn offered(
    (suggestion, note): (suggest::Suggestion, Option<String>),
) -> (Option<(String, Rollback)>, Option<String>) {
    match suggestion {
        suggest::Suggestion::Policy(s) | suggest::Suggestion::Assumed(s, _) => {
            (Some((render(&s.policy), Rollback::of(&s))), note)
        }
        suggest::Suggestion::Nothing => (None, note),
        suggest::Suggestion::Withheld(why) => (None, Some(format!("no policy suggested: {why}"))),
    }
}

fn is_idle(v: &Verdict) -> bool {
    v.connections.total() == 0 && v.exempted == 0 && v.verdict == Readiness::Insufficient
}

fn roll_up_namespaces(
    workloads: &[Verdict],
    labels: &Labels<'_>,
    policy: &Policy,
    policies: Option<&[PeerAuthentication]>,
) -> Vec<NamespaceVerdict> {
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
            let broken_clients = count(Readiness::BrokenClients);
            let not_in_mesh = count(Readiness::NotInMesh);
            let insufficient = count(Readiness::Insufficient) - idle;
            let verdict = if broken_clients > 0 {
                Readiness::BrokenClients
            } else if blocked > 0 {
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
            // nothing to apply when every workload is STRICT already
            let (suggested, suggestion_note) = if verdict == Readiness::Ready
                && !vs.iter().all(|v| fully_strict(v.mode.as_ref()))
            {
                suggest_namespace(namespace, &vs, labels, policy, policies)
            } else {
                (None, None)
            };
            NamespaceVerdict {
                namespace: namespace.to_owned(),
                verdict,
                ready,
                blocked,
                insufficient,
                broken_clients,
                idle,
                not_in_mesh,
                suggested_policy: suggested.as_ref().map(|(p, _)| p.clone()),
                suggested_rollback: suggested.map(|(_, r)| r),
                suggestion_note,
            }
        })
        .collect()
}

/// The mesh is as ready as its least ready namespace; namespaces where no meshed workload
/// received a connection (only clients, nothing seen, or only workloads outside the mesh) are
/// left out: STRICT changes nothing there.
fn roll_up_mesh(
    namespaces: &[NamespaceVerdict],
    workloads: &[Verdict],
    policy: &Policy,
    policies: Option<&[PeerAuthentication]>,
) -> MeshVerdict {
    let verdict = namespaces
        .iter()
        .filter(|n| n.ready + n.blocked + n.insufficient + n.broken_clients > 0)
        .map(|n| n.verdict)
        .min()
        .unwrap_or(Readiness::Insufficient);
    let named: Vec<(String, Option<&EffectiveMode>)> = workloads
        .iter()
        .filter(|v| v.destination.workload.is_some())
        .map(|v| (v.destination.display(), v.mode.as_ref()))
        .collect();
    // as for a namespace: nothing to apply when every workload is STRICT already
    let (suggested, suggestion_note) =
        if verdict == Readiness::Ready && !named.iter().all(|(_, m)| fully_strict(*m)) {
            let ctx = suggest::Context {
                policies,
                root_namespace: &policy.istio_root_namespace,
                workloads: Vec::new(),
            };
            let modes: Vec<(&str, Option<&EffectiveMode>)> =
                named.iter().map(|(w, m)| (w.as_str(), *m)).collect();
            offered(suggest::for_namespace_wide(
                &policy.istio_root_namespace,
                &ctx,
                &modes,
            ))
        } else {
            (None, None)
        };
    MeshVerdict {
        verdict,
        suggested_policy: suggested.as_ref().map(|(p, _)| p.clone()),
        suggested_rollback: suggested.map(|(_, r)| r),
        suggestion_note,
    }
}

#[cfg(test)]
mod tests;
