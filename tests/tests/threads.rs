//! `--threads N` shards flows to workers, and one pipeline may have helper threads (the
//! capture read ahead, flows folded into edges apart): the report must be the same as with one
//! thread and no helpers, on every capture of pcaps/ and of the third-party corpus.

use meshwatch::analyze::Helpers;
use meshwatch::identity::file::WorkloadsFile;
use meshwatch::identity::{IdentityMap, NoIdentities};
use meshwatch::verdict::Policy;
use meshwatch_tests::{analyze_files_with, captures_in, corpus_dir, repo_root};

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
        let file = std::slice::from_ref(f);
        let one = analyze_files_with(file, ids, &Policy::default(), 1, Helpers::Never);
        for (threads, helpers) in [
            (1, Helpers::Always),
            (2, Helpers::Never),
            (3, Helpers::Never),
        ] {
            let many = analyze_files_with(file, ids, &Policy::default(), threads, helpers);
            assert_eq!(
                one.flows,
                many.flows,
                "{} flows with {threads} threads, helpers {helpers:?}",
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
