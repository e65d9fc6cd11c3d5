//! Shared helpers for the end-to-end tests: where things are, and running the analyzer.

use std::path::{Path, PathBuf};

use meshwatch::analyze::{analyze, Helpers, Threads};
use meshwatch::flow::TableLimits;
use meshwatch::identity::IdentitySource;
use meshwatch::report::Report;
use meshwatch::verdict::Policy;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The third-party corpus: `$MESHWATCH_CORPUS`, else `shared/corpus` beside the repository.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("MESHWATCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/corpus"))
}

/// The `.pcap` and `.pcapng` files of a directory, sorted.
pub fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    v.sort();
    v
}

/// Analyze captures in-process with the default policy and every flow kept.
pub fn analyze_files(
    files: &[PathBuf],
    identities: &(dyn IdentitySource + Sync),
    policy: &Policy,
) -> Report {
    analyze_files_threads(files, identities, policy, 1)
}

/// The same with `threads` workers.
pub fn analyze_files_threads(
    files: &[PathBuf],
    identities: &(dyn IdentitySource + Sync),
    policy: &Policy,
    threads: usize,
) -> Report {
    analyze_files_with(files, identities, policy, threads, Helpers::Auto)
}

/// The same with `threads` workers, and one pipeline's helper threads as asked.
pub fn analyze_files_with(
    files: &[PathBuf],
    identities: &(dyn IdentitySource + Sync),
    policy: &Policy,
    threads: usize,
    helpers: Helpers,
) -> Report {
    match analyze(
        files,
        identities,
        policy,
        TableLimits::default(),
        true,
        None,
        Threads {
            workers: threads,
            helpers,
        },
    ) {
        Ok((report, _warnings)) => report,
        Err(e) => panic!("analyzing {files:?}: {e}"),
    }
}
