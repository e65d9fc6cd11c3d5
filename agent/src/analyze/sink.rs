//! Where finished flows are folded into edges: on the pipeline's thread, or, with a core to
//! spare, on a thread of their own. The pipeline's batches go there whole (a `Vec` swapped, not
//! copied), in order through one channel, and come back emptied to be filled again: the order
//! is the one folding here would see, so the bounds fold the same flows.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use super::{AnalyzeError, Collector};
use crate::flow::FlowRecord;
use crate::pipeline::Pipeline;

/// Batches of finished flows in flight to a folding thread (bounds their memory).
const BATCHES_IN_FLIGHT: usize = 2;

/// Where finished flows are folded in: on this thread, or on a thread of their own (the
/// batches go there whole, in order, and come back empty to be filled again).
pub(super) enum Sink<'scope, 'a> {
    Here(Box<Collector<'a>>),
    Thread {
        full: SyncSender<Vec<FlowRecord>>,
        empty: Receiver<Vec<FlowRecord>>,
        folding: ScopedJoinHandle<'scope, Collector<'a>>,
    },
}

impl<'scope, 'a: 'scope> Sink<'scope, 'a> {
    /// Fold on a thread of its own; here when no thread can be started.
    pub(super) fn spawn<'env>(scope: &'scope Scope<'scope, 'env>, collector: Collector<'a>) -> Self
    where
        'a: 'env,
    {
        let (full, full_rx) = mpsc::sync_channel::<Vec<FlowRecord>>(BATCHES_IN_FLIGHT);
        let (empty_tx, empty) = mpsc::sync_channel(BATCHES_IN_FLIGHT + 2);
        let (start_tx, start_rx) = mpsc::sync_channel::<Collector<'a>>(1);
        let folding = std::thread::Builder::new()
            .name("meshwatch-fold".into())
            .spawn_scoped(scope, move || {
                let Ok(mut collector) = start_rx.recv() else {
                    unreachable!("the collector is sent once the thread runs")
                };
                for mut batch in full_rx {
                    collector.absorb(batch.drain(..));
                    // room for every batch there is; a full channel just drops one
                    let _ = empty_tx.try_send(batch);
                }
                collector
            });
        match folding {
            Ok(folding) => match start_tx.send(collector) {
                Ok(()) => Sink::Thread {
                    full,
                    empty,
                    folding,
                },
                Err(mpsc::SendError(collector)) => Sink::Here(Box::new(collector)),
            },
            Err(_) => Sink::Here(Box::new(collector)),
        }
    }
}

impl<'a> Sink<'_, 'a> {
    /// The pipeline's finished flows, folded in (here) or handed over whole (to the thread).
    pub(super) fn take_from(&mut self, pipeline: &mut Pipeline) {
        match self {
            Sink::Here(collector) => collector.absorb(pipeline.take_finished()),
            Sink::Thread { full, empty, .. } => {
                if pipeline.finished_len() == 0 {
                    return;
                }
                let batch = pipeline.swap_finished(empty.try_recv().unwrap_or_default());
                // the thread is gone only if it panicked: `collector` reports that
                let _ = full.send(batch);
            }
        }
    }

    pub(super) fn absorb(&mut self, records: impl IntoIterator<Item = FlowRecord>) {
        match self {
            Sink::Here(collector) => collector.absorb(records),
            Sink::Thread { full, empty, .. } => {
                let mut batch = empty.try_recv().unwrap_or_default();
                batch.extend(records);
                if !batch.is_empty() {
                    let _ = full.send(batch);
                }
            }
        }
    }

    /// Every flow folded in: the collector back.
    pub(super) fn collector(self) -> Result<Collector<'a>, AnalyzeError> {
        match self {
            Sink::Here(collector) => Ok(*collector),
            Sink::Thread { full, folding, .. } => {
                drop(full); // the end of the batches
                folding.join().map_err(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    AnalyzeError::Folding(why)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Edges;
    use crate::aggregate::MAX_PEERS;
    use crate::analyze::DRAIN_EVERY;
    use crate::capture::file::CaptureFile;
    use crate::flow::TableLimits;
    use crate::identity::NoIdentities;
    use crate::pipeline::FlowCounts;
    use std::net::IpAddr;
    use std::path::Path;

    /// A real capture's flows, then again and again from other clients: far past the bound of
    /// distinct peers, where what is folded depends on the order the flows come in.
    fn records() -> Vec<FlowRecord> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/mixed-interfaces.pcapng");
        let mut pipeline = Pipeline::new(TableLimits::default());
        let mut capture = CaptureFile::open(&path).expect("a capture in pcaps/");
        capture
            .for_each_frame(|frame| pipeline.on_frame(&frame), |_| {})
            .expect("read");
        pipeline.finish();
        let real: Vec<FlowRecord> = pipeline.take_finished().collect();
        assert!(real.iter().any(|r| !r.local && !r.view), "no flow counts");
        (0..3 * MAX_PEERS as u32)
            .map(|i| {
                let mut r = real[i as usize % real.len()].clone();
                r.src = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
                r
            })
            .collect()
    }

    /// What a collector holds, as compared.
    fn held(c: &Collector<'_>) -> (Vec<crate::aggregate::Edge>, FlowCounts, u64, usize) {
        let listed = c.flows.as_ref().map_or(0, Vec::len);
        (c.edges.to_vec(), c.counts, c.edges.folded(), listed)
    }

    /// Folding on a thread of its own counts exactly what folding here does: every batch,
    /// in order (past the bounds, the order decides what folds), taken from a pipeline (the
    /// path one pipeline takes) or handed over as records (the sharded path's).
    #[test]
    fn folding_on_a_thread_counts_what_folding_here_does() {
        let identities = NoIdentities;
        let records = records();
        let collector = || Collector {
            identities: &identities,
            edges: Edges::default(),
            counts: FlowCounts::default(),
            flows: Some(Vec::new()),
        };
        let mut here = Sink::Here(Box::new(collector()));
        let mut pipelines = [(); 2].map(|_| Pipeline::new(TableLimits::default()));
        let there = std::thread::scope(|scope| {
            let mut there = Sink::spawn(scope, collector());
            assert!(matches!(there, Sink::Thread { .. }), "no thread");
            for (i, batch) in records.chunks(DRAIN_EVERY).enumerate() {
                if i % 3 == 2 {
                    here.absorb(batch.to_vec());
                    there.absorb(batch.to_vec());
                    continue;
                }
                let [a, b] = &mut pipelines;
                a.finished_mut().extend_from_slice(batch);
                b.finished_mut().extend_from_slice(batch);
                here.take_from(a);
                there.take_from(b);
                assert_eq!((a.finished_len(), b.finished_len()), (0, 0), "taken whole");
            }
            there
                .collector()
                .map(|c| held(&c))
                .map_err(|e| e.to_string())
        });
        let Ok(here) = here.collector() else {
            unreachable!("folding here cannot fail")
        };
        let here = held(&here);
        assert!(here.2 > 0, "nothing folded: the bound was not reached");
        assert_eq!(here.3, records.len(), "every record listed");
        assert_eq!(there, Ok(here));
    }
}
