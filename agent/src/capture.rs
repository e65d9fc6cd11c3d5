//! Packet sources: where frames come from. I/O lives here, nothing else does.

pub mod file;
#[cfg(feature = "agent")]
pub mod live;

use crate::decode::LinkType;
use crate::Nanos;

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: Nanos,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire (>= `data.len()` when the snaplen cut it).
    pub wire_len: u32,
}
