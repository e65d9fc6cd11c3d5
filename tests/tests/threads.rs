//! `--threads N` shards flows to workers: the report must be the same as with one thread, on
//! every capture of pcaps/ and of the third-party corpus.

use meshwatch::identity::file::WorkloadsFile;
use meshwatch::identity::{IdentityMap, NoIdentities};
use meshwatch::verdict::Policy;
use meshwatch_tests::{analyze_files_threads, captures_in, corpus_dir, repo_root};

#[test]
fn sharded_workers_give_the_same_report() {
    let mut files = captures_in(&repo_root().join("pcaps"));
    assert!(files.len() >= 8, "the generated captures in pcaps/");
    let corpus = corpus_dir().join("pcaps");
    if corpus.is_dir() {
        files.extend(captures_in(&corpus));
    } else {
        println!("threads: corpus skipped: {} not found", corpus.display());
    }
    for f in &files {
        let ids: IdentityMap =
            WorkloadsFile::load(&f.with_extension("workloads.yaml")).unwrap_or_default();
        let ids: &(dyn meshwatch::identity::IdentitySource + Sync) =
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
            // the shards' flows at once never exceed what one table held at its peak
            assert!(
                b.peak_flows <= a.peak_flows && (a.flows == 0 || b.peak_flows > 0),
                "{}: peak {} with {threads} threads, {} with one",
                f.display(),
                b.peak_flows,
                a.peak_flows
            );
        }
    }
}
