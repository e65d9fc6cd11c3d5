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
//! A workload's labels ([`PodLabels`]) may not decide a selector: labels never given, over the
//! bounds, or not the same on every pod. A policy that may or may not select the workload and
//! could decide its mode makes the mode [`Mode::Unknown`], with the reason, never a guess.
//!
//! Parsing reads the API object as JSON ([`from_value`]: a watch event's object or one item of
//! `kubectl get peerauthentications.security.istio.io -A -o yaml`, [`parse_list`]). An unknown
//! mode is an error naming the object.

mod changes;
mod labels;

use std::collections::BTreeMap;

pub use changes::{ChangeLog, PolicyChange, MAX_LOGGED_CHANGES};
pub use labels::{
    PodLabels, Undecided, APP_KEYS, MAX_POD_LABELS, MAX_POD_LABEL_BYTES, PER_POD_KEYS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most `portLevelMtls` entries read from one policy: its keys are a workload's container
/// ports, a handful in practice; a policy with more is unreadable (left out, and said).
pub const MAX_PORT_LEVEL: usize = 64;

/// Istio's default root namespace (`meshConfig.rootNamespace`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A PeerAuthentication mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Not an API value: the effective mode cannot be told (see [`EffectiveMode::undecided`]).
    /// Never parsed from a policy; ordered below every mode.
    Unknown,
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
    /// The mode as the API spells it, `None` for any other string (`UNKNOWN` too).
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::parse_effective(s).filter(|&m| m != Mode::Unknown)
    }

    /// An effective mode as [`Mode::as_str`] writes it: an API value or `UNKNOWN`.
    pub fn parse_effective(s: &str) -> Option<Mode> {
        match s {
            "UNKNOWN" => Some(Mode::Unknown),
            "UNSET" => Some(Mode::Unset),
            "DISABLE" => Some(Mode::Disable),
            "PERMISSIVE" => Some(Mode::Permissive),
            "STRICT" => Some(Mode::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unknown => "UNKNOWN",
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
    /// `metadata.generation` above 1: the spec was changed after creation (`kubectl apply` of an
    /// edited policy keeps its `creationTimestamp`), so the creation time does not tell since
    /// when its mode holds.
    pub edited: bool,
}

impl PeerAuthentication {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn age_key(&self) -> (&str, &str) {
        (&self.created, &self.name)
    }

    /// Whether its selector selects a workload with `labels` (no selector: `Ok(false)`).
    fn selects(&self, labels: &PodLabels) -> Result<bool, Undecided> {
        self.selector
            .as_ref()
            .map_or(Ok(false), |s| labels.selected_by(s))
    }

    /// Heap bytes it holds (its strings and maps).
    pub fn heap_bytes(&self) -> usize {
        const LEAF: usize = 11 * 2 * std::mem::size_of::<String>() + 16;
        const PORT_LEAF: usize = 11 * (2 + 1) + 16;
        self.namespace.capacity()
            + self.name.capacity()
            + self.created.capacity()
            + self.selector.as_ref().map_or(0, |s| {
                s.len().div_ceil(11) * LEAF
                    + s.iter()
                        .map(|(k, v)| k.capacity() + v.capacity())
                        .sum::<usize>()
            })
            + self.port_level.len().div_ceil(11) * PORT_LEAF
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
    /// Never `Unset`; `Unknown` when a policy may or may not select the workload.
    pub mode: Mode,
    pub source: ModeSource,
    /// `namespace/name` of the policy that sets `mode` (none for the default).
    #[serde(default)]
    pub policy: Option<String>,
    /// Port-level overrides (container ports).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, PortMode>,
    /// With [`Mode::Unknown`]: why it cannot be told (`policy` is the policy in question).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecided: Option<String>,
    /// Since when this mode holds, and how that is known: the verdict calls plaintext refused
    /// only when it arrived after this; `None`: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
}

/// Since when a mode holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// Nanoseconds since the epoch.
    pub at: crate::Nanos,
    pub basis: SinceBasis,
}

/// How [`Since::at`] is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinceBasis {
    /// The most recent `creationTimestamp` of the policies that decide the mode.
    Created,
    /// The agent saw the mode take effect then (or it started then and found it).
    Agent,
    /// The agents' info series of the mode first showed then, in the window (to a step,
    /// plus a scrape margin).
    Prometheus,
}

impl SinceBasis {
    /// How it is known, in words.
    pub fn describe(self) -> &'static str {
        match self {
            SinceBasis::Created => "the deciding policies' creationTimestamp (none of them edited since; a deletion that let them decide is not seen)",
            SinceBasis::Agent => "when the agent saw it or a policy change that may have touched it, or started and found it; plus istiod's push margin",
            SinceBasis::Prometheus => "when the agents' info series first showed it in the window, plus a scrape margin",
        }
    }
}

