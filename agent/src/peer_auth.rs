//! Istio PeerAuthentication: the mTLS mode a workload has today, and which policy sets it.
//!
//! PURE: policies (values) in, the effective mode out. The rules are Istio's own
//! (`pilot/pkg/security/authn` `ComposePeerAuthentication` and `getConfigsForWorkload`):
//! - a policy in the root namespace (`istio-system` by default) without a selector is mesh-wide;
//!   one there *with* a selector is ignored (Istio applies selectors only outside the root
//!   namespace);
//! - a policy in the workload's namespace without a selector is namespace-wide; one whose
//!   `selector.matchLabels` are all among the workload's labels is workload-level;
//! - several at one level: the oldest (`creationTimestamp`, then name) wins;
//! - the narrowest level whose mode is not `UNSET` decides; nothing decides: PERMISSIVE;
//! - `portLevelMtls` counts only in the workload-level policy; its keys are the container
//!   (target) ports; an `UNSET` port inherits the workload's effective mode.
//!
//! Parsing reads the API object as JSON ([`from_value`]: a watch event's object or one item of
//! `kubectl get peerauthentications.security.istio.io -A -o yaml`, [`parse_list`]). An unknown
//! mode is an error naming the object.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Istio's default root namespace (`meshConfig.rootNamespace`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A PeerAuthentication mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Inherit from the parent level.
    Unset,
    /// Plaintext only.
    Disable,
    /// Istio mTLS and plaintext (and other TLS, passed through).
    Permissive,
    /// Istio mTLS only.
    Strict,
}

impl Mode {
    /// The mode as the API spells it, `None` for any other string.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "UNSET" => Some(Mode::Unset),
            "DISABLE" => Some(Mode::Disable),
            "PERMISSIVE" => Some(Mode::Permissive),
            "STRICT" => Some(Mode::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unset => "UNSET",
            Mode::Disable => "DISABLE",
            Mode::Permissive => "PERMISSIVE",
            Mode::Strict => "STRICT",
        }
    }
}

/// Which level set a workload's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSource {
    /// No policy sets a mode: Istio's default, PERMISSIVE.
    Default,
    Mesh,
    Namespace,
    Workload,
    /// `portLevelMtls` of the workload-level policy.
    Port,
}

impl ModeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeSource::Default => "default",
            ModeSource::Mesh => "mesh",
            ModeSource::Namespace => "namespace",
            ModeSource::Workload => "workload",
            ModeSource::Port => "port",
        }
    }

    /// The inverse of [`ModeSource::as_str`].
    pub fn parse(s: &str) -> Option<ModeSource> {
        [
            ModeSource::Default,
            ModeSource::Mesh,
            ModeSource::Namespace,
            ModeSource::Workload,
            ModeSource::Port,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// One PeerAuthentication, as the resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` as the API server writes it (RFC 3339 in UTC, whole
    /// seconds, `Z`): compared as text, oldest first; a missing one sorts first.
    pub created: String,
    /// `selector.matchLabels`; `None` when absent or empty (namespace- or mesh-wide).
    pub selector: Option<BTreeMap<String, String>>,
    /// `mtls.mode` (`Unset` when absent).
    pub mode: Mode,
    /// `portLevelMtls`: container port -> mode.
    pub port_level: BTreeMap<u16, Mode>,
}

impl PeerAuthentication {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn age_key(&self) -> (&str, &str) {
        (&self.created, &self.name)
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// A port's mode from `portLevelMtls`, and the policy that sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMode {
    pub mode: Mode,
    pub policy: String,
}

/// A workload's effective mode today, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveMode {
    /// Never `Unset`.
    pub mode: Mode,
    pub source: ModeSource,
    /// `namespace/name` of the policy that sets `mode` (none for the default).
    #[serde(default)]
    pub policy: Option<String>,
    /// Port-level overrides (container ports).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, PortMode>,
}

impl Default for EffectiveMode {
    fn default() -> Self {
        EffectiveMode {
            mode: Mode::Permissive,
            source: ModeSource::Default,
            policy: None,
            ports: BTreeMap::new(),
        }
    }
}

impl EffectiveMode {
    /// The mode on one container port: its port-level override, else the workload's.
    pub fn on_port(&self, port: u16) -> (Mode, ModeSource, Option<&str>) {
        match self.ports.get(&port) {
            Some(p) => (p.mode, ModeSource::Port, Some(p.policy.as_str())),
            None => (self.mode, self.source, self.policy.as_deref()),
        }
    }

    /// "STRICT (namespace foo/default)", "PERMISSIVE (default)".
    pub fn describe(&self) -> String {
        describe(self.mode, self.source, self.policy.as_deref())
    }
}

/// "STRICT (namespace foo/default)".
pub fn describe(mode: Mode, source: ModeSource, policy: Option<&str>) -> String {
    match policy {
        Some(p) => format!("{} ({} {p})", mode.as_str(), source.as_str()),
        None => format!("{} ({})", mode.as_str(), source.as_str()),
    }
}

/// The oldest policy among `candidates` (creation time, then name).
fn oldest<'a>(
    candidates: impl Iterator<Item = &'a PeerAuthentication>,
) -> Option<&'a PeerAuthentication> {
    candidates.min_by(|a, b| a.age_key().cmp(&b.age_key()))
}

