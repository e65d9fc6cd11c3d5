//! `meshwatch agent`: live capture on a dedicated thread feeding the same pipeline as `analyze`,
//! identities from a workloads file (reloaded on change) or the Kubernetes API, and the HTTP
//! server. SIGTERM or SIGINT stop it cleanly, with final statistics logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::auth::Authorizer;
use crate::capture::batching::Batching;
use crate::capture::live::{self, LiveConfig};
use crate::capture::Frame;
use crate::cli::AgentArgs;
use crate::flow::TableLimits;
use crate::identity::file::WorkloadsFile;
use crate::identity::kubernetes::{self, SyncState};
use crate::identity::{IdentityMap, SharedIdentities};
use crate::live::{now, IdentityFeed, LiveState, PcapStats, Recorder};
use crate::pipeline::Pipeline;
use crate::server::{
    AuthMode, CertStore, Info as ServerInfo, Limits as ServerLimits, Plan, Stats as ServerStats,
    TlsSource,
};

/// How often the capture thread publishes counters and sweeps idle flows.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Packets read between two looks at the stop flag and the clock (both are also looked at
/// whenever the capture has nothing to read): 1,024 packets are 2.5 ms at 400k pps.
const STOP_CHECK_EVERY: u32 = 1024;
/// How often workloads without pods are looked for (they go `--window` after their last pod).
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// How often a workloads file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often the TLS certificate files are checked for changes.
const CERT_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Run the agent until a signal. The capture is opened first, on the only thread, then every
/// capability but CAP_NET_RAW is dropped, then the other threads start (and inherit that).
pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    // what to serve is decided, and a certificate loaded, before the capture opens: a flag
    // that cannot be served fails at once, naming itself
    let plan = Plan::decide(
        args.listen,
        args.auth,
        args.kubernetes,
        args.tls_cert.clone(),
        args.tls_key.clone(),
    )?;
    if args.header_timeout.is_zero() {
        anyhow::bail!("--header-timeout must be longer than 0");
    }
    let certs = certificates(&plan, args.node_name.as_deref())?;
    let cfg = LiveConfig {
        interface: args.interface.clone(),
        filter: args.filter.clone(),
        snaplen: args.snaplen,
        buffer_bytes: args.buffer_mib.saturating_mul(1 << 20),
        promiscuous: args.promiscuous,
        timeout_ms: 100,
    };
    let (capture, link) = live::open(&cfg)?;
    tracing::info!(interface = %cfg.interface, link = link.0, filter = %cfg.filter, "capture open");
    match crate::privileges::keep_only_net_raw() {
        Ok(left) => {
            tracing::info!(effective = ?left.effective, permitted = ?left.permitted, "capabilities dropped")
        }
        Err(e) => tracing::warn!(error = %e, "could not drop capabilities"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("meshwatch-api")
        .build()?;
    runtime.block_on(serve(args, &plan, certs, cfg, capture, link))
}

/// The certificate to serve: from the files, self-signed, or none (plain HTTP).
fn certificates(plan: &Plan, node: Option<&str>) -> anyhow::Result<Option<Arc<CertStore>>> {
    Ok(match &plan.tls {
        TlsSource::Off => None,
        TlsSource::Files { cert, key } => Some(Arc::new(CertStore::from_files(cert, key)?)),
        TlsSource::SelfSigned => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
            if !plan.listen.ip().is_unspecified() {
                names.push(plan.listen.ip().to_string());
            }
            names.extend(node.map(str::to_owned));
            Some(Arc::new(CertStore::self_signed(names)?))
        }
    })
}

