//! The metric series of the edges the capture thread counts, kept at hand: a connection's labels
//! (a handful of strings) are built, and its counters looked up in their families (a lock and a
//! hash of those strings), once per distinct edge instead of once per flow event. Owned by the
//! capture thread: no lock.
//!
//! A cached counter is the family's own series (prometheus-client counters share their value),
//! so counting through it counts in the registry — as long as nothing removes series from the
//! connection families, which nothing does.

use hashbrown::HashTable;
use prometheus_client::metrics::counter::Counter;

use crate::aggregate::EdgeKey;
use crate::metrics::{
    AttemptLabels, BytesLabels, ConnectionLabels, ConnectionMetrics, Direction, Reporter,
};
use crate::window::HashedKey;

/// Distinct edges whose series are kept; at the bound the cache starts over (the series stay in
/// the registry, they are only looked up again).
pub const MAX_CACHED_EDGES: usize = 16_384;

/// The series of one edge as one reporter counts it; counters are looked up when first used,
/// so a series exists in the registry only once it was counted (as without the cache).
#[derive(Debug)]
pub struct Series {
    labels: ConnectionLabels,
    connections: Option<Counter>,
    attempts: Option<Counter>,
    bytes: Option<[Counter; 2]>,
}

impl Series {
    fn new(labels: ConnectionLabels) -> Self {
        Series {
            labels,
            connections: None,
            attempts: None,
            bytes: None,
        }
    }

    /// `meshwatch_connections_total` of this edge.
    pub fn connections(&mut self, m: &ConnectionMetrics) -> &Counter {
        let labels = &self.labels;
        self.connections
            .get_or_insert_with(|| m.connections.get_or_create(labels).clone())
    }

    /// `meshwatch_connection_attempts_total` of this edge.
    pub fn attempts(&mut self, m: &ConnectionMetrics) -> &Counter {
        let labels = &self.labels;
        self.attempts.get_or_insert_with(|| {
            m.attempts
                .get_or_create(&AttemptLabels::from(labels))
                .clone()
        })
    }

    /// `meshwatch_bytes_total` of this edge: to the server, to the client.
    pub fn bytes(&mut self, m: &ConnectionMetrics) -> &[Counter; 2] {
        let labels = &self.labels;
        self.bytes.get_or_insert_with(|| {
            [Direction::to_server, Direction::to_client].map(|direction| {
                m.bytes
                    .get_or_create(&BytesLabels {
                        connection: labels.clone(),
                        direction,
                    })
                    .clone()
            })
        })
    }
}

/// An edge and its series, per reporter.
#[derive(Debug)]
struct Cached {
    key: HashedKey,
    series: [Option<Series>; 2],
}

/// Edge -> its series, per reporter. An edge is named by its position while the cache's epoch
/// lasts (the recorder's memo of described connections keeps positions, not keys).
#[derive(Debug, Default)]
pub struct SeriesCache {
    /// Positions in `edges`, by their key's hash (the key is kept once, in `edges`).
    index: HashTable<u32>,
    edges: Vec<Cached>,
    /// Changes each time the cache starts over: a position of another epoch names nothing.
    epoch: u32,
}

impl SeriesCache {
    /// The position of `key`, kept from now on if new (at the bound the cache starts over
    /// first, in a new epoch).
    pub fn position(&mut self, key: EdgeKey) -> u32 {
        let key = HashedKey::new(key);
        let hash = key.hash();
        let edges = &self.edges;
        if let Some(&at) = self.index.find(hash, |&at| edges[at as usize].key == key) {
            return at;
        }
        if self.edges.len() >= MAX_CACHED_EDGES {
            self.index.clear();
            self.edges.clear();
            self.epoch = self.epoch.wrapping_add(1);
        }
        let at = self.edges.len() as u32;
        let edges = &self.edges;
        self.index
            .insert_unique(hash, at, |&i| edges[i as usize].key.hash());
        self.edges.push(Cached {
            key,
            series: [None, None],
        });
        at
    }

    /// The key at `at`, if held (debug checks).
    pub fn key(&self, at: u32) -> Option<&EdgeKey> {
        self.edges.get(at as usize).map(|c| c.key.key())
    }

