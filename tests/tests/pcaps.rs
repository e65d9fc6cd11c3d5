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
}

/// `pcaps/`, or `$MESHWATCH_PCAPS` (a fresh run of the generator, see scripts/check-generator.sh).
fn captures() -> Vec<PathBuf> {
    let dir = std::env::var_os("MESHWATCH_PCAPS")
        .map_or_else(|| repo_root().join("pcaps"), PathBuf::from);
    captures_in(&dir)
}

fn check(pcap: &Path) -> Result<(), String> {
    let stem = pcap
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let dir = pcap.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(dir.join(format!("{stem}.expected.json")))
        .map_err(|e| format!("{stem}: no expected file: {e}"))?;
    let exp: Expected = serde_json::from_str(&text).map_err(|e| format!("{stem}: {e}"))?;
    let identities = WorkloadsFile::load(&dir.join(&exp.workloads)).map_err(|e| e.to_string())?;
    let report: Report = analyze_files(&[pcap.to_path_buf()], &identities, &Policy::default());
    let s = &report.summary;
    if s.decode_errors != 0 {
        return Err(format!(
            "{stem}: {} decode errors {:?}",
            s.decode_errors, s.decode_errors_by_reason
        ));
    }
    let mut got: Vec<ExpectedEdge> = report
        .edges
        .iter()
        .map(|e| ExpectedEdge {
            source: e.source.display(),
            destination: e.destination.display(),
            port: e.port,
            security: e.security.as_str().to_owned(),
            connections: e.stats.connections,
        })
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
            })
            .collect();
        // the client's mesh is compared where the expectation states it
        if ev.blockers.iter().all(|b| b.client_mesh.is_none()) {
            blockers.iter_mut().for_each(|b| b.client_mesh = None);
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
