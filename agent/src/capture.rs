//! Packet sources: where frames come from. I/O lives here, nothing else does.

#[cfg(feature = "agent")]
pub mod batching;
pub mod epb;
pub mod file;
pub mod inputs;
#[cfg(feature = "agent")]
pub mod live;
pub mod merge;
pub mod read_ahead;
pub mod record;

use crate::decode::LinkType;
use crate::Nanos;

/// Whether an interface name is a loopback device's (`lo` on Linux, `lo0` on BSD and macOS).
pub fn interface_is_loopback(name: &str) -> bool {
    matches!(name, "lo" | "lo0")
}

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: Nanos,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire (>= `data.len()` when the snaplen cut it).
    pub wire_len: u32,
    /// Captured on an interface known to be a loopback device (a pcapng interface named `lo`,
    /// a live capture on `lo`); the link header may say so too (see `decode`).
    pub loopback: bool,
}
