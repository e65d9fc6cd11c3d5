//! One connection's state: who is the client, the client's preface until it is classified,
//! counters, and how it ended. Once classified, a packet costs a few compares and adds.

use std::net::IpAddr;

use serde::Serialize;

use super::key::{Direction, FlowKey};
use crate::classify::{self, App, Classification, Mesh, Security};
use crate::decode::{TcpSegment, Tunnel};
use crate::reassembly::{Insert, Preface};
use crate::tls;
use crate::Nanos;

/// How a flow came to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// FIN from both sides.
    Fin,
    Rst,
    /// Nothing seen for the idle timeout.
    Idle,
    /// Evicted to make room (table full).
    Evicted,
    /// A new SYN reused the 5-tuple.
    Reused,
    /// Still open when the capture ended.
    CaptureEnd,
}

/// What one packet did to its flow, for the pipeline's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketOutcome {
    /// The packet was an exact copy of the previous one in its direction.
    pub duplicate: bool,
    /// The flow was classified by this packet.
    pub classified: bool,
    /// A preface segment was dropped because it would open too many holes.
    pub reassembly_gave_up: bool,
}

/// Per-direction counters and the signature of the last packet (to spot copies of it).
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    packets: u64,
    bytes: u64,
    fin: bool,
    last: Option<(u32, u32, u8, u32)>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the client's first bytes.
    Preface(Option<Preface>),
    Classified(Classification),
}

/// A connection in the flow table.
#[derive(Debug)]
pub struct Flow {
    /// The direction in which the client sends (the key itself lives in the table).
    client_dir: Direction,
    server_port: u16,
    mid_stream: bool,
    /// Sequence number of the client's first data byte, when the handshake was seen.
    client_isn: Option<u32>,
    phase: Phase,
    /// Where in the server's stream its first byte was, and whether it was a ServerHello.
    server_spoke: bool,
    server_hello: bool,
    rst: bool,
    client: Side,
    server: Side,
    first_seen: Nanos,
    last_seen: Nanos,
    tunnel: Option<Tunnel>,
}

impl Flow {
    /// A flow for the first packet seen of a connection.
    pub fn start(key: FlowKey, dir: Direction, seg: &TcpSegment<'_>, now: Nanos) -> Self {
        let f = seg.flags;
        let (client_dir, mid_stream, client_isn) = if f.syn() && !f.ack() {
            (dir, false, Some(seg.seq.wrapping_add(1)))
        } else if f.syn() && f.ack() {
            (dir.reverse(), false, Some(seg.ack))
        } else if classify::is_http_response(seg.payload) {
            (dir.reverse(), true, None)
        } else {
            (dir, true, None)
        };
        Flow {
            client_dir,
            server_port: key.sender(client_dir.reverse()).1,
            mid_stream,
            client_isn,
            phase: Phase::Preface(None),
            server_spoke: false,
            server_hello: false,
            rst: false,
            client: Side::default(),
            server: Side::default(),
            first_seen: now,
            last_seen: now,
            tunnel: seg.tunnel,
        }
    }

    /// Whether a SYN in `dir` starts a new connection on this 5-tuple (port reuse) rather than
    /// being a retransmission of the one that started this flow.
    pub fn is_reused_by(&self, dir: Direction, seg: &TcpSegment<'_>) -> bool {
        seg.flags.syn()
            && !seg.flags.ack()
            && (self.close_reason().is_some()
                || dir != self.client_dir
                || self.client_isn != Some(seg.seq.wrapping_add(1)))
    }

    pub fn last_seen(&self) -> Nanos {
        self.last_seen
    }

    /// How the connection closed, once it has: a RST, or a FIN from both sides.
    pub fn close_reason(&self) -> Option<EndReason> {
        if self.rst {
            Some(EndReason::Rst)
        } else if self.client.fin && self.server.fin {
            Some(EndReason::Fin)
        } else {
            None
        }
    }

    pub fn is_classified(&self) -> bool {
        matches!(self.phase, Phase::Classified(_))
    }

    /// Account one packet of this flow.
    pub fn on_packet(
        &mut self,
        dir: Direction,
        seg: &TcpSegment<'_>,
        now: Nanos,
        scratch: &mut Vec<u8>,
    ) -> PacketOutcome {
        let mut outcome = PacketOutcome::default();
        let from_client = dir == self.client_dir;
        let side = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        let signature = (seg.seq, seg.ack, seg.flags.0, seg.payload_len);
        if side.last == Some(signature) {
            outcome.duplicate = true;
            return outcome;
        }
        side.last = Some(signature);
        side.packets += 1;
        side.bytes += u64::from(seg.payload_len);
        side.fin |= seg.flags.fin();
        self.last_seen = self.last_seen.max(now);
        if seg.flags.rst() {
            self.rst = true;
        }
        if !seg.payload.is_empty() {
            if from_client {
                self.on_client_payload(seg, scratch, &mut outcome);
            } else {
                self.on_server_payload(seg);
            }
        }
        outcome
    }

    fn on_client_payload(
        &mut self,
        seg: &TcpSegment<'_>,
        scratch: &mut Vec<u8>,
        outcome: &mut PacketOutcome,
    ) {
        let (server_port, mid_stream, isn) = (self.server_port(), self.mid_stream, self.client_isn);
        let Phase::Preface(preface) = &mut self.phase else {
            return;
        };
        // Data on a SYN (TCP Fast Open) starts one past the SYN's sequence number.
        let data_seq = seg.seq.wrapping_add(u32::from(seg.flags.syn()));
        // The common case: the stream's first segment decides alone, and no buffer is needed.
        if preface.is_none() && isn.is_none_or(|base| base == data_seq) {
            if let Some(class) = decide(seg.payload, server_port, mid_stream, false, scratch) {
                self.phase = Phase::Classified(class);
                outcome.classified = true;
                return;
            }
        }
        let preface = preface.get_or_insert_with(|| Preface::new(isn.unwrap_or(data_seq)));
        match preface.insert(data_seq, seg.payload) {
            Insert::Stored => {}
            Insert::Nothing => return,
            Insert::TooManyHoles => {
                outcome.reassembly_gave_up = true;
                return;
            }
        }
        let bytes = preface.contiguous();
        if bytes.is_empty() {
            return;
        }
        if let Some(class) = decide(bytes, server_port, mid_stream, preface.is_full(), scratch) {
            self.phase = Phase::Classified(class);
            outcome.classified = true;
        }
    }

