//! meshwatch: watch TCP connections in packets, classify them as Istio mTLS, other TLS or
//! plaintext, and tell which workloads can be switched to STRICT mTLS.
//!
//! The packet path runs one way: [`capture`] -> [`decode`] -> [`flow`] (with [`reassembly`],
//! [`tls`] and [`classify`]) -> [`aggregate`] -> [`verdict`] -> [`report`]. [`pipeline`] composes
//! the pure parts; [`analyze`] wires I/O around it. See ARCHITECTURE.md.

#[cfg(feature = "agent")]
pub mod agent;
pub mod aggregate;
pub mod analyze;
#[cfg(feature = "agent")]
pub mod api;
#[cfg(feature = "agent")]
pub mod auth;
pub mod capture;
pub mod classify;
pub mod cli;
#[cfg(feature = "agent")]
pub mod cluster;
pub mod decode;
pub mod flow;
pub mod identity;
#[cfg(feature = "agent")]
pub mod live;
#[cfg(feature = "agent")]
pub mod metrics;
pub mod peer_auth;
pub mod pipeline;
#[cfg(feature = "agent")]
pub mod privileges;
pub mod reassembly;
pub mod report;
#[cfg(feature = "agent")]
pub mod server;
pub mod sharded;
pub mod timestamp;
pub mod tls;
pub mod verdict;
#[cfg(feature = "agent")]
pub mod window;

/// Time as nanoseconds since the Unix epoch (packet timestamps; never the wall clock in the
/// pure modules).
pub type Nanos = u64;
