//! `meshwatch analyze`: capture files through the pipeline into a report. The I/O wiring
//! around the pure core.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::aggregate::Edges;
use crate::capture::file::{Ahead, CaptureError, CaptureFile};
use crate::capture::inputs;
use crate::capture::merge::{self, FileReport};
use crate::cli::{AnalyzeArgs, Format, When};
use crate::flow::{FlowRecord, TableLimits};
use crate::identity::file::{WorkloadsError, WorkloadsFile};
use crate::identity::{IdentitySource, NoIdentities};
use crate::peer_auth::PeerAuthentication;
use crate::pipeline::{FlowCounts, Pipeline};
use crate::report::{format_time, table, Report, Summary};
use crate::sharded::{Shards, WorkerTotals};
use crate::verdict::{self, Policy};

mod sink;
use sink::Sink;

/// Errors of an analysis run; all are the input's fault (exit code 2) except `Output`.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Workloads(#[from] WorkloadsError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Worker(#[from] crate::sharded::WorkerPanicked),
    #[error("the thread folding finished flows into edges panicked ({0}); the analysis is lost")]
    Folding(String),
    #[error("--helper-threads {0} applies to one pipeline, not to --threads {1}")]
    HelpersWithWorkers(Helpers, u64),
    #[error("{path}: {error}")]
    PeerAuthentications {
        path: String,
        error: crate::peer_auth::PeerAuthError,
    },
}

/// Finished flows are folded into edges once this many are waiting.
const DRAIN_EVERY: usize = 4096;

/// Where finished flows go: edges, counts, and (with `--flows`) the list.
struct Collector<'a> {
    identities: &'a (dyn IdentitySource + Sync),
    edges: Edges,
    counts: FlowCounts,
    flows: Option<Vec<FlowRecord>>,
}

impl Collector<'_> {
    /// Fold finished flows in. Offline, a connection is counted from its final record (the
    /// same count as the classification events, with its bytes). Local traffic is counted and
    /// listed, never evidence; attempts go to their edges apart from connections.
    fn absorb(&mut self, records: impl IntoIterator<Item = FlowRecord>) {
        for rec in records {
            self.counts.add(&rec);
            if !rec.local && !rec.view {
                self.edges.add(&rec, self.identities);
            }
            if let Some(flows) = self.flows.as_mut() {
                flows.push(rec);
            }
        }
    }
}

/// A warning that does not stop the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

/// Where frames go: one pipeline on this thread, or N sharded workers.
enum Engine {
    Single(Box<Pipeline>),
    Sharded(Shards),
}

impl Engine {
    fn on_frame(&mut self, frame: &crate::capture::Frame<'_>, sink: &mut Sink<'_, '_>) {
        match self {
            Engine::Single(p) => {
                p.on_frame(frame);
                // records are folded into edges as they come: memory stays flat
                if p.finished_len() >= DRAIN_EVERY {
                    sink.take_from(p);
                }
            }
            Engine::Sharded(s) => {
                s.push(frame);
                sink.absorb(s.finished());
            }
        }
    }

    fn drain(&mut self, sink: &mut Sink<'_, '_>) {
        match self {
            Engine::Single(p) => sink.take_from(p),
            Engine::Sharded(s) => sink.absorb(s.finished()),
        }
    }

    /// End of input: every flow finished; the packet and table totals.
    fn finish(self, sink: &mut Sink<'_, '_>) -> Result<WorkerTotals, AnalyzeError> {
        match self {
            Engine::Single(mut p) => {
                p.finish();
                sink.take_from(&mut p);
                Ok(WorkerTotals {
                    packets: p.packet_stats().clone(),
                    table: p.table_stats(),
                    first_last: p.time_span(),
                })
            }
            Engine::Sharded(s) => {
                let (totals, rest) = s.finish()?;
                sink.absorb(rest);
                Ok(totals)
            }
        }
    }
}

