//! What each page shows, computed from a [`Snapshot`]: the same structures are rendered as HTML
//! ([`crate::render`]) and served as JSON under `/api/`. PURE: no I/O, no clock.

mod matrix;

use std::collections::BTreeSet;
use std::time::Duration;

use meshwatch::classify::Security;
use meshwatch::verdict::Policy;
use serde::Serialize;

use crate::model::{
    Counts, EdgeView, Evidence, MeshView, NamespaceView, PeerView, PortVerdictView, Readiness,
    Snapshot, SourceInfo, VerdictView,
};
use crate::policy::PolicyPair;

pub use matrix::{matrix, Axis, Cell, Matrix, MAX_AXIS};

/// Blockers listed on the overview.
pub const TOP_BLOCKERS: usize = 10;

/// The share of judged connections that were Istio mTLS, stated so it is never overstated: the
/// percentage is rounded down, and `all_mtls` (the only case that earns a lock) is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Share {
    pub counts: Counts,
    pub mtls: u64,
    pub total: u64,
    /// Rounded down: 99.9 % shows as 99.
    pub percent: Option<u64>,
    pub all_mtls: bool,
}

impl Share {
    pub fn of(counts: &Counts) -> Self {
        let total = counts.total();
        Share {
            counts: *counts,
            mtls: counts.istio_mtls,
            total,
            percent: (total > 0).then(|| counts.istio_mtls * 100 / total),
            all_mtls: total > 0 && counts.istio_mtls == total,
        }
    }
}

/// A percentage rounded up (a plaintext share is never understated: 0.2 % shows as 1).
pub fn percent_up(part: u64, total: u64) -> Option<u64> {
    (total > 0).then(|| (part * 100).div_ceil(total))
}

/// Query-string encoding of one value (RFC 3986 unreserved characters kept).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page of a namespace.
pub fn namespace_href(ns: &str) -> String {
    format!("/namespace?ns={}", encode(ns))
}

/// The page of a destination: a workload, or an address without identity (nodes and folded
/// stand-ins are never judged, so they have none).
pub fn destination_href(p: &PeerView) -> Option<String> {
    match (&p.namespace, &p.workload, &p.node, &p.ip) {
        (Some(ns), Some(w), _, _) => {
            Some(format!("/workload?ns={}&name={}", encode(ns), encode(w)))
        }
        (_, _, None, Some(ip)) if !p.is_folded() => {
            Some(format!("/workload?ip={}", encode(&ip.to_string())))
        }
        _ => None,
    }
}

/// What a blocker's `kind` means, for people.
pub fn kind_label(kind: Option<&str>) -> String {
    match kind {
        Some("no_sidecar") => "client without sidecar".to_owned(),
        Some("sidecar_plaintext") => "sidecar sending plaintext".to_owned(),
        Some("app_tls") => "application TLS".to_owned(),
        Some("kubelet_probe") => "kubelet probe".to_owned(),
        Some("nodeport") => "NodePort / LoadBalancer".to_owned(),
        Some("node") => "node (hostNetwork)".to_owned(),
        Some(other) => other.to_owned(),
        None => "unknown".to_owned(),
    }
}

/// A blocker with where it comes from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockerRow {
    pub destination: String,
    pub destination_href: Option<String>,
    pub source: String,
    pub source_href: Option<String>,
    pub port: u16,
    pub security: Security,
    pub kind: Option<String>,
    pub kind_label: String,
    pub remedy: String,
    pub connections: u64,
    pub last_seen: String,
    /// STRICT already applies on its port: the client is refused now.
    pub broken: bool,
}

/// A destination in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadRow {
    pub name: String,
    pub href: Option<String>,
    pub verdict: Readiness,
    pub reason: String,
    pub share: Share,
    pub blockers: usize,
    pub exempted: u64,
    pub attempts: u64,
    /// The PeerAuthentication mode today ("STRICT (namespace foo/default)"), when known.
    pub mode: Option<String>,
}

