//! `--prometheus URL`: cluster-wide verdicts from the agents' counters, read by
//! `meshwatch::cluster::from_prometheus` (the same verdict code over PromQL results; each
//! connection counted once by the `reporter` rule). It blocks, so it runs on a blocking thread.

use std::time::Duration;

use meshwatch::cluster::{from_prometheus, ClusterReport};
use meshwatch::verdict::Policy;

use super::{now_rfc3339, SourceError};
use crate::model::{edges_from_engine, Evidence, Snapshot, SourceInfo, VerdictsView};

/// A Prometheus source.
#[derive(Debug)]
pub struct Prometheus {
    url: String,
    window: Duration,
    policy: Policy,
    namespace: Option<String>,
}

impl Prometheus {
    /// The URL is checked by the first read (`meshwatch::cluster` owns its rules: http or
    /// https, a path prefix, credentials kept out of messages).
    pub fn new(url: &str, window: Duration, policy: Policy, namespace: Option<String>) -> Self {
        Prometheus {
            url: url.to_owned(),
            window,
            policy,
            namespace,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub async fn load(&self) -> Result<Snapshot, SourceError> {
        let (url, window, policy, namespace) = (
            self.url.clone(),
            self.window,
            self.policy.clone(),
            self.namespace.clone(),
        );
        let report = tokio::task::spawn_blocking(move || {
            from_prometheus(&url, window, &policy, namespace.as_deref())
        })
        .await
        .map_err(|e| SourceError::Prometheus(format!("the query task failed: {e}")))?
        .map_err(|e| SourceError::Prometheus(e.to_string()))?;
        snapshot(&report, &self.policy, self.namespace.as_deref())
    }
}

/// The snapshot of a cluster report.
pub fn snapshot(
    r: &ClusterReport,
    policy: &Policy,
    namespace: Option<&str>,
) -> Result<Snapshot, SourceError> {
    let views = VerdictsView::from_engine(&r.verdicts)?;
    let mut incomplete_because = Vec::new();
    if r.evidence_incomplete {
        incomplete_because.push("an agent's capture dropped packets within the window".to_owned());
    }
    let evidence = Evidence {
        window_seconds: Some(r.window_seconds),
        drops_known: true,
        evidence_incomplete: r.evidence_incomplete,
        incomplete_because,
        agents_down: r.agents_down.clone(),
        min_connections: Some(policy.min_connections),
        max_unknown_ratio: Some(policy.max_unknown_ratio),
        ..Evidence::default()
    };
    let detail = match namespace {
        Some(ns) => format!("{} (namespace {ns})", r.source),
        None => r.source.clone(),
    };
    Ok(Snapshot {
        source: SourceInfo {
            kind: "prometheus",
            detail,
            live: true,
        },
        loaded_at: now_rfc3339(),
        evidence,
        edges: edges_from_engine(&r.edges)?,
        verdicts: views.verdicts,
        namespaces: views.namespaces,
        mesh: views.mesh,
    })
}
