//! Request dispatch and the helpers every handler shares. One file per resource, as in Distribution's
//! `registry/handlers/`: each turns a parsed route and request into storage calls and a response.

mod base;
mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyStream;
use hyper::body::Incoming;

use super::Body;
use super::cors::{HeaderSettings, ResponseHeaders};
use super::error::{ApiError, Code};
use super::route::{self, Route};
use crate::auth::{Action, Anonymous, Auth, AuthError, Principal};
use crate::health::Health;
use crate::proxy::{Proxy, Repositories, Target};
use crate::registry::RepoName;
use crate::storage::Storage;
use arc_swap::ArcSwap;
pub use base::{MetricsListener, MetricsSettings};

/// Settings a reload may change while requests are in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub delete_enabled: bool,
    pub max_manifest_bytes: u64,
    /// Largest blob accepted; 0: no limit.
    pub max_blob_bytes: u64,
    /// How long a request body may stall before the request fails.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average over each `body_timeout` of waiting.
    pub body_min_rate: u64,
    pub max_concurrent_uploads: u64,
    pub headers: ResponseHeaders,
    /// `storage.read_only`: pushes and deletes refused.
    pub read_only: bool,
    /// `storage.min_free_bytes`: under it, pushes refused.
    pub min_free_bytes: u64,
    /// `[metrics]`: where and for whom `/metrics` answers.
    pub metrics: MetricsSettings,
}

impl Settings {
    /// The shipped defaults (`etc/registryd/config.toml`; the configuration's tests check that
    /// they agree), with deletes and the manifest limit as given (in-process tests).
    pub fn basic(delete_enabled: bool, max_manifest_bytes: u64) -> Settings {
        Settings {
            delete_enabled,
            max_manifest_bytes,
            max_blob_bytes: 0,
            body_timeout: Duration::from_secs(60),
            body_min_rate: 4096,
            max_concurrent_uploads: 128,
            headers: ResponseHeaders::from_settings(&HeaderSettings::basic()),
            read_only: false,
            min_free_bytes: 0,
            metrics: MetricsSettings::basic(),
        }
    }
}

/// Connection limits, fixed at start (the listeners apply them).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to take its next bytes.
    pub send_stall_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    /// The shipped defaults (the configuration's tests check that they agree).
    fn default() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            send_stall_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// Where a request arrived: the client's address and the listener it came through (whose
/// anonymous policy applies).
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub tls: bool,
}

/// What every handler may use: storage, its health, and the request-path settings.
pub struct App {
    pub storage: Storage,
    pub health: Health,
    pub settings: ArcSwap<Settings>,
    /// The repositories handlers read through: local, or cached from the pull-through cache's
    /// upstreams (none: every name is local).
    pub proxy: Repositories,
    pub auth: Auth,
    pub limits: ConnLimits,
    /// Blob uploads with a body running now (bounded by `max_concurrent_uploads`).
    uploads_running: AtomicU64,
    /// One read of the shared token key at a time, and when the last one failed and why (see
    /// [`App::token_key`]).
    token_key_read: tokio::sync::Mutex<Option<(std::time::Instant, ApiError)>>,
}

/// Counts one running upload for as long as it lives.
pub struct UploadSlot<'a>(&'a AtomicU64);

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::get().uploads_in_progress.dec();
    }
}

impl App {
    pub fn new(storage: Storage, delete_enabled: bool, max_manifest_bytes: u64) -> Arc<App> {
        App::with_health(
            storage,
            Health::always(),
            Settings::basic(delete_enabled, max_manifest_bytes),
        )
    }

    pub fn with_health(storage: Storage, health: Health, settings: Settings) -> Arc<App> {
        App::build(
            storage,
            health,
            settings,
            Proxy::none(),
            Auth::open(),
            ConnLimits::default(),
        )
    }

    pub fn build(
        storage: Storage,
        health: Health,
        settings: Settings,
        proxy: Proxy,
        auth: Auth,
        limits: ConnLimits,
    ) -> Arc<App> {
        let proxy = Repositories::new(storage.clone(), proxy);
        Arc::new(App {
            storage,
            health,
            settings: ArcSwap::from_pointee(settings),
            proxy,
            auth,
            limits,
            uploads_running: AtomicU64::new(0),
            token_key_read: tokio::sync::Mutex::new(None),
        })
    }