/// Counts of destinations by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub destinations: usize,
    pub ready: usize,
    pub blocked: usize,
    /// Already STRICT, yet receiving plaintext or non-mesh TLS (clients refused now).
    pub broken_clients: usize,
    /// Insufficient with traffic (not idle).
    pub insufficient: usize,
    pub not_in_mesh: usize,
    /// Known destinations without any inbound connection.
    pub idle: usize,
}

/// A namespace on the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceRow {
    #[serde(flatten)]
    pub namespace: NamespaceView,
    pub href: String,
}

/// `/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub source: SourceInfo,
    pub loaded_at: String,
    pub mesh: MeshView,
    pub mesh_policy: Option<PolicyPair>,
    pub totals: Totals,
    pub namespaces: Vec<NamespaceRow>,
    /// Destinations known only by address.
    pub addresses: Vec<WorkloadRow>,
    pub top_blockers: Vec<BlockerRow>,
    pub blockers_total: usize,
    pub evidence: Evidence,
}

/// `/namespace?ns=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespacePage {
    pub namespace: NamespaceView,
    pub workloads: Vec<WorkloadRow>,
    /// The namespace-wide PeerAuthentication, when every workload that received traffic is ready.
    pub policy: Option<PolicyPair>,
}

/// An inbound edge of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundRow {
    pub source: String,
    pub source_href: Option<String>,
    pub port: u16,
    pub security: Security,
    pub mesh: meshwatch::classify::Mesh,
    pub origin: crate::model::OriginView,
    pub connections: u64,
    pub attempts: u64,
    pub last_seen: String,
    /// Why it is not judged, when it is exempt.
    pub exempt: Option<String>,
}

/// Exempted traffic and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExemptRow {
    pub source: String,
    pub port: u16,
    pub security: Security,
    pub connections: u64,
    pub why: String,
}

/// `/workload?ns=&name=` or `/workload?ip=`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadPage {
    pub title: String,
    pub destination: PeerView,
    pub namespace_href: Option<String>,
    pub verdict: VerdictView,
    pub share: Share,
    pub ports: Vec<PortVerdictView>,
    pub inbound: Vec<InboundRow>,
    pub blockers: Vec<BlockerRow>,
    pub exempted: Vec<ExemptRow>,
    /// Exempted connections the listed rows account for (the verdict counts `verdict.exempted`).
    pub exempted_explained: u64,
    pub evidence: Vec<EvidenceLine>,
    pub policy: Option<PolicyPair>,
    /// Why no policy is suggested, when none is.
    pub no_policy: Option<String>,
}

/// One line of the evidence behind a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceLine {
    pub what: String,
    pub value: String,
}

fn verdicts_by_name(s: &Snapshot) -> BTreeSet<&PeerView> {
    s.verdicts.iter().map(|v| &v.destination).collect()
}

/// A source links to its page when it is a destination with a verdict.
fn source_href(p: &PeerView, known: &BTreeSet<&PeerView>) -> Option<String> {
    known.contains(p).then(|| destination_href(p)).flatten()
}

fn blocker_rows(v: &VerdictView, known: &BTreeSet<&PeerView>) -> Vec<BlockerRow> {
    v.blockers
        .iter()
        .map(|b| BlockerRow {
            destination: v.destination.display(),
            destination_href: destination_href(&v.destination),
            source: b.source.display(),
            source_href: source_href(&b.source, known),
            port: b.port,
            security: b.security,
            kind: b.kind.clone(),
            kind_label: kind_label(b.kind.as_deref()),
            remedy: b.remedy.clone().unwrap_or_default(),
            connections: b.connections,
            last_seen: b.last_seen.clone(),
            broken: b.broken,
        })
        .collect()
}

/// No inbound connection at all (as the engine's namespace roll-up counts `idle`).
fn is_idle(v: &VerdictView) -> bool {
    v.verdict == Readiness::Insufficient && v.connections.total() == 0 && v.exempted == 0
}

