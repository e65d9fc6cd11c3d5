//! PeerAuthentication (`security.istio.io/v1`) YAML: a suggested policy ([`render`]), and a
//! STRICT policy for a scope ([`peer_authentication`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::peer_auth::{Mode, PeerAuthentication, PodLabels, APP_KEYS};

/// Istio's root namespace, where a mesh-wide policy lives.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// What the policy applies to.
#[derive(Debug, Clone, Copy)]
pub enum PolicyScope<'a> {
    /// One workload, selected by its labels ([`selector`]).
    Workload {
        namespace: &'a str,
        workload: &'a str,
        labels: &'a PodLabels,
    },
    Namespace(&'a str),
    Mesh,
}

/// A STRICT PeerAuthentication; with `strict_ports`, PERMISSIVE for the workload and STRICT
/// through `portLevelMtls` for exactly those ports (Istio honours `portLevelMtls` only with a
/// workload selector). The workload's selector is its preferred labels ([`selector`]), NOT
/// checked to select it alone: the verdict engine writes its suggestions with [`render`]
/// after choosing a selector that does and simulating the result (`verdict::suggest`).
pub fn peer_authentication(scope: &PolicyScope<'_>, strict_ports: Option<&[u16]>) -> String {
    let (name, namespace, selector) = match scope {
        PolicyScope::Workload {
            namespace,
            workload,
            labels,
        } => (
            format!("{workload}-strict"),
            *namespace,
            Some(selector(workload, labels)),
        ),
        PolicyScope::Namespace(ns) => ("default".to_owned(), *ns, None),
        PolicyScope::Mesh => ("default".to_owned(), ROOT_NAMESPACE, None),
    };
    let (mode, port_level) = match strict_ports {
        None => (Mode::Strict, BTreeMap::new()),
        Some(ports) => (
            Mode::Permissive,
            ports.iter().map(|&p| (p, Mode::Strict)).collect(),
        ),
    };
    render(&PeerAuthentication {
        namespace: namespace.to_owned(),
        name,
        created: String::new(),
        selector,
        mode,
        port_level,
        edited: false,
    })
}

/// A PeerAuthentication as YAML for `kubectl apply` (its creation time is not written).
pub fn render(p: &PeerAuthentication) -> String {
    let mut y = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        y,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n",
        quote(&p.name),
        quote(&p.namespace)
    );
    if let Some(selector) = &p.selector {
        y.push_str("  selector:\n    matchLabels:\n");
        for (k, v) in selector {
            let _ = writeln!(y, "      {}: {}", quote(k), quote(v));
        }
    }
    let _ = writeln!(y, "  mtls:\n    mode: {}", p.mode.as_str());
    if !p.port_level.is_empty() {
        y.push_str("  portLevelMtls:\n");
        for (port, mode) in &p.port_level {
            let _ = writeln!(y, "    {port}:\n      mode: {}", mode.as_str());
        }
    }
    y
}

/// The labels a workload's policy selects it by: its `app` (or `app.kubernetes.io/name`) label
/// when every pod carries it; else every label all its pods carry alike, less Istio's own
/// (`*istio.io/…`, set on every injected pod of the mesh); with none of these known,
/// `app: <workload>`.
fn selector(workload: &str, labels: &PodLabels) -> BTreeMap<String, String> {
    if let Some((k, v)) = APP_KEYS.iter().find_map(|k| labels.get(k).map(|v| (*k, v))) {
        return BTreeMap::from([(k.to_owned(), v.to_owned())]);
    }
    let own: BTreeMap<String, String> = labels
        .common()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !k.contains("istio.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if own.is_empty() {
        BTreeMap::from([("app".to_owned(), workload.to_owned())])
    } else {
        own
    }
}

/// Kubernetes names are DNS labels and need no quoting; anything else is quoted.
fn quote(s: &str) -> String {
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
    ) || s.parse::<f64>().is_ok();
    let plain = !s.is_empty()
        && !reserved
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'));
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
    }
}
