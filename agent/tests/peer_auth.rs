//! `meshwatch analyze --peer-authentications FILE`: each verdict shows the workload's mode
//! today, and a workload already STRICT that receives plaintext has broken clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn analyze(extra: &[&str]) -> Output {
    analyze_with(
        &root().join("../pcaps/istio-migration-before.workloads.yaml"),
        extra,
    )
}

/// The capture's workloads file with the pods' labels added (the bundled one has none).
fn labelled_workloads() -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("../pcaps/istio-migration-before.workloads.yaml"))
            .expect("workloads file");
    let labelled = text.replace(
        "{namespace: bar, workload: httpbin, service_account: httpbin,",
        "{namespace: bar, workload: httpbin, service_account: httpbin, labels: {app: httpbin, version: v1, pod-template-hash: 5b7c9f8d4},",
    );
    assert_ne!(
        text, labelled,
        "the workloads file changed: update this test"
    );
    let dir = std::env::temp_dir().join(format!("meshwatch-pa-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("workloads.yaml");
    std::fs::write(&path, labelled).expect("write");
    path
}

fn analyze_with(workloads: &Path, extra: &[&str]) -> Output {
    let pcaps = root().join("../pcaps");
    Command::new(env!("CARGO_BIN_EXE_meshwatch"))
        .arg("analyze")
        .arg("--workloads")
        .arg(workloads)
        .arg(pcaps.join("istio-migration-before.pcap"))
        .args(["--progress", "never", "--color", "never"])
        .args(extra)
        .output()
        .expect("run meshwatch")
}

fn policies() -> String {
    root()
        .join("tests/fixtures/peerauthentications-migration.yaml")
        .display()
        .to_string()
}

fn verdict<'a>(report: &'a Value, ns: &str, w: &str) -> &'a Value {
    report["verdicts"]
        .as_array()
        .and_then(|vs| {
            vs.iter()
                .find(|v| v["namespace"] == ns && v["workload"] == w)
        })
        .unwrap_or(&Value::Null)
}

#[test]
fn verdicts_show_the_mode_and_broken_clients() {
    let out = analyze_with(
        &labelled_workloads(),
        &["--format", "json", "--peer-authentications", &policies()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();

    let foo = verdict(&report, "foo", "httpbin");
    assert_eq!(foo["verdict"], "broken_clients", "{foo}");
    assert_eq!(
        foo["peer_authentication"],
        serde_json::json!({"mode": "STRICT", "source": "namespace", "policy": "foo/default",
            // foo/default's creationTimestamp, 2026-11-26T14:00:00Z: before the capture
            "since": {"at": 1_795_701_600_000_000_000_u64, "basis": "created"}})
    );
    assert_eq!(foo["blockers"][0]["workload"], "sleep");
    assert_eq!(foo["blockers"][0]["namespace"], "legacy");
    assert_eq!(foo["blockers"][0]["broken"], true);
    assert!(foo["suggested_policy"].is_null());

    let bar = verdict(&report, "bar", "httpbin");
    assert_eq!(bar["verdict"], "ready");
    assert_eq!(bar["peer_authentication"]["source"], "workload");
    assert!(bar["suggested_policy"].is_null(), "already STRICT: {bar}");

    let sleep = verdict(&report, "legacy", "sleep");
    assert_eq!(sleep["peer_authentication"]["mode"], "PERMISSIVE");
    assert_eq!(sleep["peer_authentication"]["source"], "mesh");

    let foo_ns = report["namespaces"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["namespace"] == "foo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(foo_ns["verdict"], "broken_clients");
    assert_eq!(foo_ns["broken_clients"], 1);
    assert_eq!(report["mesh"]["verdict"], "broken_clients");

    // the table: the mode column and the broken clients
    let out = analyze_with(
        &labelled_workloads(),
        &["--peer-authentications", &policies()],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("STRICT (namespace foo/default)"), "{table}");
    assert!(
        table.contains("foo/httpbin has broken clients (already STRICT: refused now):"),
        "{table}"
    );
    assert!(table.contains("broken: legacy/sleep"), "{table}");
}

/// foo/default created after the capture (its `creationTimestamp`): the plaintext to
/// foo/httpbin arrived before the policy existed, so it is named, not called refused.
#[test]
fn plaintext_before_the_policy_was_created_is_not_broken() {
    let text = std::fs::read_to_string(policies()).expect("policies");
    let later = text.replace(
        "creationTimestamp: \"2026-11-26T14:00:00Z\"",
        "creationTimestamp: \"2027-01-01T00:00:00Z\"",
    );
    assert_ne!(text, later, "the policies file changed: update this test");
    let dir = std::env::temp_dir().join(format!("meshwatch-pa-later-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("policies.yaml");
    std::fs::write(&path, later).expect("write");
    let out = analyze_with(
        &labelled_workloads(),
        &[
            "--format",
            "json",
            "--peer-authentications",
            &path.display().to_string(),
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let foo = verdict(&report, "foo", "httpbin");
    assert_ne!(foo["verdict"], "broken_clients", "{foo}");
    assert!(foo["blockers"][0].get("broken").is_none(), "{foo}");
    let reason = foo["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("was last connected before 2027-01-01T00:00:00.000000Z, from when the mode STRICT (namespace foo/default) is known to hold (the deciding policies' creationTimestamp"),
        "{reason}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A workloads file without labels: whether bar/httpbin's `app: httpbin` policy selects it
/// cannot be told, and the verdict says so instead of assuming `app: <workload>`; foo's
/// namespace-wide policy needs no labels.
#[test]
fn without_labels_a_selecting_policy_makes_the_mode_unknown() {
    let out = analyze(&["--format", "json", "--peer-authentications", &policies()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bar = verdict(&report, "bar", "httpbin");
    assert_eq!(bar["verdict"], "ready");
    assert_eq!(bar["peer_authentication"]["mode"], "UNKNOWN", "{bar}");
    assert_eq!(bar["peer_authentication"]["policy"], "bar/httpbin");
    assert_eq!(
        bar["peer_authentication"]["undecided"],
        "whether bar/httpbin selects it cannot be told: its pod labels are not known"
    );
    // a workload policy that may or may not select it decides: no suggestion can be shown
    // to take effect, and the reason says so
    assert!(bar["suggested_policy"].is_null(), "{bar}");
    assert!(
        bar["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no policy suggested: the mode today is UNKNOWN")),
        "{bar}"
    );
    let foo = verdict(&report, "foo", "httpbin");
    assert_eq!(foo["verdict"], "broken_clients", "{foo}");
    assert_eq!(foo["peer_authentication"]["mode"], "STRICT");
}

#[test]
fn without_policies_nothing_changes_meaning() {
    let out = analyze(&["--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let foo = verdict(&report, "foo", "httpbin");
    assert_eq!(foo["verdict"], "blocked");
    assert!(foo.get("peer_authentication").is_none());
    assert!(foo["blockers"][0].get("broken").is_none());
}

#[test]
fn an_unreadable_policy_file_is_bad_input() {
    let dir = std::env::temp_dir().join(format!("meshwatch-pa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "items:\n- metadata: {name: x, namespace: foo}\n  spec: {mtls: {mode: STRICTER}}\n",
    )
    .expect("write");
    let out = analyze(&["--peer-authentications", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("foo/x") && err.contains("STRICTER"), "{err}");
    let missing = analyze(&["--peer-authentications", "/nonexistent/pa.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
}
