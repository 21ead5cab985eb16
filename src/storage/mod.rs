//! Registry storage: blobs, uploads, manifests, tags, repositories and referrers, on Distribution's
//! on-disk layout (see [`layout`]) with the durability rules of ARCHITECTURE.md (see [`atomic`]).
//!
//! This is the driver boundary: callers speak in registry terms (a repository, a digest, a tag, an
//! upload id) and never see a path, so a second driver (S3) implements the same operations. Storage
//! knows nothing of HTTP; request bodies arrive as streams of bytes.

pub mod atomic;
pub mod blobs;
mod cached;
mod catalog;
pub mod fill;
pub mod inventory;
pub mod layout;
mod listing;
pub mod manifests;
pub mod repos;
pub mod s3;
pub mod uploads;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::registry::{Digest, Reference, RepoName};
use layout::Layout;

pub use blobs::{BlobStream, ReadSize};
pub use uploads::{ChunkSpan, UploadStatus};

/// Why a storage operation failed; the HTTP edge turns each into one OCI error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob unknown to this repository")]
    BlobUnknown,
    #[error("upload unknown: it was completed, cancelled or never started")]
    UploadUnknown,
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("repository name not known to this registry")]
    NameUnknown,
    #[error("chunk does not start at the upload's current offset {0}")]
    RangeMismatch(u64),
    /// A chunk that did not hold the bytes its range declared; nothing of it was acknowledged.
    #[error("{detail}; nothing of it was stored, the upload stays at offset {offset}")]
    ChunkLength { detail: String, offset: u64 },
    #[error("content has digest {computed}, not the {expected} it was sent as")]
    DigestMismatch { expected: Digest, computed: Digest },
    #[error("request body ended early: {0}")]
    Body(io::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Unavailable(String),
}

impl StorageError {
    /// The OS error behind an I/O failure, to tell a full disk or a lost mount from other faults.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            StorageError::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// For byte streams, whose items are `io::Result`: an I/O failure stays itself, anything else
/// is carried as its message.
impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        match e {
            StorageError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

fn timed_out(limit: Duration) -> StorageError {
    StorageError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "storage did not answer within {}s (a hung mount?)",
            limit.as_secs()
        ),
    ))
}

/// Reads a link file and parses the digest it holds; `None` when the link does not exist.
fn read_link(path: &Path) -> Result<Option<Digest>> {
    parse_link(path, atomic::read_retrying(path))
}

/// [`read_link`] from the kernel's caches alone (see [`cached`]); `WouldBlock` otherwise.
fn read_link_cached(path: &Path) -> Result<Option<Digest>> {
    parse_link(path, cached::read_small(path, 4096))
}

/// `read_link` or `read_link_cached`, as a [`Storage::cached_or_blocking`] call asks.
fn read_link_as(path: &Path, from_cache: bool) -> Result<Option<Digest>> {
    if from_cache {
        read_link_cached(path)
    } else {
        read_link(path)
    }
}

