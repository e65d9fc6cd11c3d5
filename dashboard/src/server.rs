//! The HTTP server: pages, the same data as JSON under `/api/`, the style sheet and script.
//! Read-only: any method but GET (and HEAD) is answered 405. Every answer carries a strict
//! Content-Security-Policy (scripts and styles from this server only, nothing inline), so even
//! a name that slipped through escaping could not run.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshwatch::verdict::Policy;
use serde::{Deserialize, Serialize};

use crate::model::{Snapshot, SourceInfo};
use crate::pages::{self, Which};
use crate::render::{self, Frame};
use crate::source::Source;

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

/// Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The source and its latest snapshot.
#[derive(Debug)]
pub struct App {
    source: Source,
    info: SourceInfo,
    policy: Policy,
    refresh: Option<u64>,
    latest: RwLock<Latest>,
}

#[derive(Debug, Default, Clone)]
struct Latest {
    snapshot: Option<Arc<Snapshot>>,
    error: Option<String>,
}

impl App {
    /// `refresh`: seconds between reads of a live source.
    pub fn new(source: Source, info: SourceInfo, refresh: u64) -> Self {
        let live = source.is_live();
        App {
            policy: source.policy(),
            source,
            info,
            refresh: live.then_some(refresh),
            latest: RwLock::new(Latest::default()),
        }
    }

    /// An app over a snapshot already read (a report).
    pub fn with_snapshot(source: Source, snapshot: Snapshot) -> Self {
        let app = App::new(source, snapshot.source.clone(), 0);
        app.store(Ok(snapshot));
        app
    }

    fn store(&self, result: Result<Snapshot, String>) {
        let mut l = self.latest.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(s) => {
                l.snapshot = Some(Arc::new(s));
                l.error = None;
            }
            Err(e) => l.error = Some(e),
        }
    }

    fn latest(&self) -> Latest {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read the source once; a failure keeps the previous snapshot and is shown.
    pub async fn refresh_once(&self) {
        let result = self.source.load().await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(error = %e, "reading the source failed");
        }
        self.store(result);
    }

    /// Re-read a live source every `refresh` seconds, for ever.
    pub async fn refresh_forever(self: Arc<Self>) {
        let Some(secs) = self.refresh else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: the source was read at start
        loop {
            tick.tick().await;
            self.refresh_once().await;
        }
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/namespace", get(namespace))
        .route("/workload", get(workload))
        .route("/matrix", get(matrix))
        .route("/api/overview", get(api_overview))
        .route("/api/namespace", get(api_namespace))
        .route("/api/workload", get(api_workload))
        .route("/api/matrix", get(api_matrix))
        .route("/api/snapshot", get(api_snapshot))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/healthz", get(|| async { "ok\n" }))
        // browsers ask for it on pages without an icon (the JSON ones): nothing, not a 404
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(not_found)
        .layer(middleware::from_fn(read_only))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        next.run(req).await
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "read-only: only GET is answered\n",
        )
            .into_response()
    }
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

/// The frame of a page; `api` names its JSON twin.
fn frame<'a>(app: &'a App, l: &'a Latest, title: &'a str, api: &'a str) -> Frame<'a> {
    let (source, loaded_at) = match &l.snapshot {
        Some(s) => (&s.source, s.loaded_at.as_str()),
        None => (&app.info, "never"),
    };
    Frame {
        title,
        source,
        loaded_at,
        refresh: app.refresh,
        error: l.error.as_deref(),
        api,
    }
}

fn api_path(uri: &Uri) -> String {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    if pq == "/" {
        "/api/overview".to_owned()
    } else {
        format!("/api{pq}")
    }
}

/// An HTML page from the latest snapshot, or the page that says why there is none.
fn html_page(
    app: &App,
    uri: &Uri,
    title: &str,
    build: impl FnOnce(&Frame<'_>, &Snapshot) -> Option<maud::Markup>,
) -> Response {
    let l = app.latest();
    let api = api_path(uri);
    let f = frame(app, &l, title, &api);
    match &l.snapshot {
        None => {
            let why = l
                .error
                .as_deref()
                .unwrap_or("the source has not been read yet");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(render::unavailable(&f, why).into_string()),
            )
                .into_response()
        }
        Some(s) => match build(&f, s) {
            Some(m) => Html(m.into_string()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Html(render::not_found(&f, &format!("No {title} in this data.")).into_string()),
            )
                .into_response(),
        },
    }
}

