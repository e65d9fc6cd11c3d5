//! Prometheus' query API answers, and series labels turned into edges. PURE: JSON text in,
//! samples, edges and workloads out.
//!
//! Label values are the agents' (`meshwatch::metrics`): an identity is a `namespace` and
//! `workload`; `unknown`/`unknown` is an address without one (the metric never carries IPs, so
//! every unknown address is one peer here), `node`/NAME a node; a destination port is its
//! number, or `other` past the per-workload bound (port 0, as `analyze` folds ports).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::aggregate::{Edge, EdgeKey, EdgeStats, Origin, Peer, OTHER_PORTS};
use crate::classify::{Mesh, Security};
use crate::Nanos;

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value as a count (the growth expressions give whole numbers; a non-finite or
    /// negative value counts nothing).
    fn count(&self) -> u64 {
        if self.value.is_finite() && self.value > 0.0 {
            self.value.round() as u64
        } else {
            0
        }
    }

    /// The value as a time (seconds since the epoch) in nanoseconds.
    fn nanos(&self) -> Option<Nanos> {
        (self.value.is_finite() && self.value >= 0.0).then(|| (self.value * 1e9).round() as Nanos)
    }
}

/// What an answer of `/api/v1/query` says.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Vector(Vec<Sample>),
    /// `status: error`: Prometheus' `errorType` and `error`.
    Error {
        error_type: String,
        error: String,
    },
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// Parse an answer of `/api/v1/query`; `Err` says why it is not one (an instant vector or
/// an error).
pub fn parse_answer(body: &str) -> Result<Answer, String> {
    let env: Envelope =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus API answer ({e})"))?;
    match env.status.as_str() {
        "success" => {}
        "error" => {
            return Ok(Answer::Error {
                error_type: env.error_type.unwrap_or_default(),
                error: env.error.unwrap_or_default(),
            })
        }
        other => return Err(format!("unknown status `{other}`")),
    }
    let data = env.data.ok_or("a success without data")?;
    if data.result_type != "vector" {
        return Err(format!(
            "a {} where an instant vector was asked for",
            data.result_type
        ));
    }
    let samples: Vec<VectorSample> =
        serde_json::from_value(data.result).map_err(|e| format!("a malformed vector ({e})"))?;
    Ok(Answer::Vector(
        samples
            .into_iter()
            .map(|s| Sample {
                labels: s.metric,
                // "NaN", "+Inf", "-Inf" parse too; they count nothing
                value: s.value.1.parse().unwrap_or(f64::NAN),
            })
            .collect(),
    ))
}

/// A peer from a series' `*_namespace` and `*_workload` labels.
pub fn peer_of(namespace: Option<&str>, workload: Option<&str>) -> Peer {
    match (namespace, workload) {
        (Some("node"), Some(name)) => Peer {
            node: Some(name.to_owned()),
            ..Peer::default()
        },
        (Some(ns), Some(w)) if ns != "unknown" => Peer {
            namespace: Some(ns.to_owned()),
            workload: Some(w.to_owned()),
            ..Peer::default()
        },
        // `unknown`, or a label missing: an address without identity (never an IP here)
        _ => Peer::default(),
    }
}

/// A destination port label: its number, else (`other`, the agents' fold past their port
/// bound) [`OTHER_PORTS`] — a connection is never dropped for its port label.
pub fn port_of(label: Option<&str>) -> u16 {
    label.and_then(|p| p.parse().ok()).unwrap_or(OTHER_PORTS)
}

/// A `security` label; a value this version does not know is `unknown` (it can neither block
/// nor make a destination ready).
pub fn security_of(label: Option<&str>) -> Security {
    Security::ALL
        .into_iter()
        .find(|s| Some(s.as_str()) == label)
        .unwrap_or(Security::Unknown)
}

/// A `mesh` label; anything else is `none`.
pub fn mesh_of(label: Option<&str>) -> Mesh {
    [Mesh::Sidecar, Mesh::Ambient, Mesh::None]
        .into_iter()
        .find(|m| Some(m.as_str()) == label)
        .unwrap_or(Mesh::None)
}

/// An `origin` label: `kubelet_probe`, `nodeport`; anything else (`direct`, or none: agents
/// before the label) is `direct`.
pub fn origin_of(label: Option<&str>) -> Origin {
    match label {
        Some("kubelet_probe") => Origin::KubeletProbe,
        Some("nodeport") => Origin::Nodeport,
        _ => Origin::Direct,
    }
}