fn workload_row(v: &VerdictView) -> WorkloadRow {
    WorkloadRow {
        name: v
            .destination
            .workload
            .clone()
            .unwrap_or_else(|| v.destination.display()),
        href: destination_href(&v.destination),
        verdict: v.verdict,
        reason: v.reason.clone(),
        share: Share::of(&v.connections),
        blockers: v.blockers.len(),
        exempted: v.exempted,
        attempts: v.attempts,
        mode: v.mode.as_ref().map(|m| m.describe()),
    }
}

/// The overview.
pub fn overview(s: &Snapshot) -> Overview {
    let known = verdicts_by_name(s);
    let mut totals = Totals::default();
    for v in &s.verdicts {
        totals.destinations += 1;
        match v.verdict {
            Readiness::Ready => totals.ready += 1,
            Readiness::Blocked => totals.blocked += 1,
            Readiness::BrokenClients => totals.broken_clients += 1,
            Readiness::Insufficient if is_idle(v) => totals.idle += 1,
            Readiness::Insufficient => totals.insufficient += 1,
            Readiness::NotInMesh => totals.not_in_mesh += 1,
        }
    }
    let mut blockers: Vec<BlockerRow> = s
        .verdicts
        .iter()
        .flat_map(|v| blocker_rows(v, &known))
        .collect();
    // biggest first; ties by name so the order is stable
    blockers.sort_by(|a, b| {
        b.connections
            .cmp(&a.connections)
            .then_with(|| a.destination.cmp(&b.destination))
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.port.cmp(&b.port))
    });
    let blockers_total = blockers.len();
    blockers.truncate(TOP_BLOCKERS);
    Overview {
        source: s.source.clone(),
        loaded_at: s.loaded_at.clone(),
        mesh: s.mesh.clone(),
        mesh_policy: s.mesh.suggested_policy.as_deref().map(|y| {
            PolicyPair::new(
                "the whole mesh".to_owned(),
                y,
                s.mesh.suggested_rollback.as_ref(),
            )
        }),
        totals,
        namespaces: s
            .namespaces
            .iter()
            .map(|n| NamespaceRow {
                namespace: n.clone(),
                href: namespace_href(&n.namespace),
            })
            .collect(),
        addresses: s
            .verdicts
            .iter()
            .filter(|v| v.destination.workload_name().is_none())
            .map(workload_row)
            .collect(),
        top_blockers: blockers,
        blockers_total,
        evidence: s.evidence.clone(),
    }
}

/// A namespace's page, if the snapshot has it.
pub fn namespace(s: &Snapshot, ns: &str) -> Option<NamespacePage> {
    let view = s.namespaces.iter().find(|n| n.namespace == ns)?;
    let workloads = s
        .verdicts
        .iter()
        .filter(|v| {
            v.destination.namespace.as_deref() == Some(ns) && v.destination.workload.is_some()
        })
        .map(workload_row)
        .collect();
    Some(NamespacePage {
        namespace: view.clone(),
        workloads,
        policy: view.suggested_policy.as_deref().map(|y| {
            PolicyPair::new(
                format!("namespace {ns}"),
                y,
                view.suggested_rollback.as_ref(),
            )
        }),
    })
}

/// Which destination a page is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which<'a> {
    Workload { namespace: &'a str, name: &'a str },
    Address(std::net::IpAddr),
}

impl Which<'_> {
    fn matches(&self, p: &PeerView) -> bool {
        match self {
            Which::Workload { namespace, name } => p.workload_name() == Some((namespace, name)),
            Which::Address(ip) => p.workload_name().is_none() && !p.is_node() && p.ip == Some(*ip),
        }
    }
}

