//! Command line: clap derive, every flag also a `MESHWATCH_DASHBOARD_*` variable; the verdict
//! flags are `analyze`'s own (`meshwatch::cli::VerdictArgs`, `MESHWATCH_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use meshwatch::cli::VerdictArgs;

/// Web dashboard over meshwatch's readiness verdicts: which workloads and namespaces can go
/// STRICT now, and who is still in the way. Read-only.
#[derive(Debug, Parser)]
#[command(name = "meshwatch-dashboard", version, after_help = EXAMPLES)]
#[command(group(ArgGroup::new("source").required(true).args(["report", "agent", "prometheus"])))]
pub struct Args {
    /// A report: the output of `meshwatch analyze --format json` (offline; read once).
    #[arg(long, value_name = "FILE", env = "MESHWATCH_DASHBOARD_REPORT")]
    pub report: Option<PathBuf>,

    /// An agent's base URL (repeatable): their /api/v1/edges are merged and judged here.
    #[arg(
        long,
        value_name = "URL",
        env = "MESHWATCH_DASHBOARD_AGENTS",
        value_delimiter = ','
    )]
    pub agent: Vec<String>,

    /// Prometheus' base URL: cluster-wide verdicts from the agents' counters.
    #[arg(long, value_name = "URL", env = "MESHWATCH_DASHBOARD_PROMETHEUS")]
    pub prometheus: Option<String>,

    /// PEM bundle of the CAs that sign the agents' (or Prometheus') certificate, for https://
    /// URLs; without it the bundled webpki (Mozilla) roots are trusted.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_DASHBOARD_CA")]
    pub ca: Option<PathBuf>,

    /// A file holding the bearer token sent to the agents (or Prometheus), e.g. a projected
    /// service-account token; read again at each refresh. Only sent over https://.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_DASHBOARD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// LABS ONLY: accept any server certificate. The traffic is encrypted, but whoever sits on
    /// the path can read the token and forge the answers.
    #[arg(
        long,
        conflicts_with = "ca",
        env = "MESHWATCH_DASHBOARD_INSECURE_SKIP_VERIFY"
    )]
    pub insecure_skip_verify: bool,

    /// Only this namespace (with --prometheus).
    #[arg(long, value_name = "NAME", env = "MESHWATCH_DASHBOARD_NAMESPACE")]
    pub namespace: Option<String>,

    /// How far back the verdicts look (with --prometheus; agents judge over their own --window).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, env = "MESHWATCH_DASHBOARD_WINDOW")]
    pub window: Duration,

    /// Address of the HTTP server (port 0: any free port, printed at start).
    #[arg(
        long,
        default_value = "127.0.0.1:9480",
        env = "MESHWATCH_DASHBOARD_LISTEN"
    )]
    pub listen: SocketAddr,

    /// Seconds between reads of a live source (agents, Prometheus); pages reload as often.
    #[arg(long, default_value_t = 15, value_name = "SECONDS", env = "MESHWATCH_DASHBOARD_REFRESH",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh: u64,

    /// Seconds to wait for an agent (Prometheus queries have the cluster reader's own limit).
    #[arg(long, default_value_t = 10, value_name = "SECONDS", env = "MESHWATCH_DASHBOARD_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,

    #[command(flatten)]
    pub verdict: VerdictArgs,
}

const EXAMPLES: &str = "\
Examples:
  meshwatch analyze --format json --workloads w.yaml capture.pcap > report.json
  meshwatch-dashboard --report report.json
  meshwatch-dashboard --agent http://node-1:9477 --agent http://node-2:9477
  meshwatch-dashboard --agent https://node-1:9477 --agent https://node-2:9477 \
      --ca /etc/meshwatch/ca.crt --token-file /var/run/secrets/tokens/meshwatch
  meshwatch-dashboard --prometheus http://prometheus:9090 --window 24h

Pages: / (overview), /namespace?ns=NS, /workload?ns=NS&name=W (or ?ip=ADDR), /matrix;
the same data as JSON under /api/ (/api/overview, /api/namespace?ns=NS, ..., /api/snapshot).

Exit status: 0 stopped by a signal; 2 bad flags or an unreadable report; 1 the server failed.";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn one_source_is_required_and_verdict_flags_are_analyzes() {
        assert!(Args::try_parse_from(["d"]).is_err());
        assert!(Args::try_parse_from(["d", "--report", "r.json", "--agent", "http://a"]).is_err());
        let a = Args::try_parse_from([
            "d",
            "--agent",
            "http://a:9477",
            "--agent",
            "http://b:9477",
            "--min-connections",
            "3",
            "--exempt-port",
            "9090",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.agent.len(), 2);
        let p = a.verdict.policy();
        assert_eq!(p.min_connections, 3);
        assert!(p.exempt_ports.contains(&9090) && p.exempt_ports.contains(&15020));
        assert_eq!(a.listen.to_string(), "127.0.0.1:9480");
        assert!(a.ca.is_none() && a.token_file.is_none() && !a.insecure_skip_verify);
    }

    #[test]
    fn trust_flags() {
        let a = Args::try_parse_from([
            "d",
            "--agent",
            "https://a:9477",
            "--ca",
            "ca.pem",
            "--token-file",
            "t",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(a.token_file.as_deref(), Some(std::path::Path::new("t")));
        let both = Args::try_parse_from([
            "d",
            "--agent",
            "https://a:9477",
            "--ca",
            "ca.pem",
            "--insecure-skip-verify",
        ]);
        assert!(both.is_err());
    }
}
