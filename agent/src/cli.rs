//! Command line: clap derive. Every flag can also be set by a `MESHWATCH_*` variable, so the
//! CLI and a DaemonSet's environment are one definition.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::analyze::Helpers;

/// Tells which workloads of an Istio mesh are ready for STRICT mTLS, from the packets.
///
/// meshwatch classifies every TCP connection as Istio mTLS (a ClientHello offering an
/// `istio*` ALPN, or ambient HBONE), other TLS, or plaintext, and turns what it saw into a
/// verdict per destination workload: ready, blocked (with the sources to fix), or insufficient.
#[derive(Debug, Parser)]
#[command(name = "meshwatch", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Analyze capture files (pcap or pcapng) and print edges and readiness verdicts.
    #[command(after_help = ANALYZE_EXAMPLES)]
    Analyze(AnalyzeArgs),
    /// Capture live on this node and serve /metrics, /healthz, /readyz and /api/v1 (DaemonSet).
    #[cfg(feature = "agent")]
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),
    /// Cluster-wide verdicts from the agents' counters in Prometheus (all nodes, each
    /// connection once).
    #[cfg(feature = "agent")]
    #[command(after_help = VERDICTS_EXAMPLES)]
    Verdicts(VerdictsArgs),
    /// A gate for pipelines, from Prometheus: exit 0 ready for STRICT, 1 blocked, 3
    /// insufficient evidence, 2 error.
    #[cfg(feature = "agent")]
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
}

#[cfg(feature = "agent")]
const AGENT_EXAMPLES: &str = "\
Examples:
  meshwatch agent --interface any --kubernetes --tls-cert tls.crt --tls-key tls.key  # DaemonSet
  meshwatch agent --interface br0 --workloads w.yaml        # on a lab host: 127.0.0.1:9477
  curl localhost:9477/metrics; curl localhost:9477/api/v1/verdicts
  curl --cacert ca.crt -H \"Authorization: Bearer $TOKEN\" https://NODE:9477/metrics

With --kubernetes the server is HTTPS on 0.0.0.0:9477 and wants a bearer token the API server
authenticates (TokenReview) and authorizes for the path, verb get (SubjectAccessReview);
/healthz and /readyz stay open. Outside Kubernetes it listens on 127.0.0.1:9477; another address
without authentication needs --auth none.

Privileges: only CAP_NET_RAW (and CAP_NET_ADMIN for --promiscuous), e.g.
  setcap cap_net_raw+ep /usr/local/bin/meshwatch   # then run as any user";

