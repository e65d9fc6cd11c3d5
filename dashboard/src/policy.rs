//! The PeerAuthentication a verdict suggests, its PERMISSIVE rollback (same name, namespace and
//! selector: applying it replaces the STRICT policy in place), and the `kubectl` lines for both.
//!
//! PURE. The suggested YAML comes from the verdict engine (`verdict::peer_authentication`);
//! the rollback is written here from what that YAML names.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// What a PeerAuthentication applies to, read from its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub namespace: String,
    /// `spec.selector.matchLabels`; `None` for a namespace- or mesh-wide policy.
    pub selector: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Doc {
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    namespace: String,
}

#[derive(Default, Deserialize)]
struct Spec {
    #[serde(default)]
    selector: Option<Selector>,
}

#[derive(Deserialize)]
struct Selector {
    #[serde(default, rename = "matchLabels")]
    match_labels: BTreeMap<String, String>,
}

/// The suggested YAML is not a PeerAuthentication the dashboard can read.
#[derive(Debug, thiserror::Error)]
#[error("the suggested policy is not a readable PeerAuthentication: {0}")]
pub struct PolicyError(#[from] serde_norway::Error);

/// What `yaml` (a PeerAuthentication) applies to.
pub fn target(yaml: &str) -> Result<Target, PolicyError> {
    let doc: Doc = serde_norway::from_str(yaml)?;
    Ok(Target {
        name: doc.metadata.name,
        namespace: doc.metadata.namespace,
        selector: doc.spec.selector.map(|s| s.match_labels),
    })
}

/// The PERMISSIVE PeerAuthentication with the same name, namespace and selector as `t`.
pub fn rollback(t: &Target) -> String {
    let mut y = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        y,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n",
        quote(&t.name),
        quote(&t.namespace)
    );
    if let Some(labels) = &t.selector {
        y.push_str("  selector:\n    matchLabels:\n");
        for (k, v) in labels {
            let _ = writeln!(y, "      {}: {}", quote(k), quote(v));
        }
    }
    y.push_str("  mtls:\n    mode: PERMISSIVE\n");
    y
}

/// `kubectl apply -f -` with `yaml` on standard input (a quoted here-document: nothing in it
/// is expanded by the shell).
pub fn apply_command(yaml: &str) -> String {
    let mut cmd = String::from("kubectl apply -f - <<'EOF'\n");
    cmd.push_str(yaml);
    if !yaml.ends_with('\n') {
        cmd.push('\n');
    }
    cmd.push_str("EOF\n");
    cmd
}

/// A suggested policy with its rollback, ready to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyPair {
    /// What it applies to, in words (`workload foo/httpbin`, `namespace bar`, `the mesh`).
    pub scope: String,
    pub yaml: String,
    pub apply: String,
    pub rollback_yaml: Option<String>,
    pub rollback_apply: Option<String>,
    /// Why there is no rollback (the YAML could not be read).
    pub rollback_error: Option<String>,
}

impl PolicyPair {
    pub fn new(scope: String, yaml: &str) -> Self {
        let (rollback_yaml, rollback_error) = match target(yaml) {
            Ok(t) => (Some(rollback(&t)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        PolicyPair {
            scope,
            yaml: yaml.to_owned(),
            apply: apply_command(yaml),
            rollback_apply: rollback_yaml.as_deref().map(apply_command),
            rollback_yaml,
            rollback_error,
        }
    }
}

/// The verdict engine's quoting: Kubernetes names are plain; anything else is a double-quoted
/// (JSON-compatible) YAML string, so hostile names stay data.
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

#[cfg(test)]
mod tests {
    use super::*;
    use meshwatch::peer_auth::PodLabels;
    use meshwatch::verdict::{peer_authentication, PolicyScope};

    fn workload_policy(ns: &str, w: &str, labels: &PodLabels) -> String {
        peer_authentication(
            &PolicyScope::Workload {
                namespace: ns,
                workload: w,
                labels,
            },
            None,
        )
    }

    #[test]
    fn rollback_of_a_workload_policy_keeps_name_namespace_and_selector() {
        let strict = workload_policy("bar", "httpbin", &PodLabels::Unknown);
        let t = target(&strict).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rollback(&t),
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: httpbin-strict\n  namespace: bar\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  mtls:\n    mode: PERMISSIVE\n"
        );
    }

    #[test]
    fn rollback_of_a_port_level_policy_is_plain_permissive() {
        // no `app` label: the selector is every label
        let labels = PodLabels::declared(
            [
                ("tier".to_owned(), "web".to_owned()),
                ("version".to_owned(), "v2".to_owned()),
            ]
            .into_iter()
            .collect(),
        );
        let partial = peer_authentication(
            &PolicyScope::Workload {
                namespace: "foo",
                workload: "web",
                labels: &labels,
            },
            Some(&[8080]),
        );
        let back = rollback(&target(&partial).unwrap_or_else(|e| panic!("{e}")));
        assert!(!back.contains("portLevelMtls"), "{back}");
        assert!(
            back.contains("      tier: web\n      version: v2\n  mtls:\n    mode: PERMISSIVE\n")
        );
    }

    #[test]
    fn rollback_of_namespace_and_mesh_policies_has_no_selector() {
        let ns = peer_authentication(&PolicyScope::Namespace("bar"), None);
        let back = rollback(&target(&ns).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            back,
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: bar\nspec:\n  mtls:\n    mode: PERMISSIVE\n"
        );
        let mesh = peer_authentication(&PolicyScope::Mesh, None);
        let back = rollback(&target(&mesh).unwrap_or_else(|e| panic!("{e}")));
        assert!(back.contains("  namespace: istio-system\n"));
    }

    #[test]
    fn hostile_names_round_trip_as_data() {
        let hostile = "x\"; rm -rf / #\nEOF\n<script>alert(1)</script>: true";
        let strict = workload_policy(hostile, hostile, &PodLabels::Unknown);
        let t = target(&strict).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.namespace, hostile);
        let back = rollback(&t);
        let t2 = target(&back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t2, t, "the rollback names exactly what the policy names");
        // the here-document cannot end early: no line of the YAML is `EOF`
        assert!(!back.lines().any(|l| l == "EOF"));
        let cmd = apply_command(&back);
        assert_eq!(cmd.lines().filter(|l| *l == "EOF").count(), 1);
    }

    #[test]
    fn unreadable_yaml_gives_no_rollback() {
        let p = PolicyPair::new("workload x/y".into(), "not: [a, policy");
        assert!(p.rollback_yaml.is_none() && p.rollback_error.is_some());
    }
}