/// The edge a series stands for. An attempt carries no payload, so no class: its edge is
/// `unknown` and `none`, as `analyze` and the agent key attempts.
fn key_of(s: &Sample, attempt: bool) -> EdgeKey {
    let (security, mesh, origin) = if attempt {
        (Security::Unknown, Mesh::None, Origin::Direct)
    } else {
        (
            security_of(s.label("security")),
            mesh_of(s.label("mesh")),
            origin_of(s.label("origin")),
        )
    };
    EdgeKey {
        destination: peer_of(
            s.label("destination_namespace"),
            s.label("destination_workload"),
        ),
        port: port_of(s.label("destination_port")),
        source: peer_of(s.label("source_namespace"), s.label("source_workload")),
        security,
        mesh,
        origin,
    }
}

/// The answers that make the edges: counts and the times of the first and last growth, for
/// connections and for attempts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeSeries {
    pub connections: Vec<Sample>,
    pub connections_first_seen: Vec<Sample>,
    pub connections_last_seen: Vec<Sample>,
    pub attempts: Vec<Sample>,
    pub attempts_first_seen: Vec<Sample>,
    pub attempts_last_seen: Vec<Sample>,
}

/// The edges of the window, ordered like `analyze`'s (destination, port, source, security);
/// edges that gained nothing in the window are left out.
pub fn edges(series: &EdgeSeries) -> Vec<Edge> {
    let mut stats: BTreeMap<EdgeKey, EdgeStats> = BTreeMap::new();
    let mut seen: HashMap<EdgeKey, (Nanos, Nanos)> = HashMap::new();
    for (samples, attempt) in [(&series.connections, false), (&series.attempts, true)] {
        for s in samples {
            let n = s.count();
            let delta = if attempt {
                EdgeStats {
                    attempts: n,
                    ..EdgeStats::default()
                }
            } else {
                EdgeStats {
                    connections: n,
                    ..EdgeStats::default()
                }
            };
            let e = stats.entry(key_of(s, attempt)).or_default();
            e.connections += delta.connections;
            e.attempts += delta.attempts;
        }
    }
    let times = [
        (&series.connections_first_seen, false, true),
        (&series.connections_last_seen, false, false),
        (&series.attempts_first_seen, true, true),
        (&series.attempts_last_seen, true, false),
    ];
    for (samples, attempt, first) in times {
        for s in samples {
            let Some(t) = s.nanos() else { continue };
            let span = seen.entry(key_of(s, attempt)).or_insert((t, t));
            if first {
                span.0 = span.0.min(t);
            } else {
                span.1 = span.1.max(t);
            }
        }
    }
    stats
        .into_iter()
        .filter(|(_, s)| s.connections + s.attempts > 0)
        .map(|(key, mut s)| {
            if let Some(&(first, last)) = seen.get(&key) {
                s.first_seen = first.min(last);
                s.last_seen = last;
                // counter growth marks a connection's start, so the latest one is its last start
                s.last_started = last;
            }
            key.edge(s)
        })
        .collect()
}

/// A workload an agent hosts, from `meshwatch_workload_info`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostedWorkload {
    pub namespace: String,
    pub workload: String,
    /// Its data plane when the agents agree on it (a rollout adding a sidecar shows both:
    /// then unknown, judged as usual).
    pub mesh: Option<Mesh>,
}

/// The workloads of `meshwatch_workload_info` samples (labels `namespace`, `workload`,
/// `mesh`: `sidecar`, `ambient`, `none`, or `unknown`).
pub fn workloads(samples: &[Sample]) -> Vec<HostedWorkload> {
    let mut by_name: BTreeMap<(String, String), Vec<Option<Mesh>>> = BTreeMap::new();
    for s in samples {
        let (Some(ns), Some(w)) = (s.label("namespace"), s.label("workload")) else {
            continue;
        };
        let mesh = match s.label("mesh") {
            Some("sidecar") => Some(Mesh::Sidecar),
            Some("ambient") => Some(Mesh::Ambient),
            Some("none") => Some(Mesh::None),
            _ => None,
        };
        by_name
            .entry((ns.to_owned(), w.to_owned()))
            .or_default()
            .push(mesh);
    }
    by_name
        .into_iter()
        .map(|((namespace, workload), meshes)| {
            let first = meshes.first().copied().flatten();
            let agree = meshes.iter().all(|m| *m == first);
            HostedWorkload {
                namespace,
                workload,
                mesh: if agree { first } else { None },
            }
        })
        .collect()
}

/// The `instance` labels of samples, sorted, without repeats.
pub fn instances(samples: &[Sample]) -> Vec<String> {
    let mut out: Vec<String> = samples
        .iter()
        .map(|s| {
            s.label("instance")
                .unwrap_or("(no instance label)")
                .to_owned()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a vector holds a positive value (a `count(...)` answer).
pub fn any_positive(samples: &[Sample]) -> bool {
    samples.iter().any(|s| s.value > 0.0)
}
