//! Connections: a canonical key per 5-tuple, the per-connection state machine, and the bounded
//! table that holds them. The client is the SYN sender; without a SYN it is inferred and the
//! flow is marked `mid_stream`.

mod key;
mod state;
mod table;

pub use key::{Direction, FlowKey};
pub use state::{Connection, EndReason, Flow, FlowRecord, PacketOutcome};
pub use table::{FlowTable, Outputs, TableLimits, TableStats, DEFAULT_MAX_FLOWS};

#[cfg(test)]
mod tests;