/// Options of `meshwatch agent`.
#[cfg(feature = "agent")]
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Interface to capture on (`any`: all, as Linux cooked v2).
    #[arg(long, default_value = "any", env = "MESHWATCH_INTERFACE")]
    pub interface: String,

    /// BPF capture filter.
    #[arg(long, default_value = crate::capture::live::DEFAULT_FILTER, env = "MESHWATCH_FILTER")]
    pub filter: String,

    /// Bytes captured per packet.
    #[arg(long, default_value_t = 262_144, env = "MESHWATCH_SNAPLEN",
          value_parser = clap::value_parser!(i32).range(64..=262_144))]
    pub snaplen: i32,

    /// Kernel capture buffer, MiB (large buffers avoid drops at high packet rates).
    #[arg(long = "buffer-size", default_value_t = 64, value_name = "MIB", env = "MESHWATCH_BUFFER_MIB",
          value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub buffer_mib: i32,

    /// Put the interface in promiscuous mode (needs CAP_NET_ADMIN).
    #[arg(long, env = "MESHWATCH_PROMISCUOUS")]
    pub promiscuous: bool,

    /// Address of the HTTP(S) server [default: 0.0.0.0:9477 with --kubernetes, else
    /// 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR", env = "MESHWATCH_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Who may read /metrics and /api/v1: `kubernetes` checks bearer tokens with the API
    /// server [default with --kubernetes]; `none` lets anyone who reaches the port read
    /// [default otherwise; needed explicitly for a non-loopback --listen].
    #[arg(long, value_enum, env = "MESHWATCH_AUTH")]
    pub auth: Option<crate::server::AuthMode>,

    /// TLS certificate chain (PEM), reloaded when it changes. Without it and --tls-key, an
    /// authenticated server uses a self-signed certificate made at start.
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHWATCH_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of --tls-cert, reloaded when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHWATCH_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Connections open at once; at the bound the oldest idle or slow one is closed.
    #[arg(long, default_value_t = 512, value_name = "N", env = "MESHWATCH_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,

    /// Deadline of a connection's TLS handshake and of each request's header (also how long
    /// an idle keep-alive connection stays open).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration,
          env = "MESHWATCH_HEADER_TIMEOUT")]
    pub header_timeout: std::time::Duration,

    /// Workloads file (YAML), reloaded when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "MESHWATCH_WORKLOADS",
        conflicts_with = "kubernetes"
    )]
    pub workloads: Option<PathBuf>,

    /// Resolve identities from the Kubernetes API (in-cluster config or KUBECONFIG).
    #[arg(long, env = "MESHWATCH_KUBERNETES")]
    pub kubernetes: bool,

    /// This node's name (the `reporter` label: pods here are local). In a DaemonSet, set it
    /// from the downward API (spec.nodeName).
    #[arg(long, value_name = "NAME", env = "MESHWATCH_NODE_NAME")]
    pub node_name: Option<String>,

    /// How far back verdicts look (e.g. 24h, 30m, 15s).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, env = "MESHWATCH_WINDOW")]
    pub window: std::time::Duration,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "MESHWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub verdict: VerdictArgs,

    #[command(flatten)]
    pub table: TableArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

const ANALYZE_EXAMPLES: &str = "\
Examples:
  meshwatch analyze capture.pcap
  meshwatch analyze --workloads workloads.yaml a.pcap b.pcapng --format json --flows > report.json
  tcpdump -i any -w - 'tcp' | meshwatch analyze -

Exit status: 0 analyzed; 2 bad input (unreadable or non-capture file, invalid workloads file,
bad flag); 1 output could not be written.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum When {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng); `-` reads standard input. Flows continue across files.
    #[arg(required = true, value_name = "PCAP")]
    pub captures: Vec<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, env = "MESHWATCH_FORMAT")]
    pub format: Format,

    /// Include every connection in the JSON output (`flows`).
    #[arg(long, env = "MESHWATCH_FLOWS")]
    pub flows: bool,

    /// Workloads file (YAML) mapping IPs to namespace/workload/service account and nodes.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_WORKLOADS")]
    pub workloads: Option<PathBuf>,

    /// The cluster's PeerAuthentications (`kubectl get peerauthentications.security.istio.io
    /// -A -o yaml`, or the API's list as JSON): each verdict shows the workload's mode today,
    /// and a workload already STRICT that receives plaintext has `broken_clients`.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_PEER_AUTHENTICATIONS")]
    pub peer_authentications: Option<PathBuf>,

    #[command(flatten)]
    pub verdict: VerdictArgs,

    #[command(flatten)]
    pub table: TableArgs,

    /// Colour in the table output.
    #[arg(long, value_enum, default_value_t = When::Auto, env = "MESHWATCH_COLOR")]
    pub color: When,

    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value_t = When::Auto, env = "MESHWATCH_PROGRESS")]
    pub progress: When,

    /// Worker threads; flows are sharded to them by hash. 1 (the default; the fastest measured
    /// on 2 cores): one pipeline, with helper threads (see --helper-threads).
    #[arg(long, default_value_t = 1, value_name = "N", env = "MESHWATCH_THREADS",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,

    /// With --threads 1: fold finished flows into edges, and read a single capture ahead, each
    /// on a thread of its own. Faster wall time for more CPU time. `auto`: when the process may
    /// use more than one core; `always`: whatever the cores; `never`: one thread (a machine
    /// whose other cores are busy).
    #[arg(long, value_enum, default_value_t = Helpers::Auto, value_name = "WHEN",
          env = "MESHWATCH_HELPER_THREADS")]
    pub helper_threads: Helpers,
}

