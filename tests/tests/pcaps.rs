//! Every capture in `pcaps/` (made by real stacks with `pcaps/generate.py`) against the
//! expected-result file the generator wrote from the connections it made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshwatch::identity::file::WorkloadsFile;
use meshwatch::report::Report;
use meshwatch::verdict::Policy;
use meshwatch_tests::{analyze_files, captures_in, repo_root};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Expected {
    workloads: String,
    edges: Vec<ExpectedEdge>,
    verdicts: BTreeMap<String, ExpectedVerdict>,
    #[serde(default)]
    namespaces: BTreeMap<String, String>,
    #[serde(default)]
    mesh: Option<String>,
    #[serde(default)]
    min_duplicates: u64,
    #[serde(default)]
    tunnel: Option<String>,
    #[serde(default)]
    min_alpn_names: usize,
    /// At least this many connections are local (a sidecar's loopback legs).
    #[serde(default)]
    min_local_connections: u64,
    /// Exactly this many flows are mid-stream (the capture started after them).
    #[serde(default)]
    mid_stream_flows: Option<usize>,
    /// Exactly this many connections carried payload (each counted once, whatever its views).
    #[serde(default)]
    summary_connections: Option<u64>,
    /// Exactly this many connection attempts (no payload).
    #[serde(default)]
    attempts: Option<u64>,
    /// At least this many connections were seen in more than one view.
    #[serde(default)]
    min_views: u64,
    /// Several inputs (paths relative to pcaps/, files or directories): `pcaps/multi/` cases.
    #[serde(default)]
    inputs: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct ExpectedEdge {
    source: String,
    destination: String,
    port: u16,
    security: String,
    connections: u64,
}

#[derive(Debug, Deserialize)]
struct ExpectedVerdict {
    verdict: String,
    #[serde(default)]
    blockers: Vec<ExpectedBlocker>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct ExpectedBlocker {
    source: String,
    security: String,
    port: u16,
    connections: u64,
    /// `sidecar` or `none`, when the expectation states it.
    #[serde(default)]
    client_mesh: Option<String>,
    /// `no_sidecar`, `kubelet_probe`, `nodeport`, ..., when the expectation states it.
    #[serde(default)]
    kind: Option<String>,
}

/// `pcaps/`, or `$MESHWATCH_PCAPS` (a fresh run of the generator, see scripts/check-generator.sh).
fn captures() -> Vec<PathBuf> {
    let dir = std::env::var_os("MESHWATCH_PCAPS")
        .map_or_else(|| repo_root().join("pcaps"), PathBuf::from);
    captures_in(&dir)
}

fn expected(path: &Path) -> Result<Expected, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: no expected file: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn check(pcap: &Path) -> Result<(), String> {
    let stem = pcap
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let dir = pcap.parent().unwrap_or(Path::new("."));
    let exp = expected(&dir.join(format!("{stem}.expected.json")))?;
    check_case(stem, dir, &[pcap.to_path_buf()], &exp)
}

/// A `pcaps/multi/NAME.expected.json` case: its inputs (relative to pcaps/) analyzed together.
fn check_multi(path: &Path) -> Result<(), String> {
    let exp = expected(path)?;
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_suffix(".expected.json"))
        .unwrap_or_default();
    let root = repo_root().join("pcaps");
    let inputs: Vec<PathBuf> = exp.inputs.iter().map(|i| root.join(i)).collect();
    if inputs.is_empty() {
        return Err(format!("{stem}: no inputs"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.join(&exp.workloads).is_file() {
        dir
    } else {
        root.as_path()
    };
    check_case(stem, dir, &inputs, &exp)
}

fn check_case(stem: &str, dir: &Path, inputs: &[PathBuf], exp: &Expected) -> Result<(), String> {
    let identities = WorkloadsFile::load(&dir.join(&exp.workloads)).map_err(|e| e.to_string())?;
    let report: Report = analyze_files(inputs, &identities, &Policy::default());
    let s = &report.summary;
    if s.decode_errors != 0 {
        return Err(format!(
            "{stem}: {} decode errors {:?}",
            s.decode_errors, s.decode_errors_by_reason
        ));
    }
    // edges by source, destination, port and security (the report splits them further, by the
    // client's mesh and origin); edges of attempts only carry no connection
    let mut sums: BTreeMap<(String, String, u16, String), u64> = BTreeMap::new();
    for e in &report.edges {
        let key = (
            e.source.display(),
            e.destination.display(),
            e.port,
            e.security.as_str().to_owned(),
        );
        *sums.entry(key).or_default() += e.stats.connections;
    }
    let mut got: Vec<ExpectedEdge> = sums
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(
            |((source, destination, port, security), connections)| ExpectedEdge {
                source,
                destination,
                port,
                security,
                connections,
            },
        )
        .collect();
    got.sort();
    let mut want = exp.edges.clone();
    want.sort();
    if got != want {
        return Err(format!(
            "{stem}: edges differ\n got: {got:#?}\nwant: {want:#?}"
        ));
    }
    for (dest, ev) in &exp.verdicts {
        let v = report
            .verdicts
            .iter()
            .find(|v| &v.destination.display() == dest)
            .ok_or_else(|| format!("{stem}: no verdict for {dest}"))?;
        if v.verdict.as_str() != ev.verdict {
            return Err(format!(
                "{stem}: {dest} is {} ({}), want {}",
                v.verdict.as_str(),
                v.reason,
                ev.verdict
            ));
        }
        let mut blockers: Vec<ExpectedBlocker> = v
            .blockers
            .iter()
            .map(|b| ExpectedBlocker {
                source: b.source.display(),
                security: b.security.as_str().to_owned(),
                port: b.port,
                connections: b.connections,
                client_mesh: Some(b.client_mesh.as_str().to_owned()),
                kind: serde_json::to_value(b.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_owned)),
            })
            .collect();
        // the client's mesh and the kind are compared where the expectation states them
        if ev.blockers.iter().all(|b| b.client_mesh.is_none()) {
            blockers.iter_mut().for_each(|b| b.client_mesh = None);
        }
        if ev.blockers.iter().all(|b| b.kind.is_none()) {
            blockers.iter_mut().for_each(|b| b.kind = None);
        }
        blockers.sort();
        let mut want = ev.blockers.clone();
        want.sort();
        if blockers != want {
            return Err(format!(
                "{stem}: {dest} blockers {blockers:?}, want {want:?}"
            ));
        }
        if ev.verdict == "ready" && v.suggested_policy.is_none() {
            return Err(format!("{stem}: {dest} is ready but suggests no policy"));
        }
    }
    for (ns, verdict) in &exp.namespaces {
        let n = report.namespaces.iter().find(|n| &n.namespace == ns);
        if n.map(|n| n.verdict.as_str()) != Some(verdict.as_str()) {
            return Err(format!(
                "{stem}: namespace {ns} is {:?}, want {verdict}",
                n.map(|n| n.verdict)
            ));
        }
    }
    if let Some(mesh) = &exp.mesh {
        if report.mesh.verdict.as_str() != mesh {
            return Err(format!(
                "{stem}: mesh is {:?}, want {mesh}",
                report.mesh.verdict
            ));
        }
    }
    if s.duplicate_packets < exp.min_duplicates {
        return Err(format!(
            "{stem}: {} duplicates seen, want >= {}",
            s.duplicate_packets, exp.min_duplicates
        ));
    }
    let flows = report.flows.as_deref().unwrap_or_default();
    if s.local_connections < exp.min_local_connections {
        return Err(format!(
            "{stem}: {} local connections, want >= {}",
            s.local_connections, exp.min_local_connections
        ));
    }
    if exp.min_local_connections == 0 && s.local_connections > 0 {
        let local: Vec<String> = flows
            .iter()
            .filter(|f| f.local)
            .map(|f| format!("{}:{} -> {}:{}", f.src, f.sport, f.dst, f.dport))
            .collect();
        return Err(format!("{stem}: unexpected local connections {local:?}"));
    }
    if let Some(want) = exp.summary_connections {
        if s.security.total() != want {
            return Err(format!(
                "{stem}: {} connections counted, want {want} ({:?})",
                s.security.total(),
                s.security
            ));
        }
    }
    if let Some(want) = exp.attempts {
        if s.attempts != want {
            return Err(format!("{stem}: {} attempts, want {want}", s.attempts));
        }
    }
    if s.views < exp.min_views {
        return Err(format!(
            "{stem}: {} views joined, want >= {}",
            s.views, exp.min_views
        ));
    }
    if let Some(want) = exp.mid_stream_flows {
        let got = flows.iter().filter(|f| f.mid_stream && !f.local).count();
        if got != want {
            return Err(format!("{stem}: {got} mid-stream flows, want {want}"));
        }
    }
    if let Some(tunnel) = &exp.tunnel {
        if let Some(f) = flows
            .iter()
            .find(|f| f.tunnel.map(|t| t.as_str()) != Some(tunnel.as_str()))
        {
            return Err(format!(
                "{stem}: flow {}:{} tunnel {:?}, want {tunnel}",
                f.src, f.sport, f.tunnel
            ));
        }
    }
    if exp.min_alpn_names > 0 && flows.iter().any(|f| f.alpn.len() < exp.min_alpn_names) {
        return Err(format!(
            "{stem}: a ClientHello lost ALPN names (want >= {})",
            exp.min_alpn_names
        ));
    }
    // every TLS connection that completed its handshake saw the server's reply
    if flows
        .iter()
        .any(|f| f.security.as_str() == "istio_mtls" && !f.server_hello)
    {
        return Err(format!("{stem}: an mTLS flow without a ServerHello"));
    }
    Ok(())
}

#[test]
fn every_capture_matches_its_expected_result() {
    let all = captures();
    assert!(
        all.len() >= 8,
        "expected the generated captures in pcaps/, found {}",
        all.len()
    );
    let failures: Vec<String> = all.iter().filter_map(|p| check(p).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Several captures of the same traffic (two vantage points, the same file twice, compressed
/// captures, a directory of rotated files) against what was made.
#[test]
fn several_captures_count_each_connection_once() {
    let dir = repo_root().join("pcaps/multi");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    cases.retain(|p| p.to_string_lossy().ends_with(".expected.json"));
    cases.sort();
    assert!(
        cases.len() >= 4,
        "the multi-capture cases in {}",
        dir.display()
    );
    let failures: Vec<String> = cases.iter().filter_map(|p| check_multi(p).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