/// The threads an analysis uses: `workers` > 1 shards flows to as many workers; one pipeline
/// may have helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    pub workers: usize,
    pub helpers: Helpers,
}

/// Whether one pipeline gets helper threads: the capture read ahead, and finished flows folded
/// into edges, each on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Helpers {
    /// When the process may use more than one core (`taskset -c 0` says it may not).
    Auto,
    /// Whatever the cores.
    Always,
    /// Everything on the calling thread (a machine whose other cores are busy).
    Never,
}

/// As on the command line (clap's name for the value).
impl std::fmt::Display for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self);
        f.write_str(value.as_ref().map_or("", |v| v.get_name()))
    }
}

impl Helpers {
    fn wanted(self) -> bool {
        match self {
            Helpers::Auto => std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            Helpers::Always => true,
            Helpers::Never => false,
        }
    }
}

/// Every frame of the inputs through the engine into the sink: what each file held, and the
/// packet and table totals.
fn read_all(
    inputs: &[PathBuf],
    ahead: Ahead,
    mut engine: Engine,
    sink: &mut Sink<'_, '_>,
    on_progress: impl FnMut(u64),
) -> Result<(Vec<FileReport>, WorkerTotals), AnalyzeError> {
    let files = match inputs {
        // one capture: straight from its reader, no copy
        [one] => {
            let mut capture = CaptureFile::open_with(one, ahead)?;
            let summary =
                capture.for_each_frame(|frame| engine.on_frame(&frame, sink), on_progress)?;
            vec![FileReport {
                path: capture.path().to_owned(),
                compression: capture.compression(),
                summary,
            }]
        }
        // several: one stream in timestamp order, so views of a connection meet
        many => merge::for_each_frame(many, |frame| engine.on_frame(&frame, sink), on_progress)?,
    };
    engine.drain(sink);
    let totals = engine.finish(sink)?;
    Ok((files, totals))
}

/// Run the analysis of `captures` and build the report.
pub fn analyze(
    captures: &[PathBuf],
    identities: &(dyn IdentitySource + Sync),
    policy: &Policy,
    limits: TableLimits,
    keep_flows: bool,
    progress: Option<&ProgressBar>,
    threads: Threads,
) -> Result<(Report, Vec<Warning>), AnalyzeError> {
    let Threads { workers, helpers } = threads;
    let engine = if workers > 1 {
        Engine::Sharded(Shards::new(workers, limits))
    } else {
        Engine::Single(Box::new(Pipeline::new(limits)))
    };
    let collector = Collector {
        identities,
        edges: Edges::default(),
        counts: FlowCounts::default(),
        flows: keep_flows.then(Vec::new),
    };
    let inputs = inputs::expand(captures)?;
    let on_progress = |bytes: u64| {
        if let Some(bar) = progress {
            bar.set_position(bytes);
        }
    };
    // One pipeline leaves a core to spare: the capture is read ahead, and finished flows are
    // folded in, each on a thread of its own. Sharded workers use the cores themselves.
    let helped = workers <= 1 && helpers.wanted();
    let (files, totals, collector) = std::thread::scope(|scope| {
        let mut sink = if helped {
            Sink::spawn(scope, collector)
        } else {
            Sink::Here(Box::new(collector))
        };
        let ahead = if helped { Ahead::Yes } else { Ahead::No };
        let read = read_all(&inputs, ahead, engine, &mut sink, on_progress);
        // the folding thread is joined before any error is returned (an error left with a
        // panicked thread unjoined would make the scope panic); the input's error comes first
        let collector = sink.collector();
        let (files, totals) = read?;
        Ok::<_, AnalyzeError>((files, totals, collector?))
    })?;
    let mut warnings = Vec::new();
    for f in &files {
        let name = f.path.display();
        if let Some(offset) = f.summary.truncated_at {
            warnings.push(Warning(format!(
                "{name}: the last record (at byte {offset}) is truncated; analyzed the records before it"
            )));
        }
        if f.summary.unknown_interface_frames > 0 {
            warnings.push(Warning(format!(
                "{name}: {} packets name an undescribed interface and were skipped",
                f.summary.unknown_interface_frames
            )));
        }
    }
    let Collector {
        edges,
        counts,
        flows,
        ..
    } = collector;
    let mut flows = flows.unwrap_or_default();
    flows.sort_by(|a, b| {
        (a.first_seen, a.src, a.sport, a.dst, a.dport).cmp(&(
            b.first_seen,
            b.src,
            b.sport,
            b.dst,
            b.dport,
        ))
    });
    let edges_folded = edges.folded();
    let edges = edges.to_vec();
    let verdicts = verdict::evaluate(&edges, policy, &identities.known_workloads());
    let mut summary = Summary::new(&files, &totals.packets, totals.table, counts);
    if let Some((first, last)) = totals.first_last {
        summary.first_packet = Some(format_time(first));
        summary.last_packet = Some(format_time(last));
    }
    summary.edges_folded = edges_folded;
    let report = Report::new(summary, keep_flows.then_some(flows), edges, verdicts);
    Ok((report, warnings))
}

