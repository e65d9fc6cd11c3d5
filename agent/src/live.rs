//! The agent's live state, as ztunnel lays it out: the capture thread is the only writer and
//! publishes through its [`Recorder`] (per flow event, and once a second for counters); the HTTP
//! server only reads, through snapshots.
//!
//! - metrics: one recorder per subsystem ([`crate::metrics::Metrics`]); the capture thread adds
//!   deltas of its own counts, never per packet through a label lookup;
//! - the edge store ([`WindowedEdges`], a sharded map): the capture thread writes one edge per
//!   flow event, a snapshot locks one shard at a time and sorts outside any lock;
//! - recent flows: a ring the capture thread fills with `try_lock` (it never waits for a reader:
//!   records wait in its own spill buffer instead);
//! - the status: atomics.
//!
//! Nothing a reader does can stall the capture thread.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::aggregate::{backend_of, BackendKind, Edge, EdgeKey, EdgeStats, Origin, Peer};
use crate::classify::Mesh;
use crate::flow::{Connection, FlowRecord, TableStats};
use crate::identity::kubernetes::SyncState;
use crate::identity::{Identity, IdentitySource, SharedIdentities, Workload};
use crate::metrics::{
    ConnectionLabels, DropLabels, DropPoint, Metrics, PortLabels, ReasonLabels, Reporter,
    WorkloadLabels,
};
use crate::peer_auth::{ChangeLog, PodLabels};
use crate::pipeline::PacketStats;
use crate::verdict::{self, KnownWorkload, Policy, Verdicts};
use crate::window::WindowedEdges;
use crate::Nanos;

mod described;
mod mode_clock;
mod series;
use described::{Described, Ends, Memo};
use mode_clock::{Covers, ModeClock};
use series::SeriesCache;

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

/// libpcap's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    pub received: u64,
    pub dropped_kernel: u64,
    pub dropped_interface: u64,
}

/// Where identities come from, and whether they are synced.
#[derive(Debug)]
pub enum IdentityFeed {
    /// None: every connection seen is counted, with `unknown` identities (a lab host).
    None,
    File(std::path::PathBuf),
    Kubernetes(Arc<SyncState>),
}