    /// Reads the shared token key from the storage unless it is loaded: tokens are made and
    /// checked with it only. It is read through the storage's guard like everything else, so
    /// while the shared mount is missing nothing is made under the mount point, and token
    /// requests get 503 with the reason until the volume is back.
    ///
    /// Bounded like every storage request: while the storage is known to be unusable it answers
    /// at once, requests queue for the one read for at most the storage timeout, and a failed
    /// read is the answer for a second to those that queued behind it (a hung mount must not
    /// let token requests pile up until they hold every connection).
    pub async fn token_key(&self) -> Result<(), ApiError> {
        if self.auth.has_token_key() {
            return Ok(());
        }
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let wait = self.storage.timeout();
        let Ok(mut last) = tokio::time::timeout(wait, self.token_key_read.lock()).await else {
            return Err(ApiError::storage_unavailable(
                "the shared token key is still being read from the storage",
            ));
        };
        if self.auth.has_token_key() {
            return Ok(());
        }
        if let Some((at, e)) = &*last
            && at.elapsed() < Duration::from_secs(1)
        {
            return Err(e.clone());
        }
        let fresh = crate::auth::TokenKey::random().to_bytes();
        let read = self.storage.token_key(&fresh).await.and_then(|bytes| {
            crate::auth::TokenKey::from_bytes(&bytes).ok_or_else(|| {
                crate::storage::StorageError::Unavailable(
                    "the stored token key is not 32 bytes".into(),
                )
            })
        });
        match read {
            Ok(key) => {
                self.auth.set_token_key(key);
                *last = None;
                tracing::info!("the shared token key is loaded");
                Ok(())
            }
            Err(e) => {
                let e = ApiError::from(e);
                *last = Some((std::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Takes one of the `max_concurrent_uploads` slots, or says 429 (clients retry uploads).
    fn upload_slot(&self) -> Result<UploadSlot<'_>, ApiError> {
        let max = self.settings.load().max_concurrent_uploads;
        let now = self.uploads_running.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().uploads_in_progress.inc();
        let slot = UploadSlot(&self.uploads_running);
        if now >= max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::TooManyRequests,
                format!("{max} uploads are running on this node (limits.max_concurrent_uploads); retry shortly"),
            )
            .header(header::RETRY_AFTER, "1"));
        }
        Ok(slot)
    }

    /// Whether the request's principal may do `action` on `name`.
    pub fn may(&self, req: &Req, name: &str, action: Action) -> bool {
        self.auth.policy().allows(&req.who, req.anon, name, action)
    }

    /// The refusal for a request its principal may not make: 401 with a challenge when logging in
    /// could help, 403 when the principal is known and simply not allowed.
    fn refusal(&self, req: &Req, scope: Option<String>, what: String) -> ApiError {
        match &req.who {
            Principal::Anonymous if self.auth.policy().has_accounts() => self.challenge(
                req.token_realm.as_deref(),
                scope,
                format!("authentication required to {what}"),
            ),
            Principal::Anonymous => ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!("anonymous clients may not {what} here"),
            ),
            Principal::User(u) => ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!("user {u} may not {what}"),
            ),
        }
    }

    /// 401 with the challenge of this listener: Bearer where anonymous clients may pull (see
    /// `auth::token` for why), Basic where every client must log in.
    fn challenge(
        &self,
        token_realm: Option<&str>,
        scope: Option<String>,
        message: String,
    ) -> ApiError {
        let value = match token_realm {
            Some(url) => {
                let mut v = format!("Bearer realm=\"{url}\",service=\"{TOKEN_SERVICE}\"");
                if let Some(scope) = scope {
                    v.push_str(&format!(",scope=\"{scope}\""));
                }
                v
            }
            None => format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.auth.realm()),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
            .header(header::WWW_AUTHENTICATE, value)
    }

    /// Where a repository name leads in the pull-through cache (`ns` is containerd's mirror form).
    pub fn target(&self, name: &RepoName, req: &Req) -> Option<Target> {
        self.proxy
            .target(name, req.query.get("ns").map(String::as_str))
    }

    /// Refuses a push into an upstream's namespace (nobody may shadow a public image for the whole
    /// cluster) unless that upstream's `push = true`.
    fn refuse_push(&self, name: &RepoName) -> Result<(), ApiError> {
        match self.proxy.refuses_push(name) {
            None => Ok(()),
            Some(upstream) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!(
                    "{name} is in the namespace of upstream {upstream}, which is read-only here; push \
                     under another name, or set push = true in that [[upstream]]"
                ),
            )),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Refuses a write while the registry is read-only (configured, or for lack of space).
    fn refuse_write(&self) -> Result<(), ApiError> {
        if self.settings.load().read_only {
            return Err(ApiError::unsupported(
                "this registry is read-only for maintenance (storage.read_only = true): pulls work, pushes and deletes are refused until it is set back and reloaded",
            ));
        }
        if let Some(reason) = self.health.low_space() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Denied,
                format!("pushes are refused while storage is nearly full: {reason}; pulls work"),
            )
            .header(header::RETRY_AFTER, "60"));
        }
        Ok(())
    }

    fn unavailable(&self) -> Option<ApiError> {
        self.health
            .admit()
            .err()
            .map(|reason| ApiError::storage_unavailable(&reason))
    }
}