async fn serve(
    args: &AgentArgs,
    plan: &Plan,
    certs: Option<Arc<CertStore>>,
    cfg: LiveConfig,
    capture: pcap::Capture<pcap::Active>,
    link: crate::decode::LinkType,
) -> anyhow::Result<()> {
    let node = args.node_name.clone();
    let identities: SharedIdentities = Arc::new(RwLock::new(IdentityMap::default()));
    let feed = match (&args.workloads, args.kubernetes) {
        (Some(path), _) => {
            let map = WorkloadsFile::load_for_node(path, node.as_deref())?;
            if let Ok(mut m) = identities.write() {
                *m = map;
            }
            IdentityFeed::File(path.to_path_buf())
        }
        (None, true) => IdentityFeed::Kubernetes(Arc::new(SyncState::default())),
        (None, false) => IdentityFeed::None,
    };
    let window = args.window.as_nanos() as u64;
    let state = Arc::new(LiveState::new(
        identities.clone(),
        feed,
        args.verdict.policy(),
        window,
        cfg.interface.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);

    // one API client for the identities and the token reviews
    let needs_api =
        matches!(state.feed(), IdentityFeed::Kubernetes(_)) || plan.auth == AuthMode::Kubernetes;
    let api_client = match needs_api {
        true => Some(
            kube::Client::try_default()
                .await
                .context("Kubernetes API client (in-cluster config or KUBECONFIG)")?,
        ),
        false => None,
    };

    match (state.feed(), api_client.clone()) {
        (IdentityFeed::Kubernetes(sync), Some(client)) => {
            tokio::spawn(kubernetes::watch(
                client,
                identities.clone(),
                node.clone(),
                sync.clone(),
            ));
            tokio::spawn(forget_idle_workloads(
                identities.clone(),
                window,
                stop_rx.clone(),
            ));
        }
        (IdentityFeed::File(path), _) => {
            tokio::spawn(reload_workloads(
                path.clone(),
                node.clone(),
                identities.clone(),
                stop_rx.clone(),
            ));
        }
        _ => {}
    }

    let recorder = Recorder::new(state.clone());
    let limits = args.table.limits();
    // the capture thread waits on the capture and on this pair's other end, which the stop
    // closes: an idle capture sleeps until the next publish, and a stop still wakes it at once
    let (stop_wake, wake) = std::os::unix::net::UnixStream::pair()?;
    let capture_stop = CaptureStop {
        flag: stop_rx.clone(),
        wake,
    };
    let loopback = crate::capture::interface_is_loopback(&cfg.interface);
    let ring_bytes = u64::try_from(cfg.buffer_bytes).unwrap_or(0);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let capture_thread = std::thread::Builder::new()
        .name("meshwatch-capture".into())
        .spawn(move || {
            // the guard tells the runtime the capture ended, also when it panics
            let _ended = ended_tx;
            capture_loop(
                capture,
                link,
                loopback,
                limits,
                recorder,
                &capture_stop,
                ring_bytes,
            )
        })?;

    let listener = tokio::net::TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("--listen {}", plan.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    // never open by accident: authentication without a client is an error, not `none`
    let auth = match (plan.auth, api_client) {
        (AuthMode::Kubernetes, Some(client)) => Some(Arc::new(Authorizer::new(
            client,
            crate::auth::Limits::default(),
        ))),
        (AuthMode::Kubernetes, None) => anyhow::bail!("--auth kubernetes needs the API client"),
        (AuthMode::None, _) => None,
    };
    let tls = match &certs {
        Some(c) => Some(c.server_config()?),
        None => None,
    };
    if let Some(c) = &certs {
        tokio::spawn(c.clone().watch(CERT_RELOAD_EVERY, stop_rx.clone()));
    }
    let limits = ServerLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_timeout: args.header_timeout,
    };
    let stats = Arc::new(ServerStats::default());
    let info = Arc::new(ServerInfo {
        tls: tls.is_some(),
        limits,
        stats: stats.clone(),
        auth: auth.clone(),
    });
    let app = crate::api::app(state.clone(), auth, Some(info));
    announce(plan, addr, certs.as_deref(), limits);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::server::serve(
        listener,
        app,
        tls,
        limits,
        stats,
        async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        },
    ));

    // run until a signal, or until the capture ends on its own (an error or a panic)
    let signalled = tokio::select! {
        _ = shutdown_signal() => true,
        _ = ended_rx => false,
    };
    tracing::info!(signalled, "stopping");
    let _ = stop_tx.send(true);
    drop(stop_wake);
    let _ = server.await;
    let joined = tokio::task::spawn_blocking(move || capture_thread.join()).await;
    let c = state.status();
    tracing::info!(
        packets = c.packets.load(Ordering::Relaxed),
        received = c.received.load(Ordering::Relaxed),
        dropped_kernel = c.dropped_kernel.load(Ordering::Relaxed),
        dropped_interface = c.dropped_interface.load(Ordering::Relaxed),
        uptime_seconds = state.uptime_seconds(),
        "final statistics"
    );
    capture_outcome(joined, signalled)
}