/// Everything the agent shares between the capture thread and the server.
#[derive(Debug)]
pub struct LiveState {
    registry: Registry,
    metrics: Metrics,
    edges: WindowedEdges,
    flows: Mutex<VecDeque<FlowRecord>>,
    status: CaptureStatus,
    identities: SharedIdentities,
    feed: IdentityFeed,
    policy: Policy,
    interface: String,
    started: Instant,
    /// Since when each workload's PeerAuthentication mode holds, as this agent saw it.
    mode_clock: Mutex<ModeClock>,
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
            edges: WindowedEdges::new(window),
            flows: Mutex::new(VecDeque::new()),
            status: CaptureStatus::default(),
            identities,
            feed,
            policy,
            interface,
            started: Instant::now(),
            mode_clock: Mutex::new(ModeClock::default()),
        }
    }

    /// Stamp every workload's modes with since when they hold, as this agent saw them: also
    /// by the latest policy change in `changes` that may have touched each (its pods' labels
    /// from `known`). `covers`: whether `modes` holds every workload judged.
    fn stamp_modes<'a>(
        &self,
        modes: &mut verdict::Modes,
        now: Nanos,
        changes: &ChangeLog,
        known: impl Iterator<Item = (&'a str, &'a str, &'a PodLabels)>,
        covers: Covers,
    ) {
        let root = self.policy.istio_root_namespace.as_str();
        let labels = labels_by_workload(known);
        let last_change = |ns: &str, wl: &str| last_touching(changes, root, &labels, ns, wl);
        if let Ok(mut clock) = self.mode_clock.lock() {
            clock.stamp(modes, now, last_change, covers);
        }
    }

    pub fn status(&self) -> &CaptureStatus {
        &self.status
    }

    pub fn feed(&self) -> &IdentityFeed {
        &self.feed
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn window(&self) -> Nanos {
        self.edges.window()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        crate::metrics::encode(&self.registry)
    }

    /// Addresses with a known identity.
    pub fn identity_entries(&self) -> usize {
        self.identities.read().map_or(0, |m| m.len())
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
        let at = self.status.last_drop_at.load(Ordering::Relaxed);
        at != 0 && now.saturating_sub(at) < self.window()
    }

    /// The edges of the window ending at `now`.
    pub fn edges(&self, now: Nanos) -> Vec<Edge> {
        self.edges.snapshot(now)
    }

    pub fn verdicts(&self, now: Nanos) -> Verdicts {
        let edges = self.edges(now);
        let policy = Policy {
            evidence_incomplete: self.evidence_incomplete(now),
            ..self.policy.clone()
        };
        // a snapshot of what the verdict needs (one entry per workload, as `analyze` sees them),
        // so the identity lock is held for a copy only
        let (known, peer_authentications, changes): (Vec<Workload>, _, _) = self
            .identities
            .read()
            .map(|m| {
                let known = m
                    .known_workloads()
                    .into_iter()
                    .map(|k| Workload {
                        namespace: k.namespace.to_owned(),
                        workload: k.workload.to_owned(),
                        service_account: None,
                        labels: k.labels.clone().into_owned(),
                        mesh: k.mesh,
                    })
                    .collect();
                (
                    known,
                    m.peer_authentications(),
                    m.peer_auth_changes().clone(),
                )
            })
            .unwrap_or_default();
        let known: Vec<KnownWorkload<'_>> = known.iter().map(Workload::as_known).collect();
        // with the PeerAuthentications watched, each verdict shows the workload's mode today
        // and since when it holds, and each suggestion is checked against the policies
        // themselves, as `analyze` checks it (an UNSET workload-level policy resolves to the
        // mode it inherits: only the policies show that a new one would lose to it)
        match peer_authentications {
            Some(policies) => verdict::evaluate_with_policies_stamped(
                &edges,
                &policy,
                &known,
                &policies,
                |modes| {
                    let labels = known.iter().map(|k| (k.namespace, k.workload, &*k.labels));
                    self.stamp_modes(modes, now, &changes, labels, Covers::All);
                },
            ),
            None => verdict::evaluate(&edges, &policy, &known),
        }
    }

    /// The most recent finished flows, newest first.
    pub fn recent_flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.flows
            .lock()
            .map(|f| f.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Who reports a connection between `src` and `dst`: `destination` when the destination is
    /// a pod of this node; `source` when the source is and the destination is no pod at all (an
    /// address outside the cluster's pods: no agent reports it as its destination); nobody
    /// otherwise — the agent of the destination's node does. Summed over agents, each connection
    /// counts once. Without an identity source every connection is this agent's, as
    /// `destination`.
    fn reporter(&self, ids: &dyn IdentitySource, src: IpAddr, dst: IpAddr) -> Option<Reporter> {
        if matches!(self.feed, IdentityFeed::None) || ids.is_local(dst) {
            Some(Reporter::destination)
        } else if ids.is_local(src) && !matches!(ids.lookup(dst), Identity::Workload(_)) {
            Some(Reporter::source)
        } else {
            None
        }
    }
}

/// The capture thread's side: everything it publishes goes through here.
#[derive(Debug)]
pub struct Recorder {
    state: Arc<LiveState>,
    ports: PortLabels,
    /// The metric series of the edges counted so far.
    series: SeriesCache,
    /// How connections were described, for their next event.
    described: Memo,
    /// Packet counters already published (to add deltas).
    published: PacketStats,
    /// Finished flows not yet in the shared ring (a reader held it).
    spill: Vec<FlowRecord>,
    cpu_seconds: f64,
    /// The identity map's generation the workload series were last built from (`None`: never).
    identities_published: Option<u64>,
}

/// The edge key of a connection this agent reports, and as which side, if it does: judged at
/// its backend (after DNAT), named by its client.
fn describe(
    state: &LiveState,
    ids: &dyn IdentitySource,
    c: &Connection,
) -> Option<(EdgeKey, Reporter)> {
    let backend = backend_of((c.dst, c.dport), c.alt_dst.into_iter(), ids);
    let (src, security, mesh) = (c.src, c.security, c.mesh);
    let reporter = match &backend.to {
        BackendKind::Address((ip, _)) => state.reporter(ids, src, *ip)?,
        // a Service's backend is a pod: the agent that sees it after DNAT reports it
        BackendKind::Service(..) if matches!(state.feed, IdentityFeed::None) => {
            Reporter::destination
        }
        BackendKind::Service(..) => return None,
    };
    let (destination, dport) = backend.peer(ids);
    let key = EdgeKey {
        destination,
        port: dport,
        source: Peer::resolve(src, ids),
        security,
        mesh,
        origin: Origin::of(c.kube_probe, backend.through_node),
    };
    Some((key, reporter))
}

/// A peer's names for the labels (a Service's backend has no address of its own).
fn peer_names(p: &Peer) -> (String, String) {
    match (&p.namespace, &p.workload, &p.node) {
        (Some(ns), Some(w), _) => (ns.clone(), w.clone()),
        (_, _, Some(n)) => ("node".to_owned(), n.clone()),
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The metric labels of an edge as `reporter` counts it: named by its peers (a source peer is
/// named as its address's identity is), its port label from `ports`.
fn connection_labels(
    ports: &mut PortLabels,
    key: &EdgeKey,
    reporter: Reporter,
) -> ConnectionLabels {
    let (source_namespace, source_workload) = peer_names(&key.source);
    let (destination_namespace, destination_workload) = peer_names(&key.destination);
    let destination_port = ports.label(&destination_namespace, &destination_workload, key.port);
    ConnectionLabels {
        reporter,
        source_workload,
        source_namespace,
        destination_workload,
        destination_namespace,
        destination_port,
        security: key.security,
        mesh: key.mesh,
        origin: key.origin,
    }
}

impl Recorder {
    pub fn new(state: Arc<LiveState>) -> Self {
        Recorder {
            state,
            ports: PortLabels::default(),
            series: SeriesCache::default(),
            described: Memo::default(),
            published: PacketStats::default(),
            spill: Vec::new(),
            cpu_seconds: 0.0,
            identities_published: None,
        }
    }

    /// Whether the capture runs (for `/healthz`).
    pub fn set_running(&self, running: bool) {
        self.state.status.running.store(running, Ordering::Relaxed);
    }

    /// The edge a connection this agent reports is counted on (its position in the series
    /// cache), and as which side, if it does; remembered for the connection's next event.
    fn edge_of(&mut self, c: &Connection) -> Option<(u32, Reporter)> {
        let ends = Ends::of(c);
        let ids = self.state.identities.read().ok()?;
        let generation = ids.generation();
        if let Some(d) = self.described.get(&ends, generation, self.series.epoch()) {
            // a debug build describes a remembered connection anyway, to check the memory
            if cfg!(debug_assertions) {
                self.check_remembered(d, describe(&self.state, &*ids, c));
            }
            return d.edge();
        }
        let fresh = describe(&self.state, &*ids, c);
        drop(ids);
        let d = match fresh {
            Some((key, reporter)) => Described::Edge {
                at: self.series.position(key),
                reporter,
            },
            None => Described::NotOurs,
        };
        // the epoch after `position`: it may have started the cache over
        let epoch = self.series.epoch();
        self.described.insert(ends, generation, epoch, d);
        d.edge()
    }

    /// Debug builds: what was remembered is what describing gives now.
    fn check_remembered(&self, remembered: Described, fresh: Option<(EdgeKey, Reporter)>) {
        match (remembered, fresh) {
            (Described::NotOurs, None) => {}
            (Described::Edge { at, reporter }, Some((key, now))) => {
                debug_assert_eq!(reporter, now, "remembered reporter");
                debug_assert_eq!(self.series.key(at), Some(&key), "remembered edge at {at}");
            }
            (remembered, fresh) => {
                debug_assert!(false, "remembered {remembered:?}, described {fresh:?}");
            }
        }
    }

    /// A connection was classified (or finished unclassified): count it once — as an attempt
    /// when it carried no payload; local traffic only in its own counter.
    pub fn on_connection(&mut self, c: &Connection) {
        let m = &self.state.metrics.connections;
        if c.local {
            m.local_connections.inc();
            return;
        }
        if c.view {
            return; // its first view counts it
        }
        let Some((at, reporter)) = self.edge_of(c) else {
            return;
        };
        let m = &self.state.metrics.connections;
        let ports = &mut self.ports;
        let Some((key, series)) = self
            .series
            .series(at, reporter, |key| connection_labels(ports, key, reporter))
        else {
            return;
        };
        if c.attempt {
            series.attempts(m).inc();
        } else {
            series.connections(m).inc();
        }
        let delta = EdgeStats {
            connections: u64::from(!c.attempt),
            attempts: u64::from(c.attempt),
            // the connection's start: what `refused_now` dates it by (its finish may come later)
            last_started: c.ts,
            ..EdgeStats::default()
        };
        self.state.edges.add(key, c.ts, delta);
    }

    /// A flow finished: its bytes and packets, and the recent-flows list.
    pub fn on_finished(&mut self, r: FlowRecord) {
        if !r.local && !r.view {
            if let Some((at, reporter)) = self.edge_of(&Connection::from(&r)) {
                let ports = &mut self.ports;
                let counted = self
                    .series
                    .series(at, reporter, |key| connection_labels(ports, key, reporter));
                debug_assert!(counted.is_some(), "series position {at} not held");
                if let Some((key, series)) = counted {
                    let [to_server, to_client] = series.bytes(&self.state.metrics.connections);
                    to_server.inc_by(r.bytes_to_server);
                    to_client.inc_by(r.bytes_to_client);
                    let delta = EdgeStats {
                        packets: r.packets,
                        bytes: r.bytes,
                        ..EdgeStats::default()
                    };
                    self.state.edges.add(key, r.last_seen, delta);
                }
            }
        }
        // straight into the ring when no reader holds it (one copy less of a large record)
        let Ok(mut ring) = self.state.flows.try_lock() else {
            self.spill.push(r);
            if self.spill.len() > RECENT_FLOWS {
                let excess = self.spill.len() - RECENT_FLOWS;
                self.spill.drain(..excess);
            }
            return;
        };
        for r in self.spill.drain(..).chain(std::iter::once(r)) {
            if ring.len() >= RECENT_FLOWS {
                ring.pop_front();
            }
            ring.push_back(r);
        }
    }

    /// Once a second: the capture thread's counters (deltas since the last call), the table,
    /// libpcap's statistics, the identity source and the process.
    pub fn publish(
        &mut self,
        stats: &PacketStats,
        table: TableStats,
        open: usize,
        pcap: Option<PcapStats>,
    ) {
        let m = &self.state.metrics.capture;
        let last = &self.published;
        m.packets.inc_by(stats.packets.saturating_sub(last.packets));
        m.captured_bytes
            .inc_by(stats.bytes.saturating_sub(last.bytes));
        for (reason, n) in &stats.decode_errors_by_reason {
            let before = last
                .decode_errors_by_reason
                .get(reason)
                .copied()
                .unwrap_or(0);
            m.decode_errors
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_owned(),
                })
                .inc_by(n.saturating_sub(before));
        }
        self.published.clone_from(stats);
        for (reason, total) in [
            ("idle", table.evicted_idle),
            ("pressure", table.evicted_pressure),
        ] {
            let c = m.flows_evicted.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
            c.inc_by(total.saturating_sub(c.get()));
        }
        m.reassembly_give_ups.inc_by(
            table
                .reassembly_gave_up
                .saturating_sub(m.reassembly_give_ups.get()),
        );
        m.flows_active.set(open as i64);
        let status = &self.state.status;
        status.packets.store(stats.packets, Ordering::Relaxed);
        status.flows_active.store(open as u64, Ordering::Relaxed);
        if let Some(pcap) = pcap {
            self.publish_drops(pcap);
        }
        self.publish_identities();
        self.publish_process();
        self.state.edges.prune(now());
    }

    fn publish_drops(&mut self, pcap: PcapStats) {
        let status = &self.state.status;
        status.received.store(pcap.received, Ordering::Relaxed);
        let before = status
            .dropped_kernel
            .swap(pcap.dropped_kernel, Ordering::Relaxed)
            + status
                .dropped_interface
                .swap(pcap.dropped_interface, Ordering::Relaxed);
        if pcap.dropped_kernel + pcap.dropped_interface > before {
            status.last_drop_at.store(now(), Ordering::Relaxed);
        }
        let drops = &self.state.metrics.capture.drops;
        for (point, total) in [
            (DropPoint::kernel, pcap.dropped_kernel),
            (DropPoint::interface, pcap.dropped_interface),
        ] {
            let counter = drops.get_or_create(&DropLabels { point });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The identity gauges, and the series of this node's workloads and their PeerAuthentication
    /// modes: built again only when the identity map's generation moved.
    fn publish_identities(&mut self) {
        let m = &self.state.metrics.identity;
        m.synced.set(i64::from(self.state.identities_synced()));
        let Ok(ids) = self.state.identities.read() else {
            return;
        };
        m.entries.set(ids.len() as i64);
        // the series below follow the map alone: rebuilt when it changed (10,000 pods cost a
        // millisecond or two, most of the agent's cost at low packet rates)
        let generation = ids.generation();
        if self.identities_published == Some(generation) {
            return;
        }
        // the PeerAuthentication modes of this node's workloads, when the policies are watched:
        // resolved on each workload's labels across the cluster, as /api/v1/verdicts does (this
        // node's pods alone may all carry a canary's `version`), stamped with since when they
        // hold, and exported for the workloads with a pod here
        let modes = ids.peer_authentications().map(|policies| {
            let known = ids.known_workloads();
            let mut modes = crate::peer_auth::modes_of(
                &policies,
                &self.state.policy.istio_root_namespace,
                known.iter().map(|k| (k.namespace, k.workload, &*k.labels)),
            );
            let labels = known.iter().map(|k| (k.namespace, k.workload, &*k.labels));
            self.state.stamp_modes(
                &mut modes,
                now(),
                ids.peer_auth_changes(),
                labels,
                Covers::Some,
            );
            let here: std::collections::HashSet<(&str, &str)> = ids
                .local_workloads()
                .into_iter()
                .map(|w| (w.namespace.as_str(), w.workload.as_str()))
                .collect();
            modes.retain(|(ns, wl), _| here.contains(&(ns.as_str(), wl.as_str())));
            modes
        });
        let local: Vec<WorkloadLabels> = ids
            .local_workloads()
            .into_iter()
            .map(|w| WorkloadLabels {
                namespace: w.namespace.clone(),
                workload: w.workload.clone(),
                mesh: w.mesh.map_or("unknown", Mesh::as_str),
            })
            .collect();
        drop(ids);
        self.identities_published = Some(generation);
        // a workload that left this node leaves the series
        m.workloads.clear();
        for labels in &local {
            m.workloads.get_or_create(labels).set(1);
        }
        self.state.metrics.peer_auth.publish(modes.as_ref());
    }

    fn publish_process(&mut self) {
        let m = &self.state.metrics.process;
        if let Some(cpu) = process_cpu_seconds() {
            m.cpu_seconds.inc_by((cpu - self.cpu_seconds).max(0.0));
            self.cpu_seconds = self.cpu_seconds.max(cpu);
        }
        if let Some(rss) = process_resident_bytes() {
            m.resident_memory_bytes.set(rss as i64);
        }
    }
}

static UNKNOWN_LABELS: PodLabels = PodLabels::Unknown;

/// Each workload's sets of pod labels, by namespace and workload.
type LabelSets<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a PodLabels>>>;

fn labels_by_workload<'a>(
    known: impl Iterator<Item = (&'a str, &'a str, &'a PodLabels)>,
) -> LabelSets<'a> {
    let mut labels = LabelSets::new();
    for (ns, wl, l) in known {
        labels.entry(ns).or_default().entry(wl).or_default().push(l);
    }
    labels
}

/// The latest policy change in `changes` that may have touched the workload `ns`/`wl`: judged
/// on each set of its pods' labels; one not known (only seen in edges) on unknown labels, so
/// any change in its namespace counts.
fn last_touching(
    changes: &ChangeLog,
    root_namespace: &str,
    labels: &LabelSets<'_>,
    ns: &str,
    wl: &str,
) -> Option<Nanos> {
    match labels.get(ns).and_then(|w| w.get(wl)) {
        Some(sets) => changes.last_touching(root_namespace, ns, sets.iter().copied()),
        None => changes.last_touching(root_namespace, ns, [&UNKNOWN_LABELS]),
    }
}

/// User and system CPU time of this process.
fn process_cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// Resident memory of this process (`VmRSS`).
fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests;