#[derive(Serialize)]
struct ApiError<'a> {
    error: &'a str,
}

/// JSON from the latest snapshot.
fn json<T: Serialize>(app: &App, build: impl FnOnce(&Snapshot) -> Option<T>) -> Response {
    let l = app.latest();
    match &l.snapshot {
        None => {
            let why = l
                .error
                .as_deref()
                .unwrap_or("the source has not been read yet");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(ApiError { error: why }),
            )
                .into_response()
        }
        Some(s) => match build(s) {
            Some(v) => Json(v).into_response(),
            None => (StatusCode::NOT_FOUND, Json(ApiError { error: "not found" })).into_response(),
        },
    }
}

async fn overview(State(app): State<Arc<App>>, uri: Uri) -> Response {
    html_page(&app, &uri, "Overview", |f, s| {
        Some(render::overview(f, &pages::overview(s)))
    })
}

async fn api_overview(State(app): State<Arc<App>>) -> Response {
    json(&app, |s| Some(pages::overview(s)))
}

#[derive(Debug, Deserialize)]
struct NamespaceQuery {
    ns: String,
}

async fn namespace(
    State(app): State<Arc<App>>,
    uri: Uri,
    Query(q): Query<NamespaceQuery>,
) -> Response {
    let title = format!("namespace {}", q.ns);
    html_page(&app, &uri, &title, |f, s| {
        pages::namespace(s, &q.ns).map(|n| render::namespace(f, &n))
    })
}

async fn api_namespace(State(app): State<Arc<App>>, Query(q): Query<NamespaceQuery>) -> Response {
    json(&app, |s| pages::namespace(s, &q.ns))
}

#[derive(Debug, Deserialize)]
struct WorkloadQuery {
    ns: Option<String>,
    name: Option<String>,
    ip: Option<IpAddr>,
}

impl WorkloadQuery {
    fn which(&self) -> Option<Which<'_>> {
        match (&self.ns, &self.name, self.ip) {
            (Some(namespace), Some(name), _) => Some(Which::Workload { namespace, name }),
            (_, _, Some(ip)) => Some(Which::Address(ip)),
            _ => None,
        }
    }

    fn title(&self) -> String {
        match (&self.ns, &self.name, self.ip) {
            (Some(ns), Some(w), _) => format!("{ns}/{w}"),
            (_, _, Some(ip)) => ip.to_string(),
            _ => "workload".to_owned(),
        }
    }
}

async fn workload(
    State(app): State<Arc<App>>,
    uri: Uri,
    Query(q): Query<WorkloadQuery>,
) -> Response {
    let title = q.title();
    html_page(&app, &uri, &title, |f, s| {
        let which = q.which()?;
        pages::workload(s, &which, &app.policy).map(|w| render::workload(f, &w))
    })
}

async fn api_workload(State(app): State<Arc<App>>, Query(q): Query<WorkloadQuery>) -> Response {
    json(&app, |s| pages::workload(s, &q.which()?, &app.policy))
}

async fn matrix(State(app): State<Arc<App>>, uri: Uri) -> Response {
    html_page(&app, &uri, "matrix", |f, s| {
        Some(render::matrix(f, &pages::matrix(s, &app.policy)))
    })
}

async fn api_matrix(State(app): State<Arc<App>>) -> Response {
    json(&app, |s| Some(pages::matrix(s, &app.policy)))
}

async fn api_snapshot(State(app): State<Arc<App>>) -> Response {
    json(&app, |s| Some(s.clone()))
}

async fn not_found(State(app): State<Arc<App>>, uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return (
            StatusCode::NOT_FOUND,
            Json(ApiError {
                error: "no such endpoint",
            }),
        )
            .into_response();
    }
    let l = app.latest();
    let f = frame(&app, &l, "not found", "/api/overview");
    (
        StatusCode::NOT_FOUND,
        Html(render::not_found(&f, "There is no such page.").into_string()),
    )
        .into_response()
}
