//! The PeerAuthentication a verdict suggests, the way back, and the `kubectl` lines for both.
//!
//! PURE. The suggested YAML and its rollback come from the verdict engine
//! (`verdict::Rollback`): the policy the suggestion edits, as it is today, to apply again; or,
//! where the suggestion creates a policy, deleting it. Never "the same policy PERMISSIVE": that
//! would downgrade ports that were STRICT, and a new PERMISSIVE policy may not even take effect
//! (an older one at its level wins). A report that does not say (made by an older meshwatch)
//! gets the command that saves what the suggestion would replace, before applying it.

use std::collections::BTreeMap;

use meshwatch::verdict::Rollback;
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

/// The resource as `kubectl` names it, unambiguous whatever else is installed.
const RESOURCE: &str = "peerauthentications.security.istio.io";

/// `--namespace=NS NAME` and then `flags` for `kubectl`: quoted for the shell, and neither can
/// be read as a flag (a name starting with `-`, which Kubernetes never gives, comes after `--`,
/// and so after `flags` too: after `--` they would be read as more names).
fn object_args(namespace: &str, name: &str, flags: &str) -> String {
    let namespace = format!("--namespace={}", shell_quote(namespace));
    let flag_like = name.starts_with('-');
    let name = shell_quote(name);
    let words = if flag_like {
        [namespace.as_str(), flags, "--", name.as_str()]
    } else {
        [namespace.as_str(), name.as_str(), flags, ""]
    };
    let words: Vec<&str> = words.into_iter().filter(|w| !w.is_empty()).collect();
    words.join(" ")
}

/// `kubectl delete` of the policy `namespace/name`.
pub fn delete_command(namespace: &str, name: &str) -> String {
    format!(
        "kubectl delete {RESOURCE} {}\n",
        object_args(namespace, name, "")
    )
}

/// `kubectl get … -o yaml` of the policy `namespace/name` into a file: what to save before
/// applying a suggestion whose rollback is not known for sure.
pub fn save_command(namespace: &str, name: &str) -> String {
    format!(
        "kubectl get {RESOURCE} {} > peerauthentication-before.yaml\n",
        object_args(namespace, name, "-o yaml --ignore-not-found")
    )
}

/// `kubectl apply -f -` with `yaml` on standard input (a quoted here-document: nothing in it
/// is expanded by the shell). Its end is `EOF`, or `EOF_1`, `EOF_2`, … where the YAML has a
/// line `EOF` (a crafted source's): no line of the YAML can end it early and run what follows.
pub fn apply_command(yaml: &str) -> String {
    let mut end = "EOF".to_owned();
    let mut n = 0u32;
    while yaml.lines().any(|l| l == end) {
        n += 1;
        end = format!("EOF_{n}");
    }
    let mut cmd = format!("kubectl apply -f - <<'{end}'\n");
    cmd.push_str(yaml);
    if !yaml.ends_with('\n') {
        cmd.push('\n');
    }
    cmd.push_str(&end);
    cmd.push('\n');
    cmd
}

/// How a suggestion is undone, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackKind {
    /// Apply the policy it edits again, as it is today (`rollback_yaml`).
    Restore,
    /// Delete the policy it creates (`rollback_command`).
    Delete,
    /// The source does not say: save what it would replace first (`save_command`).
    Unknown,
}

/// A suggested policy with its rollback, ready to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyPair {
    /// What it applies to, in words (`workload foo/httpbin`, `namespace bar`, `the mesh`).
    pub scope: String,
    pub yaml: String,
    pub apply: String,
    pub rollback_kind: RollbackKind,
    /// The policy as it is today, to apply again (restore only).
    pub rollback_yaml: Option<String>,
    /// `kubectl apply` of `rollback_yaml` (restore only).
    pub rollback_apply: Option<String>,
    /// The command that rolls back: `rollback_apply`, or `kubectl delete`; none when unknown.
    pub rollback_command: Option<String>,
    /// What the rollback cannot know, or why there is none.
    pub rollback_note: Option<String>,
    /// The `kubectl get` that saves the policy the suggestion would replace, where the rollback
    /// is not known for sure.
    pub save_command: Option<String>,
    /// Why there is no rollback at all (the source did not say, and the YAML is unreadable).
    pub rollback_error: Option<String>,
}

impl PolicyPair {
    /// `yaml` and its `rollback` as the verdict engine wrote them (`None`: not said).
    pub fn new(scope: String, yaml: &str, rollback: Option<&Rollback>) -> Self {
        let mut pair = PolicyPair {
            scope,
            yaml: yaml.to_owned(),
            apply: apply_command(yaml),
            rollback_kind: RollbackKind::Unknown,
            rollback_yaml: None,
            rollback_apply: None,
            rollback_command: None,
            rollback_note: None,
            save_command: None,
            rollback_error: None,
        };
        match rollback {
            Some(Rollback::Restore { policy, .. }) => {
                pair.rollback_kind = RollbackKind::Restore;
                pair.rollback_apply = Some(apply_command(policy));
                pair.rollback_command.clone_from(&pair.rollback_apply);
                pair.rollback_yaml = Some(policy.clone());
            }
            Some(Rollback::Delete {
                namespace,
                name,
                unchecked,
            }) => {
                pair.rollback_kind = RollbackKind::Delete;
                pair.rollback_command = Some(delete_command(namespace, name));
                if let Some(why) = unchecked {
                    pair.rollback_note = Some(why.clone());
                    pair.save_command = Some(save_command(namespace, name));
                }
            }
            None => match target(yaml) {
                Ok(t) => {
                    pair.rollback_note = Some(format!(
                        "the source does not say whether this edits a policy in force (an older meshwatch made it): before applying, save {}/{} if it exists; to roll back, apply what was saved, or delete the policy if nothing was",
                        t.namespace, t.name
                    ));
                    pair.save_command = Some(save_command(&t.namespace, &t.name));
                }
                Err(e) => pair.rollback_error = Some(e.to_string()),
            },
        }
        pair
    }
}

/// A word for the shell: as it is when it holds nothing the shell reads (Kubernetes names do
/// not), else single-quoted (inside, a `'` is written `'\''`), so hostile names stay data.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
