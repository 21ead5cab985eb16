//! Pull-through cache: repositories under an upstream's prefix (or named with containerd's
//! `?ns=`, or bare names matching the default patterns) are served from storage when stored, and
//! otherwise fetched from the upstream, stored under the same durability rules, and served.
//!
//! Every naming form maps to one stored repository, `<upstream name>/<upstream repository>`, so
//! `docker.io/library/alpine`, `library/alpine?ns=docker.io` and (with docker.io as the default
//! upstream) `library/alpine` share one cache. Pushes never reach an upstream.
//!
//! Fetches are coalesced: one manifest fetch per repository and reference on a node at a time, and
//! one blob fetch per digest across every node sharing the storage (a lock on the shared mount,
//! see [`crate::storage::fill`]); every other request streams from the fetch in progress.
//!
//! Nothing an upstream sends is held whole in memory: a manifest is read up to
//! `limits.max_manifest_bytes` and refused beyond it, a blob goes to its partial file as it arrives.
//! A blob fetch has an overall deadline (`proxy.fetch_deadline_secs`) and a minimum rate
//! (`proxy.fetch_min_bytes_per_sec`, judged over every `proxy.upstream_timeout_secs`), and stops
//! when no client on this node follows it any more, unless more than half of a blob of known size
//! has arrived (then it is worth finishing: the next pull finds it stored).

pub mod evict;
pub mod prewarm;
pub mod upstream;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::Method;
use tokio::sync::watch;

use crate::registry::{Algorithm, Digest, Reference, RepoName, Tag, manifest};
use crate::storage::manifests::ReferrerEntry;
use crate::storage::{BlobStream, CachedManifest, Storage, StorageError};
pub use upstream::{Upstream, UpstreamError, UpstreamSettings};

/// What `[proxy]`, `[[upstream]]` and the manifest and blob limits say, as the daemon hands them
/// over.
#[derive(Clone)]
pub struct ProxySettings {
    pub upstreams: Vec<UpstreamSettings>,
    /// The upstream of bare names matching `default_patterns`; empty: none.
    pub default_upstream: String,
    pub default_patterns: Vec<String>,
    /// How long a tag fetched from an upstream is served without asking it again.
    pub tag_ttl: Duration,
    /// Bound on each upstream request.
    pub timeout: Duration,
    pub max_manifest_bytes: u64,
    /// 0: no limit.
    pub max_blob_bytes: u64,
    /// Overall bound on one blob fetch.
    pub fetch_deadline: Duration,
    /// Bytes per second a blob fetch must average; 0: no minimum.
    pub min_rate: u64,
}

/// Why a proxied request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream {upstream} sent a manifest that is not valid: {reason}")]
    BadManifest { upstream: String, reason: String },
}

/// Where a repository name leads when it is not (only) local.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The repository the cache stores it under.
    pub cached: RepoName,
    /// The repository's name on the upstream.
    pub remote: String,
    /// For a bare name (the registry-mirrors form): the name as the client sent it, which is
    /// looked up locally first, so images already stored under it are served as they are.
    pub literal: Option<RepoName>,
}

/// How a manifest was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From storage, known current.
    Hit,
    /// Fetched from the upstream just now.
    Fetched,
    /// From storage, but the upstream could not confirm it.
    Stale,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Fetched => "fetched",
            Freshness::Stale => "stale",
        }
    }
}

pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    default_upstream: Option<Arc<Upstream>>,
    default_patterns: Vec<String>,
    tag_ttl: Duration,
    timeout: Duration,
    max_manifest_bytes: u64,
    /// 0: no limit.
    max_blob_bytes: u64,
    fetch_deadline: Duration,
    /// 0: no minimum.
    min_rate: u64,
    /// The blob fetches this node's clients wait for, by digest: what a fetch's followers hold
    /// (a fetch nobody holds may stop) and how it ended (so followers hear a failure at once).
    fills: Mutex<HashMap<Digest, Weak<FillWatch>>>,
    /// One manifest fetch per (repository, reference) on this node at a time.
    manifest_fetches: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When this node last recorded a pull of each cached manifest.
    pulled: Mutex<HashMap<String, std::time::Instant>>,
}

/// A pull is recorded on storage at most this often per manifest and node.
const PULL_MARK_EVERY: Duration = Duration::from_secs(60);

