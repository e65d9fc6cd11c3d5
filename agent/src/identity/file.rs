//! The workloads file (YAML; see DESIGN.md):
//!
//! ```yaml
//! workloads:
//!   - {namespace: foo, workload: httpbin, service_account: httpbin, ips: [10.244.1.21, "fd00::121"]}
//! nodes:
//!   - {name: node-1, ips: [10.0.0.5]}
//! ```
//!
//! Optional per workload: `labels` (all the pods' labels, for PeerAuthentication selectors: a
//! selector on a label not listed is taken not to match; without `labels` no selector can be
//! decided for it, and the suggested policy selects `app: <workload>`) and `node` (the node it
//! runs on; with the agent's `--node-name`, it decides the `reporter` label; without, every
//! listed workload counts as local).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{uid_hash, IdentityMap, ServiceBackend, Workload};
use crate::classify::Mesh;
use crate::peer_auth::PodLabels;

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
    #[serde(default)]
    services: Vec<ServiceEntry>,
}

/// `{namespace, name, cluster_ips, ports: [{port, target_port}], workload}`: a ClusterIP view of
/// a connection (a capture in the client pod) maps to the workload behind the Service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    namespace: String,
    name: String,
    cluster_ips: Vec<IpAddr>,
    ports: Vec<ServicePort>,
    /// The workload its endpoints belong to (in the same namespace).
    workload: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePort {
    port: u16,
    /// The pods' port; defaults to `port`.
    #[serde(default)]
    target_port: Option<u16>,
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
    #[serde(default)]
    node: Option<String>,
    /// `sidecar`, `ambient` or `none` (not in the mesh: verdict `not_in_mesh`).
    #[serde(default)]
    mesh: Option<Mesh>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    ips: Vec<IpAddr>,
}

/// Loads workloads files.
#[derive(Debug)]
pub struct WorkloadsFile;

impl WorkloadsFile {
    /// Read and parse `path`; `this_node` decides which workloads are local.
    pub fn load(path: &Path) -> Result<IdentityMap, WorkloadsError> {
        Self::load_for_node(path, None)
    }

    pub fn load_for_node(
        path: &Path,
        this_node: Option<&str>,
    ) -> Result<IdentityMap, WorkloadsError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, this_node).map_err(|detail| WorkloadsError::Invalid {
            path: path.to_owned(),
            detail,
        })
    }

    /// Parse the YAML text; an IP listed twice is an error (it would make verdicts ambiguous).
    pub fn parse(text: &str, this_node: Option<&str>) -> Result<IdentityMap, String> {
        let parsed: FileFormat = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = HashSet::new();
        let mut claim = |ip: IpAddr, name: &str| {
            if seen.insert(ip) {
                Ok(())
            } else {
                Err(format!("address {ip} is listed twice (again for {name})"))
            }
        };
        let mut map = IdentityMap::default();
        for (i, e) in parsed.workloads.into_iter().enumerate() {
            for ip in &e.ips {
                claim(*ip, &e.workload)?;
            }
            let local = match (this_node, &e.node) {
                (Some(me), Some(n)) => me == n,
                _ => true,
            };
            let uid = uid_hash(&format!("file:{i}"));
            let w = Workload {
                namespace: e.namespace,
                workload: e.workload,
                service_account: e.service_account,
                labels: PodLabels::declared(e.labels),
                mesh: e.mesh,
            };
            map.add_workload(w.clone());
            map.upsert_pod(uid, &e.ips, w, local);
        }
        for n in parsed.nodes {
            for ip in &n.ips {
                claim(*ip, &n.name)?;
            }
            map.upsert_node(&n.name, &n.ips);
        }
        for svc in parsed.services {
            for ip in &svc.cluster_ips {
                claim(*ip, &svc.name)?;
            }
            let ports: Vec<(u16, u16)> = svc
                .ports
                .iter()
                .map(|p| (p.port, p.target_port.unwrap_or(p.port)))
                .collect();
            let backend = ServiceBackend {
                namespace: svc.namespace,
                workload: svc.workload,
                target_port: 0,
            };
            map.set_service(&svc.cluster_ips, &ports, &backend);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, IdentitySource};

    #[test]
    fn parses_the_design_example_and_resolves() {
        let f = WorkloadsFile::parse(
            r#"
workloads:
  - {namespace: foo, workload: httpbin, service_account: httpbin, ips: [10.244.1.21, "fd00::121"]}
nodes:
  - {name: node-1, ips: [10.0.0.5]}
"#,
            None,
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
        assert!(f.is_local(ip("10.244.1.21")));
    }

    #[test]
    fn node_field_decides_locality() {
        let text = "workloads:\n  - {namespace: a, workload: x, ips: [10.0.0.1], node: n1}\n  - {namespace: a, workload: y, ips: [10.0.0.2], node: n2}\n";
        let m = WorkloadsFile::parse(text, Some("n1")).expect("valid");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(m.is_local(ip("10.0.0.1")) && !m.is_local(ip("10.0.0.2")));
    }

    #[test]
    fn refuses_bad_files_with_a_reason() {
        let dup = WorkloadsFile::parse(
            "workloads:\n  - {namespace: a, workload: x, ips: [10.0.0.1]}\n  - {namespace: a, workload: y, ips: [10.0.0.1]}\n",
            None,
        );
        assert!(dup.expect_err("duplicate ip").contains("listed twice"));
        let bad_ip = WorkloadsFile::parse(
            "workloads:\n  - {namespace: a, workload: x, ips: [10.0.0.300]}\n",
            None,
        );
        assert!(bad_ip.is_err());
        let typo = WorkloadsFile::parse("workload:\n  - {namespace: a, workload: x}\n", None);
        assert!(typo.expect_err("unknown field").contains("unknown field"));
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;
    use crate::identity::IdentitySource;

    #[test]
    fn services_map_cluster_ips_to_their_backend() {
        let text = "workloads:\n  - {namespace: foo, workload: httpbin, ips: [10.244.1.21]}\nservices:\n  - {namespace: foo, name: httpbin, cluster_ips: [10.96.0.50], ports: [{port: 80, target_port: 8000}, {port: 9090}], workload: httpbin}\n";
        let m = WorkloadsFile::parse(text, None).expect("valid");
        let ip: IpAddr = "10.96.0.50".parse().expect("ip");
        let b = m.service(ip, 80).expect("service port 80");
        assert_eq!(
            (b.namespace.as_str(), b.workload.as_str(), b.target_port),
            ("foo", "httpbin", 8000)
        );
        assert_eq!(m.service(ip, 9090).map(|b| b.target_port), Some(9090));
        assert!(m.service(ip, 443).is_none());
        let dup = "workloads:\n  - {namespace: a, workload: x, ips: [10.96.0.50]}\nservices:\n  - {namespace: a, name: s, cluster_ips: [10.96.0.50], ports: [{port: 80}], workload: x}\n";
        assert!(WorkloadsFile::parse(dup, None)
            .expect_err("a ClusterIP is no pod")
            .contains("listed twice"));
    }
}
