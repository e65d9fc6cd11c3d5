//! One connection's state: who is the client, the client's preface until it is classified,
//! counters, and how it ended. Once classified, a packet costs a few compares and adds.

use std::net::IpAddr;

use serde::Serialize;

use super::key::{Direction, Endpoint, FlowKey};
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
    /// This side sent a SYN (the server: a SYN-ACK), a FIN, a RST.
    syn: bool,
    fin: bool,
    rst: bool,
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
    /// The client was inferred (no SYN seen), see [`infer_client`].
    mid_stream: bool,
    /// Sequence number of the client's first data byte, when the handshake was seen: the
    /// stream's start is known, so the preface is read from its first byte.
    client_isn: Option<u32>,
    phase: Phase,
    /// Whether the server has sent payload, and whether its first payload was a ServerHello.
    server_spoke: bool,
    server_hello: bool,
    /// A packet of this connection was captured on a loopback device.
    loopback: bool,
    /// Another view of a connection whose first view is another flow (pre/post NAT, another
    /// capture): its record is listed, never counted.
    view: bool,
    /// Its connection event was handed out.
    announced: bool,
    /// The other views of this connection (their client and server endpoints), once seen.
    views: Option<Box<[FlowView]>>,
    client: Side,
    server: Side,
    first_seen: Nanos,
    last_seen: Nanos,
    tunnel: Option<Tunnel>,
}

/// The first port of the ephemeral range clients pick their ports from (Linux starts at 32768,
/// Windows and IANA at 49152); Kubernetes NodePorts (30000-32767) lie below it.
pub const EPHEMERAL_PORTS_START: u16 = 32768;

/// Who is the client of a connection first seen from `seg` (sent in `dir`), and whether the
/// start of the stream is known. `is_server` says whether an endpoint was seen answering a SYN
/// elsewhere in the capture. PURE. In order:
/// 1. the SYN sender; the receiver of a SYN-ACK (inferred: `mid_stream`, but the ISN is known);
/// 2. mid-stream, from the payload: the sender of an HTTP response is the server, the sender of
///    an HTTP request the client;
/// 3. an endpoint seen as a server elsewhere in the capture is the server;
/// 4. a port below the ephemeral range facing one inside it is the server's;
/// 5. otherwise the sender of the first packet is the client.
pub fn infer_client(
    key: &FlowKey,
    dir: Direction,
    seg: &TcpSegment<'_>,
    is_server: impl Fn(Endpoint) -> bool,
) -> (Direction, bool, Option<u32>) {
    let f = seg.flags;
    if f.syn() && !f.ack() {
        return (dir, false, Some(seg.seq.wrapping_add(1)));
    }
    if f.syn() && f.ack() {
        return (dir.reverse(), true, Some(seg.ack));
    }
    let (sender, receiver) = (key.sender(dir), key.sender(dir.reverse()));
    let sender_is_client = if classify::is_http_response(seg.payload) {
        false
    } else if classify::is_http_request(seg.payload) {
        true
    } else {
        match (is_server(sender), is_server(receiver)) {
            (true, false) => false,
            (false, true) => true,
            _ => {
                let ephemeral = |port: u16| port >= EPHEMERAL_PORTS_START;
                let sender_is_server = ephemeral(receiver.1) && !ephemeral(sender.1);
                !sender_is_server
            }
        }
    };
    let client_dir = if sender_is_client { dir } else { dir.reverse() };
    (client_dir, true, None)
}

impl Flow {
    /// A flow for the first packet seen of a connection; `is_server` as in [`infer_client`].
    pub fn start(
        key: FlowKey,
        dir: Direction,
        seg: &TcpSegment<'_>,
        now: Nanos,
        is_server: impl Fn(Endpoint) -> bool,
    ) -> Self {
        let (client_dir, mid_stream, client_isn) = infer_client(&key, dir, seg, is_server);
        Flow {
            client_dir,
            server_port: key.sender(client_dir.reverse()).1,
            mid_stream,
            client_isn,
            phase: Phase::Preface(None),
            server_spoke: false,
            server_hello: false,
            loopback: false,
            view: false,
            announced: false,
            views: None,
            client: Side::default(),
            server: Side::default(),
            first_seen: now,
            last_seen: now,
            tunnel: seg.tunnel,
        }
    }