pub type HandlerResult = Result<Response<Body>, ApiError>;

/// The `service` named in Bearer challenges and accepted by the token endpoint.
const TOKEN_SERVICE: &str = "registryd";

/// The request as handlers see it: method, headers, query, the body still streaming, and who
/// sent it.
pub struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Incoming,
    pub who: Principal,
    /// What anonymous clients may do on the listener this request came through.
    pub anon: Anonymous,
    /// How long the body may stall.
    pub body_timeout: Duration,
    /// The token endpoint's URL when this listener uses the Bearer flow.
    pub token_realm: Option<String>,
}

impl Req {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }
}

/// Turns a request body into a stream of byte chunks, the form storage takes. A body that stalls
/// for `stall` (no byte arrives) ends with a `TimedOut` error, so a client that stops sending does
/// not hold an upload, its file and its task forever.
pub fn body_stream(
    body: Incoming,
    stall: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    paced_body_stream(body, stall, 0)
}

/// [`body_stream`], also failing a body that averages under `min_rate` bytes/s over any `stall`
/// of waiting for it (see `http::body`): a trickle holds an upload as surely as a stall.
fn paced_body_stream(
    body: Incoming,
    stall: Duration,
    min_rate: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let frames = Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    }));
    crate::http::body::held_to_progress(frames, crate::http::body::Progress { stall, min_rate })
}

/// The body of `req` as a stream, with the body timeout and minimum rate in force and the blob
/// size limit.
pub fn upload_body(
    req: Req,
    settings: &Settings,
    max_blob_bytes: u64,
    already: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send {
    let mut seen = already;
    let body = paced_body_stream(req.body, req.body_timeout, settings.body_min_rate);
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if max_blob_bytes > 0 && seen > max_blob_bytes {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("blob is larger than {max_blob_bytes} bytes (limits.max_blob_bytes)"),
            ));
        }
        Ok(chunk)
    }))
}

/// Reads a body into memory, refusing more than `limit` bytes.
pub async fn read_limited(
    body: Incoming,
    limit: u64,
    stall: Duration,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut s = body_stream(body, stall);
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::BlobUploadInvalid,
                format!("request body: {e}"),
            )
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::SizeInvalid,
        format!(
            "manifest is larger than the {limit} bytes this registry accepts (limits.max_manifest_bytes)"
        ),
    )
}

