//! State shared between the capture thread and the HTTP server. The capture thread writes it per
//! flow event (a connection classified, a flow finished) and once a second (packet counters,
//! capture statistics); the server reads it. No per-packet lock: packets only touch the
//! pipeline, which the capture thread owns.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::aggregate::{EdgeKey, EdgeStats, Peer};
use crate::flow::{Connection, FlowRecord};
use crate::identity::kubernetes::SyncState;
use crate::identity::{Identity, IdentitySource, SharedIdentities};
use crate::metrics::{
    AttemptLabels, BytesLabels, ConnectionLabels, Direction, Metrics, ReasonLabels, Reporter,
};
use crate::pipeline::PacketStats;
use crate::verdict::{self, Policy, Verdicts};
use crate::window::WindowedEdges;
use crate::Nanos;

/// Finished flows kept for `/api/v1/flows`.
pub const RECENT_FLOWS: usize = 10_000;

/// The wall clock as [`Nanos`] (the only clock read of the agent, outside the pure modules).
pub fn now() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Nanos)
}

/// Capture statistics as libpcap reports them (cumulative).
#[derive(Debug, Default, Serialize)]
pub struct CaptureStatus {
    pub running: AtomicBool,
    pub received: AtomicU64,
    pub dropped_kernel: AtomicU64,
    pub dropped_interface: AtomicU64,
    /// When drops last increased (ns since epoch; 0: never).
    pub last_drop_at: AtomicU64,
    pub packets: AtomicU64,
    pub flows_active: AtomicU64,
}

/// Where identities come from, and whether they are synced.
#[derive(Debug)]
pub enum IdentityFeed {
    None,
    File(std::path::PathBuf),
    Kubernetes(Arc<SyncState>),
}

/// Everything the agent shares.
#[derive(Debug)]
pub struct LiveState {
    pub registry: Registry,
    pub metrics: Metrics,
    pub identities: SharedIdentities,
    pub feed: IdentityFeed,
    pub policy: Policy,
    pub capture: CaptureStatus,
    pub interface: String,
    pub started: Instant,
    edges: Mutex<WindowedEdges>,
    flows: Mutex<VecDeque<FlowRecord>>,
    /// Packet counters already published to the metrics (to add deltas).
    published: Mutex<PacketStats>,
}

