//! The cluster view: verdicts over every node's agent, read from Prometheus.
//!
//! Each agent counts the connections of its own node's pods in cumulative counters;
//! Prometheus (or Thanos/Mimir) keeps them across agent restarts and for days. This reads
//! them through the query API ([`http`]), counts each connection of the window once
//! ([`promql`]: the window arithmetic and the `reporter` rule), turns the series into edges
//! ([`series`]) and judges them with [`crate::verdict::evaluate_with_modes`], the one
//! implementation — with each workload's PeerAuthentication mode when agents export it
//! ([`modes`]).
//! [`command`] is `meshwatch verdicts` and `meshwatch check`; [`credentials`] reads `--ca` and
//! `--token-file` for them and for the dashboard.

pub mod command;
pub mod credentials;
mod http;
pub mod modes;
pub mod promql;
pub mod series;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::aggregate::Edge;
use crate::verdict::{self, KnownWorkload, Policy, Verdicts};

pub use http::{Access, Client, Secret, QUERY_TIMEOUT};
use promql::{Queries, Resolution};
use series::{EdgeSeries, HostedWorkload, Sample};

/// Cluster-wide verdicts over a window, and how complete their evidence is.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterReport {
    /// The window the verdicts cover.
    pub window_seconds: u64,
    /// Every edge of the window, each connection counted once.
    pub edges: Vec<Edge>,
    pub verdicts: Verdicts,
    /// Agent targets (`instance`) that were down (`up == 0`) at some time in the window:
    /// their nodes' connections of that time may be missing.
    pub agents_down: Vec<String>,
    /// An agent's capture dropped packets in the window: no verdict without a blocker is
    /// `ready`.
    pub evidence_incomplete: bool,
    /// Where the counters came from (the Prometheus URL, without credentials).
    pub source: String,
}

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid Prometheus URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}, not Prometheus' query API (is the URL right?): {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus refused a query ({error_type}): {error}\n  query: {query}")]
    Query {
        query: String,
        error_type: String,
        error: String,
    },
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("no meshwatch agent has been scraped by {url} in the last {window} (no meshwatch_build_info series): is Prometheus configured to scrape the agents?")]
    NoAgents { url: String, window: String },
    #[error("meshwatch agents are scraped but saw no connections{scope} in the last {window}")]
    NoConnections {
        window: String,
        /// ` to namespace NS` when the report was limited to one.
        scope: String,
    },
}

/// Cluster-wide verdicts of the `window` ending now, from the agents' counters in the
/// Prometheus at `url`; limited to destinations in `namespace` when given. `policy` is the
/// verdict policy; drops in the window set its `evidence_incomplete`.
pub fn from_prometheus(
    url: &str,
    window: Duration,
    policy: &Policy,
    namespace: Option<&str>,
) -> Result<ClusterReport, ClusterError> {
    from_prometheus_with(url, &Access::default(), window, policy, namespace)
}

/// [`from_prometheus`] reached with `access` (a CA, a bearer token, or no verification).
pub fn from_prometheus_with(
    url: &str,
    access: &Access,
    window: Duration,
    policy: &Policy,
    namespace: Option<&str>,
) -> Result<ClusterReport, ClusterError> {
    let client = Client::with_access(url, access)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    report(&client, window, policy, namespace, now)
}

