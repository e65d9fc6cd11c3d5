//! Where the verdicts come from, one per run: a report file (read once), the agents' JSON API
//! (merged and judged here with `meshwatch::verdict::evaluate`), or Prometheus (through
//! `meshwatch::cluster`). Each load yields a [`Snapshot`].

pub mod access;
pub mod agents;
pub mod http;
pub mod prometheus;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use meshwatch::verdict::Policy;

use crate::model::{BadTimestamp, ContractError, Snapshot, SourceInfo};

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the report {path}: {reason}")]
    ReportUnreadable { path: PathBuf, reason: String },
    #[error("{path} is not the output of `meshwatch analyze --format json`: {reason}")]
    ReportInvalid { path: PathBuf, reason: String },
    #[error("no agent answered: {0}")]
    NoAgent(String),
    #[error("--agent {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0}")]
    Flag(String),
    #[error("--ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("--token-file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("prometheus: {0}")]
    Prometheus(String),
    #[error(transparent)]
    Timestamp(#[from] BadTimestamp),
    #[error(transparent)]
    Contract(#[from] ContractError),
}

/// A configured source.
#[derive(Debug)]
pub enum Source {
    /// A report and the exemptions `analyze` was run with (to explain them).
    Report(PathBuf, Policy),
    Agents(agents::Agents),
    Prometheus(prometheus::Prometheus),
}

impl Source {
    /// The source the flags name (checked: URLs parse).
    pub fn from_args(args: &crate::cli::Args) -> Result<Self, SourceError> {
        let timeout = Duration::from_secs(args.timeout);
        let policy = args.verdict.policy();
        if args.namespace.is_some() && args.prometheus.is_none() {
            return Err(SourceError::Flag(
                "--namespace works with --prometheus only".to_owned(),
            ));
        }
        if let Some(path) = &args.report {
            if args.ca.is_some() || args.token_file.is_some() || args.insecure_skip_verify {
                return Err(SourceError::Flag(
                    "--ca, --token-file and --insecure-skip-verify work with --agent or --prometheus".to_owned(),
                ));
            }
            return Ok(Source::Report(path.clone(), policy));
        }
        let access = access::Access::from_flags(
            args.ca.as_deref(),
            args.token_file.as_deref(),
            args.insecure_skip_verify,
        )?;
        if access.insecure_skip_verify() {
            tracing::warn!(
                "--insecure-skip-verify: any server certificate is accepted; whoever sits on the path can read the token and forge the answers (labs only)"
            );
        }
        if let Some(url) = &args.prometheus {
            Ok(Source::Prometheus(
                prometheus::Prometheus::new(url, args.window, policy, args.namespace.clone())
                    .with_access(access)?,
            ))
        } else {
            Ok(Source::Agents(agents::Agents::with_access(
                &args.agent,
                policy,
                timeout,
                access,
            )?))
        }
    }

    /// Whether it changes while the dashboard runs (pages then reload).
    pub fn is_live(&self) -> bool {
        !matches!(self, Source::Report(..))
    }

    /// The policy the dashboard judges with (for exemptions it explains).
    pub fn policy(&self) -> Policy {
        match self {
            Source::Report(_, p) => p.clone(),
            Source::Agents(a) => a.policy().clone(),
            Source::Prometheus(p) => p.policy().clone(),
        }
    }

    /// What it is, for the pages' frame.
    pub fn info(&self) -> SourceInfo {
        let (kind, detail) = match self {
            Source::Report(path, _) => ("report", path.display().to_string()),
            Source::Agents(a) => ("agents", a.detail()),
            Source::Prometheus(p) => ("prometheus", p.url().to_owned()),
        };
        SourceInfo {
            kind,
            detail,
            live: self.is_live(),
        }
    }

    /// Read it now.
    pub async fn load(&self) -> Result<Snapshot, SourceError> {
        match self {
            Source::Report(path, _) => report::load(path),
            Source::Agents(a) => a.load().await,
            Source::Prometheus(p) => p.load().await,
        }
    }
}

/// The wall clock as the reports print time.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
