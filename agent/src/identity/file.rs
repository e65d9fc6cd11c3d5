//! The workloads file (YAML; see DESIGN.md):
//!
//! ```yaml
//! workloads:
//!   - {namespace: foo, workload: httpbin, service_account: httpbin, ips: [10.244.1.21, "fd00::121"]}
//! nodes:
//!   - {name: node-1, ips: [10.0.0.5]}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Identity, IdentitySource, Workload};

/// Why a workloads file was refused; names the file.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("{path}: cannot read workloads file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid workloads file: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    workloads: Vec<WorkloadEntry>,
    #[serde(default)]
    nodes: Vec<NodeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadEntry {
    namespace: String,
    workload: String,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ips: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Workload(usize),
    Node(usize),
}

/// Identities read from a workloads file.
#[derive(Debug, Default)]
pub struct WorkloadsFile {
    workloads: Vec<Workload>,
    nodes: Vec<String>,
    by_ip: HashMap<IpAddr, Entry>,
}

impl WorkloadsFile {
    pub fn load(path: &Path) -> Result<Self, WorkloadsError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|detail| WorkloadsError::Invalid {
            path: path.to_owned(),
            detail,
        })
    }

    /// Parse the YAML text; an IP listed twice is an error (it would make verdicts ambiguous).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed: FileFormat = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let mut out = WorkloadsFile::default();
        for entry in parsed.workloads {
            let index = out.workloads.len();
            for ip in &entry.ips {
                out.claim(*ip, Entry::Workload(index), &entry.workload)?;
            }
            out.workloads.push(Workload {
                namespace: entry.namespace,
                workload: entry.workload,
                service_account: entry.service_account,
                labels: entry.labels,
            });
        }
        for node in parsed.nodes {
            let index = out.nodes.len();
            for ip in &node.ips {
                out.claim(*ip, Entry::Node(index), &node.name)?;
            }
            out.nodes.push(node.name);
        }
        Ok(out)
    }

    fn claim(&mut self, ip: IpAddr, entry: Entry, name: &str) -> Result<(), String> {
        if self.by_ip.insert(ip, entry).is_some() {
            return Err(format!("address {ip} is listed twice (again for {name})"));
        }
        Ok(())
    }
}

impl IdentitySource for WorkloadsFile {
    fn lookup(&self, ip: IpAddr) -> Identity<'_> {
        match self.by_ip.get(&ip) {
            Some(Entry::Workload(i)) => self
                .workloads
                .get(*i)
                .map_or(Identity::Unknown, Identity::Workload),
            Some(Entry::Node(i)) => self
                .nodes
                .get(*i)
                .map_or(Identity::Unknown, |n| Identity::Node(n)),
            None => Identity::Unknown,
        }
    }

    fn workloads(&self) -> Vec<&Workload> {
        self.workloads.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example_and_resolves() {
        let f = WorkloadsFile::parse(
            r#"
workloads:
  - {namespace: foo, workload: httpbin, service_account: httpbin, ips: [10.244.1.21, "fd00::121"]}
nodes:
  - {name: node-1, ips: [10.0.0.5]}
"#,
        )
        .expect("valid file");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        match f.lookup(ip("fd00::121")) {
            Identity::Workload(w) => {
                assert_eq!(
                    (w.namespace.as_str(), w.workload.as_str()),
                    ("foo", "httpbin")
                );
                assert_eq!(w.service_account.as_deref(), Some("httpbin"));
            }
            other => panic!("expected a workload, got {other:?}"),
        }
        assert_eq!(f.lookup(ip("10.0.0.5")), Identity::Node("node-1"));
        assert_eq!(f.lookup(ip("10.9.9.9")), Identity::Unknown);
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        let dup = WorkloadsFile::parse(
            "workloads:\n  - {namespace: a, workload: x, ips: [10.0.0.1]}\n  - {namespace: a, workload: y, ips: [10.0.0.1]}\n",
        );
        assert!(dup.expect_err("duplicate ip").contains("listed twice"));
        let bad_ip = WorkloadsFile::parse(
            "workloads:\n  - {namespace: a, workload: x, ips: [10.0.0.300]}\n",
        );
        assert!(bad_ip.is_err());
        let typo = WorkloadsFile::parse("workload:\n  - {namespace: a, workload: x}\n");
        assert!(typo.expect_err("unknown field").contains("unknown field"));
    }
}
