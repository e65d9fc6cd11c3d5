//! The Kubernetes manifests, as `kubectl kustomize deploy/` (and the prometheus-operator overlay)
//! render them, say what the agent needs and accepts: the `agent` subcommand with Kubernetes
//! identities and arguments and `MESHWATCH_*` variables `meshwatch agent` parses, the node name
//! from the downward API, only CAP_NET_RAW, probes, a priority class, read-only RBAC, a Service
//! that selects the agents, and a ServiceMonitor that selects the Service.
//! (scripts/check-deploy.sh validates the same output against the Kubernetes OpenAPI schemas.)

use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

/// `kubectl kustomize DIR` of the repository, as JSON values.
fn render(dir: &str) -> Vec<Value> {
    let path = meshwatch_tests::repo_root().join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl kustomize {}: {e} (kubectl comes with `make deps`)",
                path.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{dir}: {e}")))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn agent_container(docs: &[Value]) -> &Value {
    &of_kind(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
}

/// The container's arguments, with each `MESHWATCH_*` variable turned into the flag it sets
/// (a downward-API value becomes a placeholder), parsed by the agent's own command line.
#[test]
fn daemonset_arguments_and_variables_are_ones_the_agent_accepts() {
    let docs = render("deploy");
    let c = agent_container(&docs);
    let args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    assert_eq!(args, ["agent", "--kubernetes"]);
    let cli = <meshwatch::cli::Cli as clap::CommandFactory>::command();
    let agent = cli.find_subcommand("agent").expect("agent subcommand");
    let mut argv = vec!["meshwatch".to_owned()];
    argv.extend(args);
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name");
        let arg = agent
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|v| v == name))
            .unwrap_or_else(|| panic!("{name} is not a variable of `meshwatch agent`"));
        let long = arg.get_long().expect("a long flag");
        let value = e["value"].as_str().unwrap_or("from-the-downward-api");
        if arg.get_action().takes_values() {
            argv.push(format!("--{long}={value}"));
        } else if value == "true" {
            argv.push(format!("--{long}"));
        }
    }
    if let Err(e) = <meshwatch::cli::Cli as clap::Parser>::try_parse_from(&argv) {
        panic!("the DaemonSet's command line {argv:?} is refused:\n{e}");
    }
    let env = c["env"].as_array().expect("env");
    let node = env
        .iter()
        .find(|e| e["name"] == "MESHWATCH_NODE_NAME")
        .expect("node name");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
}

#[test]
fn daemonset_runs_with_least_privilege_probes_and_resources() {
    let docs = render("deploy");
    let ds = of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = agent_container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], json!(["NET_RAW"]));
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_ne!(sc["privileged"], true);
    // not root: the image's binary carries cap_net_raw+ep, which no_new_privs would disable
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"]
        .as_u64()
        .is_some_and(|u| u != 0));
    assert_eq!(sc["allowPrivilegeEscalation"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let probe_port = &c["readinessProbe"]["httpGet"]["port"];
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| &p["name"] == probe_port || &p["containerPort"] == probe_port),
        "probe port {probe_port} is not a container port"
    );
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the agent must run on every node, tainted ones included"
    );
    let class = pod["priorityClassName"]
        .as_str()
        .expect("priorityClassName");
    assert!(
        class.starts_with("system-")
            || docs
                .iter()
                .any(|d| d["kind"] == "PriorityClass" && d["metadata"]["name"] == class),
        "priority class {class} is neither a system class nor rendered"
    );
    let r = &c["resources"];
    for (what, key) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(r[what][key].is_string(), "resources.{what}.{key} unset");
    }
    // the image `make image` builds, at the workspace's version
    assert_eq!(
        c["image"],
        format!("ghcr.io/meshwatch/meshwatch:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn rbac_reads_what_identities_need_and_creates_only_reviews() {
    let docs = render("deploy");
    let named = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
    };
    let role = named("meshwatch");
    let mut grants = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert_eq!(rule["apiGroups"].as_array().map(Vec::len), Some(1));
        let group = rule["apiGroups"][0].as_str().unwrap_or("?").to_owned();
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for r in rule["resources"].as_array().expect("resources") {
            grants.push(format!(
                "{group}/{} {}",
                r.as_str().unwrap_or("?"),
                verbs.join(",")
            ));
        }
    }
    grants.sort_unstable();
    assert_eq!(
        grants,
        [
            "/namespaces list,watch",
            "/nodes list,watch",
            "/pods list,watch",
            "/services list,watch",
            "authentication.k8s.io/tokenreviews create",
            "authorization.k8s.io/subjectaccessreviews create",
            "discovery.k8s.io/endpointslices list,watch",
            "security.istio.io/peerauthentications get,list,watch",
        ]
    );
    // what a scraper needs to read the agents: GET on their URLs, nothing else
    let reader = named("meshwatch-metrics-reader");
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics", "/api/v1/*"], "verbs": ["get"]}])
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] == "meshwatch")
        .expect("binding");
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(
        binding["subjects"][0]["name"],
        ds["spec"]["template"]["spec"]["serviceAccountName"]
    );
    assert_eq!(
        binding["subjects"][0]["namespace"],
        ds["metadata"]["namespace"]
    );
    // the probes speak HTTPS, as the agent serves with --kubernetes
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("selector labels")
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

#[test]
fn the_service_selects_the_agents_and_the_service_monitor_the_service() {
    let docs = render("deploy/overlays/prometheus-operator");
    let ds = of_kind(&docs, "DaemonSet");
    let svc = of_kind(&docs, "Service");
    assert!(selects(
        &svc["spec"]["selector"],
        &ds["spec"]["template"]["metadata"]["labels"]
    ));
    let port = &svc["spec"]["ports"][0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == port["targetPort"]));
    let sm = of_kind(&docs, "ServiceMonitor");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], port["name"]);
    // the agent's own `namespace` and `workload` labels must win over the target's
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    // the alerts expect job="meshwatch": a ServiceMonitor's job is the Service's name
    assert_eq!(svc["metadata"]["name"], "meshwatch");
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert!(!rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .is_empty());
    // the plain install has no prometheus-operator kinds (they need its CRDs)
    let plain = render("deploy");
    assert!(plain.iter().all(|d| !d["apiVersion"]
        .as_str()
        .unwrap_or("")
        .starts_with("monitoring.coreos.com")));
}
