//! Who may read the agent: a bearer token is authenticated by the API server (a `TokenReview`,
//! authentication.k8s.io/v1), then the caller is authorized on the request's non-resource path
//! with verb `get` (a `SubjectAccessReview`, authorization.k8s.io/v1) — what the kubelet and
//! kube-rbac-proxy do. `/healthz` and `/readyz` stay open for the kubelet's probes.
//!
//! Bounds, so that a flood of distinct tokens grows neither memory nor the API server's load:
//! decisions are cached in four maps bounded in entries and time ([`cache::TtlCache`]) —
//! authenticated tokens, unknown tokens, allowed and denied (user, path) pairs — kept apart so
//! that a flood of unknown tokens never pushes out the tokens that work; at most
//! [`Limits::max_in_flight`] reviews run at once, a request waits at most
//! [`Limits::queue_wait`] for its turn, a review at most [`Limits::review_timeout`].
//! Tokens are kept only as SHA-256 digests; logs name a token by the first 8 hex digits.
//!
//! Failing closed: a review that cannot be made (the API server down, slow, or busy) answers
//! 503 with `Retry-After`, is logged and is not cached; only decisions the API server made are.

pub mod cache;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use serde::Serialize;
use tokio::sync::Semaphore;

use cache::TtlCache;

/// Paths answered without a token: the kubelet's probes.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];
/// A longer `Authorization` value is refused without a review (service-account tokens are
/// about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The bounds of the authorizer; [`Limits::default`] is what the agent uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries of each of the four caches.
    pub cache_entries: usize,
    /// How long an authenticated token is trusted without a new review (the kubelet's default).
    pub authenticated_ttl: Duration,
    /// How long an unknown token is refused without a new review.
    pub unauthenticated_ttl: Duration,
    /// How long an allowed (user, path) pair stays allowed (the kubelet's default).
    pub allowed_ttl: Duration,
    /// How long a denied (user, path) pair stays denied.
    pub denied_ttl: Duration,
    /// Reviews sent to the API server at once.
    pub max_in_flight: usize,
    /// Longest wait for a review's turn before answering 503.
    pub queue_wait: Duration,
    /// Longest wait for the API server's answer before answering 503.
    pub review_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cache_entries: 1024,
            authenticated_ttl: Duration::from_secs(120),
            unauthenticated_ttl: Duration::from_secs(30),
            allowed_ttl: Duration::from_secs(300),
            denied_ttl: Duration::from_secs(30),
            max_in_flight: 8,
            queue_wait: Duration::from_secs(2),
            review_timeout: Duration::from_secs(5),
        }
    }
}

/// The user a token belongs to, as the TokenReview said: what the SubjectAccessReview asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 200: the API server authenticated the token and allowed `get` on the path.
    Allowed { user: String },
    /// 401: no token, or one the API server does not know.
    Unauthenticated { reason: String },
    /// 403: a known user without `get` on the path.
    Forbidden { user: String, reason: String },
    /// 503: the API server could not be asked (down, slow, or too many reviews in flight).
    Unavailable { reason: String },
}

/// Counters of the authorizer (in `/api/v1/status`).
#[derive(Debug, Default)]
struct Counters {
    token_reviews: AtomicU64,
    access_reviews: AtomicU64,
    cache_hits: AtomicU64,
    unavailable: AtomicU64,
    busy: AtomicU64,
}

/// What `/api/v1/status` shows of the authorizer.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub mode: &'static str,
    pub cached_authenticated: usize,
    pub cached_unauthenticated: usize,
    pub cached_allowed: usize,
    pub cached_denied: usize,
    pub cache_bound: usize,
    pub token_reviews: u64,
    pub access_reviews: u64,
    pub cache_hits: u64,
    pub unavailable: u64,
    pub busy: u64,
    pub reviews_in_flight: usize,
}

type Digest = [u8; 32];

#[derive(Debug)]
struct Caches {
    authenticated: TtlCache<Digest, Arc<User>>,
    unauthenticated: TtlCache<Digest, Arc<str>>,
    allowed: TtlCache<Digest, ()>,
    denied: TtlCache<Digest, Arc<str>>,
}

