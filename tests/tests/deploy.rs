//! The Kubernetes manifests in deploy/ parse, and say what the agent needs: the `agent`
//! subcommand with Kubernetes identities, the node name from the downward API, only CAP_NET_RAW,
//! and read-only RBAC on pods and nodes.

use serde::Deserialize;
use serde_json::Value;

fn documents() -> Vec<Value> {
    let path = meshwatch_tests::repo_root().join("deploy/meshwatch.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn daemonset_runs_the_agent_with_least_privilege() {
    let docs = documents();
    let ds = of_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["agent", "--kubernetes"]));
    let env = c["env"].as_array().expect("env");
    let node = env
        .iter()
        .find(|e| e["name"] == "MESHWATCH_NODE_NAME")
        .expect("node name");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    assert_eq!(caps["add"], serde_json::json!(["NET_RAW"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // every MESHWATCH_* variable the manifest sets is one the agent reads
    let cli = <meshwatch::cli::Cli as clap::CommandFactory>::command();
    let agent = cli.find_subcommand("agent").expect("agent subcommand");
    let known: Vec<String> = agent
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for e in env {
        let name = e["name"].as_str().expect("name");
        assert!(
            known.iter().any(|k| k == name),
            "{name} is not an agent variable: {known:?}"
        );
    }
}

#[test]
fn rbac_is_read_only_on_pods_and_nodes() {
    let docs = documents();
    let role = of_kind(&docs, "ClusterRole");
    for rule in role["rules"].as_array().expect("rules") {
        for verb in rule["verbs"].as_array().expect("verbs") {
            assert!(
                matches!(verb.as_str(), Some("list" | "watch")),
                "verb {verb}"
            );
        }
    }
    let resources: Vec<&str> = role["rules"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(resources, ["pods", "nodes"]);
}
