//! The agent's HTTP(S) server: hyper's HTTP/1 connection on tokio's listener, with rustls
//! (tokio-rustls) in front when TLS is on, and the bounds a node-facing port needs:
//!
//! - a deadline for the TLS handshake and for each request's header (a slow client cannot hold
//!   a connection: hyper's `header_read_timeout`, which also closes idle keep-alive connections);
//! - at most [`Limits::max_connections`] connections; at the bound the oldest connection that is
//!   not serving a request (a handshake, a header still coming in, an idle keep-alive) is closed
//!   to admit the new one, so that slow clients cannot lock a scrape out; when every connection
//!   is busy with a request the new one is closed;
//! - no request bodies (`api::read_only`).
//!
//! [`Plan`] turns the flags into what to serve: the address, authentication, TLS.

pub mod certs;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;

pub use certs::CertStore;

/// The port of the agent's server.
pub const DEFAULT_PORT: u16 = 9477;
/// How long connections may take to finish after a stop request.
const DRAIN: Duration = Duration::from_secs(5);
/// Request header bytes a connection may buffer (hyper's floor is 8 KiB).
const MAX_HEADER_BUFFER: usize = 64 * 1024;

/// Bounds of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Deadline of the TLS handshake, and of each request's header.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Bearer tokens checked by the API server (TokenReview, SubjectAccessReview).
    Kubernetes,
    /// None: anyone who reaches the port reads everything.
    None,
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Plain HTTP (only without authentication).
    Off,
    /// A PEM pair from files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate generated at start.
    SelfSigned,
}

/// What to serve, decided from the flags before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub listen: SocketAddr,
    pub auth: AuthMode,
    pub tls: TlsSource,
    /// `--auth none` on an address others can reach: allowed, and warned about at start.
    pub open_to_the_network: bool,
}

/// Flags that cannot be served as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "--listen {0} is reachable from other hosts and no authentication is on: \
         pass --auth none (MESHWATCH_AUTH=none) to serve it anyway, listen on 127.0.0.1, \
         or use --auth kubernetes"
    )]
    OpenWithoutAuth(SocketAddr),
}

impl Plan {
    /// Decide from the flags: with `--kubernetes` authentication is `kubernetes` and the
    /// default address `0.0.0.0:9477`; without, `none` and `127.0.0.1:9477`. A non-loopback
    /// address without authentication needs an explicit `--auth none`. TLS is on whenever
    /// authentication is (a token never crosses the network in clear) or a certificate is
    /// given; self-signed when none is.
    pub fn decide(
        listen: Option<SocketAddr>,
        auth: Option<AuthMode>,
        kubernetes: bool,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> Result<Plan, PlanError> {
        let listen = listen.unwrap_or_else(|| {
            let ip = if kubernetes {
                Ipv4Addr::UNSPECIFIED
            } else {
                Ipv4Addr::LOCALHOST
            };
            SocketAddr::new(IpAddr::V4(ip), DEFAULT_PORT)
        });
        let explicit = auth.is_some();
        let auth = auth.unwrap_or(if kubernetes {
            AuthMode::Kubernetes
        } else {
            AuthMode::None
        });
        let loopback = listen.ip().is_loopback();
        if auth == AuthMode::None && !loopback && !explicit {
            return Err(PlanError::OpenWithoutAuth(listen));
        }
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            _ if auth == AuthMode::Kubernetes => TlsSource::SelfSigned,
            _ => TlsSource::Off,
        };
        Ok(Plan {
            listen,
            auth,
            tls,
            open_to_the_network: auth == AuthMode::None && !loopback,
        })
    }
}

/// Counters of the server (in `/api/v1/status`).
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    accepted: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    handshake_failures: AtomicU64,
    header_timeouts: AtomicU64,
}

/// What `/api/v1/status` shows of the server.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub tls: bool,
    pub connections_open: usize,
    pub connections_bound: usize,
    pub connections_accepted: u64,
    /// Idle or slow connections closed at the bound to admit a new one.
    pub connections_evicted: u64,
    /// New connections closed because every connection was serving a request.
    pub connections_refused: u64,
    pub tls_handshake_failures: u64,
    pub header_timeouts: u64,
}

/// The server's state shared with the routes: its counters and, with authentication, the
/// authorizer's.
#[derive(Debug)]
pub struct Info {
    pub tls: bool,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    pub auth: Option<Arc<crate::auth::Authorizer>>,
}

impl Info {
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            tls: self.tls,
            connections_open: s.open.load(Ordering::Relaxed),
            connections_bound: self.limits.max_connections,
            connections_accepted: n(&s.accepted),
            connections_evicted: n(&s.evicted),
            connections_refused: n(&s.refused),
            tls_handshake_failures: n(&s.handshake_failures),
            header_timeouts: n(&s.header_timeouts),
        }
    }
}

/// One open connection, as the admission sees it.
#[derive(Debug)]
struct Slot {
    /// Serving a request (from its header to the end of the handler).
    busy: Arc<AtomicBool>,
    /// Dropping or sending closes the connection.
    close: oneshot::Sender<()>,
}

/// Open connections by age (ids increase).
#[derive(Debug, Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

