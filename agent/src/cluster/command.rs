//! `meshwatch verdicts` and `meshwatch check`: a [`ClusterReport`] printed, or judged as a
//! gate.
//!
//! `check`'s exit status: 0 ready, 1 blocked or broken clients (already STRICT, and clients
//! still send plaintext: they are refused now), 3 insufficient, 2 the check could not run. A
//! destination outside the mesh (`not_in_mesh`) passes: STRICT has no effect on it, so applying
//! the policy breaks nothing (the note on stderr says it is not protected either). No
//! connection to the scope in the window is insufficient evidence (3), not a failure of the
//! check. Agents that were down in the window are a warning, not a verdict: a failed scrape
//! loses nothing (the counters are cumulative); dropped packets are, through the policy.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use super::credentials::{credential_hint, read_ca_file, read_token_file, token_over_plain_http};
use super::{from_prometheus_with, Access, ClusterError, ClusterReport, Secret};
use crate::cli::{CheckArgs, Format, PrometheusArgs, VerdictsArgs, When};
use crate::report::table::{self, Style};
use crate::report::{format_time, Report, Summary};
use crate::verdict::{Readiness, Verdict};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Scope(String),
    /// A credential flag that cannot work (`--ca`, `--token-file`, a token over http://).
    #[error("{0}")]
    Access(String),
    /// Prometheus refused the credentials (or their absence): what to fix.
    #[error("{error}{hint}")]
    Refused {
        error: ClusterError,
        hint: &'static str,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// The exit status of `check` for a verdict.
pub fn exit_code(verdict: Readiness) -> u8 {
    match verdict {
        Readiness::Ready | Readiness::NotInMesh => 0,
        Readiness::Blocked | Readiness::BrokenClients => 1,
        Readiness::Insufficient => 3,
    }
}

/// The exit status of `check` for its outcome: a verdict's, 3 for no connection in the
/// window, 2 when the check could not run.
pub fn check_exit_code(outcome: &Result<Readiness, CommandError>) -> u8 {
    match outcome {
        Ok(v) => exit_code(*v),
        Err(CommandError::Cluster(ClusterError::NoConnections { .. })) => 3,
        Err(_) => 2,
    }
}

/// How to reach the Prometheus of `args`: `--ca` read and checked, the `--token-file` token
/// (only over https://), `--insecure-skip-verify`. Each error names the flag, file or URL.
pub fn access(args: &PrometheusArgs) -> Result<Access, CommandError> {
    let ca = match &args.ca {
        Some(path) => Some(
            read_ca_file(path)
                .map_err(|reason| {
                    CommandError::Access(format!("--ca {}: {reason}", path.display()))
                })?
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
        ),
        None => None,
    };
    let bearer = match &args.token_file {
        Some(path) => {
            if let Some(reason) = token_over_plain_http(&args.prometheus) {
                return Err(CommandError::Access(format!(
                    "--prometheus {}: {reason}",
                    args.prometheus.trim()
                )));
            }
            let token = read_token_file(path).map_err(|reason| {
                CommandError::Access(format!("--token-file {}: {reason}", path.display()))
            })?;
            Some(Secret(token))
        }
        None => None,
    };
    Ok(Access {
        ca,
        insecure_skip_verify: args.insecure_skip_verify,
        bearer,
    })
}

/// The report of `args`' Prometheus; a refusal says which credential flag to fix.
fn report_of(src: &PrometheusArgs) -> Result<ClusterReport, CommandError> {
    let access = access(src)?;
    let with_token = access.bearer.is_some();
    from_prometheus_with(
        &src.prometheus,
        &access,
        src.window,
        &src.verdict.policy(),
        src.namespace.as_deref(),
    )
    .map_err(|error| match credential_hint(&error, with_token) {
        "" => CommandError::Cluster(error),
        hint => CommandError::Refused { error, hint },
    })
}

/// `meshwatch verdicts`: the report as a table or JSON on stdout, warnings on stderr.
pub fn run_verdicts(args: &VerdictsArgs) -> Result<(), CommandError> {
    let report = report_of(&args.source)?;
    warn(&report);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        Format::Table => {
            let color = match args.color {
                When::Always => true,
                When::Never => false,
                When::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            render_table(&report, Style { color }, &mut out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The report as `analyze` prints its table (one renderer), under the cluster's own summary
/// line.
pub fn render_table(report: &ClusterReport, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let connections: u64 = report.edges.iter().map(|e| e.stats.connections).sum();
    let attempts: u64 = report.edges.iter().map(|e| e.stats.attempts).sum();
    writeln!(
        out,
        "CLUSTER {} over the last {}: {} connections, {} attempts, {} edges",
        report.source,
        window(report.window_seconds),
        connections,
        attempts,
        report.edges.len()
    )?;
    let as_report = Report::new(
        Summary::new(
            &[],
            &Default::default(),
            Default::default(),
            Default::default(),
        ),
        None,
        report.edges.clone(),
        report.verdicts.clone(),
    );
    let mut text = Vec::new();
    table::render(&as_report, style, &mut text)?;
    // the table starts with the capture summary (packets, decode errors), which a cluster
    // report does not have: skip it, keep the rest (edges, verdicts, policies)
    let text = String::from_utf8_lossy(&text);
    let rest = match text.split_once('\n') {
        Some((first, rest)) if first.contains("SUMMARY") => rest,
        _ => &text,
    };
    out.write_all(rest.as_bytes())
}

/// `meshwatch check`: the verdict of the scope; the policy to apply on stdout when it passes.
pub fn run_check(args: &CheckArgs) -> Result<Readiness, CommandError> {
    let src = &args.source;
    let report = report_of(src)?;
    warn(&report);
    let scope = Scope::of(&report, src.namespace.as_deref(), args.workload.as_deref())?;
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "meshwatch check: {} is {} (last {}, {})",
        scope.name,
        scope.verdict.as_str(),
        window(report.window_seconds),
        report.source
    );
    if scope.verdict == Readiness::NotInMesh {
        let _ = writeln!(
            err,
            "  outside the mesh: STRICT has no effect on it (and does not protect it) until it gets a sidecar or joins ambient"
        );
    }
    for v in &scope.workloads {
        explain(&mut err, v);
    }
    if let Some(policy) = &scope.policy {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", policy.trim_end())?;
        out.flush()?;
    }
    Ok(scope.verdict)
}

/// What `check` judges: the mesh, a namespace, or one workload.
struct Scope<'a> {
    name: String,
    verdict: Readiness,
    /// Its workloads that are not ready, to explain.
    workloads: Vec<&'a Verdict>,
    /// The PeerAuthentication to apply, when the verdict is ready.
    policy: Option<String>,
}

impl<'a> Scope<'a> {
    fn of(
        report: &'a ClusterReport,
        namespace: Option<&str>,
        workload: Option<&str>,
    ) -> Result<Self, CommandError> {
        let v = &report.verdicts;
        let not_ready = |ns: Option<&str>| -> Vec<&'a Verdict> {
            v.workloads
                .iter()
                .filter(|w| ns.is_none() || w.destination.namespace.as_deref() == ns)
                .filter(|w| {
                    matches!(
                        w.verdict,
                        Readiness::BrokenClients | Readiness::Blocked | Readiness::Insufficient
                    )
                })
                .filter(|w| w.connections.total() + w.exempted > 0 || !w.blockers.is_empty())
                .collect()
        };
        match (namespace, workload) {
            (Some(ns), Some(name)) => {
                let found = v.workloads.iter().find(|w| {
                    w.destination.namespace.as_deref() == Some(ns)
                        && w.destination.workload.as_deref() == Some(name)
                });
                let Some(w) = found else {
                    let known: Vec<&str> = v
                        .workloads
                        .iter()
                        .filter(|w| w.destination.namespace.as_deref() == Some(ns))
                        .filter_map(|w| w.destination.workload.as_deref())
                        .collect();
                    return Err(CommandError::Scope(format!(
                        "no workload {ns}/{name} in the window (namespace {ns} has: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )));
                };
                Ok(Scope {
                    name: format!("{ns}/{name}"),
                    verdict: w.verdict,
                    workloads: vec![w],
                    policy: (w.verdict == Readiness::Ready)
                        .then(|| w.suggested_policy.clone())
                        .flatten(),
                })
            }
            (Some(ns), None) => {
                let found = v.namespaces.iter().find(|n| n.namespace == ns);
                let Some(n) = found else {
                    return Err(CommandError::Cluster(ClusterError::NoConnections {
                        window: window(report.window_seconds),
                        scope: format!(" to namespace {ns}"),
                    }));
                };
                Ok(Scope {
                    name: format!("namespace {ns}"),
                    verdict: n.verdict,
                    workloads: not_ready(Some(ns)),
                    policy: n.suggested_policy.clone(),
                })
            }
            (None, _) => Ok(Scope {
                name: "the mesh".to_owned(),
                verdict: v.mesh.verdict,
                workloads: not_ready(None),
                policy: v.mesh.suggested_policy.clone(),
            }),
        }
    }
}

/// Why a workload is not ready: its reason, and each blocker with its remedy.
fn explain(out: &mut dyn Write, v: &Verdict) {
    let _ = writeln!(
        out,
        "  {} is {}: {}",
        v.destination.display(),
        v.verdict.as_str(),
        v.reason
    );
    if let Some(m) = &v.mode {
        let _ = writeln!(out, "    mode today: {}", m.describe());
    }
    for b in &v.blockers {
        let _ = writeln!(
            out,
            "    {}{} -> port {}: {} connection(s) {} (last seen {})\n      remedy: {}",
            if b.broken { "broken client: " } else { "" },
            b.source.display(),
            b.port,
            b.connections,
            b.security.as_str(),
            format_time(b.last_seen),
            b.remedy
        );
    }
}

/// Warnings about the evidence, on stderr.
fn warn(report: &ClusterReport) {
    let mut err = io::stderr().lock();
    if !report.agents_down.is_empty() {
        let _ = writeln!(
            err,
            "warning: agents down at some time in the last {}: {} (connections of their nodes while they were down are missing)",
            window(report.window_seconds),
            report.agents_down.join(", ")
        );
    }
    if report.evidence_incomplete {
        let _ = writeln!(
            err,
            "warning: an agent's capture dropped packets in the last {}: evidence incomplete, nothing is called ready",
            window(report.window_seconds)
        );
    }
}

fn window(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}