/// [`from_prometheus`] with a client and a clock.
pub fn report(
    client: &Client,
    window: Duration,
    policy: &Policy,
    namespace: Option<&str>,
    now: u64,
) -> Result<ClusterReport, ClusterError> {
    let resolution = Resolution::of(window.as_secs());
    let queries = Queries::new(&resolution, namespace);
    let at = resolution.eval_time(now);
    let window_text =
        humantime::format_duration(Duration::from_secs(resolution.window)).to_string();
    // one cheap query first: it says whether Prometheus answers and the agents are scraped
    let agents = client.query(&queries.agents, at)?;
    if !series::any_positive(&agents) {
        return Err(ClusterError::NoAgents {
            url: client.source().to_owned(),
            window: window_text,
        });
    }
    let answers = run_all(client, &queries, at)?;
    let edges = series::edges(&answers.edges);
    if edges.is_empty() {
        return Err(ClusterError::NoConnections {
            window: window_text,
            scope: namespace
                .map(|ns| format!(" to namespace {ns}"))
                .unwrap_or_default(),
        });
    }
    let evidence_incomplete = policy.evidence_incomplete || series::any_positive(&answers.drops);
    let policy = Policy {
        evidence_incomplete,
        ..policy.clone()
    };
    let hosted = series::workloads(&answers.workloads);
    let known: Vec<KnownWorkload<'_>> = hosted
        .iter()
        .map(|w: &HostedWorkload| KnownWorkload {
            namespace: &w.namespace,
            workload: &w.workload,
            // the modes come resolved from the agents (no selector is decided here)
            labels: std::borrow::Cow::Owned(crate::peer_auth::PodLabels::Unknown),
            mesh: w.mesh,
        })
        .collect();
    // the modes when some agent watches the PeerAuthentications (else unknown, not PERMISSIVE)
    // with since when each holds (to a step, plus the margin an edge's last step needs)
    let modes = (!answers.peer_authentications.is_empty()).then(|| {
        let mut m = modes::modes(&answers.peer_authentications);
        modes::stamp_since(
            &mut m,
            &answers.peer_authentications,
            &answers.peer_authentications_first_shown,
            &answers.peer_authentications_last_shown,
            &resolution,
        );
        m
    });
    let verdicts = verdict::evaluate_with_modes(&edges, &policy, &known, modes.as_ref());
    Ok(ClusterReport {
        window_seconds: resolution.window,
        edges,
        verdicts,
        agents_down: series::instances(&answers.agents_down),
        evidence_incomplete,
        source: client.source().to_owned(),
    })
}

/// The answers of one report.
struct Answers {
    edges: EdgeSeries,
    drops: Vec<Sample>,
    agents_down: Vec<Sample>,
    workloads: Vec<Sample>,
    peer_authentications: Vec<Sample>,
    peer_authentications_first_shown: Vec<Sample>,
    peer_authentications_last_shown: Vec<Sample>,
}

/// Run the report's queries at once (each is a request of its own); the first failure, in the
/// order of the queries, is the error.
fn run_all(client: &Client, q: &Queries, at: u64) -> Result<Answers, ClusterError> {
    let texts = [
        &q.connections,
        &q.connections_first_seen,
        &q.connections_last_seen,
        &q.attempts,
        &q.attempts_first_seen,
        &q.attempts_last_seen,
        &q.drops,
        &q.agents_down,
        &q.workloads,
        &q.peer_authentications,
        &q.peer_authentications_first_shown,
        &q.peer_authentications_last_shown,
    ];
    let results: Vec<Result<Vec<Sample>, ClusterError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .iter()
            .map(|text| scope.spawn(move || client.query(text, at)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ClusterError::BadResponse {
                        url: client.source().to_owned(),
                        reason: "a query thread panicked".to_owned(),
                    })
                })
            })
            .collect()
    });
    let mut results = results.into_iter();
    let mut next = || results.next().unwrap_or_else(|| Ok(Vec::new()));
    Ok(Answers {
        edges: EdgeSeries {
            connections: next()?,
            connections_first_seen: next()?,
            connections_last_seen: next()?,
            attempts: next()?,
            attempts_first_seen: next()?,
            attempts_last_seen: next()?,
        },
        drops: next()?,
        agents_down: next()?,
        workloads: next()?,
        peer_authentications: next()?,
        peer_authentications_first_shown: next()?,
        peer_authentications_last_shown: next()?,
    })
}

/// The JSON of a report: the names of `analyze --format json` (`edges`, `verdicts`,
/// `namespaces`, `mesh`) and where the evidence came from.
#[derive(Serialize)]
struct ReportJson<'a> {
    source: &'a str,
    window_seconds: u64,
    evidence_incomplete: bool,
    agents_down: &'a [String],
    edges: &'a [Edge],
    verdicts: &'a [crate::verdict::Verdict],
    namespaces: &'a [crate::verdict::NamespaceVerdict],
    mesh: &'a crate::verdict::MeshVerdict,
}

impl Serialize for ClusterReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReportJson {
            source: &self.source,
            window_seconds: self.window_seconds,
            evidence_incomplete: self.evidence_incomplete,
            agents_down: &self.agents_down,
            edges: &self.edges,
            verdicts: &self.verdicts.workloads,
            namespaces: &self.verdicts.namespaces,
            mesh: &self.verdicts.mesh,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests;
