//! The edge a connection's ends were last described as, remembered for the flow event that
//! follows. A connection is described when it is counted and again when it finishes (its
//! bytes), mostly a few packets apart; describing it (identity lookups, names cloned into an
//! edge key, the key hashed for its series) was most of what the agent added per connection.
//!
//! A fixed, direct-mapped memory ([`Recent`]: no allocation after creation, a collision only
//! forgets). An answer holds for one identity map generation and one epoch of the series
//! cache, both part of the key: a changed map or a cache that started over is a miss, and a
//! miss only means describing again. Describing is a function of exactly these inputs, so the
//! memory never changes what is counted.

use crate::classify::{Mesh, Security};
use crate::flow::recent::Recent;
use crate::flow::{Connection, Endpoint};
use crate::metrics::Reporter;

use std::net::IpAddr;

/// Slots of the memory: 1,024 answers of 80 bytes (80 KiB) fit a core's L2 cache, and a
/// connection's two events are mostly a few packets apart (4,096 measured the same, within
/// this machine's noise).
const SLOTS: usize = 1024;

/// What describing a connection depends on, beside the identity map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ends {
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    alt_dst: Option<Endpoint>,
    kube_probe: bool,
    security: Security,
    mesh: Mesh,
}

impl Ends {
    pub fn of(c: &Connection) -> Self {
        Ends {
            src: c.src,
            dst: c.dst,
            dport: c.dport,
            alt_dst: c.alt_dst,
            kube_probe: c.kube_probe,
            security: c.security,
            mesh: c.mesh,
        }
    }
}

/// How a connection was described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Described {
    /// Another agent reports it.
    NotOurs,
    /// Counted on the series cache's edge at `at`, as `reporter`.
    Edge { at: u32, reporter: Reporter },
}

impl Described {
    /// The series-cache position and reporter, if this agent reports it.
    pub fn edge(self) -> Option<(u32, Reporter)> {
        match self {
            Described::Edge { at, reporter } => Some((at, reporter)),
            Described::NotOurs => None,
        }
    }
}

/// (ends, identity map generation, series cache epoch) -> how they were described.
#[derive(Debug)]
pub struct Memo(Recent<(Ends, u64, u32), Described>);

impl Default for Memo {
    fn default() -> Self {
        Memo(Recent::new(SLOTS, 0x6564_6765))
    }
}

impl Memo {
    pub fn get(&self, ends: &Ends, generation: u64, epoch: u32) -> Option<Described> {
        self.0.get(&(*ends, generation, epoch))
    }

    pub fn insert(&mut self, ends: Ends, generation: u64, epoch: u32, described: Described) {
        self.0.insert((ends, generation, epoch), described);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(src: &str, alt: Option<&str>) -> Ends {
        Ends {
            src: src.parse().expect("an address"),
            dst: "10.0.0.9".parse().expect("an address"),
            dport: 8080,
            alt_dst: alt.map(|a| (a.parse().expect("an address"), 80)),
            kube_probe: false,
            security: Security::Plaintext,
            mesh: Mesh::None,
        }
    }

    #[test]
    fn an_answer_holds_for_its_ends_generation_and_epoch_only() {
        let mut m = Memo::default();
        let d = Described::Edge {
            at: 7,
            reporter: Reporter::destination,
        };
        m.insert(ends("10.0.0.1", None), 3, 1, d);
        assert_eq!(m.get(&ends("10.0.0.1", None), 3, 1), Some(d));
        assert_eq!(m.get(&ends("10.0.0.1", None), 4, 1), None, "a new map");
        assert_eq!(m.get(&ends("10.0.0.1", None), 3, 2), None, "a new epoch");
        assert_eq!(m.get(&ends("10.0.0.2", None), 3, 1), None, "another client");
        assert_eq!(
            m.get(&ends("10.0.0.1", Some("10.0.0.5")), 3, 1),
            None,
            "another view's destination"
        );
        m.insert(ends("10.0.0.2", None), 3, 1, Described::NotOurs);
        assert_eq!(
            m.get(&ends("10.0.0.2", None), 3, 1),
            Some(Described::NotOurs)
        );
    }
}