/// Options of the verdict engine (shared by `analyze` and the agent).
#[derive(Debug, Args)]
pub struct VerdictArgs {
    /// Istio mTLS connections a destination needs before it is `ready`.
    #[arg(
        long,
        default_value_t = 5,
        value_name = "N",
        env = "MESHWATCH_MIN_CONNECTIONS"
    )]
    pub min_connections: u64,

    /// Destination port whose traffic is not judged (repeatable; added to the defaults: istiod's
    /// 15010, 15012, 15014, 15017 and Istio's plaintext 15020, 15021, 15090).
    #[arg(
        long = "exempt-port",
        value_name = "PORT",
        env = "MESHWATCH_EXEMPT_PORTS",
        value_delimiter = ','
    )]
    pub exempt_ports: Vec<u16>,

    /// Source address whose traffic is not judged (repeatable; added to the default
    /// 169.254.7.127, ambient's probe source).
    #[arg(
        long = "exempt-source",
        value_name = "IP",
        env = "MESHWATCH_EXEMPT_SOURCES",
        value_delimiter = ','
    )]
    pub exempt_sources: Vec<IpAddr>,

    /// Drop the default exemptions: Istio's and istiod's ports and 169.254.7.127. (Node sources
    /// are never exempt by default: plaintext from a node is rejected by STRICT.)
    #[arg(long, env = "MESHWATCH_NO_DEFAULT_EXEMPTIONS")]
    pub no_default_exemptions: bool,

    /// Share of unclassifiable connections above which the evidence is insufficient.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO", env = "MESHWATCH_MAX_UNKNOWN_RATIO",
          value_parser = parse_ratio)]
    pub max_unknown_ratio: f64,

    /// Istio's root namespace (`meshConfig.rootNamespace`): its PeerAuthentication without a
    /// selector is mesh-wide.
    #[arg(
        long,
        default_value = crate::peer_auth::DEFAULT_ROOT_NAMESPACE,
        value_name = "NAMESPACE",
        env = "MESHWATCH_ISTIO_ROOT_NAMESPACE"
    )]
    pub istio_root_namespace: String,
}

/// Bounds of the flow table.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Connections tracked at once; beyond it the oldest are evicted (and counted).
    #[arg(long, default_value_t = crate::flow::DEFAULT_MAX_FLOWS as u64, value_name = "N", env = "MESHWATCH_MAX_FLOWS",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_flows: u64,

    /// Seconds without a packet after which a connection is finished.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", env = "MESHWATCH_IDLE_TIMEOUT",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
}

#[cfg(feature = "agent")]
const VERDICTS_EXAMPLES: &str = "\
Examples:
  meshwatch verdicts --prometheus http://prometheus:9090
  meshwatch verdicts --prometheus http://prometheus:9090 --window 7d --namespace foo
  meshwatch verdicts --prometheus https://thanos-query.monitoring:9090 --format json > cluster.json
  meshwatch verdicts --prometheus https://prometheus-k8s.monitoring:9091 \\
    --ca /etc/meshwatch/ca.crt --token-file /var/run/secrets/kubernetes.io/serviceaccount/token

Counts each connection of the window once across the agents (also with older agents, which
reported a connection between two nodes from both), from its first sample on, through agent
restarts and scrape gaps. The JSON has the names
of `analyze --format json` (edges, verdicts, namespaces, mesh) plus source, window_seconds,
evidence_incomplete and agents_down. RUST_LOG=debug prints the PromQL.

Exit status: 0 printed; 2 Prometheus unreachable, a bad URL, a query refused, no agent scraped,
or no connection in the window; 1 output could not be written.";