/// Authenticates and authorizes requests with the API server; one per agent.
pub struct Authorizer {
    client: kube::Client,
    limits: Limits,
    caches: Mutex<Caches>,
    permits: Semaphore,
    counters: Counters,
    log: LogBudget,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(client: kube::Client, limits: Limits) -> Self {
        let n = limits.cache_entries;
        Authorizer {
            client,
            caches: Mutex::new(Caches {
                authenticated: TtlCache::new(n, limits.authenticated_ttl),
                unauthenticated: TtlCache::new(n, limits.unauthenticated_ttl),
                allowed: TtlCache::new(n, limits.allowed_ttl),
                denied: TtlCache::new(n, limits.denied_ttl),
            }),
            permits: Semaphore::new(limits.max_in_flight.max(1)),
            limits,
            counters: Counters::default(),
            log: LogBudget::new(LOG_LINES_PER_SECOND),
        }
    }

    /// Decide on a request for `path` carrying `token` (the bearer token, if any). Fresh
    /// decisions are logged (the token as a short digest, never itself).
    pub async fn check(&self, token: Option<&str>, path: &str) -> Decision {
        let Some(token) = token else {
            return Decision::Unauthenticated {
                reason: "no bearer token".into(),
            };
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Decision::Unauthenticated {
                reason: format!("token longer than {MAX_TOKEN_BYTES} bytes"),
            };
        }
        let digest = sha256(&[token.as_bytes()]);
        let short = short_hex(&digest);
        let user = match self.authenticate(token, &digest).await {
            Ok(Ok(user)) => user,
            Ok(Err(reason)) => {
                return Decision::Unauthenticated {
                    reason: reason.to_string(),
                }
            }
            Err(reason) => {
                self.log_unavailable(&short, path, &reason);
                return Decision::Unavailable { reason };
            }
        };
        match self.authorize(&user, path, &short).await {
            Ok(Ok(())) => Decision::Allowed {
                user: user.username.clone(),
            },
            Ok(Err(reason)) => Decision::Forbidden {
                user: user.username.clone(),
                reason: reason.to_string(),
            },
            Err(reason) => {
                self.log_unavailable(&short, path, &reason);
                Decision::Unavailable { reason }
            }
        }
    }