impl Default for EffectiveMode {
    fn default() -> Self {
        EffectiveMode {
            mode: Mode::Permissive,
            source: ModeSource::Default,
            policy: None,
            ports: BTreeMap::new(),
            undecided: None,
            since: None,
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

    /// "STRICT (namespace foo/default)", "PERMISSIVE (default)", "UNKNOWN (workload foo/v1)"
    /// (why it is unknown: [`EffectiveMode::undecided`]).
    pub fn describe(&self) -> String {
        describe(self.mode, self.source, self.policy.as_deref())
    }

    /// Whether the mode is known.
    pub fn is_known(&self) -> bool {
        self.mode != Mode::Unknown
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

/// The effective mode of a workload in `namespace` with `labels`. A workload-level policy
/// that may or may not select it, and is older than the oldest that surely does (so would win
/// if it applied), makes the mode [`Mode::Unknown`].
pub fn resolve(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    namespace: &str,
    labels: &PodLabels,
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
    let in_namespace = || {
        policies
            .iter()
            .filter(|p| p.namespace == namespace && p.namespace != root_namespace)
    };
    let workload = oldest(in_namespace().filter(|p| p.selects(labels) == Ok(true)));
    let undecided = in_namespace()
        .filter(|p| workload.is_none_or(|w| p.age_key() < w.age_key()))
        .filter_map(|p| p.selects(labels).err().map(|why| (p, why)))
        .min_by(|a, b| a.0.age_key().cmp(&b.0.age_key()));
    if let Some((p, why)) = undecided {
        return EffectiveMode {
            mode: Mode::Unknown,
            source: ModeSource::Workload,
            policy: Some(p.id()),
            ports: BTreeMap::new(),
            undecided: Some(format!(
                "whether {} selects it cannot be told: {why}",
                p.id()
            )),
            since: None,
        };
    }
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
        Some(Value::Object(ports)) if ports.len() > MAX_PORT_LEVEL => {
            return Err(invalid(format!(
                "portLevelMtls has {} ports, more than the {MAX_PORT_LEVEL} read",
                ports.len()
            )))
        }
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
        edited: object
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
            .is_some_and(|g| g > 1),
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
/// (namespace, workload). A workload listed more than once (sets of its pods with other
/// labels) is judged on what all carry alike ([`PodLabels::merge`]); one whose labels are
/// not known is [`Mode::Unknown`] wherever a selector in its namespace could decide its mode.
pub fn modes_of<'a>(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    workloads: impl IntoIterator<Item = (&'a str, &'a str, &'a PodLabels)>,
) -> BTreeMap<(String, String), EffectiveMode> {
    let mut labels: BTreeMap<(&str, &str), std::borrow::Cow<'a, PodLabels>> = BTreeMap::new();
    for (ns, wl, l) in workloads {
        match labels.entry((ns, wl)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(std::borrow::Cow::Borrowed(l));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if **e.get() != *l {
                    let merged = e.get().merge(l);
                    e.insert(std::borrow::Cow::Owned(merged));
                }
            }
        }
    }
    labels
        .into_iter()
        .map(|((ns, wl), l)| {
            let mut mode = resolve(policies, root_namespace, ns, &l);
            mode.since = created_since(&mode, policies);
            ((ns.to_owned(), wl.to_owned()), mode)
        })
        .collect()
}

/// Since when `mode` holds as far as the policies' `creationTimestamp` tells: the most recent
/// creation among the policies that decide it (the workload's and its ports'). `None` when
/// a default decides, a time is missing or unreadable, or a deciding policy was edited since its
/// creation (`metadata.generation` > 1). A deletion
/// that let these decide, is later and not seen in a listing: the caller says so.
pub fn created_since(mode: &EffectiveMode, policies: &[PeerAuthentication]) -> Option<Since> {
    let deciding: std::collections::BTreeSet<&str> = mode
        .policy
        .iter()
        .map(String::as_str)
        .chain(mode.ports.values().map(|p| p.policy.as_str()))
        .collect();
    if deciding.is_empty() || mode.mode == Mode::Unknown {
        return None;
    }
    deciding
        .into_iter()
        .map(|id| {
            let p = policies.iter().find(|p| p.id() == id)?;
            if p.edited {
                return None;
            }
            let t = humantime::parse_rfc3339(&p.created).ok()?;
            let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
            crate::Nanos::try_from(d.as_nanos()).ok()
        })
        .try_fold(0, |latest: crate::Nanos, t| Some(latest.max(t?)))
        .map(|at| Since {
            at,
            basis: SinceBasis::Created,
        })
}

#[cfg(test)]
mod tests;
