//! Source × destination: the share of each pair's judged connections that were plaintext
//! (rounded up: a pair with any plaintext never shows 0 %), for the heat map.

use std::collections::BTreeMap;

use meshwatch::verdict::Policy;
use serde::Serialize;

use super::{destination_href, exemption, percent_up};
use crate::model::{Counts, PeerView, Snapshot};

/// Rows and columns shown at most (the busiest); the rest are counted.
pub const MAX_AXIS: usize = 40;

/// A row or column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Axis {
    pub label: String,
    pub href: Option<String>,
    pub connections: u64,
}

/// One pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Index into `sources`.
    pub source: usize,
    /// Index into `destinations`.
    pub destination: usize,
    pub counts: Counts,
    /// Plaintext share, percent, rounded up.
    pub plaintext_percent: u64,
}

/// `/matrix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub sources: Vec<Axis>,
    pub destinations: Vec<Axis>,
    pub cells: Vec<Cell>,
    pub sources_not_shown: usize,
    pub destinations_not_shown: usize,
    /// Connections on exempt ports or from exempt sources, left out.
    pub exempt_connections: u64,
}

/// The busiest `MAX_AXIS` peers, in name order.
fn axis(totals: BTreeMap<PeerView, u64>, known: &[&PeerView]) -> (Vec<(PeerView, Axis)>, usize) {
    let mut all: Vec<(PeerView, u64)> = totals.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let hidden = all.len().saturating_sub(MAX_AXIS);
    all.truncate(MAX_AXIS);
    let mut shown: Vec<(PeerView, Axis)> = all
        .into_iter()
        .map(|(p, n)| {
            let href = known.contains(&&p).then(|| destination_href(&p)).flatten();
            let a = Axis {
                label: p.display(),
                href,
                connections: n,
            };
            (p, a)
        })
        .collect();
    shown.sort_by(|a, b| a.1.label.cmp(&b.1.label).then_with(|| a.0.cmp(&b.0)));
    (shown, hidden)
}

/// The matrix of the judged connections (exempt traffic and attempts left out; nodes and folded
/// stand-ins are never destinations).
pub fn matrix(s: &Snapshot, policy: &Policy) -> Matrix {
    let mut pairs: BTreeMap<(PeerView, PeerView), Counts> = BTreeMap::new();
    let mut exempt_connections = 0;
    for e in s.edges.iter().filter(|e| e.connections > 0) {
        if e.destination.is_node() || e.destination.is_folded() {
            continue;
        }
        if exemption(e, policy).is_some() {
            exempt_connections += e.connections;
            continue;
        }
        pairs
            .entry((e.source.clone(), e.destination.clone()))
            .or_default()
            .add(e.security, e.connections);
    }
    let mut by_source: BTreeMap<PeerView, u64> = BTreeMap::new();
    let mut by_destination: BTreeMap<PeerView, u64> = BTreeMap::new();
    for ((src, dst), c) in &pairs {
        *by_source.entry(src.clone()).or_default() += c.total();
        *by_destination.entry(dst.clone()).or_default() += c.total();
    }
    let known: Vec<&PeerView> = s.verdicts.iter().map(|v| &v.destination).collect();
    let (sources, sources_not_shown) = axis(by_source, &known);
    let (destinations, destinations_not_shown) = axis(by_destination, &known);
    let index = |list: &[(PeerView, Axis)], p: &PeerView| list.iter().position(|(q, _)| q == p);
    let cells = pairs
        .iter()
        .filter_map(|((src, dst), c)| {
            Some(Cell {
                source: index(&sources, src)?,
                destination: index(&destinations, dst)?,
                counts: *c,
                plaintext_percent: percent_up(c.plaintext, c.total()).unwrap_or(0),
            })
        })
        .collect();
    Matrix {
        sources: sources.into_iter().map(|(_, a)| a).collect(),
        destinations: destinations.into_iter().map(|(_, a)| a).collect(),
        cells,
        sources_not_shown,
        destinations_not_shown,
        exempt_connections,
    }
}
