//! Live capture with libpcap (the `pcap` crate) on a dedicated thread.
//!
//! Tuned for delivery without loss: a large kernel buffer (64 MiB by default; with 2 MiB,
//! `tcpdump --immediate-mode` dropped 30% at 116k pps here while 64 MiB dropped none at 186k pps)
//! and a short read timeout instead of immediate mode: the kernel hands a partly filled block
//! over after it, so packets come promptly, in batches.

use pcap::{Active, Capture};

use crate::decode::LinkType;

/// Default capture filter: TCP, and the tunnels whose inner TCP we unwrap.
pub const DEFAULT_FILTER: &str =
    "tcp or (udp and (port 4789 or port 8472 or port 6081)) or (ip proto 4) or (ip proto 47) or (ip6 proto 41)";

/// How to open the capture.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub interface: String,
    pub filter: String,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub promiscuous: bool,
    /// libpcap read timeout.
    pub timeout_ms: i32,
}

/// Why the capture could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "cannot open capture on interface {interface}: {source} (needs CAP_NET_RAW; see README)"
    )]
    Open {
        interface: String,
        source: pcap::Error,
    },
    #[error("invalid capture filter {filter:?}: {source}")]
    Filter { filter: String, source: pcap::Error },
}

/// Open the interface, apply the filter.
pub fn open(cfg: &LiveConfig) -> Result<(Capture<Active>, LinkType), LiveError> {
    let open_err = |source| LiveError::Open {
        interface: cfg.interface.clone(),
        source,
    };
    let mut cap = Capture::from_device(cfg.interface.as_str())
        .map_err(open_err)?
        .promisc(cfg.promiscuous)
        .snaplen(cfg.snaplen)
        .buffer_size(cfg.buffer_bytes)
        .timeout(cfg.timeout_ms)
        .immediate_mode(false)
        .open()
        .map_err(open_err)?;
    cap.filter(&cfg.filter, true)
        .map_err(|source| LiveError::Filter {
            filter: cfg.filter.clone(),
            source,
        })?;
    let link = LinkType(cap.get_datalink().0 as u32);
    Ok((cap, link))
}