/// The effective mode of a workload in `namespace` with `labels`.
pub fn resolve(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> EffectiveMode {
    let mesh = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == root_namespace && p.selector.is_none()),
    );
    let namespace_wide = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == namespace && p.namespace != root_namespace)
            .filter(|p| p.selector.is_none()),
    );
    let workload = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == namespace && p.namespace != root_namespace)
            .filter(|p| p.selects(labels)),
    );
    let mut out = EffectiveMode::default();
    for (level, source) in [
        (mesh, ModeSource::Mesh),
        (namespace_wide, ModeSource::Namespace),
        (workload, ModeSource::Workload),
    ] {
        if let Some(p) = level.filter(|p| p.mode != Mode::Unset) {
            out.mode = p.mode;
            out.source = source;
            out.policy = Some(p.id());
        }
    }
    if let Some(w) = workload {
        out.ports = w
            .port_level
            .iter()
            .map(|(&port, &mode)| {
                let mode = if mode == Mode::Unset { out.mode } else { mode };
                (
                    port,
                    PortMode {
                        mode,
                        policy: w.id(),
                    },
                )
            })
            .collect();
    }
    out
}

/// A PeerAuthentication that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    #[error("PeerAuthentication {object}: {reason}")]
    Invalid { object: String, reason: String },
    #[error("PeerAuthentication list: {0}")]
    List(String),
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Read `{mode: ...}` (absent, null or `{}`: `Unset`).
fn mode_of(v: Option<&Value>, object: &str, at: &str) -> Result<Mode, PeerAuthError> {
    let invalid = |reason: String| PeerAuthError::Invalid {
        object: object.to_owned(),
        reason,
    };
    match v.and_then(|m| m.get("mode")) {
        None | Some(Value::Null) => Ok(Mode::Unset),
        Some(Value::String(s)) => {
            Mode::parse(s).ok_or_else(|| invalid(format!("unknown mode `{s}` in {at}")))
        }
        Some(other) => Err(invalid(format!("{at}.mode is not a string: {other}"))),
    }
}

/// One PeerAuthentication from its API object (JSON as the API server sends it).
pub fn from_value(object: &Value) -> Result<PeerAuthentication, PeerAuthError> {
    let namespace = text(object, &["metadata", "namespace"]).unwrap_or_default();
    let name = text(object, &["metadata", "name"]).unwrap_or_default();
    let id = format!("{namespace}/{name}");
    let invalid = |reason: String| PeerAuthError::Invalid {
        object: id.clone(),
        reason,
    };
    if namespace.is_empty() || name.is_empty() {
        return Err(invalid(
            "metadata.namespace and metadata.name are required".into(),
        ));
    }
    let spec = object.get("spec");
    let selector = match spec
        .and_then(|s| s.get("selector"))
        .and_then(|s| s.get("matchLabels"))
    {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut labels = BTreeMap::new();
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| invalid(format!("selector label `{k}` is not a string")))?;
                labels.insert(k.clone(), v.to_owned());
            }
            (!labels.is_empty()).then_some(labels)
        }
        Some(_) => return Err(invalid("selector.matchLabels is not a map".into())),
    };
    let mode = mode_of(spec.and_then(|s| s.get("mtls")), &id, "mtls")?;
    let mut port_level = BTreeMap::new();
    match spec.and_then(|s| s.get("portLevelMtls")) {
        None | Some(Value::Null) => {}
        Some(Value::Object(ports)) => {
            for (port, m) in ports {
                let number: u16 =
                    port.parse().ok().filter(|&p| p != 0).ok_or_else(|| {
                        invalid(format!("portLevelMtls key `{port}` is not a port"))
                    })?;
                let at = format!("portLevelMtls[{port}]");
                port_level.insert(number, mode_of(Some(m), &id, &at)?);
            }
        }
        Some(_) => return Err(invalid("portLevelMtls is not a map".into())),
    }
    Ok(PeerAuthentication {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        created: text(object, &["metadata", "creationTimestamp"])
            .unwrap_or_default()
            .to_owned(),
        selector,
        mode,
        port_level,
    })
}

/// The policies of a `List` (`kubectl get peerauthentications.security.istio.io -A -o yaml`,
/// or the API's `PeerAuthenticationList` as JSON), or of a single object. YAML or JSON.
pub fn parse_list(input: &str) -> Result<Vec<PeerAuthentication>, PeerAuthError> {
    let doc: Value =
        serde_norway::from_str(input).map_err(|e| PeerAuthError::List(e.to_string()))?;
    match doc.get("items") {
        Some(Value::Array(items)) => items.iter().map(from_value).collect(),
        Some(_) => Err(PeerAuthError::List("`items` is not a list".into())),
        None if doc.get("spec").is_some() || doc.get("metadata").is_some() => {
            Ok(vec![from_value(&doc)?])
        }
        None => Err(PeerAuthError::List(
            "neither a List with `items` nor a PeerAuthentication".into(),
        )),
    }
}

/// The effective modes of `workloads` ((namespace, workload, labels)), keyed by
/// (namespace, workload). A workload without known labels is taken to be labelled
/// `app: <workload>`, the same assumption the suggested policy's selector makes.
pub fn modes_of<'a>(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    workloads: impl IntoIterator<Item = (&'a str, &'a str, &'a BTreeMap<String, String>)>,
) -> BTreeMap<(String, String), EffectiveMode> {
    workloads
        .into_iter()
        .map(|(ns, wl, labels)| {
            let mode = if labels.is_empty() {
                let app = BTreeMap::from([("app".to_owned(), wl.to_owned())]);
                resolve(policies, root_namespace, ns, &app)
            } else {
                resolve(policies, root_namespace, ns, labels)
            };
            ((ns.to_owned(), wl.to_owned()), mode)
        })
        .collect()
}

#[cfg(test)]
mod tests;
