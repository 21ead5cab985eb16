//! What every request is served with: the application state ([`App`]: storage, its health, the
//! settings in force, the pull-through cache, authentication, the upload slots), where the request
//! arrived ([`Conn`]), and the request as handlers see it ([`Req`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, StatusCode, header};
use hyper::body::Incoming;

use super::error::{ApiError, Code};
use super::settings::{ConnLimits, Settings};
use crate::auth::{Action, Anonymous, Auth, Principal};
use crate::health::Health;
use crate::proxy::{Proxy, Repositories, Target};
use crate::registry::RepoName;
use crate::status::Board;
use crate::storage::Storage;

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
    /// What this node knows of itself, its upstreams and the cluster (the web UI's status pages).
    pub status: Arc<Board>,
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
        // The board the upstreams already report on is the app's: one board per daemon.
        let status = proxy.board();
        let proxy = Repositories::new(storage.clone(), proxy);
        Arc::new(App {
            storage,
            health,
            settings: ArcSwap::from_pointee(settings),
            proxy,
            auth,
            limits,
            status,
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
    pub(super) fn upload_slot(&self) -> Result<UploadSlot<'_>, ApiError> {
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

    /// Where a repository name leads in the pull-through cache (`ns` is containerd's mirror form).
    pub fn target(&self, name: &RepoName, req: &Req) -> Option<Target> {
        self.proxy
            .target(name, req.query.get("ns").map(String::as_str))
    }

    /// Refuses a push into an upstream's namespace (nobody may shadow a public image for the whole
    /// cluster) unless that upstream's `push = true`.
    pub(super) fn refuse_push(&self, name: &RepoName) -> Result<(), ApiError> {
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
    pub(super) fn refuse_write(&self) -> Result<(), ApiError> {
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

    pub(super) fn unavailable(&self) -> Option<ApiError> {
        self.health
            .admit()
            .err()
            .map(|reason| ApiError::storage_unavailable(&reason))
    }
}

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