    /// Whether a SYN in `dir` starts a new connection on this 5-tuple (port reuse) rather than
    /// being a retransmission of the one that started this flow — which it is when it carries
    /// the same ISN, also after the client reset a stale ACK ([`Flow::awaits_retry`]).
    pub fn is_reused_by(&self, dir: Direction, seg: &TcpSegment<'_>) -> bool {
        let retransmission =
            dir == self.client_dir && self.client_isn == Some(seg.seq.wrapping_add(1));
        seg.flags.syn()
            && !seg.flags.ack()
            && (!retransmission || (self.close_reason().is_some() && !self.awaits_retry()))
    }

    /// The client reset the connection before anything was exchanged because the server
    /// answered its SYN with a plain ACK (stale state, RFC 5961's challenge ACK): the client
    /// retransmits the same SYN after its timeout. Until then the flow is kept, so that the
    /// retry continues this connection instead of counting a second one.
    pub fn awaits_retry(&self) -> bool {
        self.client.rst
            && !self.server.rst
            && !self.server.syn
            && self.client_isn.is_some()
            && self.client.bytes == 0
            && self.server.bytes == 0
    }

    pub fn last_seen(&self) -> Nanos {
        self.last_seen
    }

    /// How the connection closed, once it has: a RST, or a FIN from both sides.
    pub fn close_reason(&self) -> Option<EndReason> {
        if self.client.rst || self.server.rst {
            Some(EndReason::Rst)
        } else if self.client.fin && self.server.fin {
            Some(EndReason::Fin)
        } else {
            None
        }
    }

    /// This flow is another view of a connection counted elsewhere.
    pub fn mark_view(&mut self) {
        self.view = true;
    }

    /// Another view of this connection was seen.
    pub fn add_view(&mut self, view: FlowView) {
        let mut views = self.views.take().map(Vec::from).unwrap_or_default();
        views.push(view);
        self.views = Some(views.into_boxed_slice());
    }

    /// The client's port.
    pub fn client_port(&self, key: &FlowKey) -> u16 {
        key.sender(self.client_dir).1
    }

    /// The client's ISN and port, when the SYN was seen (what NAT keeps of a connection).
    pub fn client_id(&self, key: &FlowKey) -> Option<(u32, u16)> {
        let isn = self.client_isn?;
        Some((isn.wrapping_sub(1), key.sender(self.client_dir).1))
    }