fn parse_link(path: &Path, read: io::Result<Vec<u8>>) -> Result<Option<Digest>> {
    match read {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let d = text.trim().parse::<Digest>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt link {}: {e}", path.display()),
                )
            })?;
            Ok(Some(d))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The entries of `dir`; `None` when it does not exist (a directory nothing was written to yet, or
/// one another node just removed).
fn read_dir_if_exists(dir: &Path) -> io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn exists(path: &Path) -> Result<bool> {
    match atomic::retry_stale(|| std::fs::symlink_metadata(path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

struct Inner {
    layout: Layout,
    /// Bound on every storage call, so a hung mount turns into 503s instead of stuck requests.
    timeout: Duration,
    /// Blocking storage calls in flight. A call stuck on a hung mount keeps its permit, so hung
    /// threads stay bounded and later calls wait here (and time out) instead of piling up.
    slots: Arc<tokio::sync::Semaphore>,
    /// Hash state of uploads in progress on this node, so a chunk does not rehash what came before.
    /// Authoritative state is on storage (the hashstates files); this is only a cache, bounded.
    cursors: Mutex<uploads::Cursors>,
    /// One writer per upload on this node at a time; an entry lives only while a request holds
    /// or awaits it.
    upload_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    manifests: Mutex<ManifestCache>,
    /// Blobs whose content this node has checked against their digest while serving them.
    verified: Mutex<std::collections::HashSet<crate::registry::Digest>>,
    /// Catalog and tag lists, reused while their directories are unchanged.
    listings: Mutex<listing::Listings>,
    /// When set, every blocking storage call first checks that the storage mount is still there.
    guard: Option<crate::node::mount::MountGuard>,
    /// The catalog's cached directory tree; taken out while a walk uses it.
    catalog: Mutex<Option<catalog::Dir>>,
    /// Small hot reads may run on the async threads when the caches answer them (see [`cached`]):
    /// the root is on a local filesystem and no mount guard is set. Looked at again by every
    /// storage check, in case a network filesystem got mounted over the root after start.
    inline: std::sync::atomic::AtomicBool,
    /// The S3 driver, when the storage is a bucket; `None`: the filesystem under `layout`.
    s3: Option<Arc<s3::S3Driver>>,
}

/// Where the storage is, as the daemon hands it over (`storage.driver` and its keys, resolved).
#[derive(Debug, Clone)]
pub enum Location {
    /// The filesystem under this root.
    Filesystem(std::path::PathBuf),
    /// An S3 bucket, under a key prefix ("" for none).
    S3 {
        client: s3::S3Settings,
        prefix: String,
    },
}

/// What opening the storage needs: where it is, and the bound on each operation.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub location: Location,
    /// Bound on every storage call (`storage.operation_timeout_secs`).
    pub timeout: Duration,
}

/// The filesystem storage driver. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl Storage {
    /// A storage root. Nothing is written until a request (or `check`) needs it, so a root on a
    /// missing mount stays untouched while the mount guard says no.
    pub fn open(root: impl AsRef<Path>) -> Result<Storage> {
        Storage::open_with(root, Duration::from_secs(30), 256)
    }

    /// Like `open`, with the per-call timeout and the bound on concurrent blocking calls.
    pub fn open_with(
        root: impl AsRef<Path>,
        timeout: Duration,
        max_blocking: usize,
    ) -> Result<Storage> {
        let layout = Layout::new(root.as_ref());
        let inline = cached::is_local(root.as_ref());
        Ok(Storage::with_inner(
            layout,
            timeout,
            max_blocking,
            inline,
            None,
        ))
    }

    fn with_inner(
        layout: Layout,
        timeout: Duration,
        max_blocking: usize,
        inline: bool,
        s3: Option<Arc<s3::S3Driver>>,
    ) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                layout,
                timeout,
                slots: Arc::new(tokio::sync::Semaphore::new(max_blocking.max(1))),
                cursors: Mutex::new(uploads::Cursors::default()),
                upload_locks: Mutex::new(HashMap::new()),
                manifests: Mutex::new(ManifestCache::default()),
                verified: Mutex::new(std::collections::HashSet::new()),
                listings: Mutex::new(listing::Listings::default()),
                catalog: Mutex::new(None),
                guard: None,
                inline: std::sync::atomic::AtomicBool::new(inline),
                s3,
            }),
        }
    }

    /// Storage in an S3 bucket (`prefix` is the key prefix, "" for none), with the per-call bound.
    pub fn open_s3(settings: &s3::S3Settings, prefix: &str, timeout: Duration) -> Result<Storage> {
        let driver = s3::S3Driver::new(settings, prefix).map_err(StorageError::Unavailable)?;
        // Nothing runs on the blocking pool or reads the filesystem's caches for a bucket.
        Ok(Storage::with_inner(
            driver.layout().clone(),
            timeout,
            1,
            false,
            Some(Arc::new(driver)),
        ))
    }

    /// The storage `settings` name: a filesystem root, or an S3 bucket. `max_blocking` bounds the
    /// blocking calls of a filesystem at once.
    pub fn from_settings(
        settings: &StorageSettings,
        max_blocking: usize,
    ) -> std::result::Result<Storage, String> {
        let timeout = settings.timeout;
        match &settings.location {
            Location::S3 { client, prefix } => {
                Storage::open_s3(client, prefix, timeout).map_err(|e| e.to_string())
            }
            Location::Filesystem(root) => Storage::open_with(root, timeout, max_blocking)
                .map_err(|e| format!("storage root {}: {e}", root.display())),
        }
    }

    /// The S3 driver, when this storage is a bucket.
    fn s3(&self) -> Option<&s3::S3Driver> {
        self.inner.s3.as_deref()
    }

    fn s3_arc(&self) -> Option<Arc<s3::S3Driver>> {
        self.inner.s3.clone()
    }

    /// "Now" by the clock that stamps what the storage holds: this node's for a filesystem it
    /// writes; for a bucket, the time the store gives an object written now (its clock may differ
    /// from the node's, and it is the one the times of links and blobs come from).
    pub async fn clock(&self) -> Result<std::time::SystemTime> {
        match self.s3() {
            Some(s3) => bounded(self.inner.timeout, s3.clock()).await,
            None => Ok(std::time::SystemTime::now()),
        }
    }

    /// Whether this storage is an S3 bucket rather than a filesystem.
    pub fn is_s3(&self) -> bool {
        self.inner.s3.is_some()
    }

    /// Checks `guard` before every storage call, on the thread that makes it, so nothing is read
    /// or written under a mount point whose volume is gone. Call before cloning the storage.
    pub fn with_guard(mut self, guard: crate::node::mount::MountGuard) -> Storage {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.guard = Some(guard);
                // A guarded mount is a shared one: every call goes through the guard's check.
                *inner.inline.get_mut() = false;
            }
            None => tracing::error!("storage guard set after the storage was shared; not applied"),
        }
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn catalog_tree(&self) -> std::sync::MutexGuard<'_, Option<catalog::Dir>> {
        self.inner.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, listing::Listings> {
        self.inner
            .listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How long one storage call may take (`storage.operation_timeout_secs`).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs blocking filesystem work off the async threads, bounded in time and in number.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.inner.timeout;
        let permit = tokio::time::timeout(limit, self.inner.slots.clone().acquire_owned())
            .await
            .map_err(|_| timed_out(limit))?
            .map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let guard = self.inner.guard.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _held_until_the_call_returns = permit;
            if let Some(g) = guard {
                g.admit().map_err(StorageError::Unavailable)?;
            }
            f()
        });
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StorageError::Io(io::Error::other(e))),
            Err(_) => Err(timed_out(limit)),
        }
    }

    /// Runs `f(true)` on this thread when the storage allows cached reads and `f` finishes from the
    /// kernel's caches (it must then read only through [`cached`], which says `WouldBlock` when it
    /// cannot); otherwise `f(false)` as a [`blocking`](Storage::blocking) call.
    async fn cached_or_blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: Fn(bool) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.cached_reads() {
            match f(true) {
                Err(StorageError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
        self.blocking(move || f(false)).await
    }

    /// Whether small reads may be answered from the kernel's caches on the async threads.
    fn cached_reads(&self) -> bool {
        self.inner.inline.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bounds one async file operation (tokio::fs) in time.
    async fn timed<T>(&self, fut: impl std::future::Future<Output = io::Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(timed_out(self.inner.timeout)),
        }
    }

    /// A cheap end-to-end probe that the storage root is usable: a durable write and a read back.
    pub async fn check(&self) -> Result<()> {
        if let Some(s3) = self.s3() {
            return bounded(self.inner.timeout, s3.check()).await;
        }
        let me = self.clone();
        self.blocking(move || {
            let layout = me.layout();
            if me.inner.guard.is_none() {
                let local = cached::is_local(layout.root());
                me.inner
                    .inline
                    .store(local, std::sync::atomic::Ordering::Relaxed);
            }
            // A probe of this check's own: nodes sharing the storage check at the same moments.
            // It lives in the root itself: nodes that start together and each create a shared
            // subdirectory at the same instant can leave GlusterFS with a GFID mismatch on it
            // (EIO on that directory for good), which took a whole node out at start.
            let dir = layout.root().to_path_buf();
            let token = Uuid::new_v4().simple().to_string();
            let probe = dir.join(format!(".registryd-probe-{token}"));
            atomic::write_atomic(&probe, token.as_bytes())?;
            let back = std::fs::read(&probe);
            let _ = std::fs::remove_file(&probe);
            if back? != token.as_bytes() {
                return Err(
                    io::Error::other("storage read back different bytes than written").into(),
                );
            }
            remove_stale_probes(&dir);
            Ok(())
        })
        .await
    }
}

/// Bounds `fut` by the storage timeout.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out(limit)))
}