/// `n` and `last` pagination over a sorted list: the page, and whether more follows.
/// The page size `n` of a listing request, if given.
pub fn page_size(query: &HashMap<String, String>) -> Result<Option<usize>, ApiError> {
    query
        .get("n")
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::PaginationNumberInvalid,
                    format!("n={v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

pub fn paginate<'a>(
    items: &'a [String],
    query: &HashMap<String, String>,
) -> Result<(&'a [String], bool), ApiError> {
    let n = page_size(query)?;
    // Listings are sorted, so the entries after `last` start where `last` would be inserted.
    let items = match query.get("last") {
        Some(last) => items
            .get(items.partition_point(|i| i.as_str() <= last.as_str())..)
            .unwrap_or_default(),
        None => items,
    };
    Ok(match n.and_then(|n| items.split_at_checked(n)) {
        Some((page, rest)) if !rest.is_empty() => (page, !page.is_empty()),
        _ => (items, false),
    })
}

/// A `Link` header for the next page: `</v2/...?n=N&last=X>; rel="next"`.
pub fn next_link(path: &str, n: &str, last: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", n)
        .append_pair("last", last)
        .finish();
    format!("<{path}?{q}>; rel=\"next\"")
}

pub fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
    head_only: bool,
) -> Response<Body> {
    // Serializing plain data (strings, slices of strings) cannot fail; `null` is the impossible case.
    let body = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let len = body.len();
    let mut r = Response::new(if head_only {
        super::empty()
    } else {
        super::full(body)
    });
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    r
}

/// Builds a response with headers whose values the handler produced (always valid ASCII).
pub fn response(
    status: StatusCode,
    headers: &[(header::HeaderName, String)],
    body: Body,
) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = header::HeaderValue::from_str(value) {
            r.headers_mut().insert(name.clone(), v);
        }
    }
    r
}

pub fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::unsupported(format!("method {method} is not allowed on this endpoint"))
}

pub fn deletes_disabled() -> ApiError {
    ApiError::unsupported("deletes are disabled on this registry (storage.delete_enabled = false)")
}

/// Handles one request; never fails (every error is an OCI error response).
pub async fn handle(app: Arc<App>, req: Request<Incoming>, conn: Conn) -> Response<Body> {
    let started = std::time::Instant::now();
    let settings = app.settings();
    let method = req.method().clone();
    let kind = route::kind(req.uri().path(), &settings.metrics.path);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        settings.headers.options(req.headers())
    } else {
        let head_only = req.method() == Method::HEAD;
        handle_api(&app, req, conn, &settings)
            .await
            .unwrap_or_else(|mut e| {
                // A client error is the client's business; a server-side failure is the
                // operator's, and the journal is where they look for it: the client gets the
                // request id to quote, the log gets what went wrong inside.
                if e.status.is_server_error() {
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    let id = &id[..16];
                    tracing::warn!(
                        method = %method, route = kind, client = %conn.client,
                        status = e.status.as_u16(), message = %e.message,
                        detail = e.private.as_deref().unwrap_or(""), request_id = id,
                        "request failed"
                    );
                    e.message = format!(
                        "{} (request id {id}: the registry's log has the details)",
                        e.message
                    );
                    e = e.header(header::HeaderName::from_static("x-request-id"), id);
                }
                e.into_response(head_only)
            })
    };
    settings.headers.decorate(origin.as_ref(), &mut resp);
    crate::metrics::get().request(&method, kind, resp.status().as_u16(), started.elapsed());
    resp
}

/// Docker before 1.6 speaks only the v1 protocol and misreads v2 answers; it gets a clear 404, as
/// Distribution's documentation has its nginx front do.
fn too_old_client(headers: &HeaderMap) -> bool {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ua.starts_with("Go 1.1 package http")
        || ["docker/1.3.", "docker/1.4.", "docker/1.5."]
            .iter()
            .any(|p| ua.starts_with(p))
}

async fn handle_api(
    app: &App,
    req: Request<Incoming>,
    conn: Conn,
    settings: &Settings,
) -> HandlerResult {
    let (parts, body) = req.into_parts();
    if too_old_client(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::Unsupported,
            "this client speaks only the v1 registry protocol; use Docker 1.6 or later",
        ));
    }
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let metrics = &settings.metrics;
    if !metrics.path.is_empty()
        && parts.uri.path() == metrics.path
        && base::serves_metrics(metrics, conn.listener)
    {
        return base::metrics(app, &parts, conn, metrics).await;
    }
    let route = route::parse(parts.uri.path())?;
    if matches!(route, Route::Healthz | Route::Readyz) {
        // Probes answer without credentials on every listener.
        return match route {
            Route::Readyz => base::readyz(app),
            _ => base::healthz(),
        };
    }
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let policy = app.auth.policy();
    let anon = policy.anonymous_on(conn.listener);
    let token_realm =
        (policy.has_accounts() && anon != Anonymous::None).then(|| token_url(&parts, conn));
    // Tokens are made and checked with the key on the shared storage: read it first if need be.
    let bearer = authorization.is_some_and(crate::auth::is_bearer);
    if policy.has_accounts() && (route == Route::Token || bearer) {
        app.token_key().await?;
    }
    let who = match app.auth.identify(authorization, conn.client.ip()).await {
        Ok(who) => who,
        Err(e) => return Err(auth_refusal(app, token_realm.as_deref(), e)),
    };
    let req = Req {
        method: parts.method,
        headers: parts.headers,
        query,
        body,
        who,
        anon,
        body_timeout: settings.body_timeout,
        token_realm,
    };
    if route == Route::Token {
        return base::token(app, &req);
    }
    authorize(app, &route, &req)?;
    dispatch(app, route, req).await
}