/// What the server serves, and the warnings an operator must see at start.
fn announce(plan: &Plan, addr: SocketAddr, certs: Option<&CertStore>, limits: ServerLimits) {
    let scheme = if certs.is_some() { "https" } else { "http" };
    let auth = match plan.auth {
        AuthMode::Kubernetes => "kubernetes",
        AuthMode::None => "none",
    };
    tracing::info!(%addr, scheme, auth, max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        "serving /metrics, /api/v1 (and /healthz, /readyz open)");
    if plan.open_to_the_network {
        tracing::warn!(%addr, "--auth none on an address other hosts reach: anyone who can connect \
            reads the metrics and the JSON API (connections, addresses, SNI)");
    }
    if let Some(c) = certs.filter(|c| !c.from_files_source()) {
        tracing::warn!(fingerprint = %c.fingerprint(), "no --tls-cert/--tls-key: serving a \
            self-signed certificate made at start, which clients cannot verify; mount a \
            certificate (a Secret or cert-manager) and pass --tls-cert and --tls-key");
    }
}

/// Why the agent ends: a capture that failed or panicked is an error (a DaemonSet must show
/// CrashLoopBackOff, not a healthy restart); a capture that stopped on its own without a signal
/// too, since nothing is watched any more.
fn capture_outcome(
    joined: Result<std::thread::Result<Result<(), pcap::Error>>, tokio::task::JoinError>,
    signalled: bool,
) -> anyhow::Result<()> {
    match joined {
        Ok(Ok(Ok(()))) if signalled => Ok(()),
        Ok(Ok(Ok(()))) => Err(anyhow::anyhow!(
            "the capture stopped without being asked to"
        )),
        Ok(Ok(Err(e))) => Err(anyhow::anyhow!("capture failed: {e}")),
        Ok(Err(panic)) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(anyhow::anyhow!("the capture thread panicked: {why}"))
        }
        Err(e) => Err(anyhow::anyhow!(
            "the capture thread could not be joined: {e}"
        )),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The capture thread: packets into the pipeline, flow events to the recorder, counters
/// published once a second. Returns when asked to stop or when the capture fails.
fn capture_loop(
    capture: pcap::Capture<pcap::Active>,
    link: crate::decode::LinkType,
    loopback: bool,
    limits: TableLimits,
    mut recorder: Recorder,
    stop: &CaptureStop,
    ring_bytes: u64,
) -> Result<(), pcap::Error> {
    // Non-blocking reads and poll(2): libpcap's read timeout does not start before a first
    // packet, so a blocking read on a quiet interface would never return to sweep flows,
    // publish counters or notice the stop request.
    let mut capture = capture.setnonblock()?;
    let mut pipeline = Pipeline::live(limits);
    let mut last_publish = Instant::now();
    let started = Instant::now();
    let mut batching = Batching::new(ring_bytes, started.elapsed());
    recorder.set_running(true);
    let result = loop {
        // the stop flag (a lock inside tokio's watch) and the clock (a vDSO call) are looked at
        // between bursts of at most STOP_CHECK_EVERY packets, not per packet
        if *stop.flag.borrow() {
            break Ok(());
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            pipeline.tick(now());
            publish(&mut capture, &pipeline, &mut recorder);
        }
        // pcap_dispatch hands each packet over where it lies in the ring; pcap_next_ex would
        // copy it out first (libpcap's one-shot callback on Linux memcpys every packet)
        let burst = capture.dispatch(Some(STOP_CHECK_EVERY as usize), |packet| {
            batching.took(packet.header.caplen);
            let ts = packet.header.ts;
            let nanos =
                (ts.tv_sec.max(0) as u64) * 1_000_000_000 + (ts.tv_usec.max(0) as u64) * 1000;
            pipeline.on_frame(&Frame {
                ts: nanos,
                link,
                data: packet.data,
                wire_len: packet.header.len,
                loopback,
            });
            hand_over(&mut pipeline, &mut recorder);
        });
        match burst {
            Ok(0) => {
                // drained: rest while a batch gathers (bounded by the ring), then wait for it,
                // at most until the next publish
                std::thread::sleep(batching.rest(started.elapsed()));
                let publish_in = PUBLISH_EVERY.saturating_sub(last_publish.elapsed());
                match wait_readable(&capture, stop, publish_in) {
                    Woken::Read => {}
                    Woken::Stop => break Ok(()),
                    // never a busy loop: look again after the longest rest, as libpcap reports
                    // what is wrong at the next read (a device gone is an error there)
                    Woken::Trouble => std::thread::sleep(batching.longest()),
                }
            }
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    pipeline.finish();
    hand_over(&mut pipeline, &mut recorder);
    publish(&mut capture, &pipeline, &mut recorder);
    recorder.set_running(false);
    result
}

/// Flow events from the pipeline to the recorder (only when there are some: per flow event).
fn hand_over(pipeline: &mut Pipeline, recorder: &mut Recorder) {
    for c in pipeline.take_connections() {
        recorder.on_connection(&c);
    }
    for r in pipeline.take_finished() {
        recorder.on_finished(r);
    }
}

/// What the capture thread is told to stop by: the flag, looked at between bursts of packets,
/// and a socket whose other end the stop closes, which wakes a thread waiting for packets.
struct CaptureStop {
    flag: watch::Receiver<bool>,
    wake: std::os::unix::net::UnixStream,
}

/// Why [`wait_readable`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    /// Packets, the timeout, or an interrupted wait: read (and look at the clock) again.
    Read,
    /// The stop closed its end of the wake socket.
    Stop,
    /// The wait failed, or the capture reported an error or a hang-up: it may do so again at
    /// once, so the caller waits before it looks again.
    Trouble,
}

/// Wait until the capture has packets, the stop comes, or `timeout` (at least a millisecond,
/// at most [`PUBLISH_EVERY`], rounded up to a millisecond) has passed.
fn wait_readable(
    capture: &pcap::Capture<pcap::Active>,
    stop: &CaptureStop,
    timeout: Duration,
) -> Woken {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let micros = timeout
        .clamp(Duration::from_millis(1), PUBLISH_EVERY)
        .as_micros();
    let timeout = PollTimeout::from(u16::try_from(micros.div_ceil(1000)).unwrap_or(u16::MAX));
    let mut fds = [
        PollFd::new(capture.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop.wake.as_fd(), PollFlags::POLLIN),
    ];
    let polled = poll(&mut fds, timeout);
    let trouble = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
    let (capture_said, wake_said) = (fds[0].revents(), fds[1].revents());
    match polled {
        Err(Errno::EINTR) => Woken::Read,
        Err(_) => Woken::Trouble,
        // the wake socket closed (or said anything at all): the stop
        Ok(_) if !wake_said.is_some_and(|r| r.is_empty()) => Woken::Stop,
        Ok(_) if capture_said.is_none_or(|r| r.intersects(trouble)) => Woken::Trouble,
        Ok(_) => Woken::Read,
    }
}

fn publish(
    capture: &mut pcap::Capture<pcap::Active>,
    pipeline: &Pipeline,
    recorder: &mut Recorder,
) {
    let pcap = capture.stats().ok().map(|s| PcapStats {
        received: u64::from(s.received),
        dropped_kernel: u64::from(s.dropped),
        dropped_interface: u64::from(s.if_dropped),
    });
    recorder.publish(
        pipeline.packet_stats(),
        pipeline.table_stats(),
        pipeline.open_flows(),
        pcap,
    );
}

/// Workloads without pods stay as long as their traffic can be in the window, then go (a
/// churn of Jobs and bare pods leaves the identity map flat).
async fn forget_idle_workloads(
    identities: SharedIdentities,
    window: crate::Nanos,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FORGET_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Ok(mut m) = identities.write() {
            let forgotten = m.forget_idle(now(), window);
            if forgotten > 0 {
                tracing::debug!(
                    forgotten,
                    workloads = m.workload_count(),
                    "idle workloads forgotten"
                );
            }
        }
    }
}

/// Reload the workloads file when its modification time changes; a file that no longer parses
/// is reported and the previous identities are kept.
async fn reload_workloads(
    path: PathBuf,
    node: Option<String>,
    identities: SharedIdentities,
    mut stop: watch::Receiver<bool>,
) {
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = mtime(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let current = mtime(&path);
        if current == last {
            continue;
        }
        last = current;
        match WorkloadsFile::load_for_node(&path, node.as_deref()) {
            Ok(map) => {
                let n = map.len();
                if let Ok(mut m) = identities.write() {
                    *m = map;
                }
                tracing::info!(path = %path.display(), addresses = n, "workloads reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "workloads file not reloaded"),
        }
    }
}