impl Proxy {
    /// A proxy with no upstreams: every name is local.
    pub fn none() -> Proxy {
        Proxy {
            upstreams: Vec::new(),
            default_upstream: None,
            default_patterns: Vec::new(),
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 0,
            fetch_deadline: Duration::from_secs(3600),
            min_rate: 0,
            fills: Mutex::new(HashMap::new()),
            manifest_fetches: Mutex::new(HashMap::new()),
            pulled: Mutex::new(HashMap::new()),
        }
    }

    /// The proxy `settings` describe; reads the upstreams' password and CA files.
    pub fn from_settings(settings: &ProxySettings) -> anyhow::Result<Proxy> {
        let timeout = settings.timeout;
        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, timeout).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_upstream = upstreams
            .iter()
            .find(|u| u.name == settings.default_upstream)
            .cloned();
        Ok(Proxy {
            upstreams,
            default_upstream,
            default_patterns: settings.default_patterns.clone(),
            tag_ttl: settings.tag_ttl,
            timeout,
            max_manifest_bytes: settings.max_manifest_bytes,
            max_blob_bytes: settings.max_blob_bytes,
            fetch_deadline: settings.fetch_deadline,
            min_rate: settings.min_rate,
            fills: Mutex::new(HashMap::new()),
            manifest_fetches: Mutex::new(HashMap::new()),
            pulled: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// Where `name` (with containerd's `ns` query, if any) leads; `None` when it is local only.
    pub fn target(&self, name: &RepoName, ns: Option<&str>) -> Option<Target> {
        if self.upstreams.is_empty() {
            return None;
        }
        let name = name.as_str();
        if let Some(ns) = ns {
            let u = self
                .upstreams
                .iter()
                .find(|u| u.name == ns || u.prefixes.iter().any(|p| p == ns))?;
            return self.make_target(u, name, None);
        }
        let mut best: Option<(&Arc<Upstream>, &str)> = None;
        for u in &self.upstreams {
            for p in &u.prefixes {
                if let Some(rest) = name
                    .strip_prefix(p.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    && best.is_none_or(|(_, r)| rest.len() < r.len())
                {
                    best = Some((u, rest));
                }
            }
        }
        if let Some((u, rest)) = best {
            return self.make_target(u, rest, None);
        }
        let u = self.default_upstream.as_ref()?;
        if self.default_patterns.iter().any(|p| matches(p, name)) {
            return self.make_target(u, name, name.parse().ok());
        }
        None
    }

    fn make_target(
        &self,
        u: &Arc<Upstream>,
        repo: &str,
        literal: Option<RepoName>,
    ) -> Option<Target> {
        let remote = u.remote_name(repo);
        let prefix = u.prefixes.first().unwrap_or(&u.name);
        let cached = format!("{prefix}/{remote}").parse().ok()?;
        Some(Target {
            upstream: u.clone(),
            cached,
            remote,
            literal,
        })
    }

    /// Whether `name` is a repository of the cache (under an upstream's prefix).
    pub fn is_cached_repo(&self, name: &RepoName) -> bool {
        self.upstreams.iter().any(|u| {
            u.prefixes.iter().any(|p| {
                name.as_str()
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            })
        })
    }

    /// The upstream whose namespace `name` is in, when pushes there are refused.
    pub fn refuses_push(&self, name: &RepoName) -> Option<String> {
        let t = self.target(name, None)?;
        (!t.upstream.push).then(|| t.upstream.name.clone())
    }

    fn fetch_lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .manifest_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Drop entries nobody waits on, so the map stays as small as the fetches in flight.
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(key).or_default().clone()
    }

    /// The manifest `reference` of the target: from storage while current, else from upstream.
    /// Records the pull (for eviction: least recently pulled goes first).
    pub async fn manifest(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        let found = self.resolve(storage, t, reference).await?;
        let result = match found.2 {
            Freshness::Hit => "hit",
            Freshness::Fetched => "miss",
            Freshness::Stale => "stale",
        };
        crate::metrics::get().cache(&t.upstream.name, "manifest", result);
        let key = format!("{}@{}", t.cached, found.0);
        let due = {
            let mut marks = self.pulled.lock().unwrap_or_else(|p| p.into_inner());
            if marks.len() > 100_000 {
                marks.clear();
            }
            let now = std::time::Instant::now();
            match marks.get(&key) {
                Some(at) if now.duration_since(*at) < PULL_MARK_EVERY => false,
                _ => {
                    marks.insert(key, now);
                    true
                }
            }
        };
        if due {
            let (storage, name, digest) = (storage.clone(), t.cached.clone(), found.0.clone());
            tokio::spawn(async move {
                if let Err(e) = storage.mark_pulled(&name, &digest).await {
                    tracing::debug!(error = %e, "cannot record a pull");
                }
            });
        }
        Ok(found)
    }

    async fn resolve(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        if let Some(literal) = &t.literal {
            match storage.resolve_manifest(literal, reference).await {
                Ok((d, m)) => return Ok((d, m, Freshness::Hit)),
                Err(StorageError::ManifestUnknown) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let local = match storage.resolve_manifest(&t.cached, reference).await {
            Ok(found) => Some(found),
            Err(StorageError::ManifestUnknown) => None,
            Err(e) => return Err(e.into()),
        };
        let tag = match reference {
            // Content-addressed: a stored copy is current forever.
            Reference::Digest(_) => {
                if let Some((d, m)) = local {
                    return Ok((d, m, Freshness::Hit));
                }
                None
            }
            Reference::Tag(tag) => {
                if local.is_some() && self.fresh(storage, &t.cached, tag).await? {
                    let (d, m) = local.ok_or(StorageError::ManifestUnknown)?;
                    return Ok((d, m, Freshness::Hit));
                }
                Some(tag)
            }
        };
        let _one_fetch = self
            .fetch_lock(format!("{}:{reference}", t.cached))
            .lock_owned()
            .await;
        // Whoever held the lock before may have fetched it.
        if let Some(tag) = tag
            && self.fresh(storage, &t.cached, tag).await?
            && let Ok((d, m)) = storage.resolve_manifest(&t.cached, reference).await
        {
            return Ok((d, m, Freshness::Hit));
        }
        let revalidated = match (tag, &local) {
            (Some(tag), Some((have, _))) => self.revalidate(storage, t, tag, have).await,
            _ => Ok(false),
        };
        match revalidated {
            Ok(true) => {
                let (d, m) = local.ok_or(StorageError::ManifestUnknown)?;
                return Ok((d, m, Freshness::Hit));
            }
            Ok(false) => {}
            Err(e) => return self.stale_or(local, t, reference, e),
        }
        match self.fetch_manifest(storage, t, reference).await {
            Ok(found) => Ok((found.0, found.1, Freshness::Fetched)),
            Err(ProxyError::Upstream(e)) => self.stale_or(local, t, reference, e),
            Err(e) => Err(e),
        }
    }

    /// Serves the stored copy when the upstream could not answer; the error when there is none.
    fn stale_or(
        &self,
        local: Option<(Digest, Arc<CachedManifest>)>,
        t: &Target,
        reference: &Reference,
        e: UpstreamError,
    ) -> Result<(Digest, Arc<CachedManifest>, Freshness), ProxyError> {
        match local {
            Some((d, m)) => {
                tracing::warn!(
                    repository = %t.cached, reference = %reference, error = %e,
                    "serving the cached manifest: the upstream could not confirm it"
                );
                Ok((d, m, Freshness::Stale))
            }
            None => Err(e.into()),
        }
    }

    async fn fresh(
        &self,
        storage: &Storage,
        name: &RepoName,
        tag: &Tag,
    ) -> Result<bool, ProxyError> {
        let at = storage.tag_validated_at(name, tag).await?;
        Ok(at.is_some_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age < self.tag_ttl)
        }))
    }

    /// Asks the upstream (HEAD) whether `tag` still names `have`; records the check when it does.
    async fn revalidate(
        &self,
        storage: &Storage,
        t: &Target,
        tag: &Tag,
        have: &Digest,
    ) -> Result<bool, UpstreamError> {
        let resp = t
            .upstream
            .manifest(Method::HEAD, &t.remote, &Reference::Tag(tag.clone()))
            .await?;
        let theirs = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if theirs.as_ref() != Some(have) {
            return Ok(false);
        }
        if let Err(e) = storage.mark_tag_validated(&t.cached, tag).await {
            tracing::warn!(error = %e, "cannot record a tag check");
        }
        Ok(true)
    }

    /// GETs a manifest from the upstream, verifies it, and stores it (with its tag).
    async fn fetch_manifest(
        &self,
        storage: &Storage,
        t: &Target,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>), ProxyError> {
        let resp = t
            .upstream
            .manifest(Method::GET, &t.remote, reference)
            .await?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bad = |reason: String| ProxyError::BadManifest {
            upstream: t.upstream.name.clone(),
            reason,
        };
        // Refused on its declared length, or as soon as more arrives than a manifest may have.
        let bytes = upstream::read_capped(resp, self.max_manifest_bytes)
            .await
            .map_err(|e| match e {
                upstream::Capped::Read(e) => UpstreamError::Unreachable(
                    t.upstream.name.clone(),
                    format!("reading a manifest: {e}"),
                )
                .into(),
                upstream::Capped::TooBig(n) => {
                    bad(format!("more than {n} bytes (limits.max_manifest_bytes)"))
                }
            })?;
        let digest = match reference {
            Reference::Digest(d) if d.algorithm() == Algorithm::Sha512 => {
                Digest::compute(Algorithm::Sha512, &bytes)
            }
            _ => Digest::sha256_of(&bytes),
        };
        if let Reference::Digest(want) = reference
            && *want != digest
        {
            return Err(bad(format!(
                "its digest is {digest}, not the {want} asked for"
            )));
        }
        let parsed =
            manifest::parse(content_type.as_deref(), &bytes).map_err(|e| bad(e.to_string()))?;
        let referrer = ReferrerEntry::of(&parsed, &digest, bytes.len());
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        storage
            .put_manifest(&t.cached, &digest, bytes.to_vec(), tag, referrer)
            .await?;
        if let Some(tag) = tag
            && let Err(e) = storage.mark_tag_validated(&t.cached, tag).await
        {
            tracing::warn!(error = %e, "cannot record a tag check");
        }
        tracing::info!(
            repository = %t.cached, reference = %reference, digest = %digest,
            upstream = %t.upstream.name, "manifest cached from upstream"
        );
        let (d, m) = storage
            .resolve_manifest(&t.cached, &Reference::Digest(digest))
            .await?;
        Ok((d, m))
    }

    /// The size of a blob of the target, linking it into the cached repository when it is stored
    /// but not yet linked there (a layer shared with another image). `None`: not stored; the
    /// caller fetches it.
    pub async fn stored_blob(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
    ) -> Result<Option<(RepoName, u64)>, ProxyError> {
        for name in t.literal.iter().chain(std::iter::once(&t.cached)) {
            if let Some(size) = storage.blob_size(name, digest).await? {
                return Ok(Some((name.clone(), size)));
            }
        }
        let Some(size) = storage.blob_size_global(digest).await? else {
            return Ok(None);
        };
        // Stored for another repository: serve it here only if the upstream has it here, so no
        // digest reaches through this repository to a layer it does not hold.
        t.upstream
            .send(
                Method::HEAD,
                &t.remote,
                &format!("blobs/{digest}"),
                None,
                true,
            )
            .await?;
        storage.link_blob(&t.cached, digest).await?;
        Ok(Some((t.cached.clone(), size)))
    }

    /// The size of a blob the upstream has (HEAD), without fetching it.
    pub async fn upstream_blob_size(&self, t: &Target, digest: &Digest) -> Result<u64, ProxyError> {
        let resp = t
            .upstream
            .send(
                Method::HEAD,
                &t.remote,
                &format!("blobs/{digest}"),
                None,
                true,
            )
            .await?;
        // The header, not `content_length()`: that is the body's size, 0 for a HEAD.
        upstream::declared_length(resp.headers()).ok_or_else(|| {
            UpstreamError::Failed(
                t.upstream.name.clone(),
                format!("HEAD of {digest} carried no size"),
            )
            .into()
        })
    }

    /// Streams a blob that is not stored: starts the one upstream fetch for it (unless one is
    /// running here or on another node) and follows it. A fetch that fails on this node fails
    /// every client following it at once, with its reason (a digest mismatch names both digests).
    pub async fn fetch_blob(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
    ) -> Result<(u64, BlobStream), ProxyError> {
        if digest.algorithm() != Algorithm::Sha256 {
            return Err(StorageError::BlobUnknown.into());
        }
        // Held until the client is done: while anyone holds it, the fetch goes on.
        let watch = self.fill_watch(digest);
        let mut outcome = watch.outcome.subscribe();
        outcome.borrow_and_update();
        // A fetch that ends without the blob (it failed, or its node died) lets the next one try.
        for _ in 0..3 {
            self.lead_fetch(storage, t, digest, &watch).await?;
            // A fetch without a size is followed once it is stored: wait as long as it may take.
            let followed = tokio::select! {
                r = storage.follow_fill(digest, self.fetch_deadline + self.timeout, self.timeout * 3) => r?,
                msg = failure(&mut outcome) => return Err(UpstreamError::Failed(t.upstream.name.clone(), msg).into()),
            };
            if let Some((size, stream)) = followed {
                return Ok((
                    size,
                    Box::pin(Watched {
                        inner: stream,
                        outcome,
                        _interest: watch,
                        failed: false,
                    }),
                ));
            }
            if let Some(msg) = failed_since(&mut outcome) {
                return Err(UpstreamError::Failed(t.upstream.name.clone(), msg).into());
            }
        }
        Err(UpstreamError::Failed(
            t.upstream.name.clone(),
            format!("fetching {digest} failed three times"),
        )
        .into())
    }

    /// The watch of the fetch of `digest` on this node, shared by everyone following it.
    fn fill_watch(&self, digest: &Digest) -> Arc<FillWatch> {
        let mut map = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(digest).and_then(Weak::upgrade) {
            return w;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(FillWatch {
            outcome: watch::Sender::new(None),
        });
        map.insert(digest.clone(), Arc::downgrade(&w));
        w
    }

    /// Starts the upstream fetch of a blob unless one is running (here or on another node).
    async fn lead_fetch(
        &self,
        storage: &Storage,
        t: &Target,
        digest: &Digest,
        watch: &Arc<FillWatch>,
    ) -> Result<(), ProxyError> {
        let Some(mut lease) = storage.try_lead_fill(digest).await? else {
            // Another fetch is filling it, perhaps for another repository: follow it only if the
            // upstream has the blob in this one (as `stored_blob` asks), so no digest reaches
            // through a repository the client may pull to bytes it does not hold.
            t.upstream
                .send(
                    Method::HEAD,
                    &t.remote,
                    &format!("blobs/{digest}"),
                    None,
                    true,
                )
                .await?;
            return Ok(());
        };
        {
            // Ask first, so a missing blob or a refusal reaches this client as what it is. The
            // answer's head must come within the upstream timeout: the body has its own deadline
            // and rate, and a head dripped slowly would hold the fill lock outside both.
            let resp = tokio::time::timeout(
                self.timeout,
                t.upstream.send(
                    Method::GET,
                    &t.remote,
                    &format!("blobs/{digest}"),
                    None,
                    false,
                ),
            )
            .await
            .map_err(|_| {
                UpstreamError::Unreachable(
                    t.upstream.name.clone(),
                    format!("no answer to GET of {digest} within {:?}", self.timeout),
                )
            })??;
            let size = upstream::declared_length(resp.headers());
            if let Some(size) = size
                && self.max_blob_bytes > 0
                && size > self.max_blob_bytes
            {
                return Err(too_big(&t.upstream.name, digest, self.max_blob_bytes).into());
            }
            lease.begin(size).await?;
            watch.outcome.send_replace(None);
            let job = FillJob {
                upstream: t.upstream.name.clone(),
                digest: digest.clone(),
                name: t.cached.clone(),
                size,
                deadline: self.fetch_deadline,
                window: self.timeout,
                min_rate: self.min_rate,
                max_bytes: self.max_blob_bytes,
                watch: watch.clone(),
            };
            tokio::spawn(async move {
                let result = fill(lease, resp, &job).await;
                match &result {
                    Ok(n) => tracing::info!(
                        repository = %job.name, digest = %job.digest, bytes = n,
                        upstream = %job.upstream, "blob cached from upstream"
                    ),
                    Err(e) => tracing::warn!(
                        repository = %job.name, digest = %job.digest, upstream = %job.upstream,
                        error = %e, "fetching a blob from upstream failed"
                    ),
                }
                // What followers are told: the upstream's part as it is; a fault of this node's
                // storage only as such (its detail is in the log line above, not for clients,
                // and not the upstream's doing).
                let outcome = result.map(|_| ()).map_err(|e| match e {
                    ProxyError::Storage(_) => {
                        "storing it on this registry failed (the registry's log has the details)"
                            .to_string()
                    }
                    e => e.to_string(),
                });
                job.watch.outcome.send_replace(Some(outcome));
            });
        }
        Ok(())
    }
}

/// How the fetch of one blob on this node ended: `None` while it runs (or before one started).
type Outcome = Option<Result<(), String>>;

/// What the clients following one blob's fetch on this node share. Each holds it, and so does the
/// fetch (so a client arriving while it runs joins the same one); the fetch sees how many others
/// do, and tells them how it ended.
pub struct FillWatch {
    outcome: watch::Sender<Outcome>,
}

/// A fetch's failure, once it happens after the receiver last looked; never, otherwise.
async fn failure(rx: &mut watch::Receiver<Outcome>) -> String {
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(Err(msg)) = &*rx.borrow_and_update() {
            return msg.clone();
        }
    }
}

/// A fetch's failure since the receiver last looked, without waiting.
fn failed_since(rx: &mut watch::Receiver<Outcome>) -> Option<String> {
    if !rx.has_changed().unwrap_or(false) {
        return None;
    }
    match &*rx.borrow_and_update() {
        Some(Err(msg)) => Some(msg.clone()),
        _ => None,
    }
}

/// A follower's stream of a fill: ends with the fetch's own error as soon as the fetch fails
/// (the storage stream alone would wait for bytes that never come), and keeps the fetch wanted
/// while the client reads.
struct Watched {
    inner: BlobStream,
    outcome: watch::Receiver<Outcome>,
    _interest: Arc<FillWatch>,
    failed: bool,
}

impl Stream for Watched {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // Looked at on every poll: a follower waiting for bytes is polled every few tens of
        // milliseconds by its storage stream.
        if let Some(msg) = failed_since(&mut this.outcome) {
            this.failed = true;
            return Poll::Ready(Some(Err(std::io::Error::other(msg))));
        }
        this.inner.as_mut().poll_next(cx)
    }
}

