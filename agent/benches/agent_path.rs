//! The agent's capture thread without libpcap: a capture's frames, read into memory first,
//! through the live pipeline and the [`Recorder`] (metric series, the edge store, the recent
//! flows), with a workloads file as the identity map. This is what `bench/live_cpu.sh`
//! measures on a veth pair, minus the kernel and the ring; run beside the pipeline alone, the
//! difference is what the agent adds per connection.
//!
//! Usage (the capture defaults to `bench/data/churn-100k.pcap`, made if missing, and the map to
//! a generated 10k-pod one):
//!   cargo bench -p meshwatch-agent --bench agent_path -- [CAPTURE [WORKLOADS.yaml]]
//! `MESHWATCH_BENCH_PACE=N` pauses 40 ms every N packets (not timed), as a live capture thread
//! sleeps between wakeups: the cost of coming back to cold caches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use meshwatch::capture::file::CaptureFile;
use meshwatch::capture::Frame;
use meshwatch::decode::LinkType;
use meshwatch::flow::TableLimits;
use meshwatch::identity::file::WorkloadsFile;
use meshwatch::identity::SharedIdentities;
use meshwatch::live::{IdentityFeed, LiveState, Recorder};
use meshwatch::pipeline::Pipeline;
use meshwatch::verdict::Policy;

const SECOND: u64 = 1_000_000_000;
const RUNS: usize = 5;

/// A capture's frames in one buffer: (timestamp, link, start, end).
struct Frames {
    bytes: Vec<u8>,
    index: Vec<(u64, LinkType, usize, usize)>,
}

fn load(path: &Path) -> Frames {
    let mut file = CaptureFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut frames = Frames {
        bytes: Vec::new(),
        index: Vec::new(),
    };
    file.for_each_frame(
        |f| {
            let start = frames.bytes.len();
            frames.bytes.extend_from_slice(f.data);
            frames.index.push((f.ts, f.link, start, frames.bytes.len()));
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    frames
}

/// One pass; returns (seconds, finished flows).
fn run(frames: &Frames, recorder: Option<&mut Recorder>) -> (f64, u64) {
    let mut pipeline = Pipeline::live(TableLimits::default());
    let mut recorder = recorder;
    let mut finished = 0u64;
    let mut next_tick = frames.index.first().map_or(0, |f| f.0) + SECOND;
    // MESHWATCH_BENCH_PACE=N: a pause of 40 ms every N packets, not timed (a live capture
    // wakes for a block of packets at a time and sleeps in between)
    let pace: usize = std::env::var("MESHWATCH_BENCH_PACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut paused = std::time::Duration::ZERO;
    let started = Instant::now();
    for (n, &(ts, link, start, end)) in frames.index.iter().enumerate() {
        if pace > 0 && n % pace == 0 {
            let t = Instant::now();
            std::thread::sleep(std::time::Duration::from_millis(40));
            paused += t.elapsed();
        }
        if ts >= next_tick {
            // the capture thread's once-a-second work, on capture time
            next_tick = ts + SECOND;
            pipeline.tick(ts);
            if let Some(r) = recorder.as_deref_mut() {
                r.publish(
                    pipeline.packet_stats(),
                    pipeline.table_stats(),
                    pipeline.open_flows(),
                    None,
                );
            }
        }
        pipeline.on_frame(&Frame {
            ts,
            link,
            data: &frames.bytes[start..end],
            wire_len: (end - start) as u32,
            loopback: false,
        });
        match recorder.as_deref_mut() {
            Some(r) => {
                for c in pipeline.take_connections() {
                    r.on_connection(&c);
                }
                for f in pipeline.take_finished() {
                    finished += 1;
                    r.on_finished(f);
                }
            }
            None => {
                pipeline.take_connections().for_each(drop);
                finished += pipeline.take_finished().count() as u64;
            }
        }
    }
    ((started.elapsed() - paused).as_secs_f64(), finished)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let capture = args.first().map_or_else(
        || {
            // the default is made as `bench/live_cpu.sh` makes its captures (deterministic)
            let out = root.join("bench/data/churn-100k.pcap");
            if !out.exists() {
                let status = std::process::Command::new("python3")
                    .arg(root.join("bench/gen_capture.py"))
                    .args(["churn".as_ref(), out.as_os_str(), "100000".as_ref()])
                    .status()
                    .expect("python3 runs bench/gen_capture.py");
                assert!(status.success(), "bench/gen_capture.py failed");
            }
            out
        },
        PathBuf::from,
    );
    let workloads = args.get(1).map_or_else(
        || {
            let out = std::env::temp_dir().join("meshwatch-bench-workloads-10k.yaml");
            if !out.exists() {
                let status = std::process::Command::new("python3")
                    .arg(root.join("bench/gen_workloads.py"))
                    .arg(&out)
                    .arg("10000")
                    .status()
                    .expect("python3 runs bench/gen_workloads.py");
                assert!(status.success(), "bench/gen_workloads.py failed");
            }
            out
        },
        PathBuf::from,
    );
    if !capture.exists() {
        eprintln!("agent_path: no capture {}", capture.display());
        std::process::exit(2);
    }
    let frames = load(&capture);
    let map = WorkloadsFile::load(&workloads).unwrap_or_else(|e| panic!("{e}"));
    let packets = frames.index.len() as f64;
    println!(
        "agent_path: {} ({} frames), identities from {}",
        capture.display(),
        frames.index.len(),
        workloads.display()
    );
    let mut best = [f64::MAX; 2];
    let mut flows = 0;
    let mut digest = None;
    for _ in 0..RUNS {
        let (alone, _) = run(&frames, None);
        let identities: SharedIdentities = Arc::new(RwLock::new(map.clone()));
        let state = Arc::new(LiveState::new(
            identities,
            IdentityFeed::File(workloads.clone()),
            Policy::default(),
            3600 * SECOND,
            "bench".to_owned(),
        ));
        let mut recorder = Recorder::new(state.clone());
        let (with, finished) = run(&frames, Some(&mut recorder));
        best[0] = best[0].min(alone);
        best[1] = best[1].min(with);
        flows = finished;
        digest = Some(outcome(&state, frames.index.last().map_or(0, |f| f.0)));
    }
    let per = |s: f64, n: f64| s * 1e9 / n.max(1.0);
    println!(
        "pipeline alone:        {:>7.1} ms  {:>6.1} ns/packet",
        best[0] * 1e3,
        per(best[0], packets)
    );
    println!(
        "pipeline and recorder: {:>7.1} ms  {:>6.1} ns/packet",
        best[1] * 1e3,
        per(best[1], packets)
    );
    println!(
        "the recorder adds {:.0} ns per finished flow ({} flows), best of {RUNS}",
        per(best[1] - best[0], flows as f64),
        flows
    );
    if let Some((edges, series, sum)) = digest {
        // equal before and after a change of the recorder: what it counted is unchanged
        println!("counted: {edges} edges, {series} connection series, digest {sum:016x}");
    }
}

/// What the recorder counted: the edges and the connection metric series, and a digest of both.
fn outcome(state: &LiveState, now: u64) -> (usize, usize, u64) {
    use std::hash::{Hash, Hasher};
    let edges = state.edges(now);
    let text = state.metrics_text();
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                "meshwatch_connections_total{",
                "meshwatch_connection_attempts_total{",
                "meshwatch_bytes_total{",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .collect();
    series.sort_unstable(); // a metric family's series come in hash order
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&edges)
        .expect("edges serialize")
        .hash(&mut h);
    series.hash(&mut h);
    (edges.len(), series.len(), h.finish())
}
