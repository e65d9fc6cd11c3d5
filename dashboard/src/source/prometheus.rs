//! `--prometheus URL`: cluster-wide verdicts from the agents' counters, read by
//! `meshwatch::cluster::from_prometheus` (the same verdict code over PromQL results; each
//! connection counted once by the `reporter` rule). It blocks, so it runs on a blocking thread.
//! Behind TLS and authentication (kube-rbac-proxy, an ingress) it is reached with the same
//! `--ca`/`--token-file`/`--insecure-skip-verify` as the agents; the token is read at each load.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwatch::cluster::credentials::{credential_hint, token_over_plain_http};
use meshwatch::cluster::{self, ClusterError, ClusterReport, Secret};
use meshwatch::verdict::Policy;

use super::access::Access;
use super::{now_rfc3339, SourceError};
use crate::model::{edges_from_engine, Evidence, Snapshot, SourceInfo, VerdictsView};

/// A Prometheus source.
#[derive(Debug)]
pub struct Prometheus {
    url: String,
    window: Duration,
    policy: Policy,
    namespace: Option<String>,
    access: Access,
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
            access: Access::default(),
        }
    }

    /// Reached with `access` (a token only over HTTPS).
    pub fn with_access(self, access: Access) -> Result<Self, SourceError> {
        if let Some(reason) = access
            .has_token()
            .then(|| token_over_plain_http(&self.url))
            .flatten()
        {
            return Err(SourceError::Flag(format!(
                "--prometheus {}: {reason}",
                self.url
            )));
        }
        Ok(Prometheus { access, ..self })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub async fn load(&self) -> Result<Snapshot, SourceError> {
        let access = cluster::Access {
            ca: self.access.ca_der(),
            insecure_skip_verify: self.access.insecure_skip_verify(),
            // read at each load: a projected token is rotated by the kubelet
            bearer: self.access.token()?.map(Secret),
        };
        let with_token = access.bearer.is_some();
        let (url, window, policy, namespace) = (
            self.url.clone(),
            self.window,
            self.policy.clone(),
            self.namespace.clone(),
        );
        let report = tokio::task::spawn_blocking(move || {
            let client = cluster::Client::with_access(&url, &access)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            cluster::report(&client, window, &policy, namespace.as_deref(), now)
        })
        .await
        .map_err(|e| SourceError::Prometheus(format!("the query task failed: {e}")))?
        .map_err(|e| SourceError::Prometheus(explain(&e, with_token)))?;
        snapshot(&report, &self.policy, self.namespace.as_deref())
    }
}

/// The cluster reader's error, with what a refused credential means for the flags (the
/// hint `meshwatch verdicts|check` gives too).
fn explain(e: &ClusterError, with_token: bool) -> String {
    format!("{e}{}", credential_hint(e, with_token))
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