/// What one blob fetch must respect.
struct FillJob {
    upstream: String,
    digest: Digest,
    name: RepoName,
    /// As the upstream declared it.
    size: Option<u64>,
    deadline: Duration,
    /// The span over which the rate is judged.
    window: Duration,
    min_rate: u64,
    max_bytes: u64,
    watch: Arc<FillWatch>,
}

impl FillJob {
    fn failed(&self, why: String) -> ProxyError {
        UpstreamError::Failed(self.upstream.clone(), why).into()
    }

    /// Whether the fetch goes on: while a client on this node follows it, and with none, when
    /// more than half of a blob of known size has arrived, so finishing costs less than what was fetched, and the next pull finds
    /// it stored. An endless or unsized body is never worth it.
    fn worth_finishing(&self, written: u64) -> bool {
        // Followers, besides this fetch's own hold.
        if Arc::strong_count(&self.watch) > 1 {
            return true;
        }
        self.size.is_some_and(|s| written.saturating_mul(2) > s)
    }
}

fn too_big(upstream: &str, digest: &Digest, max: u64) -> UpstreamError {
    UpstreamError::Failed(
        upstream.to_string(),
        format!("blob {digest} is larger than {max} bytes (limits.max_blob_bytes); not fetched"),
    )
}

/// Copies the upstream's body into the fill as it arrives and publishes it, within the job's
/// deadline, rate and size, while someone follows it or it is worth finishing.
async fn fill(
    mut lease: crate::storage::fill::FillLease,
    resp: reqwest::Response,
    job: &FillJob,
) -> Result<u64, ProxyError> {
    let mut body = resp.bytes_stream();
    let started = Instant::now();
    let deadline = started + job.deadline;
    let (mut window_start, mut window_bytes, mut written) = (started, 0u64, 0u64);
    loop {
        let check_at = (window_start + job.window).min(deadline);
        match tokio::time::timeout_at(check_at.into(), body.next()).await {
            Ok(Some(chunk)) => {
                let chunk = chunk.map_err(|e| {
                    UpstreamError::Unreachable(
                        job.upstream.clone(),
                        format!("reading blob {}: {e}", job.digest),
                    )
                })?;
                written += chunk.len() as u64;
                window_bytes += chunk.len() as u64;
                if job.max_bytes > 0 && written > job.max_bytes {
                    return Err(too_big(&job.upstream, &job.digest, job.max_bytes).into());
                }
                lease.write(chunk).await?;
            }
            Ok(None) => break,
            // Nothing arrived by the next check: judge the rate and the deadline below.
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(job.failed(format!(
                "blob {} took longer than {} s (proxy.fetch_deadline_secs); cut after {written} bytes",
                job.digest,
                job.deadline.as_secs()
            )));
        }
        let span = now.duration_since(window_start);
        if span >= job.window {
            let rate = window_bytes as f64 / span.as_secs_f64();
            if job.min_rate > 0 && rate < job.min_rate as f64 {
                return Err(job.failed(format!(
                    "blob {} arrived at {rate:.0} bytes/s, less than proxy.fetch_min_bytes_per_sec \
                     ({}); cut after {written} bytes",
                    job.digest, job.min_rate
                )));
            }
            (window_start, window_bytes) = (now, 0);
        }
        if !job.worth_finishing(written) {
            return Err(job.failed(format!(
                "blob {}: no client waits for it any more; stopped after {written} bytes",
                job.digest
            )));
        }
    }
    lease.finish(&job.name).await.map_err(|e| match e {
        StorageError::DigestMismatch { expected, computed } => job.failed(format!(
            "it sent blob {expected} with content whose digest is {computed}; not stored"
        )),
        e => e.into(),
    })
}