    /// The user of a token: cached, or from a TokenReview. `Err` when no review could be made.
    async fn authenticate(
        &self,
        token: &str,
        digest: &Digest,
    ) -> Result<Result<Arc<User>, Arc<str>>, String> {
        let now = Instant::now();
        if let Ok(mut c) = self.caches.lock() {
            if let Some(user) = c.authenticated.get(digest, now) {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Ok(user));
            }
            if let Some(reason) = c.unauthenticated.get(digest, now) {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Err(reason));
            }
        }
        let reviewed = self.review_token(token).await?;
        let now = Instant::now();
        let short = short_hex(digest);
        match reviewed {
            Ok(user) => {
                let user = Arc::new(user);
                if let Ok(mut c) = self.caches.lock() {
                    c.authenticated.insert(*digest, user.clone(), now);
                }
                tracing::debug!(token = %short, user = %user.username, "token authenticated");
                Ok(Ok(user))
            }
            Err(reason) => {
                let reason: Arc<str> = reason.into();
                if let Ok(mut c) = self.caches.lock() {
                    c.unauthenticated.insert(*digest, reason.clone(), now);
                }
                if let Some(suppressed) = self.log.take() {
                    tracing::info!(token = %short, %reason, suppressed, "request refused (401): unknown token");
                }
                Ok(Err(reason))
            }
        }
    }

    /// Whether `user` may `get` `path`: cached, or from a SubjectAccessReview.
    async fn authorize(
        &self,
        user: &User,
        path: &str,
        short: &str,
    ) -> Result<Result<(), Arc<str>>, String> {
        let key = access_key(user, path);
        let now = Instant::now();
        if let Ok(mut c) = self.caches.lock() {
            if c.allowed.get(&key, now).is_some() {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Ok(()));
            }
            if let Some(reason) = c.denied.get(&key, now) {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Err(reason));
            }
        }
        let reviewed = self.review_access(user, path).await?;
        let now = Instant::now();
        match reviewed {
            Ok(()) => {
                if let Ok(mut c) = self.caches.lock() {
                    c.allowed.insert(key, (), now);
                }
                tracing::debug!(token = %short, user = %user.username, path, "request allowed");
                Ok(Ok(()))
            }
            Err(reason) => {
                let reason: Arc<str> = reason.into();
                if let Ok(mut c) = self.caches.lock() {
                    c.denied.insert(key, reason.clone(), now);
                }
                if let Some(suppressed) = self.log.take() {
                    tracing::info!(token = %short, user = %user.username, path, %reason, suppressed,
                        "request refused (403): not allowed to get this path");
                }
                Ok(Err(reason))
            }
        }
    }

    /// A turn to send a review, or `Err` after [`Limits::queue_wait`].
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, String> {
        match tokio::time::timeout(self.limits.queue_wait, self.permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                Err(format!(
                    "{} reviews in flight for longer than {:?}",
                    self.limits.max_in_flight, self.limits.queue_wait
                ))
            }
        }
    }

    /// POST a TokenReview. `Ok(Err(reason))`: the API server does not know the token.
    async fn review_token(&self, token: &str) -> Result<Result<User, String>, String> {
        let _turn = self.permit().await?;
        self.counters.token_reviews.fetch_add(1, Ordering::Relaxed);
        let review = TokenReview {
            metadata: Default::default(),
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            status: None,
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(
            self.limits.review_timeout,
            api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            format!(
                "TokenReview timed out after {:?}",
                self.limits.review_timeout
            )
        })?
        .map_err(|e| format!("TokenReview failed: {e}"))?;
        Ok(user_of(answer))
    }

    /// POST a SubjectAccessReview for `get` on `path`. `Ok(Err(reason))`: denied.
    async fn review_access(&self, user: &User, path: &str) -> Result<Result<(), String>, String> {
        let _turn = self.permit().await?;
        self.counters.access_reviews.fetch_add(1, Ordering::Relaxed);
        let review = SubjectAccessReview {
            metadata: Default::default(),
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                resource_attributes: None,
            },
            status: None,
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = tokio::time::timeout(
            self.limits.review_timeout,
            api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            format!(
                "SubjectAccessReview timed out after {:?}",
                self.limits.review_timeout
            )
        })?
        .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.allowed && status.denied != Some(true) {
            return Ok(Ok(()));
        }
        let reason = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Err(if reason.is_empty() {
            "no RBAC rule allows it".to_owned()
        } else {
            reason
        }))
    }

    fn log_unavailable(&self, short: &str, path: &str, reason: &str) {
        self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.log.take() {
            tracing::warn!(token = %short, path, %reason, suppressed,
                "request refused (503): the API server could not be asked");
        }
    }

    /// Cache sizes and counters.
    pub fn snapshot(&self) -> Snapshot {
        let (a, u, al, d) = self
            .caches
            .lock()
            .map(|c| {
                (
                    c.authenticated.len(),
                    c.unauthenticated.len(),
                    c.allowed.len(),
                    c.denied.len(),
                )
            })
            .unwrap_or_default();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            mode: "kubernetes",
            cached_authenticated: a,
            cached_unauthenticated: u,
            cached_allowed: al,
            cached_denied: d,
            cache_bound: self.limits.cache_entries,
            token_reviews: n(&self.counters.token_reviews),
            access_reviews: n(&self.counters.access_reviews),
            cache_hits: n(&self.counters.cache_hits),
            unavailable: n(&self.counters.unavailable),
            busy: n(&self.counters.busy),
            reviews_in_flight: self
                .limits
                .max_in_flight
                .max(1)
                .saturating_sub(self.permits.available_permits()),
        }
    }
}

/// The user of an answered TokenReview, or why it is not one.
fn user_of(answer: TokenReview) -> Result<User, String> {
    let status = answer.status.unwrap_or_default();
    let error = status.error.filter(|e| !e.is_empty());
    match (status.authenticated, status.user) {
        (
            Some(true),
            Some(UserInfo {
                username: Some(username),
                uid,
                groups,
                extra,
            }),
        ) if !username.is_empty() => Ok(User {
            username,
            uid: uid.filter(|u| !u.is_empty()),
            groups: groups.unwrap_or_default(),
            extra: extra.unwrap_or_default(),
        }),
        _ => Err(error.unwrap_or_else(|| "the API server did not authenticate it".to_owned())),
    }
}

