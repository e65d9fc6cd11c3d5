//! Least privilege for the agent: once the capture socket is open, keep CAP_NET_RAW only (in the
//! effective and permitted sets) and drop every other capability, from the bounding set too,
//! and clear the inheritable and ambient sets. Capabilities are per thread on Linux, so this runs
//! before any other thread exists: every thread started later inherits the reduced sets.

use caps::{CapSet, Capability, CapsHashSet};

/// What remained after dropping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining {
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
}

/// Drop to CAP_NET_RAW. Removing capabilities is always allowed; the bounding set needs
/// CAP_SETPCAP, which a root process has and an already-unprivileged one does not need.
pub fn keep_only_net_raw() -> Result<Remaining, caps::errors::CapsError> {
    let keep: CapsHashSet = [Capability::CAP_NET_RAW].into_iter().collect();
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if cap != Capability::CAP_NET_RAW {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let permitted = caps::read(None, CapSet::Permitted)?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(Remaining {
        effective: caps::read(None, CapSet::Effective)?,
        permitted: caps::read(None, CapSet::Permitted)?,
    })
}