/// The `analyze` subcommand: arguments in, report on stdout, warnings on stderr.
pub fn run(args: &AnalyzeArgs) -> Result<(), AnalyzeError> {
    if args.threads > 1 && args.helper_threads != Helpers::Auto {
        return Err(AnalyzeError::HelpersWithWorkers(
            args.helper_threads,
            args.threads,
        ));
    }
    let identities: Box<dyn IdentitySource + Sync> = match &args.workloads {
        Some(path) => Box::new(WorkloadsFile::load(path)?),
        None => Box::new(NoIdentities),
    };
    let peer_authentications = args
        .peer_authentications
        .as_deref()
        .map(load_peer_authentications)
        .transpose()?;
    let bar = progress_bar(args);
    let (mut report, warnings) = analyze(
        &args.captures,
        identities.as_ref(),
        &args.verdict.policy(),
        args.table.limits(),
        args.flows,
        bar.as_ref(),
        Threads {
            workers: usize::try_from(args.threads).unwrap_or(1),
            helpers: args.helper_threads,
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(policies) = &peer_authentications {
        judge_with_modes(
            &mut report,
            identities.as_ref(),
            &args.verdict.policy(),
            policies,
        );
    }
    for w in &warnings {
        eprintln!("warning: {}", w.0);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
    match args.format {
        Format::Json => {
            crate::report::json::write_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Table => {
            let color = match args.color {
                When::Always => true,
                When::Never => false,
                When::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            table::render(&report, table::Style { color }, &mut out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The PeerAuthentications of `--peer-authentications`.
fn load_peer_authentications(path: &Path) -> Result<Vec<PeerAuthentication>, AnalyzeError> {
    let error = |error| AnalyzeError::PeerAuthentications {
        path: path.display().to_string(),
        error,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(crate::peer_auth::PeerAuthError::List(e.to_string())))?;
    crate::peer_auth::parse_list(&text).map_err(error)
}

/// Judge the report's edges again, knowing each workload's mode today: the known workloads'
/// labels select, and a destination the identities do not list is judged with none.
pub fn judge_with_modes(
    report: &mut Report,
    identities: &dyn IdentitySource,
    policy: &Policy,
    policies: &[PeerAuthentication],
) {
    let known = identities.known_workloads();
    // the modes today, and every suggestion simulated with the policies
    let v = verdict::evaluate_with_policies(&report.edges, policy, &known, policies);
    report.verdicts = v.workloads;
    report.namespaces = v.namespaces;
    report.mesh = v.mesh;
}

fn progress_bar(args: &AnalyzeArgs) -> Option<ProgressBar> {
    let show = match args.progress {
        When::Always => true,
        When::Never => false,
        When::Auto => std::io::stderr().is_terminal(),
    };
    if !show {
        return None;
    }
    let total: u64 = inputs::expand(&args.captures)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} {bytes}/{total_bytes} {bar:30} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
