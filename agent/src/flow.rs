//! Connections: a canonical key per 5-tuple, the per-connection state machine, and the bounded
//! table that holds them. The client is the SYN sender; without a SYN it is inferred and the
//! flow is marked `mid_stream`.

mod key;
pub(crate) mod recent;
mod state;
mod table;

pub use key::{Direction, Endpoint, FlowKey};
pub use state::{
    infer_client, Connection, EndReason, Flow, FlowRecord, FlowView, PacketOutcome,
    EPHEMERAL_PORTS_START,
};
pub use table::{
    FlowTable, Outputs, TableLimits, TableStats, DEFAULT_MAX_FLOWS, RETRY_LINGER, VIEW_WINDOW,
};

#[cfg(test)]
mod tests;

/// Builders for other modules' tests.
#[cfg(test)]
pub mod tests_support {
    use super::{EndReason, FlowRecord};
    use crate::classify::{App, Mesh, Security};

    /// A finished plaintext HTTP connection 10.0.0.1:40000 -> 10.0.0.2:8000.
    pub fn record() -> FlowRecord {
        FlowRecord {
            src: [10, 0, 0, 1].into(),
            sport: 40000,
            dst: [10, 0, 0, 2].into(),
            dport: 8000,
            security: Security::Plaintext,
            mesh: Mesh::None,
            app: App::Http1,
            alpn: Vec::new(),
            sni: None,
            tls_versions: Vec::new(),
            sslv2: false,
            server_first: false,
            server_hello: false,
            packets: 4,
            bytes: 100,
            bytes_to_server: 60,
            bytes_to_client: 40,
            first_seen: 1,
            last_seen: 2,
            mid_stream: false,
            start_missing: false,
            tunnel: None,
            end: EndReason::Fin,
            local: false,
            attempt: false,
            kube_probe: false,
            view: false,
            views: Vec::new(),
        }
    }
}