impl LiveState {
    pub fn new(
        identities: SharedIdentities,
        feed: IdentityFeed,
        policy: Policy,
        window: Nanos,
        interface: String,
    ) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        LiveState {
            registry,
            metrics,
            identities,
            feed,
            policy,
            capture: CaptureStatus::default(),
            interface,
            started: Instant::now(),
            edges: Mutex::new(WindowedEdges::new(window)),
            flows: Mutex::new(VecDeque::new()),
            published: Mutex::new(PacketStats::default()),
        }
    }

    pub fn window(&self) -> Nanos {
        self.edges.lock().map_or(0, |e| e.window())
    }

    /// A connection was classified (or finished unclassified): count it once — as an attempt
    /// when it carried no payload; local traffic only in its own counter.
    pub fn on_connection(&self, c: &Connection) {
        if c.local {
            self.metrics.local_connections.inc();
            return;
        }
        let Ok(ids) = self.identities.read() else {
            return;
        };
        let key = edge_key(&*ids, c.src, c.dst, c.dport, c.security, c.mesh);
        if let Some(labels) = self.labels(&*ids, c.src, c.dst, c.dport, c.security, c.mesh) {
            if c.attempt {
                self.metrics
                    .attempts
                    .get_or_create(&AttemptLabels::from(&labels))
                    .inc();
            } else {
                self.metrics.connections.get_or_create(&labels).inc();
            }
        }
        drop(ids);
        let delta = EdgeStats {
            connections: u64::from(!c.attempt),
            attempts: u64::from(c.attempt),
            ..EdgeStats::default()
        };
        if let Ok(mut edges) = self.edges.lock() {
            edges.add(key, c.ts, delta);
        }
    }

    /// A flow finished: its bytes and packets, and the recent-flows list.
    pub fn on_finished(&self, r: FlowRecord) {
        if r.local {
            self.remember(r);
            return;
        }
        let Ok(ids) = self.identities.read() else {
            return;
        };
        let key = edge_key(&*ids, r.src, r.dst, r.dport, r.security, r.mesh);
        if let Some(connection) = self.labels(&*ids, r.src, r.dst, r.dport, r.security, r.mesh) {
            for (direction, n) in [
                (Direction::to_server, r.bytes_to_server),
                (Direction::to_client, r.bytes_to_client),
            ] {
                let labels = BytesLabels {
                    connection: connection.clone(),
                    direction,
                };
                self.metrics.bytes.get_or_create(&labels).inc_by(n);
            }
        }
        drop(ids);
        let delta = EdgeStats {
            packets: r.packets,
            bytes: r.bytes,
            ..EdgeStats::default()
        };
        if let Ok(mut edges) = self.edges.lock() {
            edges.add(key, r.last_seen, delta);
        }
        self.remember(r);
    }

    /// Keep a finished flow for `/api/v1/flows`.
    fn remember(&self, r: FlowRecord) {
        if let Ok(mut flows) = self.flows.lock() {
            if flows.len() >= RECENT_FLOWS {
                flows.pop_front();
            }
            flows.push_back(r);
        }
    }

    /// Metric labels, or `None` when neither end is a pod of this node (another agent reports it).
    fn labels(
        &self,
        ids: &dyn IdentitySource,
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        security: crate::classify::Security,
        mesh: crate::classify::Mesh,
    ) -> Option<ConnectionLabels> {
        let reporter = if ids.is_local(dst) {
            Reporter::destination
        } else if ids.is_local(src) {
            Reporter::source
        } else {
            return None;
        };
        let (source_namespace, source_workload) = names(ids.lookup(src));
        let (destination_namespace, destination_workload) = names(ids.lookup(dst));
        let destination_port =
            self.metrics
                .port_label(&destination_namespace, &destination_workload, dport);
        Some(ConnectionLabels {
            reporter,
            source_workload,
            source_namespace,
            destination_workload,
            destination_namespace,
            destination_port,
            security,
            mesh,
        })
    }

    /// Publish the capture thread's packet counters (deltas since the last call).
    pub fn publish_packets(
        &self,
        stats: &PacketStats,
        flows_active: usize,
        evicted: (u64, u64),
        gave_up: u64,
    ) {
        let Ok(mut last) = self.published.lock() else {
            return;
        };
        self.metrics
            .packets
            .inc_by(stats.packets.saturating_sub(last.packets));
        self.metrics
            .captured_bytes
            .inc_by(stats.bytes.saturating_sub(last.bytes));
        for (reason, n) in &stats.decode_errors_by_reason {
            let before = last
                .decode_errors_by_reason
                .get(reason)
                .copied()
                .unwrap_or(0);
            self.metrics
                .decode_errors
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_owned(),
                })
                .inc_by(n.saturating_sub(before));
        }
        *last = stats.clone();
        drop(last);
        let (idle, pressure) = evicted;
        for (reason, total) in [("idle", idle), ("pressure", pressure)] {
            let c = self.metrics.flows_evicted.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
            c.inc_by(total.saturating_sub(c.get()));
        }
        self.metrics
            .reassembly_give_ups
            .inc_by(gave_up.saturating_sub(self.metrics.reassembly_give_ups.get()));
        self.metrics.flows_active.set(flows_active as i64);
        self.capture.packets.store(stats.packets, Ordering::Relaxed);
        self.capture
            .flows_active
            .store(flows_active as u64, Ordering::Relaxed);
        if let Ok(ids) = self.identities.read() {
            self.metrics.identity_entries.set(ids.len() as i64);
        }
        if let Ok(mut edges) = self.edges.lock() {
            edges.prune(now());
        }
    }

    /// Whether identities are loaded (for `/readyz`).
    pub fn identities_synced(&self) -> bool {
        match &self.feed {
            IdentityFeed::Kubernetes(sync) => sync.synced(),
            IdentityFeed::None | IdentityFeed::File(_) => true,
        }
    }

    /// The capture lost packets within the window: verdicts cannot be `ready`.
    pub fn evidence_incomplete(&self, now: Nanos) -> bool {
        let at = self.capture.last_drop_at.load(Ordering::Relaxed);
        at != 0 && now.saturating_sub(at) < self.window()
    }

    pub fn edges(&self, now: Nanos) -> Vec<crate::aggregate::Edge> {
        self.edges
            .lock()
            .map(|e| e.snapshot(now))
            .unwrap_or_default()
    }

    pub fn verdicts(&self, now: Nanos) -> Verdicts {
        let edges = self.edges(now);
        let policy = Policy {
            evidence_incomplete: self.evidence_incomplete(now),
            ..self.policy.clone()
        };
        let ids = self.identities.read();
        let known = ids
            .as_ref()
            .map(|m| m.known_workloads())
            .unwrap_or_default();
        verdict::evaluate(&edges, &policy, &known)
    }

    /// The most recent finished flows, newest first.
    pub fn recent_flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.flows
            .lock()
            .map(|f| f.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

fn edge_key(
    ids: &dyn IdentitySource,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    security: crate::classify::Security,
    mesh: crate::classify::Mesh,
) -> EdgeKey {
    EdgeKey {
        destination: Peer::resolve(dst, ids),
        port,
        source: Peer::resolve(src, ids),
        security,
        mesh,
    }
}

/// (namespace, workload) label values: unknown addresses are `unknown`; nodes are
/// (`node`, node name).
fn names(id: Identity<'_>) -> (String, String) {
    match id {
        Identity::Workload(w) => (w.namespace.clone(), w.workload.clone()),
        Identity::Node(n) => ("node".to_owned(), n.to_owned()),
        Identity::Unknown => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Mesh, Security};
    use crate::identity::file::WorkloadsFile;

    #[test]
    fn a_hundred_thousand_source_ips_make_a_bounded_number_of_series() {
        let map = WorkloadsFile::parse(
            "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.11]}\n",
            None,
        )
        .expect("workloads");
        let state = LiveState::new(
            Arc::new(std::sync::RwLock::new(map)),
            IdentityFeed::None,
            Policy::default(),
            3_600 * 1_000_000_000,
            "test".into(),
        );
        let dst: IpAddr = "10.244.1.11".parse().expect("ip");
        for i in 0..100_000u32 {
            let src = IpAddr::from([172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let security = if i % 2 == 0 {
                Security::Plaintext
            } else {
                Security::IstioMtls
            };
            let mesh = if i % 2 == 0 {
                Mesh::None
            } else {
                Mesh::Sidecar
            };
            state.on_connection(&Connection {
                src,
                dst,
                dport: 8000,
                security,
                mesh,
                ts: 1_000 + u64::from(i),
                local: false,
                attempt: false,
            });
        }
        let text = crate::metrics::encode(&state.registry);
        let series = text
            .lines()
            .filter(|l| l.starts_with("meshwatch_connections_total{"))
            .count();
        assert_eq!(
            series, 2,
            "one series per security class, sources are `unknown`:\n{text}"
        );
        assert!(text.contains("source_workload=\"unknown\""));
        let edges = state.edges(2_000_000);
        assert!(
            edges.len() <= crate::aggregate::MAX_EDGES + 2,
            "{} edges",
            edges.len()
        );
        let v = state.verdicts(2_000_000);
        let httpbin = v
            .workloads
            .iter()
            .find(|w| w.destination.workload.as_deref() == Some("httpbin"))
            .expect("verdict");
        assert_eq!(httpbin.verdict, crate::verdict::Readiness::Blocked);
        assert_eq!(httpbin.connections.plaintext, 50_000);
    }
}
