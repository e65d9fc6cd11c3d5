//! The pure modules stay pure (ARCHITECTURE.md): bytes or values in, values out — they never
//! import the I/O side (capture, identity, the agent's state, metrics, the HTTP API, reports),
//! an async runtime, or the file system. This reads their sources, so a new import fails here.

use std::path::{Path, PathBuf};

/// Modules marked **pure** in ARCHITECTURE.md, with their submodule directories.
const PURE: &[&str] = &[
    "decode",
    "reassembly",
    "tls",
    "classify",
    "flow",
    "verdict",
    "peer_auth",
    "window",
    "timestamp",
];

/// What a pure module may not name.
const FORBIDDEN: &[&str] = &[
    "crate::capture",
    "crate::identity",
    "crate::analyze",
    "crate::api",
    "crate::live",
    "crate::metrics",
    "crate::agent",
    "crate::report",
    "crate::sharded",
    "crate::aggregate::Edges",
    "tokio::",
    "axum::",
    "kube::",
    "pcap::",
    "std::fs",
    "std::net::Tcp",
    "SystemTime",
    "Instant::now",
];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join(format!("{module}.rs"))];
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn pure_modules_import_no_io() {
    let mut offences = Vec::new();
    for module in PURE {
        let files = sources(module);
        assert!(files[0].is_file(), "{} is missing", files[0].display());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            // tests may build fixtures however they like
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let is_test_file = file.file_name().is_some_and(|n| n == "tests.rs");
            if is_test_file {
                continue;
            }
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for bad in FORBIDDEN {
                    if line.contains(bad) {
                        offences.push(format!("{}: `{}`", file.display(), line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "pure modules import I/O:\n{}",
        offences.join("\n")
    );
}
