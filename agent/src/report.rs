//! The analysis report: the JSON contract of DESIGN.md and the terminal table.

pub mod json;
pub mod table;

use serde::Serialize;

use crate::aggregate::Edge;
use crate::capture::file::Compression;
use crate::capture::merge::FileReport;
use crate::classify::SecurityCounts;
use crate::flow::{FlowRecord, TableStats};
use crate::pipeline::{FlowCounts, PacketStats};
use crate::verdict::Verdicts;

pub use crate::timestamp::format as format_time;

/// One capture file read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub packets: u64,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    /// `LINKTYPE_*` numbers of its packets.
    pub link_types: Vec<u32>,
    pub compression: Compression,
    /// Its last record was cut short.
    pub truncated: bool,
}

impl From<&FileReport> for FileSummary {
    fn from(f: &FileReport) -> Self {
        let s = &f.summary;
        FileSummary {
            path: f.path.display().to_string(),
            packets: s.frames,
            first_packet: s.first_ts.map(format_time),
            last_packet: s.first_ts.map(|_| format_time(s.last_ts)),
            link_types: s.link_types.clone(),
            compression: f.compression,
            truncated: s.truncated_at.is_some(),
        }
    }
}

/// Counts over the whole input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The capture files read, in the order given (directories expanded).
    pub files: Vec<FileSummary>,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_packets: u64,
    /// TCP connections seen: local ones, attempts and the connections that are evidence.
    pub flows: u64,
    /// Connections on loopback (a sidecar's own legs inside a pod): never evidence.
    pub local_connections: u64,
    /// Connection attempts that carried no payload (refused, unanswered, TCP probes).
    pub attempts: u64,
    /// Flows that were another view of a connection counted once (pre/post NAT, another
    /// capture): listed under `--flows` with `view: true`, not counted again.
    pub views: u64,
    pub decode_errors: u64,
    pub decode_errors_by_reason: std::collections::BTreeMap<&'static str, u64>,
    pub skipped_not_ip: u64,
    pub skipped_not_tcp: u64,
    pub skipped_unsupported_encapsulation: u64,
    /// Exact copies of the previous packet in a direction (e.g. `-i any` sees veth and bridge).
    pub duplicate_packets: u64,
    pub reassembly_gave_up: u64,
    pub flows_evicted: u64,
    /// Most connections tracked at once (for sizing `--max-flows`).
    pub peak_flows: u64,
    /// Payload-less packets of unknown connections (stragglers after a close, captures that
    /// start mid-connection): they open no flow.
    pub orphan_packets: u64,
    /// Connections whose source was folded into `(other sources)` (edge bounds reached).
    pub edges_folded: u64,
    /// Connections (not local, not attempts) by security class.
    pub security: SecurityCounts,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    /// Capture files whose last record was cut short.
    pub truncated_files: Vec<String>,
}

impl Summary {
    pub fn new(
        files: &[FileReport],
        packets: &PacketStats,
        table: TableStats,
        counts: FlowCounts,
    ) -> Self {
        Summary {
            files: files.iter().map(FileSummary::from).collect(),
            packets: packets.packets,
            bytes: packets.bytes,
            tcp_packets: packets.tcp_packets,
            flows: counts.flows,
            local_connections: counts.local,
            attempts: counts.attempts,
            views: counts.views,
            decode_errors: packets.decode_errors,
            decode_errors_by_reason: packets.decode_errors_by_reason.clone(),
            skipped_not_ip: packets.not_ip,
            skipped_not_tcp: packets.not_tcp,
            skipped_unsupported_encapsulation: packets.unsupported_encapsulation,
            duplicate_packets: table.duplicates,
            reassembly_gave_up: table.reassembly_gave_up,
            flows_evicted: table.evicted_pressure,
            peak_flows: table.peak_flows,
            orphan_packets: table.orphan_packets,
            edges_folded: 0,
            security: counts.security,
            first_packet: None,
            last_packet: None,
            truncated_files: files
                .iter()
                .filter(|f| f.summary.truncated_at.is_some())
                .map(|f| f.path.display().to_string())
                .collect(),
        }
    }
}

/// `meshwatch analyze --format json`: one object, names kept stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<FlowRecord>>,
    pub edges: Vec<Edge>,
    pub verdicts: Vec<crate::verdict::Verdict>,
    pub namespaces: Vec<crate::verdict::NamespaceVerdict>,
    pub mesh: crate::verdict::MeshVerdict,
}

impl Report {
    pub fn new(
        summary: Summary,
        flows: Option<Vec<FlowRecord>>,
        edges: Vec<Edge>,
        verdicts: Verdicts,
    ) -> Self {
        Report {
            summary,
            flows,
            edges,
            verdicts: verdicts.workloads,
            namespaces: verdicts.namespaces,
            mesh: verdicts.mesh,
        }
    }
}