/// Removes probes left by a check that never finished (a crash between write and remove).
fn remove_stale_probes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if stale
            && e.file_name()
                .to_string_lossy()
                .starts_with(".registryd-probe-")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A manifest's bytes and the media type it is served with. Content-addressed, so a cached copy is
/// never stale; whether the repository still holds it is checked on storage every time.
pub struct CachedManifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
}

/// Manifest bytes by digest, bounded in total size (cleared when full: simple and bounded).
#[derive(Default)]
pub(super) struct ManifestCache {
    entries: HashMap<Digest, Arc<CachedManifest>>,
    bytes: usize,
}

const MANIFEST_CACHE_BYTES: usize = 32 << 20;

impl ManifestCache {
    fn get(&self, digest: &Digest) -> Option<Arc<CachedManifest>> {
        self.entries.get(digest).cloned()
    }

    /// Keeps `m` under `digest`, emptying the cache first when it would outgrow its bound.
    fn insert(&mut self, digest: Digest, m: Arc<CachedManifest>) {
        if self.bytes + m.bytes.len() > MANIFEST_CACHE_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += m.bytes.len();
        self.entries.insert(digest, m);
    }
}

impl Storage {
    /// Resolves a tag or digest in `name` and returns the manifest, in one storage round trip: the
    /// tag's link and the revision link are read from storage (they change, possibly on another
    /// node); the bytes come from the cache when this node has seen them.
    pub async fn resolve_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, Arc<CachedManifest>)> {
        if let Some(s3) = self.s3() {
            return s3.resolve_manifest(name, reference).await;
        }
        let me = self.clone();
        let (name, reference) = (name.clone(), reference.clone());
        self.cached_or_blocking(move |from_cache| {
            let l = me.layout();
            let digest = match &reference {
                Reference::Digest(d) => d.clone(),
                Reference::Tag(t) => read_link_as(&l.tag_current_link(&name, t), from_cache)?
                    .ok_or(StorageError::ManifestUnknown)?,
            };
            if read_link_as(&l.revision_link(&name, &digest), from_cache)?.as_ref() != Some(&digest)
            {
                return Err(StorageError::ManifestUnknown);
            }
            let cached = me
                .inner
                .manifests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&digest);
            if let Some(m) = cached {
                return Ok((digest, m));
            }
            if from_cache {
                // Reading a manifest's bytes is left to a blocking thread; they are cached after.
                return Err(cached::would_block().into());
            }
            let bytes = match atomic::read_retrying(&l.blob_data(&digest)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::ManifestUnknown);
                }
                Err(e) => return Err(e.into()),
            };
            let m = Arc::new(CachedManifest {
                media_type: crate::registry::manifest::detect_media_type(&bytes),
                bytes: bytes::Bytes::from(bytes),
            });
            me.inner
                .manifests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(digest.clone(), m.clone());
            Ok((digest, m))
        })
        .await
    }
}