/// The answer to credentials that were not accepted: 429 while throttled, else 401 with the
/// listener's challenge and what went wrong.
fn auth_refusal(app: &App, token_realm: Option<&str>, e: AuthError) -> ApiError {
    let message = match e {
        AuthError::Throttled(wait) => return throttled(wait),
        AuthError::BadCredentials => "wrong user name or password".into(),
        AuthError::BadToken => {
            "the token is not valid here, has expired, or its account changed; fetch a new one"
                .into()
        }
        AuthError::SessionOver => format!(
            "tokens are renewed with tokens for {} s after a login; log in again",
            crate::auth::token::MAX_SESSION_SECS
        ),
        AuthError::Malformed(m) => m,
        AuthError::NoTokenKey => {
            return ApiError::storage_unavailable(
                "the key that signs tokens is kept on the shared storage and could not be read yet",
            );
        }
    };
    app.challenge(token_realm, None, message)
}

/// 429 for a client whose failed logins are throttled, with when to come back.
pub fn throttled(wait: Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        Code::TooManyRequests,
        "too many failed logins from this address; wait and retry",
    )
    .header(header::RETRY_AFTER, wait.as_secs().max(1).to_string())
}

/// Refuses a request its principal may not make, before any storage is touched.
///
/// A read is judged against the repository it reads as well as the name in the path: through the
/// pull-through cache, `private/app?ns=up`, `gh/app` (a second prefix of an upstream) and a bare
/// name under `proxy.default_patterns` are all reads of the cached repository
/// `<upstream prefix>/<remote name>`, and rules written for that name must hold whichever form
/// reached it. The path's name must allow the pull too: a bare name reads its own repository
/// first, and rules written against a second prefix keep applying.
fn authorize(app: &App, route: &Route, req: &Req) -> Result<(), ApiError> {
    let policy = app.auth.policy();
    let (name, action) = match route {
        // The ping tells clients how to authenticate: where tokens are used, anonymous clients
        // get the challenge (and fetch an anonymous token) even though they may pull.
        Route::Base if req.who == Principal::Anonymous && req.token_realm.is_some() => {
            return Err(app.refusal(req, None, "use this registry".into()));
        }
        Route::Base | Route::Catalog => {
            if policy.may_pull_somewhere(&req.who, req.anon) {
                return Ok(());
            }
            return Err(app.refusal(req, None, "use this registry".into()));
        }
        Route::Healthz | Route::Readyz | Route::Token => return Ok(()),
        Route::Tags(n) | Route::Referrers(n, _) => (n, Action::Pull),
        Route::Manifest(n, _) | Route::BadReference(n, _) | Route::Blob(n, _) => {
            let read = matches!(req.method, Method::GET | Method::HEAD);
            (n, if read { Action::Pull } else { Action::Push })
        }
        Route::UploadStart(n) | Route::Upload(n, _) => (n, Action::Push),
    };
    // Writes always land on the name in the path; reads may be served from the cache.
    let mut read = vec![name.clone()];
    if action == Action::Pull
        && let Some(t) = app.target(name, req)
        && t.cached != *name
    {
        read.push(t.cached);
    }
    let Some(refused) = read
        .iter()
        .find(|n| !policy.allows(&req.who, req.anon, n.as_str(), action))
    else {
        return Ok(());
    };
    let (verb, scope) = match action {
        Action::Pull => ("pull from", format!("repository:{name}:pull")),
        Action::Push => ("push to", format!("repository:{name}:pull,push")),
    };
    let what = if refused == name {
        format!("{verb} {name}")
    } else {
        format!("{verb} {refused} (which {name} reads through the pull-through cache)")
    };
    Err(app.refusal(req, Some(scope), what))
}