#[cfg(feature = "agent")]
const CHECK_EXAMPLES: &str = "\
Examples:
  meshwatch check --prometheus http://prometheus:9090 --namespace foo
  meshwatch check --prometheus http://prometheus:9090 --namespace foo --workload httpbin
  meshwatch check --prometheus http://prometheus:9090 --namespace foo > strict.yaml \\
    && kubectl apply -f strict.yaml        # GitOps: apply only what is ready

Scope: --namespace NS judges the namespace, --workload W (with --namespace) one workload,
neither the whole mesh. When ready, the PeerAuthentication to apply is printed on stdout;
the verdict, the blockers with their remedy, and warnings (agents down, dropped packets) go to
stderr.

Exit status:
  0  ready (a workload outside the mesh, or a namespace of only such workloads, also exits 0:
     STRICT has no effect on it, so applying it breaks nothing)
  1  blocked: a source sends plaintext or non-mesh TLS
  3  insufficient: too few mTLS connections, too many unclassified, an agent dropped packets,
     or no connection to the scope in the window
  2  the check could not run: Prometheus unreachable, a bad URL, a query refused, no agent
     scraped, an unknown workload";

/// Where the counters are and which part of them to judge (`verdicts` and `check`).
#[cfg(feature = "agent")]
#[derive(Debug, Args)]
pub struct PrometheusArgs {
    /// Prometheus' base URL (or Thanos Query's, Mimir's Prometheus API): its /api/v1/query is
    /// read. `user:password@` in it is sent as basic authentication; HTTP(S)_PROXY and
    /// NO_PROXY apply.
    #[arg(long, value_name = "URL", env = "MESHWATCH_PROMETHEUS")]
    pub prometheus: String,

    /// How far back the verdicts look (e.g. 24h, 7d, 30m), to a step of 1/240 of it.
    #[arg(long, default_value = "24h", value_parser = parse_window, env = "MESHWATCH_WINDOW")]
    pub window: std::time::Duration,

    /// Judge only the destinations of this namespace.
    #[arg(long, value_name = "NAMESPACE", env = "MESHWATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// PEM bundle of the CAs that sign Prometheus' certificate (an https:// URL behind
    /// kube-rbac-proxy or an ingress); without it the bundled webpki (Mozilla) roots are trusted.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_PROMETHEUS_CA")]
    pub ca: Option<std::path::PathBuf>,

    /// A file holding the bearer token sent to Prometheus (e.g. a service-account token). Only
    /// sent over https://.
    #[arg(long, value_name = "FILE", env = "MESHWATCH_PROMETHEUS_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// LABS ONLY: accept any certificate from Prometheus. The traffic is encrypted, but whoever
    /// sits on the path can read the token and forge the answers.
    #[arg(
        long,
        conflicts_with = "ca",
        env = "MESHWATCH_PROMETHEUS_INSECURE_SKIP_VERIFY"
    )]
    pub insecure_skip_verify: bool,

    #[command(flatten)]
    pub verdict: VerdictArgs,
}

/// Options of `meshwatch verdicts`.
#[cfg(feature = "agent")]
#[derive(Debug, Args)]
pub struct VerdictsArgs {
    #[command(flatten)]
    pub source: PrometheusArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, env = "MESHWATCH_FORMAT")]
    pub format: Format,

    /// Colour in the table output.
    #[arg(long, value_enum, default_value_t = When::Auto, env = "MESHWATCH_COLOR")]
    pub color: When,
}

/// Options of `meshwatch check`.
#[cfg(feature = "agent")]
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: PrometheusArgs,

    /// Judge only this workload of --namespace.
    #[arg(
        long,
        value_name = "WORKLOAD",
        env = "MESHWATCH_WORKLOAD",
        requires = "namespace"
    )]
    pub workload: Option<String>,
}

