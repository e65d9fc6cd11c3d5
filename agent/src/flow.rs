//! Connections: a canonical key per 5-tuple, the per-connection state machine, and the bounded
//! table that holds them. The client is the SYN sender; without a SYN it is inferred and the
//! flow is marked `mid_stream`.

mod key;
mod state;
mod table;

pub use key::{Direction, FlowKey};
pub use state::{
    infer_client, Connection, EndReason, Flow, FlowRecord, PacketOutcome, EPHEMERAL_PORTS_START,
};
pub use table::{FlowTable, Outputs, TableLimits, TableStats, DEFAULT_MAX_FLOWS, RETRY_LINGER};

#[cfg(test)]
mod tests;