/// Why an edge to a destination is not judged, if it is not (by the dashboard's exemptions).
pub fn exemption(e: &EdgeView, policy: &Policy) -> Option<String> {
    if policy.exempt_ports.contains(&e.port) {
        let why = match e.port {
            15020 => "Istio's merged metrics and rewritten kubelet probes (port 15020)".to_owned(),
            15021 => "the sidecar's health check (port 15021)".to_owned(),
            15090 => "Envoy's metrics (port 15090)".to_owned(),
            15010 | 15012 | 15014 | 15017 => format!(
                "istiod's control plane (port {}: no sidecar, no PeerAuthentication applies)",
                e.port
            ),
            p => format!("port {p} is exempt (--exempt-port)"),
        };
        return Some(why);
    }
    let ip = e.source.ip?;
    policy.exempt_sources.contains(&ip).then(|| {
        if ip == meshwatch::verdict::AMBIENT_PROBE_SOURCE {
            format!("ambient's kubelet probe source ({ip}, let through by ztunnel)")
        } else {
            format!("source {ip} is exempt (--exempt-source)")
        }
    })
}

/// A destination's page, if the snapshot has it.
pub fn workload(s: &Snapshot, which: &Which<'_>, policy: &Policy) -> Option<WorkloadPage> {
    let v = s.verdicts.iter().find(|v| which.matches(&v.destination))?;
    let known = verdicts_by_name(s);
    let inbound: Vec<InboundRow> = s
        .edges
        .iter()
        .filter(|e| e.destination == v.destination)
        .map(|e| InboundRow {
            source: e.source.display(),
            source_href: source_href(&e.source, &known),
            port: e.port,
            security: e.security,
            mesh: e.mesh,
            origin: e.origin,
            connections: e.connections,
            attempts: e.attempts,
            last_seen: e.last_seen.clone(),
            exempt: exemption(e, policy),
        })
        .collect();
    let exempted: Vec<ExemptRow> = inbound
        .iter()
        .filter(|r| r.connections > 0)
        .filter_map(|r| {
            r.exempt.as_ref().map(|why| ExemptRow {
                source: r.source.clone(),
                port: r.port,
                security: r.security,
                connections: r.connections,
                why: why.clone(),
            })
        })
        .collect();
    let exempted_explained = exempted.iter().map(|r| r.connections).sum();
    let scope = match &v.destination.workload_name() {
        Some((ns, w)) => format!("workload {ns}/{w}"),
        None => v.destination.display(),
    };
    let policy_pair = v
        .suggested_policy
        .as_deref()
        .map(|y| PolicyPair::new(scope, y, v.suggested_rollback.as_ref()));
    let no_policy = policy_pair.is_none().then(|| no_policy_reason(v));
    Some(WorkloadPage {
        title: v.destination.display(),
        namespace_href: v.destination.namespace.as_deref().map(namespace_href),
        destination: v.destination.clone(),
        share: Share::of(&v.connections),
        ports: v.ports.clone(),
        blockers: blocker_rows(v, &known),
        evidence: evidence_lines(&s.evidence, v),
        verdict: v.clone(),
        inbound,
        exempted,
        exempted_explained,
        policy: policy_pair,
        no_policy,
    })
}

fn no_policy_reason(v: &VerdictView) -> String {
    match v.verdict {
        _ if v.destination.workload_name().is_none() => {
            "an address without identity has no labels to select in a policy".to_owned()
        }
        Readiness::Blocked => {
            "blocked, and no port is ready on its own: fix the blockers first".to_owned()
        }
        Readiness::Insufficient => {
            "not enough evidence yet, on any port: wait for more traffic".to_owned()
        }
        Readiness::NotInMesh => {
            "not in the mesh: STRICT has no effect until it gets a sidecar or joins ambient"
                .to_owned()
        }
        Readiness::Ready => "none suggested".to_owned(),
        Readiness::BrokenClients => {
            "already STRICT: the clients refused now need fixing, there is no policy to apply"
                .to_owned()
        }
    }
}

fn line(what: &str, value: String) -> EvidenceLine {
    EvidenceLine {
        what: what.to_owned(),
        value,
    }
}