    /// The epoch positions are valid in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The edge at `at` and its series as `reporter` counts it; `labels` names the series when
    /// it is not cached yet. `None` for a position not held (of another epoch).
    pub fn series(
        &mut self,
        at: u32,
        reporter: Reporter,
        labels: impl FnOnce(&EdgeKey) -> ConnectionLabels,
    ) -> Option<(&HashedKey, &mut Series)> {
        let cached = self.edges.get_mut(at as usize)?;
        let slot = &mut cached.series[match reporter {
            Reporter::destination => 0,
            Reporter::source => 1,
        }];
        let series = slot.get_or_insert_with(|| Series::new(labels(cached.key.key())));
        Some((&cached.key, series))
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::aggregate::{Origin, Peer};
    use crate::classify::{Mesh, Security};
    use crate::metrics::{encode, Metrics};

    fn key(port: u16) -> EdgeKey {
        let p = |w: &str| Peer {
            namespace: Some("ns".into()),
            workload: Some(w.into()),
            ..Peer::default()
        };
        EdgeKey {
            destination: p("httpbin"),
            port,
            source: p("sleep"),
            security: Security::Plaintext,
            mesh: Mesh::None,
            origin: Origin::Direct,
        }
    }

    fn labels(reporter: Reporter, port: u16) -> ConnectionLabels {
        ConnectionLabels {
            reporter,
            source_workload: "sleep".into(),
            source_namespace: "ns".into(),
            destination_workload: "httpbin".into(),
            destination_namespace: "ns".into(),
            destination_port: port.to_string(),
            security: Security::Plaintext,
            mesh: Mesh::None,
            origin: Origin::Direct,
        }
    }

    /// The value of the one line of `name` whose labels include all of `with`.
    fn value(text: &str, name: &str, with: &[&str]) -> Option<u64> {
        let mut found = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && with.iter().all(|w| l.contains(w)));
        let line = found.next()?;
        assert!(
            found.next().is_none(),
            "one series of {name} {with:?}:\n{text}"
        );
        line.rsplit(' ').next()?.parse().ok()
    }

    #[test]
    fn counting_through_the_cache_counts_in_the_registry_also_after_it_starts_over() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let m = &metrics.connections;
        let mut cache = SeriesCache::default();
        let mut built = 0;
        let mut count = |cache: &mut SeriesCache, port: u16, reporter: Reporter| {
            let at = cache.position(key(port));
            let (_, series) = cache
                .series(at, reporter, |_| {
                    built += 1;
                    labels(reporter, port)
                })
                .expect("a position just given");
            series.connections(m).inc();
            series.attempts(m).inc_by(2);
            let [to_server, to_client] = series.bytes(m);
            to_server.inc_by(100);
            to_client.inc_by(1000);
        };
        count(&mut cache, 8000, Reporter::destination);
        count(&mut cache, 8000, Reporter::destination);
        count(&mut cache, 8000, Reporter::source);
        // more edges than the cache keeps: it starts over, port 8000 is looked up again
        let epoch = cache.epoch();
        for port in 20_000..20_000 + MAX_CACHED_EDGES as u16 {
            let at = cache.position(key(port));
            cache.series(at, Reporter::destination, |_| {
                labels(Reporter::destination, port)
            });
        }
        assert_ne!(cache.epoch(), epoch, "started over, in a new epoch");
        count(&mut cache, 8000, Reporter::destination);
        assert_eq!(
            built, 3,
            "labels built once per edge and reporter, and after the restart"
        );
        let text = encode(&registry);
        let dst = ["reporter=\"destination\"", "destination_port=\"8000\""];
        let conns = "meshwatch_connections_total";
        assert_eq!(value(&text, conns, &dst), Some(3), "{text}");
        let src = ["reporter=\"source\"", "destination_port=\"8000\""];
        assert_eq!(value(&text, conns, &src), Some(1));
        assert_eq!(
            value(&text, "meshwatch_connection_attempts_total", &dst),
            Some(6)
        );
        let bytes = "meshwatch_bytes_total";
        let to_server = [dst[0], dst[1], "direction=\"to_server\""];
        let to_client = [dst[0], dst[1], "direction=\"to_client\""];
        assert_eq!(value(&text, bytes, &to_server), Some(300));
        assert_eq!(value(&text, bytes, &to_client), Some(3000));
        // series only for what was counted: the other ports were looked up, never counted
        assert_eq!(value(&text, conns, &["destination_port=\"20000\""]), None);
    }
}