/// The token endpoint as this client reaches it: the host it asked for, on this listener's scheme.
/// The `Host` header is the client's to choose, so only a plain `host[:port]` is echoed into the
/// challenge; anything else (user info, paths, quotes) gets the listener's own address.
fn token_url(parts: &http::request::Parts, conn: Conn) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| is_host_port(h))
        .map(str::to_string)
        .unwrap_or_else(|| conn.listener.to_string());
    let scheme = if conn.tls { "https" } else { "http" };
    format!("{scheme}://{host}/auth/token")
}

/// Whether `s` is `host[:port]`: a DNS name or IPv4 address, or a bracketed IPv6 address, and an
/// optional numeric port.
fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => ("v6", tail),
            _ => return false,
        },
        None => s.split_at(s.find(':').unwrap_or(s.len())),
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        });
    let host_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    host_ok && port_ok
}

async fn dispatch(app: &App, route: Route, req: Req) -> HandlerResult {
    match route {
        Route::Healthz => base::healthz(),
        Route::Readyz => base::readyz(app),
        Route::Base => base::version(&req),
        Route::BadReference(_, e) => Err(manifests::bad_reference(&req.method, e)),
        route => {
            if let Some(e) = app.unavailable() {
                return Err(e);
            }
            let write = match &route {
                Route::Manifest(..) | Route::Blob(..) => {
                    !matches!(req.method, Method::GET | Method::HEAD)
                }
                Route::UploadStart(_) => true,
                Route::Upload(..) => !matches!(req.method, Method::GET | Method::HEAD),
                _ => false,
            };
            if write {
                app.refuse_write()?;
            }
            match route {
                Route::Catalog => catalog::get(app, &req).await,
                Route::Tags(name) => tags::get(app, &name, &req).await,
                Route::Manifest(name, reference) => {
                    if req.method == Method::PUT {
                        app.refuse_push(&name)?;
                    }
                    manifests::handle(app, name, reference, req).await
                }
                Route::Blob(name, digest) => blobs::handle(app, &name, &digest, &req).await,
                Route::UploadStart(name) => {
                    app.refuse_push(&name)?;
                    let _slot = app.upload_slot()?;
                    uploads::start(app, name, req).await
                }
                Route::Upload(name, id) => {
                    app.refuse_push(&name)?;
                    let _slot = match req.method {
                        Method::PATCH | Method::PUT => Some(app.upload_slot()?),
                        _ => None,
                    };
                    uploads::handle(app, name, id, req).await
                }
                Route::Referrers(name, digest) => referrers::get(app, &name, &digest, &req).await,
                Route::Healthz
                | Route::Readyz
                | Route::Base
                | Route::Token
                | Route::BadReference(..) => base::healthz(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn only_plain_hosts_reach_the_challenge() {
        for ok in [
            "registry.home",
            "registry.home:8443",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[fe80::1]",
            "a-b.example",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "a@evil.example",
            "evil.example/x",
            "evil.example:",
            "evil.example:99999",
            "evil.example:80:80",
            "evil.example:+80",
            "-a.example",
            "a..b",
            "",
            "[::1",
            "[zz]:1",
            "e\"vil",
            "host name",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn pagination() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let pg = |items: &[String], q: &HashMap<String, String>| {
            paginate(items, q).map(|(page, more)| (page.to_vec(), more))
        };
        assert_eq!(pg(&items, &q(&[])).unwrap(), (items.clone(), false));
        assert_eq!(
            pg(&items, &q(&[("n", "2")])).unwrap(),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            pg(&items, &q(&[("n", "2"), ("last", "b")])).unwrap(),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(pg(&items, &q(&[("last", "d")])).unwrap(), (vec![], false));
        assert_eq!(pg(&items, &q(&[("n", "0")])).unwrap(), (vec![], false));
        assert!(pg(&items, &q(&[("n", "-1")])).is_err());
        assert_eq!(
            next_link("/v2/_catalog", "2", "b/c"),
            "</v2/_catalog?n=2&last=b%2Fc>; rel=\"next\""
        );
    }
}
