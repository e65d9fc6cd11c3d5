//! Prometheus metrics (prometheus-client). Registered once; connection and byte counters are
//! updated per flow event (classification, end), packet counters in batches from the capture
//! thread's own counts — never per packet through a label lookup.
//!
//! Label values are enums with fixed lowercase names or identities; never IPs, client ports or
//! SNI. A destination port is a label value only for the first
//! [`MAX_PORT_LABELS_PER_WORKLOAD`] ports of each destination workload; later ones are `other`,
//! so a port scan cannot grow the series.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::aggregate::Origin;
use crate::classify::{Mesh, Security};
use crate::peer_auth::{EffectiveMode, ModeSource};

/// Distinct port labels per destination workload before its ports become `other`.
pub const MAX_PORT_LABELS_PER_WORKLOAD: usize = 64;

impl EncodeLabelValue for Security {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Mesh {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The `origin` label value: the JSON contract's name (`direct`, `kubelet_probe`, `nodeport`).
pub fn origin_label(origin: Origin) -> &'static str {
    match origin {
        Origin::Direct => "direct",
        Origin::KubeletProbe => "kubelet_probe",
        Origin::Nodeport => "nodeport",
    }
}

impl EncodeLabelValue for Origin {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(origin_label(*self))
    }
}

/// Which side of a connection this agent reports for (Istio's convention): `destination` when
/// the destination is a pod on this node, `source` when only the source is. Summed over agents,
/// each connection is counted once.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reporter {
    destination,
    source,
}

/// Direction of bytes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// Sent by the client.
    to_server,
    /// Sent by the server.
    to_client,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_port: String,
    pub security: Security,
    pub mesh: Mesh,
    /// How the client came: `direct`, `kubelet_probe` or `nodeport` (always present, so the
    /// series of one edge keep one label set).
    pub origin: Origin,
}

/// A connection attempt carries no payload, so no security class (and no origin).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_port: String,
}