/// A window of at least one second.
#[cfg(feature = "agent")]
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_secs() >= 1 {
        Ok(d)
    } else {
        Err(format!("`{s}` is shorter than a second"))
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

impl VerdictArgs {
    pub fn policy(&self) -> crate::verdict::Policy {
        let mut policy = crate::verdict::Policy::default();
        if self.no_default_exemptions {
            policy = policy.without_default_exemptions();
        }
        policy.min_connections = self.min_connections;
        policy.exempt_ports.extend(&self.exempt_ports);
        policy.exempt_sources.extend(&self.exempt_sources);
        policy.max_unknown_ratio = self.max_unknown_ratio;
        policy.istio_root_namespace = self.istio_root_namespace.clone();
        policy
    }
}

impl TableArgs {
    pub fn limits(&self) -> crate::flow::TableLimits {
        crate::flow::TableLimits {
            max_flows: usize::try_from(self.max_flows).unwrap_or(usize::MAX),
            idle_timeout: self.idle_timeout * 1_000_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exemptions_add_to_defaults_unless_disabled() {
        let cli = Cli::parse_from(["meshwatch", "analyze", "--exempt-port", "9090", "x.pcap"]);
        let Command::Analyze(a) = cli.command else {
            panic!("analyze")
        };
        let p = a.verdict.policy();
        assert!(p.exempt_ports.contains(&9090) && p.exempt_ports.contains(&15020));
        let cli = Cli::parse_from(["meshwatch", "analyze", "--no-default-exemptions", "x.pcap"]);
        let Command::Analyze(a) = cli.command else {
            panic!("analyze")
        };
        let p = a.verdict.policy();
        assert!(p.exempt_ports.is_empty() && p.exempt_sources.is_empty());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            Cli::try_parse_from(["meshwatch", "analyze", "--max-unknown-ratio", "2", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["meshwatch", "analyze", "--exempt-port", "70000", "x"]).is_err()
        );
        assert!(Cli::try_parse_from(["meshwatch", "analyze"]).is_err());
        #[cfg(feature = "agent")]
        assert!(Cli::try_parse_from(["meshwatch", "agent", "--window", "soon"]).is_err());
        #[cfg(feature = "agent")]
        assert!(
            Cli::try_parse_from(["meshwatch", "agent", "--workloads", "w", "--kubernetes"])
                .is_err()
        );
    }

    /// `verdicts` and `check`: every flag has its `MESHWATCH_*` variable; `--workload` needs
    /// `--namespace`; a window is at least a second.
    #[cfg(feature = "agent")]
    #[test]
    fn cluster_commands_take_every_flag_from_the_environment() {
        for name in ["verdicts", "check"] {
            let cmd = Cli::command();
            let sub = cmd.find_subcommand(name).expect("subcommand");
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
                assert!(
                    env.starts_with("MESHWATCH_"),
                    "{name} --{id} has no MESHWATCH_* variable"
                );
            }
        }
        let p = ["meshwatch", "check", "--prometheus", "http://p:9090"];
        assert!(Cli::try_parse_from([&p[..], &["--workload", "w"]].concat()).is_err());
        assert!(Cli::try_parse_from([&p[..], &["--window", "500ms"]].concat()).is_err());
        let cli = Cli::parse_from([&p[..], &["--namespace", "foo", "--workload", "w"]].concat());
        let Command::Check(c) = cli.command else {
            panic!("check")
        };
        assert_eq!(c.source.window, std::time::Duration::from_secs(86_400));
        assert_eq!(
            (c.source.namespace.as_deref(), c.workload.as_deref()),
            (Some("foo"), Some("w"))
        );
    }

    #[cfg(feature = "agent")]
    #[test]
    fn agent_defaults() {
        let cli = Cli::parse_from(["meshwatch", "agent"]);
        let Command::Agent(a) = cli.command else {
            panic!("agent")
        };
        assert_eq!(
            (a.interface.as_str(), a.buffer_mib, a.promiscuous),
            ("any", 64, false)
        );
        assert_eq!(a.window, std::time::Duration::from_secs(86_400));
        assert_eq!(a.listen, None);
        assert_eq!((a.auth, a.max_connections), (None, 512));
    }
}
