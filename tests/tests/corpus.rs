//! Agreement with a classifier we did not write: every connection of the Zeek and Suricata
//! captures in `shared/corpus/`, against tshark's per-connection truth (see its README).
//! For each in-scope connection with a client payload and a captured start: the class
//! (tls vs plaintext) and the exact ALPN list must agree, for at least 99% of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use meshwatch::classify::{App, Security};
use meshwatch::flow::FlowRecord;
use meshwatch::identity::NoIdentities;
use meshwatch::verdict::Policy;
use meshwatch_tests::{analyze_files, corpus_dir};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Truth {
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    server_port: u16,
    class: String,
    #[serde(default)]
    alpn: Vec<String>,
    #[serde(default)]
    mid_stream: bool,
    #[serde(default)]
    start_missing: bool,
}

/// Captures SOURCES.md marks out of scope (encapsulations a Kubernetes node does not use).
fn out_of_scope(sources: &str) -> Vec<String> {
    sources
        .lines()
        .filter(|l| l.trim_end().ends_with("| no |"))
        .filter_map(|l| l.split('|').nth(1))
        .map(|f| f.trim().to_owned())
        .collect()
}

fn class_of(flow: &FlowRecord) -> &'static str {
    match (flow.security, flow.app) {
        (Security::IstioMtls | Security::Tls, _) | (Security::Unknown, App::Tls) => "tls",
        (Security::Plaintext, _) => "plaintext",
        (Security::Unknown, _) => "none",
    }
}

#[test]
fn corpus_agrees_with_tshark() {
    let dir = corpus_dir();
    let Ok(sources) = std::fs::read_to_string(dir.join("SOURCES.md")) else {
        // the corpus is third-party and stays beside the repository, never in it
        println!(
            "corpus: skipped: no third-party corpus at {} (set MESHWATCH_CORPUS)",
            dir.display()
        );
        return;
    };
    let skip = out_of_scope(&sources);
    let mut pcaps: Vec<PathBuf> = std::fs::read_dir(dir.join("pcaps"))
        .expect("corpus pcaps/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pcaps.sort();
    let (mut compared, mut agreed, mut captures) = (0usize, 0usize, 0usize);
    let mut disagreements = Vec::new();
    for pcap in &pcaps {
        let name = pcap
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if skip.contains(&name) {
            continue;
        }
        let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
        let truth_text = std::fs::read_to_string(dir.join("truth").join(format!("{stem}.jsonl")))
            .unwrap_or_default();
        captures += 1;
        let report = analyze_files(
            std::slice::from_ref(pcap),
            &NoIdentities,
            &Policy::default(),
        );
        let mut ours: HashMap<(IpAddr, u16, IpAddr, u16), Vec<&FlowRecord>> = HashMap::new();
        for f in report.flows.iter().flatten() {
            ours.entry((f.src, f.sport, f.dst, f.dport))
                .or_default()
                .push(f);
        }
        for line in truth_text.lines().filter(|l| !l.trim().is_empty()) {
            let t: Truth =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{stem}: {e}: {line}"));
            if t.class == "none" || t.mid_stream {
                continue; // no client payload, or the client is a guess (README: leave out)
            }
            compared += 1;
            let candidates = ours.get(&(t.client, t.client_port, t.server, t.server_port));
            let agree = candidates.is_some_and(|fs| {
                fs.iter().any(|f| {
                    let class = class_of(f);
                    let tls_truth = t.class == "tls";
                    class == t.class && (!tls_truth || t.start_missing || f.alpn == t.alpn)
                })
            });
            if agree {
                agreed += 1;
            } else {
                let got: Vec<String> = candidates
                    .map(|fs| {
                        fs.iter()
                            .map(|f| format!("{} {:?} app={:?}", class_of(f), f.alpn, f.app))
                            .collect()
                    })
                    .unwrap_or_default();
                disagreements.push(format!(
                    "{stem}: {}:{} -> {}:{} truth {} {:?}, ours {:?}",
                    t.client, t.client_port, t.server, t.server_port, t.class, t.alpn, got
                ));
            }
        }
    }
    let pct = 100.0 * agreed as f64 / compared.max(1) as f64;
    println!(
        "corpus agreement: {agreed}/{compared} connections ({pct:.2}%) over {captures} captures"
    );
    for d in &disagreements {
        println!("  disagree: {d}");
    }
    assert!(
        compared > 300,
        "only {compared} connections compared: is the corpus complete?"
    );
    assert!(
        pct >= 99.0,
        "agreement {pct:.2}% < 99%:\n{}",
        disagreements.join("\n")
    );
}