impl From<&ConnectionLabels> for AttemptLabels {
    fn from(c: &ConnectionLabels) -> Self {
        AttemptLabels {
            reporter: c.reporter,
            source_workload: c.source_workload.clone(),
            source_namespace: c.source_namespace.clone(),
            destination_workload: c.destination_workload.clone(),
            destination_namespace: c.destination_namespace.clone(),
            destination_port: c.destination_port.clone(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    #[prometheus(flatten)]
    pub connection: ConnectionLabels,
    pub direction: Direction,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Where packets were dropped before we saw them.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropPoint {
    /// The kernel's capture buffer was full (`ps_drop`).
    kernel,
    /// The interface or driver dropped them (`ps_ifdrop`).
    interface,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub point: DropPoint,
}

/// Label set of `meshwatch_workload_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub workload: String,
    /// `sidecar`, `ambient`, `none`, or `unknown` when the identity source does not say.
    pub mesh: &'static str,
}

/// What the capture thread counts: packets, drops, decode errors, the flow table.
#[derive(Debug, Default)]
pub struct CaptureMetrics {
    pub packets: Counter,
    pub captured_bytes: Counter,
    pub decode_errors: Family<ReasonLabels, Counter>,
    pub drops: Family<DropLabels, Counter>,
    pub flows_active: Gauge,
    pub flows_evicted: Family<ReasonLabels, Counter>,
    pub reassembly_give_ups: Counter,
}

/// Connections, attempts and bytes, per edge.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub local_connections: Counter,
    pub bytes: Family<BytesLabels, Counter>,
}

/// The identity source: size, sync, and the workloads of this node.
#[derive(Debug, Default)]
pub struct IdentityMetrics {
    pub entries: Gauge,
    pub synced: Gauge,
    pub workloads: Family<WorkloadLabels, Gauge>,
}

/// Label set of `meshwatch_peer_authentication_info`: a workload's PeerAuthentication mode
/// today (`port` empty), and each port-level override (`port` the container port).
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PeerAuthLabels {
    pub namespace: String,
    pub workload: String,
    pub port: String,
    /// `STRICT`, `PERMISSIVE`, `DISABLE`, or `UNKNOWN` (it cannot be told).
    pub mode: &'static str,
    /// `default`, `mesh`, `namespace`, `workload`, `port`.
    pub source: &'static str,
    /// `namespace/name` of the deciding PeerAuthentication; empty for the default.
    pub policy: String,
}

/// Series of `meshwatch_peer_authentication_info` one agent exports at most (a workload and
/// each port-level override is one); the rest are counted in
/// `meshwatch_peer_authentication_series_left_out`.
pub const MAX_PEER_AUTH_SERIES: usize = 2048;

/// The series for the effective modes of this node's workloads, the first `cap` in order,
/// and how many were left out.
pub fn peer_auth_series(
    modes: &BTreeMap<(String, String), EffectiveMode>,
    cap: usize,
) -> (Vec<PeerAuthLabels>, usize) {
    let all = modes.iter().flat_map(|((ns, wl), m)| {
        let workload = PeerAuthLabels {
            namespace: ns.clone(),
            workload: wl.clone(),
            port: String::new(),
            mode: m.mode.as_str(),
            source: m.source.as_str(),
            policy: m.policy.clone().unwrap_or_default(),
        };
        let ports = m.ports.iter().map(move |(port, p)| PeerAuthLabels {
            namespace: ns.clone(),
            workload: wl.clone(),
            port: port.to_string(),
            mode: p.mode.as_str(),
            source: ModeSource::Port.as_str(),
            policy: p.policy.clone(),
        });
        std::iter::once(workload).chain(ports)
    });
    let mut kept = Vec::new();
    let mut left_out = 0;
    for labels in all {
        if kept.len() < cap {
            kept.push(labels);
        } else {
            left_out += 1;
        }
    }
    (kept, left_out)
}

/// The PeerAuthentication modes of this node's workloads (when the policies are watched).
#[derive(Debug, Default)]
pub struct PeerAuthMetrics {
    pub modes: Family<PeerAuthLabels, Gauge>,
    /// Series left out by [`MAX_PEER_AUTH_SERIES`] at the last publish.
    pub left_out: Gauge,
    /// The series [`PeerAuthMetrics::publish`] last left in `modes`.
    published: std::sync::Mutex<std::collections::HashSet<PeerAuthLabels>>,
}

impl PeerAuthMetrics {
    /// Make the series these modes (`None`: the policies are not known, no series): new ones
    /// are added, then the gone ones removed; a series that stays is never touched, so a
    /// scrape meanwhile never misses it (a missing series would get a staleness marker and
    /// seem to appear anew). A scrape between the two steps may see a changed workload's old
    /// and new mode at once, never neither.
    pub fn publish(&self, modes: Option<&BTreeMap<(String, String), EffectiveMode>>) {
        let (series, left_out) = modes.map_or((Vec::new(), 0), |m| {
            peer_auth_series(m, MAX_PEER_AUTH_SERIES)
        });
        let new: std::collections::HashSet<PeerAuthLabels> = series.into_iter().collect();
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for labels in new.difference(&published) {
            self.modes.get_or_create(labels).set(1);
        }
        for gone in published.difference(&new) {
            self.modes.remove(gone);
        }
        *published = new;
        self.left_out
            .set(i64::try_from(left_out).unwrap_or(i64::MAX));
    }
}

/// The agent process: `process_*` like other exporters, read once a second.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    pub cpu_seconds: Counter<f64, AtomicU64>,
    pub resident_memory_bytes: Gauge,
}

/// Every metric of the agent, one recorder per subsystem.
#[derive(Debug, Default)]
pub struct Metrics {
    pub capture: CaptureMetrics,
    pub connections: ConnectionMetrics,
    pub identity: IdentityMetrics,
    pub process: ProcessMetrics,
    pub peer_auth: PeerAuthMetrics,
}

impl Metrics {
    /// Create the metrics and register them (`meshwatch_*`, and `process_*`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let p = registry.sub_registry_with_prefix("process");
        p.register(
            "cpu_seconds",
            "User and system CPU time of the agent",
            m.process.cpu_seconds.clone(),
        );
        p.register(
            "resident_memory_bytes",
            "Resident memory of the agent",
            m.process.resident_memory_bytes.clone(),
        );
        let r = registry.sub_registry_with_prefix("meshwatch");
        let c = &m.connections;
        r.register(
            "connections",
            "TCP connections that carried payload, by source and destination workload, destination port and security (istio_mtls, tls, plaintext, unknown)",
            c.connections.clone(),
        );
        r.register(
            "connection_attempts",
            "TCP connection attempts that carried no payload (refused, unanswered, TCP probes), by source and destination workload and destination port",
            c.attempts.clone(),
        );
        r.register(
            "local_connections",
            "TCP connections on loopback (a sidecar's own legs, node-local traffic): never evidence",
            c.local_connections.clone(),
        );
        r.register(
            "bytes",
            "TCP payload bytes of finished connections, by direction",
            c.bytes.clone(),
        );
        let k = &m.capture;
        r.register("packets", "Packets captured", k.packets.clone());
        r.register(
            "capture_bytes",
            "Bytes of captured packets on the wire",
            k.captured_bytes.clone(),
        );
        r.register(
            "decode_errors",
            "Packets that could not be decoded, by reason",
            k.decode_errors.clone(),
        );
        r.register(
            "capture_dropped_packets",
            "Packets dropped before capture (kernel buffer full, or by the interface)",
            k.drops.clone(),
        );
        r.register(
            "flows_active",
            "Connections tracked now",
            k.flows_active.clone(),
        );
        r.register(
            "flows_evicted",
            "Connections finished early, by reason (idle, pressure)",
            k.flows_evicted.clone(),
        );
        r.register(
            "preface_reassembly_give_ups",
            "Client preface segments dropped because they opened too many holes",
            k.reassembly_give_ups.clone(),
        );
        let i = &m.identity;
        r.register(
            "identity_cache_entries",
            "Addresses with a known identity",
            i.entries.clone(),
        );
        r.register(
            "identity_synced",
            "1 when the identity source is loaded (the Kubernetes watches have listed), else 0",
            i.synced.clone(),
        );
        r.register(
            "workload_info",
            "Workloads with a pod on this node, and their data plane (sidecar, ambient, none, unknown)",
            i.workloads.clone(),
        );
        r.register(
            "peer_authentication_info",
            "The PeerAuthentication mTLS mode (STRICT, PERMISSIVE, DISABLE, or UNKNOWN: it cannot be told) of workloads with a pod on this node (port empty: the workload's; else a port-level override), where it comes from (default, mesh, namespace, workload, port) and the deciding policy",
            m.peer_auth.modes.clone(),
        );
        r.register(
            "peer_authentication_series_left_out",
            "meshwatch_peer_authentication_info series left out at the last update (over the cap)",
            m.peer_auth.left_out.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        m
    }
}

/// The port label values of destination workloads: each workload gets its own budget of
/// [`MAX_PORT_LABELS_PER_WORKLOAD`] ports (later ones are `other`), so one scanned workload
/// cannot take the labels of the others. Owned by the capture thread: no lock; a lookup
/// allocates nothing (only a workload's first port does).
#[derive(Debug, Default)]
pub struct PortLabels {
    seen: HashMap<String, HashMap<String, HashSet<u16>>>,
}

impl PortLabels {
    /// The label value for `port` of a destination.
    pub fn label(&mut self, namespace: &str, workload: &str, port: u16) -> String {
        let ports = match self
            .seen
            .get_mut(namespace)
            .and_then(|w| w.get_mut(workload))
        {
            Some(ports) => ports,
            None => self
                .seen
                .entry(namespace.to_owned())
                .or_default()
                .entry(workload.to_owned())
                .or_default(),
        };
        if ports.contains(&port) || ports.len() < MAX_PORT_LABELS_PER_WORKLOAD && ports.insert(port)
        {
            port.to_string()
        } else {
            "other".to_owned()
        }
    }
}

/// Encode the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(port: &str, security: Security) -> ConnectionLabels {
        ConnectionLabels {
            reporter: Reporter::destination,
            source_workload: "sleep".into(),
            source_namespace: "legacy".into(),
            destination_workload: "httpbin".into(),
            destination_namespace: "foo".into(),
            destination_port: port.into(),
            security,
            mesh: Mesh::None,
            origin: Origin::Direct,
        }
    }

    #[test]
    fn encodes_exact_lines() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.connections
            .connections
            .get_or_create(&labels("8000", Security::Plaintext))
            .inc_by(3);
        m.connections
            .bytes
            .get_or_create(&BytesLabels {
                connection: labels("8000", Security::Plaintext),
                direction: Direction::to_server,
            })
            .inc_by(120);
        m.capture
            .drops
            .get_or_create(&DropLabels {
                point: DropPoint::kernel,
            })
            .inc_by(2);
        m.capture.flows_active.set(4);
        let text = encode(&registry);
        let conn = "meshwatch_connections_total{reporter=\"destination\",source_workload=\"sleep\",source_namespace=\"legacy\",destination_workload=\"httpbin\",destination_namespace=\"foo\",destination_port=\"8000\",security=\"plaintext\",mesh=\"none\",origin=\"direct\"} 3";
        assert!(text.lines().any(|l| l == conn), "{text}");
        assert!(text.lines().any(|l| l.starts_with("meshwatch_bytes_total{")
            && l.contains("direction=\"to_server\"")
            && l.ends_with(" 120")));
        assert!(text
            .lines()
            .any(|l| l == "meshwatch_capture_dropped_packets_total{point=\"kernel\"} 2"));
        assert!(text.lines().any(|l| l == "meshwatch_flows_active 4"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("meshwatch_build_info{version=")));
        assert!(text.contains("# TYPE meshwatch_connections counter"));
    }

    /// Each destination workload has its own budget: a scanned workload's ports become
    /// `other`, another workload's ports keep their labels.
    #[test]
    fn port_labels_are_bounded_per_workload() {
        let mut p = PortLabels::default();
        for port in 0..MAX_PORT_LABELS_PER_WORKLOAD as u16 {
            assert_eq!(p.label("a", "scanned", port), port.to_string());
        }
        assert_eq!(p.label("a", "scanned", 60000), "other");
        assert_eq!(
            p.label("a", "scanned", 7),
            "7",
            "known ports keep their label"
        );
        assert_eq!(
            p.label("a", "web", 60000),
            "60000",
            "another workload's budget"
        );
        assert_eq!(
            p.label("b", "scanned", 60001),
            "60001",
            "same name, other namespace"
        );
    }

    fn strict_with_port() -> BTreeMap<(String, String), EffectiveMode> {
        let mut m = EffectiveMode {
            mode: crate::peer_auth::Mode::Strict,
            source: ModeSource::Namespace,
            policy: Some("foo/default".into()),
            ports: BTreeMap::new(),
            undecided: None,
            since: None,
        };
        m.ports.insert(
            9090,
            crate::peer_auth::PortMode {
                mode: crate::peer_auth::Mode::Disable,
                policy: "foo/httpbin".into(),
            },
        );
        let mut modes = BTreeMap::new();
        modes.insert(("foo".to_owned(), "httpbin".to_owned()), m);
        modes.insert(
            ("foo".to_owned(), "sleep".to_owned()),
            EffectiveMode::default(),
        );
        modes
    }

    #[test]
    fn peer_authentication_info_lines() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.peer_auth.publish(None);
        let text = encode(&registry);
        assert!(
            !text.contains("meshwatch_peer_authentication_info{"),
            "unknown: no series"
        );
        m.peer_auth.publish(Some(&strict_with_port()));
        let text = encode(&registry);
        for line in [
            r#"meshwatch_peer_authentication_info{namespace="foo",workload="httpbin",port="",mode="STRICT",source="namespace",policy="foo/default"} 1"#,
            r#"meshwatch_peer_authentication_info{namespace="foo",workload="httpbin",port="9090",mode="DISABLE",source="port",policy="foo/httpbin"} 1"#,
            r#"meshwatch_peer_authentication_info{namespace="foo",workload="sleep",port="",mode="PERMISSIVE",source="default",policy=""} 1"#,
            "meshwatch_peer_authentication_series_left_out 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // a workload gone from the node leaves the series
        m.peer_auth.publish(Some(&BTreeMap::new()));
        assert!(!encode(&registry).contains("workload=\"httpbin\""));
    }

    /// A publish leaves the series that stay as they are (the same gauge, never removed and
    /// made again), adds the new and removes the gone.
    #[test]
    fn peer_authentication_info_keeps_the_series_that_stay() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let mut modes = strict_with_port();
        m.peer_auth.publish(Some(&modes));
        let sleep = PeerAuthLabels {
            namespace: "foo".into(),
            workload: "sleep".into(),
            port: String::new(),
            mode: "PERMISSIVE",
            source: "default",
            policy: String::new(),
        };
        // a handle on the series: marked, so a series made again would show 1
        let kept = m.peer_auth.modes.get_or_create(&sleep).clone();
        kept.set(7);
        modes.remove(&("foo".to_owned(), "httpbin".to_owned()));
        modes.insert(
            ("foo".to_owned(), "api".to_owned()),
            EffectiveMode::default(),
        );
        m.peer_auth.publish(Some(&modes));
        let text = encode(&registry);
        let mut info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("meshwatch_peer_authentication_info{"))
            .collect();
        info.sort_unstable();
        assert_eq!(
            info,
            [
                r#"meshwatch_peer_authentication_info{namespace="foo",workload="api",port="",mode="PERMISSIVE",source="default",policy=""} 1"#,
                r#"meshwatch_peer_authentication_info{namespace="foo",workload="sleep",port="",mode="PERMISSIVE",source="default",policy=""} 7"#,
            ],
            "{text}"
        );
    }

    #[test]
    fn peer_authentication_series_are_capped_and_counted() {
        let (kept, left_out) = peer_auth_series(&strict_with_port(), 2);
        assert_eq!((kept.len(), left_out), (2, 1));
        let (kept, left_out) = peer_auth_series(&strict_with_port(), MAX_PEER_AUTH_SERIES);
        assert_eq!((kept.len(), left_out), (3, 0));
    }
}