    fn on_server_payload(&mut self, seg: &TcpSegment<'_>) {
        if self.server_spoke {
            return;
        }
        self.server_spoke = true;
        self.server_hello = tls::is_server_hello(seg.payload);
        let client_silent = match &self.phase {
            Phase::Preface(p) => p.as_ref().is_none_or(|p| p.earliest().is_empty()),
            Phase::Classified(_) => false,
        };
        // A server greeting in clear before any client byte: SMTP, MySQL, FTP, ... A TLS record
        // here means the client's hello was missed, not a server-first protocol.
        let tls_record = matches!(
            tls::is_record_start(seg.payload, &[0x14, 0x15, 0x16, 0x17]),
            Ok(true)
        );
        if client_silent && !self.mid_stream && !tls_record {
            self.phase = Phase::Classified(Classification::server_first());
        }
    }

    fn server_port(&self) -> u16 {
        self.server_port
    }

    /// The flow's final record; classifies what is left with the bytes at hand.
    pub fn finish(self, key: &FlowKey, reason: EndReason, scratch: &mut Vec<u8>) -> FlowRecord {
        let client = key.sender(self.client_dir);
        let server = key.sender(self.client_dir.reverse());
        let mut start_missing = false;
        let class = match self.phase {
            Phase::Classified(c) => c,
            Phase::Preface(None) => Classification::no_payload(),
            Phase::Preface(Some(p)) => {
                let bytes = p.contiguous();
                if bytes.is_empty() {
                    start_missing = !self.mid_stream && !p.earliest().is_empty();
                    classify::classify_midstream(p.earliest(), server.1, scratch)
                } else if self.mid_stream {
                    classify::classify_midstream(bytes, server.1, scratch)
                } else {
                    classify::classify_preface(bytes, server.1, true, scratch)
                        .unwrap_or_else(|_| Classification::no_payload())
                }
            }
        };
        let hello = class.hello.as_deref();
        FlowRecord {
            src: client.0,
            sport: client.1,
            dst: server.0,
            dport: server.1,
            security: class.security,
            mesh: class.mesh,
            app: class.app,
            alpn: hello.map(|h| h.alpn.clone()).unwrap_or_default(),
            sni: hello.and_then(|h| h.sni.clone()),
            tls_versions: hello.map(|h| h.versions.clone()).unwrap_or_default(),
            sslv2: class.sslv2,
            server_first: class.server_first,
            server_hello: self.server_hello,
            packets: self.client.packets + self.server.packets,
            bytes: self.client.bytes + self.server.bytes,
            bytes_to_server: self.client.bytes,
            bytes_to_client: self.server.bytes,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            mid_stream: self.mid_stream,
            start_missing,
            tunnel: self.tunnel,
            end: reason,
        }
    }

    /// The connection event of a classified flow.
    pub fn connection(&self, key: &FlowKey, now: Nanos) -> Option<Connection> {
        match &self.phase {
            Phase::Classified(c) => Some(Connection {
                src: key.sender(self.client_dir).0,
                dst: key.sender(self.client_dir.reverse()).0,
                dport: self.server_port(),
                security: c.security,
                mesh: c.mesh,
                ts: now,
            }),
            Phase::Preface(_) => None,
        }
    }
}

/// A connection, announced once: when it is classified, or at its end if it never was. The agent
/// counts connections on these (a long-lived connection counts when it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub security: Security,
    pub mesh: Mesh,
    pub ts: Nanos,
}

impl From<&FlowRecord> for Connection {
    fn from(r: &FlowRecord) -> Self {
        Connection {
            src: r.src,
            dst: r.dst,
            dport: r.dport,
            security: r.security,
            mesh: r.mesh,
            ts: r.first_seen,
        }
    }
}

/// Classify a contiguous preface if its bytes allow (`full`: no more will be kept).
fn decide(
    bytes: &[u8],
    server_port: u16,
    mid_stream: bool,
    full: bool,
    scratch: &mut Vec<u8>,
) -> Option<Classification> {
    if !mid_stream {
        return classify::classify_preface(bytes, server_port, full, scratch).ok();
    }
    match tls::parse_client_hello(bytes, scratch) {
        Err(tls::Incomplete)
            if !full && matches!(tls::is_record_start(bytes, &[0x16]), Ok(true)) =>
        {
            None
        }
        _ => Some(classify::classify_midstream(bytes, server_port, scratch)),
    }
}

/// A finished connection: what `--flows` prints and what edges are built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub security: Security,
    pub mesh: Mesh,
    pub app: App,
    pub alpn: Vec<String>,
    pub sni: Option<String>,
    pub tls_versions: Vec<u16>,
    pub sslv2: bool,
    pub server_first: bool,
    pub server_hello: bool,
    pub packets: u64,
    /// TCP payload bytes, both directions.
    pub bytes: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub first_seen: Nanos,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub last_seen: Nanos,
    pub mid_stream: bool,
    pub start_missing: bool,
    pub tunnel: Option<Tunnel>,
    pub end: EndReason,
}
