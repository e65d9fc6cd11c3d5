//! Helpers: reports from pcaps/, a dashboard on a free port, an HTTP client for any method.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshwatch::identity::file::WorkloadsFile;
use meshwatch::identity::IdentityMap;
use meshwatch::verdict::Policy;
use meshwatch_dashboard::server::{router, App};
use meshwatch_dashboard::source::{report, Source};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `meshwatch analyze --format json --workloads pcaps/NAME.workloads.yaml pcaps/NAME.pcap`.
pub fn report_json(name: &str) -> String {
    let pcaps = repo().join("pcaps");
    let ids = WorkloadsFile::load(&pcaps.join(format!("{name}.workloads.yaml")))
        .unwrap_or_else(|e| panic!("{e}"));
    report_with(&pcaps.join(format!("{name}.pcap")), &ids)
}

/// The report of a capture with the identities of `workloads_yaml`.
pub fn report_with_workloads(pcap: &str, workloads_yaml: &str) -> String {
    let ids = WorkloadsFile::parse(workloads_yaml, None).unwrap_or_else(|e| panic!("{e}"));
    report_with(&repo().join("pcaps").join(format!("{pcap}.pcap")), &ids)
}

fn report_with(pcap: &Path, ids: &IdentityMap) -> String {
    let (report, _warnings) = meshwatch::analyze::analyze(
        &[pcap.to_owned()],
        ids,
        &Policy::default(),
        meshwatch::flow::TableLimits::default(),
        false,
        None,
        meshwatch::analyze::Threads {
            workers: 1,
            helpers: meshwatch::analyze::Helpers::Auto,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| panic!("{e}"))
}

/// A dashboard serving `json` (a report) on a free port.
pub async fn serve_report(json: &str) -> SocketAddr {
    let path = PathBuf::from("report.json");
    let snapshot = report::parse(json, &path).unwrap_or_else(|e| panic!("{e}"));
    let app = App::with_snapshot(Source::Report(path, Policy::default()), snapshot);
    serve_app(Arc::new(app)).await
}

pub async fn serve_app(app: Arc<App>) -> SocketAddr {
    serve_router(router(app)).await
}

pub async fn serve_router(r: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, r).await;
    });
    addr
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn request(method: Method, addr: SocketAddr, path: &str) -> Answer {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let res = client.request(req).await.unwrap_or_else(|e| panic!("{e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(Method::GET, addr, path).await
}

/// GET that must answer 200.
pub async fn page(addr: SocketAddr, path: &str) -> String {
    let a = get(addr, path).await;
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    a.body
}

/// `haystack` contains `needle`, with a readable failure.
#[track_caller]
pub fn has(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "missing {needle:?} in:\n{}",
        &haystack[..haystack.len().min(6000)]
    );
}

#[track_caller]
pub fn lacks(haystack: &str, needle: &str) {
    assert!(!haystack.contains(needle), "unexpected {needle:?}");
}