/// The cache key of an authorization: everything the SubjectAccessReview is asked about.
fn access_key(user: &User, path: &str) -> Digest {
    let mut parts: Vec<&[u8]> = vec![user.username.as_bytes(), b"\0"];
    parts.push(user.uid.as_deref().unwrap_or_default().as_bytes());
    for g in &user.groups {
        parts.extend([b"\0g".as_slice(), g.as_bytes()]);
    }
    for (k, vs) in &user.extra {
        parts.extend([b"\0k".as_slice(), k.as_bytes()]);
        for v in vs {
            parts.extend([b"\0v".as_slice(), v.as_bytes()]);
        }
    }
    parts.extend([b"\0p".as_slice(), path.as_bytes()]);
    sha256(&parts)
}

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The first 8 hex digits of a digest: enough to tell tokens apart in a log, useless to an
/// attacker.
fn short_hex(digest: &Digest) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The middleware: open paths pass; others need a token the API server authenticates and a
/// user it allows to `get` the path.
pub async fn require(State(auth): State<Arc<Authorizer>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let decision = auth.check(bearer(req.headers()), path).await;
    match decision {
        Decision::Allowed { .. } => next.run(req).await,
        Decision::Unauthenticated { .. } => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meshwatch\""),
            )],
            "unauthorized: a bearer token the API server knows is needed\n",
        )
            .into_response(),
        Decision::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            "forbidden: no RBAC rule allows get on this path\n",
        )
            .into_response(),
        Decision::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "the API server could not check the token; try again\n",
        )
            .into_response(),
    }
}

/// Log lines about refused requests per second; the rest are counted and reported with the next.
const LOG_LINES_PER_SECOND: u32 = 10;

/// A per-second budget of log lines, so that a flood of bad tokens cannot flood the log.
#[derive(Debug)]
struct LogBudget {
    per_second: u32,
    start: Instant,
    state: Mutex<(u64, u32, u64)>,
}

impl LogBudget {
    fn new(per_second: u32) -> Self {
        LogBudget {
            per_second,
            start: Instant::now(),
            state: Mutex::new((0, 0, 0)),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    fn take(&self) -> Option<u64> {
        let second = self.start.elapsed().as_secs();
        let mut s = self.state.lock().ok()?;
        let (window, used, suppressed) = &mut *s;
        if *window != second {
            *window = second;
            *used = 0;
        }
        if *used < self.per_second {
            *used += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        for (value, token) in [
            ("Bearer abc.def", Some("abc.def")),
            ("bearer   abc ", Some("abc")),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), token, "{value}");
        }
    }

    #[test]
    fn a_token_review_answer_becomes_a_user_or_a_reason() {
        let tr = |status: serde_json::Value| -> TokenReview {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {}, "spec": {}, "status": status,
            }))
            .expect("TokenReview")
        };
        let ok = user_of(tr(serde_json::json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
                     "groups": ["system:serviceaccounts", "system:authenticated"],
                     "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]}}
        })));
        let user = ok.expect("authenticated");
        assert_eq!(user.username, "system:serviceaccount:monitoring:prometheus");
        assert_eq!(user.groups.len(), 2);
        assert_eq!(user.extra.len(), 1);
        assert_eq!(
            user_of(tr(
                serde_json::json!({"user": {}, "error": "invalid bearer token"})
            )),
            Err("invalid bearer token".to_owned())
        );
        assert!(user_of(tr(serde_json::json!({"authenticated": true, "user": {}}))).is_err());
        assert!(user_of(tr(serde_json::json!({}))).is_err());
    }

    #[test]
    fn access_keys_tell_users_and_paths_apart() {
        let u = User {
            username: "a".into(),
            uid: None,
            groups: vec!["g".into()],
            extra: BTreeMap::new(),
        };
        let mut v = u.clone();
        v.groups = vec!["h".into()];
        assert_ne!(access_key(&u, "/metrics"), access_key(&v, "/metrics"));
        assert_ne!(access_key(&u, "/metrics"), access_key(&u, "/api/v1/flows"));
        assert_eq!(
            access_key(&u, "/metrics"),
            access_key(&u.clone(), "/metrics")
        );
    }

    #[test]
    fn the_log_budget_counts_what_it_suppresses() {
        let b = LogBudget::new(2);
        assert_eq!(b.take(), Some(0));
        assert_eq!(b.take(), Some(0));
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        // a new second (unless the test crossed one already)
        if let Ok(mut s) = b.state.lock() {
            s.0 = u64::MAX;
        }
        assert_eq!(b.take(), Some(2));
    }

    #[test]
    fn short_digests_are_eight_hex_digits() {
        let d = sha256(&[b"secret-token"]);
        let s = short_hex(&d);
        assert_eq!(s.len(), 8);
        assert!(!s.contains("secret"));
    }
}