/// Whether `name` matches `pattern`: `*` is one path component, `**` any number (at least one).
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[&str], n: &[&str]) -> bool {
        match (p, n) {
            ([], []) => true,
            (["**", p @ ..], [_, ..]) => (1..=n.len()).filter_map(|k| n.get(k..)).any(|n| go(p, n)),
            (["*", p @ ..], [_, n @ ..]) => go(p, n),
            ([a, p @ ..], [b, n @ ..]) if a == b => go(p, n),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("library/*", "library/alpine"));
        assert!(!matches("library/*", "library/a/b"));
        assert!(!matches("library/*", "team/app"));
        assert!(matches("library/**", "library/a/b"));
        assert!(matches("**", "a"));
        assert!(!matches("library/*", "library"));
    }

    fn upstream(name: &str, url: &str, prefixes: &[&str], push: bool) -> UpstreamSettings {
        UpstreamSettings {
            name: name.into(),
            url: url.into(),
            username: String::new(),
            password: String::new(),
            password_file: Default::default(),
            ca: Default::default(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            push,
            token_realm_hosts: Vec::new(),
        }
    }

    /// docker.io (its name its prefix) and ghcr.io (two prefixes, pushes allowed), with the
    /// shipped `[proxy]` defaults.
    fn proxy(default: &str) -> Proxy {
        let settings = ProxySettings {
            upstreams: vec![
                upstream(
                    "docker.io",
                    "https://registry-1.docker.io",
                    &["docker.io"],
                    false,
                ),
                upstream("ghcr.io", "https://ghcr.io", &["ghcr.io", "gh"], true),
            ],
            default_upstream: default.into(),
            default_patterns: vec!["library/*".into()],
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 0,
            fetch_deadline: Duration::from_secs(3600),
            min_rate: 16384,
        };
        Proxy::from_settings(&settings).unwrap_or_else(|e| panic!("{e}"))
    }

    fn t(p: &Proxy, name: &str, ns: Option<&str>) -> Option<(String, String, bool)> {
        let name: RepoName = name.parse().unwrap_or_else(|e| panic!("{e}"));
        p.target(&name, ns)
            .map(|t| (t.cached.to_string(), t.remote, t.literal.is_some()))
    }

    #[test]
    fn naming_forms() {
        let p = proxy("docker.io");
        let alpine = Some((
            "docker.io/library/alpine".to_string(),
            "library/alpine".to_string(),
            false,
        ));
        assert_eq!(t(&p, "docker.io/library/alpine", None), alpine);
        assert_eq!(t(&p, "docker.io/alpine", None), alpine);
        assert_eq!(t(&p, "library/alpine", Some("docker.io")), alpine);
        assert_eq!(t(&p, "alpine", Some("docker.io")), alpine);
        let bare = t(&p, "library/alpine", None);
        assert_eq!(
            bare,
            Some((
                "docker.io/library/alpine".into(),
                "library/alpine".into(),
                true
            ))
        );
        // A private name outside the default patterns never goes upstream.
        assert_eq!(t(&p, "team/app", None), None);
        assert_eq!(t(&p, "docker.io", None), None);
        assert_eq!(
            t(&p, "gh/o/r", None),
            Some(("ghcr.io/o/r".into(), "o/r".into(), false))
        );
        assert_eq!(t(&p, "x/y", Some("quay.io")), None);
        let name: RepoName = "docker.io/library/alpine"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.refuses_push(&name), Some("docker.io".into()));
        let name: RepoName = "ghcr.io/o/r".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.refuses_push(&name), None);
        let none = proxy("");
        assert_eq!(t(&none, "library/alpine", None), None);
    }
}