/// A connection's place in the table; it leaves the table on drop.
struct Admitted {
    id: u64,
    table: Arc<Mutex<Slots>>,
    stats: Arc<Stats>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            t.open.remove(&self.id);
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Admit a connection: at the bound, close the oldest one that is not serving a request;
/// `None` when every open connection is. Gives its place, busy flag and close signal.
fn admit(
    table: &Arc<Mutex<Slots>>,
    stats: &Arc<Stats>,
    max: usize,
) -> Option<(Admitted, Arc<AtomicBool>, oneshot::Receiver<()>)> {
    let mut t = table.lock().ok()?;
    if t.open.len() >= max.max(1) {
        let idle = t
            .open
            .iter()
            .find(|(_, s)| !s.busy.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match idle.and_then(|id| t.open.remove(&id)) {
            Some(slot) => {
                let _ = slot.close.send(());
                stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
    let id = t.next;
    t.next += 1;
    let busy = Arc::new(AtomicBool::new(false));
    let (close_tx, close_rx) = oneshot::channel();
    t.open.insert(
        id,
        Slot {
            busy: busy.clone(),
            close: close_tx,
        },
    );
    stats.open.fetch_add(1, Ordering::Relaxed);
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    let place = Admitted {
        id,
        table: table.clone(),
        stats: stats.clone(),
    };
    Some((place, busy, close_rx))
}

/// Marks a connection busy while a request is served (also when the handler is dropped).
struct BusyGuard(Arc<AtomicBool>);

impl BusyGuard {
    fn new(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Relaxed);
        BusyGuard(flag.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then let open requests finish (at
/// most [`DRAIN`]). With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let table = Arc::new(Mutex::new(Slots::default()));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // out of descriptors, or the peer gave up: wait a little, go on
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some((place, busy, mut close)) = admit(&table, &stats, limits.max_connections) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stats = stats.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let served = async {
                match acceptor {
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                                .await;
                        match handshake {
                            Ok(Ok(tls)) => {
                                connection(tls, app, busy.clone(), limits, &stats, watcher).await
                            }
                            _ => {
                                stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    None => connection(stream, app, busy.clone(), limits, &stats, watcher).await,
                }
            };
            tokio::select! {
                _ = served => {}
                _ = &mut close => {}
            }
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open after {DRAIN:?}: closed");
        }
    }
}

/// One HTTP/1.1 connection.
async fn connection<I>(
    io: I,
    app: Router,
    busy: Arc<AtomicBool>,
    limits: Limits,
    stats: &Stats,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = BusyGuard::new(&busy);
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(guard);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEADER_BUFFER)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        listen: Option<&str>,
        auth: Option<AuthMode>,
        kubernetes: bool,
        cert: bool,
    ) -> Result<Plan, PlanError> {
        let (c, k) = if cert {
            (Some(PathBuf::from("c.pem")), Some(PathBuf::from("k.pem")))
        } else {
            (None, None)
        };
        Plan::decide(
            listen.map(|l| l.parse().expect("addr")),
            auth,
            kubernetes,
            c,
            k,
        )
    }

    #[test]
    fn outside_kubernetes_the_default_is_loopback_without_auth_or_tls() {
        let p = plan(None, None, false, false).expect("plan");
        assert_eq!(p.listen, "127.0.0.1:9477".parse().expect("addr"));
        assert_eq!((p.auth, &p.tls), (AuthMode::None, &TlsSource::Off));
        assert!(!p.open_to_the_network);
    }

    #[test]
    fn in_kubernetes_the_default_is_every_address_with_auth_and_tls() {
        let p = plan(None, None, true, false).expect("plan");
        assert_eq!(p.listen, "0.0.0.0:9477".parse().expect("addr"));
        assert_eq!(
            (p.auth, &p.tls),
            (AuthMode::Kubernetes, &TlsSource::SelfSigned)
        );
        let p = plan(None, None, true, true).expect("plan");
        assert!(matches!(p.tls, TlsSource::Files { .. }));
    }

    #[test]
    fn a_reachable_address_without_auth_needs_auth_none() {
        for addr in ["0.0.0.0:9477", "10.0.0.5:9477", "[::]:9477"] {
            let e = plan(Some(addr), None, false, false).expect_err(addr);
            assert!(e.to_string().contains("--auth none"), "{e}");
            let p = plan(Some(addr), Some(AuthMode::None), false, false).expect(addr);
            assert!(p.open_to_the_network);
            let p = plan(Some(addr), Some(AuthMode::None), true, false).expect(addr);
            assert!(p.open_to_the_network && p.tls == TlsSource::Off);
        }
        assert!(plan(Some("[::1]:1"), None, false, false).is_ok());
        assert!(plan(Some("127.0.0.2:1"), None, false, false).is_ok());
        let p = plan(Some("0.0.0.0:1"), Some(AuthMode::Kubernetes), false, false).expect("auth");
        assert_eq!(p.tls, TlsSource::SelfSigned);
    }

    #[test]
    fn at_the_bound_the_oldest_idle_connection_goes_and_busy_ones_stay() {
        let table = Arc::new(Mutex::new(Slots::default()));
        let stats = Arc::new(Stats::default());
        let a = admit(&table, &stats, 2).expect("a");
        let mut b = admit(&table, &stats, 2).expect("b");
        a.1.store(true, Ordering::Relaxed);
        // full: b (idle) goes, a (busy) stays
        let c = admit(&table, &stats, 2).expect("c");
        assert!(b.2.try_recv().is_ok(), "b was told to close");
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        c.1.store(true, Ordering::Relaxed);
        drop(b);
        assert!(admit(&table, &stats, 2).is_none(), "all busy: refused");
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(admit(&table, &stats, 2).is_some(), "a slot freed");
        drop(c);
    }
}