/// What a verdict rests on: the window, drops, decode errors, the counts against the rules.
pub fn evidence_lines(ev: &Evidence, v: &VerdictView) -> Vec<EvidenceLine> {
    let mut out = Vec::new();
    out.push(line(
        "Verdict",
        format!("{}: {}", v.verdict.label(), v.reason),
    ));
    match (ev.window_seconds, &ev.first_packet, &ev.last_packet) {
        (Some(w), _, _) => out.push(line(
            "Window",
            format!(
                "the last {}",
                humantime::format_duration(Duration::from_secs(w))
            ),
        )),
        (None, Some(a), Some(b)) => out.push(line("Window", format!("the capture, {a} to {b}"))),
        _ => out.push(line("Window", "not known".to_owned())),
    }
    let drops = if !ev.drops_known {
        "not recorded in capture files".to_owned()
    } else if ev.evidence_incomplete {
        format!("evidence incomplete: {}", ev.incomplete_because.join("; "))
    } else {
        "none within the window".to_owned()
    };
    out.push(line("Packet drops", drops));
    let decode = match ev.decode_errors {
        Some(0) => "none".to_owned(),
        Some(n) => {
            let by: Vec<String> = ev
                .decode_errors_by_reason
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            format!("{n} ({})", by.join(", "))
        }
        None => "not reported by this source (the agents count them in /metrics)".to_owned(),
    };
    out.push(line("Decode errors", decode));
    let c = &v.connections;
    out.push(line(
        "Judged connections",
        format!(
            "{} Istio mTLS, {} other TLS, {} plaintext, {} unknown",
            c.istio_mtls, c.tls, c.plaintext, c.unknown
        ),
    ));
    let rules = match (ev.min_connections, ev.max_unknown_ratio) {
        (Some(n), Some(r)) => format!(
            "at least {n} Istio mTLS connections, at most {} % unknown",
            (r * 100.0).round()
        ),
        _ => "as meshwatch analyze was run (by default at least 5 Istio mTLS connections, at most 10 % unknown)".to_owned(),
    };
    out.push(line("Ready needs", rules));
    out.push(line(
        "Not evidence",
        format!(
            "{} attempts without payload, {} exempted connections",
            v.attempts, v.exempted
        ),
    ));
    let counters = [
        ("Flows evicted", ev.flows_evicted),
        ("Prefaces given up", ev.reassembly_gave_up),
        ("Connections folded past the edge bounds", ev.edges_folded),
    ];
    for (what, n) in counters {
        if let Some(n) = n.filter(|n| *n > 0) {
            out.push(line(what, n.to_string()));
        }
    }
    if !ev.truncated_files.is_empty() {
        out.push(line("Captures cut short", ev.truncated_files.join(", ")));
    }
    if !ev.agents_down.is_empty() {
        out.push(line("Agents down", ev.agents_down.join(", ")));
    }
    if ev.edges_seen_by_several_agents > 0 {
        out.push(line(
            "Reported by several agents",
            format!(
                "{} edges (destination pods on several nodes): their connections added up",
                ev.edges_seen_by_several_agents
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_never_overstated() {
        let c = Counts {
            istio_mtls: 999,
            plaintext: 1,
            ..Counts::default()
        };
        let s = Share::of(&c);
        assert_eq!((s.percent, s.all_mtls), (Some(99), false));
        assert_eq!(percent_up(1, 1000), Some(1));
        assert_eq!(percent_up(0, 1000), Some(0));
        assert_eq!(Share::of(&Counts::default()).percent, None);
        let all = Share::of(&Counts {
            istio_mtls: 5,
            ..Counts::default()
        });
        assert!(all.all_mtls);
    }

    #[test]
    fn hrefs_encode_names() {
        let p = PeerView {
            namespace: Some("a&b".into()),
            workload: Some("<x y>".into()),
            ..PeerView::default()
        };
        assert_eq!(
            destination_href(&p).as_deref(),
            Some("/workload?ns=a%26b&name=%3Cx%20y%3E")
        );
        let node = PeerView {
            node: Some("n".into()),
            ip: Some([10, 0, 0, 1].into()),
            ..PeerView::default()
        };
        assert_eq!(destination_href(&node), None);
    }
}