    /// Heap bytes held for the client's preface (0 once classified).
    pub fn preface_bytes(&self) -> usize {
        match &self.phase {
            Phase::Preface(Some(p)) => p.held_bytes(),
            _ => 0,
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
        side.syn |= seg.flags.syn();
        side.fin |= seg.flags.fin();
        side.rst |= seg.flags.rst();
        self.loopback |= seg.loopback;
        self.last_seen = self.last_seen.max(now);
        if from_client && seg.flags.syn() && !seg.flags.ack() {
            // a retransmitted SYN (see `awaits_retry`) reopens the attempt it retries
            self.client.rst = false;
        }
        if !seg.payload.is_empty() {
            if from_client {
                self.on_client_payload(seg, scratch, &mut outcome);
            } else {
                self.on_server_payload(seg, &mut outcome);
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
        let (server_port, isn) = (self.server_port(), self.client_isn);
        let mid_stream = isn.is_none();
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

    fn on_server_payload(&mut self, seg: &TcpSegment<'_>, outcome: &mut PacketOutcome) {
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
        if client_silent && self.client_isn.is_some() && !tls_record {
            self.phase = Phase::Classified(Classification::server_first());
            outcome.classified = true;
        }
    }

    fn server_port(&self) -> u16 {
        self.server_port
    }

    /// The flow's final record; classifies what is left with the bytes at hand. Read where the
    /// flow lies (its table slot), which is left spent: its preface and views are taken.
    pub fn finish(
        &mut self,
        key: &FlowKey,
        reason: EndReason,
        scratch: &mut Vec<u8>,
    ) -> FlowRecord {
        let client = key.sender(self.client_dir);
        let server = key.sender(self.client_dir.reverse());
        let start_known = self.client_isn.is_some();
        let local = self.is_local(key);
        let attempt = matches!(self.phase, Phase::Preface(None))
            && self.client.bytes == 0
            && self.server.bytes == 0;
        let mut start_missing = false;
        let class = match std::mem::replace(&mut self.phase, Phase::Preface(None)) {
            Phase::Classified(c) => c,
            Phase::Preface(None) => Classification::no_payload(),
            Phase::Preface(Some(p)) => {
                let bytes = p.contiguous();
                if bytes.is_empty() {
                    start_missing = start_known && !p.earliest().is_empty();
                    classify::classify_midstream(p.earliest(), server.1, scratch)
                } else if !start_known {
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
            local,
            attempt,
            kube_probe: class.kube_probe,
            view: self.view,
            views: self.views.take().map(Vec::from).unwrap_or_default(),
        }
    }

    /// The destination of the latest other view, where it differs (NAT).
    fn alt_destination(&self) -> Option<Endpoint> {
        self.views.as_ref()?.last().map(|v| (v.dst, v.dport))
    }

    /// Local traffic, never evidence: captured on a loopback device, or a loopback address at
    /// either end (127.0.0.0/8 — Istio's inbound source 127.0.0.6 among them — and ::1).
    fn is_local(&self, key: &FlowKey) -> bool {
        let loopback = |(ip, _): Endpoint| ip.to_canonical().is_loopback();
        self.loopback
            || loopback(key.sender(Direction::FromLo))
            || loopback(key.sender(Direction::FromHi))
    }

    /// The connection event once a flow is classified — at once when its start was seen (its
    /// other views joined at their SYNs); for a flow first seen mid-stream only after
    /// [`VIEW_WINDOW`](super::table::VIEW_WINDOW), so that a view seen a moment later on another
    /// interface has joined and the event names the backend (see [`Flow::announce_due`]).
    pub fn announce(&mut self, key: &FlowKey, now: Nanos) -> Option<Connection> {
        self.client_isn?; // seen from its start: announced now
        self.announce_now(key, now)
    }

    /// Whether a classified flow's deferred event is due.
    pub fn announce_due(&self, now: Nanos, after: Nanos) -> bool {
        !self.announced && self.is_classified() && now.saturating_sub(self.first_seen) >= after
    }

    /// Hand out the connection event now (once).
    pub fn announce_now(&mut self, key: &FlowKey, now: Nanos) -> Option<Connection> {
        let c = self.connection(key, now)?;
        self.announced = true;
        Some(c)
    }

    /// Whether the connection event was handed out.
    pub fn announced(&self) -> bool {
        self.announced
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
                local: self.is_local(key),
                attempt: false,
                view: self.view,
                kube_probe: c.kube_probe,
                alt_dst: self.alt_destination(),
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
    /// Loopback traffic (see [`FlowRecord::local`]): not evidence.
    pub local: bool,
    /// No payload was ever exchanged (see [`FlowRecord::attempt`]).
    pub attempt: bool,
    /// Another view of a connection counted by its first view: not counted again.
    pub view: bool,
    /// A kubelet HTTP probe (`User-Agent: kube-probe/…`).
    pub kube_probe: bool,
    /// Where another view of this connection went (the backend after DNAT, or the NodePort).
    pub alt_dst: Option<Endpoint>,
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
            local: r.local,
            attempt: r.attempt,
            view: r.view,
            kube_probe: r.kube_probe,
            alt_dst: r.views.last().map(|v| (v.dst, v.dport)),
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
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub first_seen: Nanos,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub last_seen: Nanos,
    pub mid_stream: bool,
    pub start_missing: bool,
    pub tunnel: Option<Tunnel>,
    pub end: EndReason,
    /// Loopback traffic: captured on a loopback device or with a loopback address at either end
    /// (a sidecar's own legs inside a pod). Listed, counted in the summary, never evidence.
    pub local: bool,
    /// A connection attempt: no payload either way (refused, unanswered, or closed before the
    /// client sent anything — a TCP probe). Counted apart, never an `unknown` connection.
    pub attempt: bool,
    /// A kubelet HTTP probe (`User-Agent: kube-probe/…`).
    pub kube_probe: bool,
    /// Another view of a connection whose first view has its own record (the same client ISN
    /// and port within a moment: pre/post NAT, or another capture): listed, never counted.
    pub view: bool,
    /// The other views of this connection, when this is the first (counted) one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<FlowView>,
}

/// One view of a connection: the endpoints a capture point saw it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlowView {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}
