//! `--threads N` shards flows to workers: the report must be the same as with one thread, on
//! every capture of pcaps/ and of the third-party corpus.

use std::path::PathBuf;

use meshwatch::identity::file::WorkloadsFile;
use meshwatch::identity::{IdentityMap, NoIdentities};
use meshwatch::verdict::Policy;
use meshwatch_tests::{analyze_files_threads, corpus_dir, repo_root};

fn pcaps_in(dir: PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
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

#[test]
fn sharded_workers_give_the_same_report() {
    let mut files = pcaps_in(repo_root().join("pcaps"));
    files.extend(pcaps_in(corpus_dir().join("pcaps")));
    assert!(files.len() > 100);
    for f in &files {
        let ids: IdentityMap =
            WorkloadsFile::load(&f.with_extension("workloads.yaml")).unwrap_or_default();
        let ids: &dyn meshwatch::identity::IdentitySource =
            if ids.is_empty() { &NoIdentities } else { &ids };
        let one = analyze_files_threads(std::slice::from_ref(f), ids, &Policy::default(), 1);
        for threads in [2, 3] {
            let many =
                analyze_files_threads(std::slice::from_ref(f), ids, &Policy::default(), threads);
            assert_eq!(
                one.flows,
                many.flows,
                "{} flows with {threads} threads",
                f.display()
            );
            assert_eq!(one.edges, many.edges, "{} edges", f.display());
            assert_eq!(one.verdicts, many.verdicts, "{} verdicts", f.display());
            let (a, b) = (&one.summary, &many.summary);
            assert_eq!(
                (a.packets, a.flows, a.decode_errors, a.security),
                (b.packets, b.flows, b.decode_errors, b.security)
            );
        }
    }
}
